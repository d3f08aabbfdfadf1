"""Test-wide settings: one intra-op thread (the machine has 2 cores and Ray trials run beside the
test process; oneDNN with 2 contended threads makes every first forward of a new shape ~50x slower),
a data cache of the session's own (never the user's ~/.cache), and tests marked `cuda` skipped
where no CUDA device is (`pytest -m cuda` selects them: benchmarks/gpu_check.py runs it on a GPU)."""

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Every Ray node a test starts binds loopback only (`ray start --node-ip-address 127.0.0.1` and
# ray.init(_node_ip_address=...) would otherwise resolve 127.0.0.1 to the machine's address).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    no_device = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(no_device)


@pytest.fixture(scope="session", autouse=True)
def data_cache_dir(tmp_path_factory):
    """$HYBRID_NAS_CACHE for the whole session (subprocesses and Ray workers inherit it)."""
    path = tmp_path_factory.mktemp("data-cache")
    os.environ["HYBRID_NAS_CACHE"] = str(path)
    return path
