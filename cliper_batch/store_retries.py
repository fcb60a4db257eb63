"""Object-store retries: the defaults cliper-batch gives s3:// filesystems, and a count of the retries made.

**Defaults.** A store that throttles (``503 SlowDown``) or drops connections must slow a
run down, not fail its videos. s3fs calls S3 through aiobotocore, which has two retry
layers: botocore's retry handler (every HTTP attempt of one call; configured by
``config_kwargs={"retries": {...}}``) and s3fs's own loop around each call (``retries=5``
calls, for ``SlowDown`` and connection errors botocore gave up on, and for broken download
bodies, which botocore cannot retry). botocore's built-in default is its *legacy* mode (5
attempts). :func:`with_defaults` asks for its *standard* mode with 10 attempts (AWS's
advice for throttling-heavy work): jittered exponential backoff (up to 20 s between
attempts), the 500/502/503/504, ``SlowDown``/``Throttling`` and connection-error set, and a
retry quota per client that stops retrying while a store fails most requests (s3fs's
layer still retries ``SlowDown`` then). It does so only where the user configured nothing:
``config_kwargs["retries"]`` in the storage options, ``AWS_RETRY_MODE`` /
``AWS_MAX_ATTEMPTS`` in the environment, or ``retry_mode`` / ``max_attempts`` in the AWS
config file's profile win.

**Count.** :func:`watch` adds two handlers to an s3fs filesystem's botocore client: on
``needs-retry`` (every attempt's outcome; it notes in the request's context why the attempt
failed) and on ``request-created`` (every HTTP request built; one whose retry context says
attempt > 1 is a retry, counted with the noted reason: ``throttled``, ``connection``,
``server_error`` or ``other``). The handlers decide nothing. Counted are botocore's
retries; s3fs's outer loop (a call issued again after botocore gave up, a download body
read again) is not. Counts are per process: the driver reads its own with :func:`take`, and
each worker process reports what it counted since its last report in the rows it emits
(``store_retries``, :mod:`cliper_batch.rows`), so that the writer sums them.
"""
from __future__ import annotations

import collections
import functools
import os
import sys
import threading

S3_RETRIES = {"mode": "standard", "total_max_attempts": 10}  # botocore's max_attempts counts retries only
S3_PROTOCOLS = ("s3", "s3a")
THROTTLING_CODES = frozenset({
    "SlowDown", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottledException",
    "TooManyRequestsException", "RequestLimitExceeded", "BandwidthLimitExceeded", "RequestThrottled",
})
_ID = "cliper-store-retries"
_REASON = "cliper_retry_reason"  # request-context key: why the last attempt failed

_lock = threading.Lock()
_counts: collections.Counter = collections.Counter()  # reason -> retries made in this process
_taken: collections.Counter = collections.Counter()  # ... of which take() has reported


def with_defaults(protocol: str, storage_options: dict) -> dict:
    """``storage_options`` plus botocore's standard retry mode for s3://, unless the user configured retries."""
    if protocol not in S3_PROTOCOLS:
        return storage_options
    config = storage_options.get("config_kwargs") or {}
    if "retries" in config or _configured_outside(storage_options.get("profile")):
        return storage_options
    return {**storage_options, "config_kwargs": {**config, "retries": dict(S3_RETRIES)}}


def _configured_outside(profile: str | None) -> bool:
    """Whether the environment or the AWS config file sets botocore's retry mode or attempts."""
    if os.environ.get("AWS_RETRY_MODE") or os.environ.get("AWS_MAX_ATTEMPTS"):
        return True
    return _profile_sets_retries(profile or os.environ.get("AWS_PROFILE"), os.environ.get("AWS_CONFIG_FILE"))


@functools.lru_cache(maxsize=8)
def _profile_sets_retries(profile: str | None, config_file: str | None) -> bool:
    try:
        import botocore.session

        scoped = botocore.session.Session(profile=profile).get_scoped_config()
    except Exception:  # no botocore, a profile that does not exist: botocore will say so when it is used
        return False
    return "retry_mode" in scoped or "max_attempts" in scoped


def watch(fs) -> None:
    """Count the retries of ``fs``'s botocore client (s3fs filesystems; others are left alone). Idempotent."""
    s3fs = sys.modules.get("s3fs")
    if s3fs is None or not isinstance(fs, s3fs.S3FileSystem) or fs.asynchronous:
        return
    events = fs.s3.meta.events  # makes the client (no request is sent)
    events.register("needs-retry.s3", _note_reason, unique_id=f"{_ID}-needs-retry")
    events.register("request-created.s3", _count_retry, unique_id=f"{_ID}-request-created")


def _note_reason(response=None, caught_exception=None, request_dict=None, **_) -> None:
    if request_dict is not None:
        request_dict.setdefault("context", {})[_REASON] = reason(response, caught_exception)


def _count_retry(request=None, **_) -> None:
    context = getattr(request, "context", None) or {}
    if context.get("retries", {}).get("attempt", 1) > 1:
        with _lock:
            _counts[context.get(_REASON) or "other"] += 1


def reason(response, caught_exception) -> str:
    """Why an attempt failed: ``connection`` (no HTTP answer: reset, timeout), ``throttled`` (429/503, a
    throttling code such as ``SlowDown``), ``server_error`` (other 5xx) or ``other``."""
    if caught_exception is not None:
        return "connection"
    if not response:
        return "other"
    http, parsed = response
    status = getattr(http, "status_code", 0)
    if status in (429, 503) or (parsed or {}).get("Error", {}).get("Code") in THROTTLING_CODES:
        return "throttled"
    return "server_error" if status >= 500 else "other"


def take() -> dict[str, int]:
    """The retries this process made since the last ``take()``, by reason."""
    with _lock:
        out = {k: v - _taken[k] for k, v in _counts.items() if v > _taken[k]}
        _taken.update(out)
    return out


def take_total() -> int:
    return sum(take().values())


__all__ = ["S3_RETRIES", "reason", "take", "take_total", "watch", "with_defaults"]
