"""The failure table: data vs setup vs transient, and the 'whole run is broken' rule."""
from cliper_batch.failures import DATA, SETUP, TRANSIENT, classify, common_setup_failure


def test_classes_of_known_errors():
    assert classify("ProbeError") == DATA
    assert classify("DecodeError") == DATA
    assert classify("DetectorUnavailable") == SETUP
    assert classify("WorkerLost") == TRANSIENT
    assert classify("VideoTimeout") == TRANSIENT


def test_unknown_and_missing_error_types_are_transient():
    assert classify("SomethingNew") == TRANSIENT
    assert classify(None) == TRANSIENT


def test_common_setup_failure_only_when_all_share_a_non_data_reason():
    assert common_setup_failure(["DetectorUnavailable"] * 3) == "DetectorUnavailable"
    assert common_setup_failure(["WorkerLost", "WorkerLost"]) == "WorkerLost"
    assert common_setup_failure(["ProbeError"] * 3) is None  # the files are bad, the run is fine
    assert common_setup_failure(["DetectorUnavailable", "ProbeError"]) is None
    assert common_setup_failure([]) is None
