"""Test-wide settings: one intra-op thread (the machine has 2 cores and Ray trials run beside the
test process; oneDNN with 2 contended threads makes every first forward of a new shape ~50x slower)."""

import os

import torch

torch.set_num_threads(1)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
# Every Ray node a test starts binds loopback only (`ray start --node-ip-address 127.0.0.1` and
# ray.init(_node_ip_address=...) would otherwise resolve 127.0.0.1 to the machine's address).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
