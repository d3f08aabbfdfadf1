"""Zero-cost proxies of the study's layouts, as a search would compute them when it prices a
candidate: each layout built at each seed's initial weights, scored on one seeded batch of the
study's real training images (`evaluators.proxies`). They are candidates in the objective
agreement table (`results.layout_study.objective_agreement`), never a training change."""

from __future__ import annotations

import pandas as pd
import torch

from evaluators.proxies import PROXIES, compute_proxies
from evaluators.trial import load_trial_data
from nas.layout_study.config import StudyConfig
from results.layout_study.objective_agreement import PROXY_PREFIX
from search_spaces.architecture import Architecture
from search_spaces.model import build_model

PROXY_BATCH = 64


def layout_proxies(config: StudyConfig, architectures: dict[str, Architecture]) -> pd.DataFrame:
    """One row per (layout, seed): `proxy_<name>` for every registered proxy."""
    first = next(iter(architectures.values()))
    data = load_trial_data(config.data, config.data_path, config.resolution, config.val_fraction,
                           config.data_seed, first.in_channels)
    rows = []
    seeds = sorted(set(config.seeds).union(*(size.seeds or () for size in config.sizes)))
    for seed in seeds:
        pick = torch.randperm(len(data.train_y), generator=torch.Generator().manual_seed(seed))
        batch = (data.train_x[pick[:PROXY_BATCH]], data.train_y[pick[:PROXY_BATCH]])
        for layout, arch in architectures.items():
            torch.manual_seed(seed)
            scores = compute_proxies(build_model(arch), batch)
            rows.append({"layout": layout, "seed": seed,
                         **{PROXY_PREFIX + name: scores[name] for name in PROXIES}})
    return pd.DataFrame(rows)
