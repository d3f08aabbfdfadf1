"""A zero-cost proxy's score of a candidate architecture, as a search computes it when it prices
the candidate: the network at seeded initial weights, scored on one seeded batch of the trial's
own training images (`evaluators.proxies`). The same architecture always gets the same score.
"""

from __future__ import annotations

import numpy as np
import torch

from evaluators.batches import BatchLoader
from evaluators.proxies import PROXIES, compute_proxies
from evaluators.trial import TrialConfig, load_trial_data
from search_spaces.architecture import Architecture
from search_spaces.model import build_model


class ProxyScorer:
    """`scorer(arch) -> float`: the named proxy (default `naswot`) on `batch_size` training images
    drawn with `seed`, the network initialised with `seed`. The data set is opened on the first
    call only (a search that never scores never reads it)."""

    def __init__(self, trial: TrialConfig, in_channels: int, proxy: str = "naswot",
                 batch_size: int = 64, seed: int = 0):
        if proxy not in PROXIES:
            raise ValueError(f"unknown proxy {proxy!r} (known: {sorted(PROXIES)})")
        self.trial, self.in_channels, self.proxy = trial, in_channels, proxy
        self.batch_size, self.seed = batch_size, seed
        self._batch: tuple[torch.Tensor, torch.Tensor] | None = None

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The seeded batch of training images (normalised) and labels every score is taken on."""
        if self._batch is None:
            t = self.trial
            data = load_trial_data(t.data, t.data_path, t.resolution, t.val_fraction, t.data_seed,
                                   self.in_channels, t.cache_dir, t.skip_corrupt, t.decode_workers)
            pick = np.random.default_rng(self.seed).permutation(len(data.train))[:self.batch_size]
            self._batch = BatchLoader(data.mean, data.std).load(data.train, np.sort(pick))
        return self._batch

    def __call__(self, arch: Architecture) -> float:
        batch = self.batch()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = build_model(arch)
        return compute_proxies(model, batch, [self.proxy])[self.proxy]
