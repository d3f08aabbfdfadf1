"""Test-wide settings: one intra-op thread (the machine has 2 cores and Ray trials run beside the
test process; oneDNN with 2 contended threads makes every first forward of a new shape ~50x slower)."""

import os

import torch

torch.set_num_threads(1)
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
