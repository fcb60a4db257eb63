"""cluster.yaml is a real Ray cluster-launcher config: it passes Ray's own schema validation."""
import copy
import os

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config

PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "cluster.yaml")


@pytest.fixture(scope="module")
def config():
    with open(PATH) as f:
        return yaml.safe_load(f)


def test_cluster_yaml_validates_against_rays_schema(config):
    validate_config(prepare_config(copy.deepcopy(config)))


def test_head_is_cpu_and_gpu_workers_autoscale_from_zero(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    gpu_types = [t for t in types.values() if t["resources"].get("GPU", 0) > 0]
    assert gpu_types and all(t["min_workers"] == 0 and t["max_workers"] > 0 for t in gpu_types)
    assert any("pip install " in c and "cliper-batch[cloud]" in c for c in config["setup_commands"])
    assert not any("facenet" in c for c in config["setup_commands"])  # the detector weights ship in the package


def test_token_auth_is_on_for_every_node(config):
    # the launching laptop's token reaches the head (and, through the head's copy, every worker)
    assert config["file_mounts"]["/home/ubuntu/.ray/auth_token"] == "~/.ray/auth_token"
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    ray_starts = [c for c in starts if "ray start" in c]
    assert len(ray_starts) == 2 and all("RAY_AUTH_MODE=token" in c for c in ray_starts)
    assert not any("RAY_AUTH_MODE=disabled" in c for c in starts)


def test_validation_rejects_a_broken_config(config):
    bad = copy.deepcopy(config)
    bad["available_node_types"][bad["head_node_type"]]["unexpected_key"] = 1
    with pytest.raises(Exception, match="unexpected"):
        validate_config(prepare_config(bad))
