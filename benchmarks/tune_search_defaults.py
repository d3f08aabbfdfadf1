"""The tuning run behind the default search's settings (issue 22's pre-registration,
`benchmarks/results/search_quality_PREREGISTRATION.md`): the default search and each one-change
candidate replayed on the tuning table only (`digits`), on tuning seeds that are never reported.

    python benchmarks/tune_search_defaults.py [--table digits] [--seeds 30] [--only "mf,proxy k4"]

Prints, per candidate, the median normalised hypervolume at 25/50/100% of the compute (16
full-budget random trials) and the compute share at which that median reaches 95% of random
search's full-budget median. The held-out table is never passed here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
from simulate import (FullBudget, Hypervolume, OptunaProposer, OurMOASHA, Table,  # noqa: E402
                      hypervolume_curve, simulate)

TUNING_SEEDS = 100  # first tuning seed: the reported runs use 0-29


def candidates(table: Table) -> dict[str, tuple[dict, object]]:
    """name -> (OptunaProposer options, scheduler factory): the default and one change each."""
    return {
        "default g5": ({}, lambda: OurMOASHA(table, 5, 3)),
        "g4": ({}, lambda: OurMOASHA(table, 4, 3)),
        "mf": ({"multi_fidelity": True}, lambda: OurMOASHA(table, 5, 3)),
        "proxy k2": ({"proxy": "naswot", "candidates": 2}, lambda: OurMOASHA(table, 5, 3)),
        "proxy k4": ({"proxy": "naswot", "candidates": 4}, lambda: OurMOASHA(table, 5, 3)),
        "mf+proxy2": ({"multi_fidelity": True, "proxy": "naswot", "candidates": 2},
                      lambda: OurMOASHA(table, 5, 3)),
        "adaptive3": ({}, lambda: OurMOASHA(table, 5, 3, placement="adaptive", min_completed=3)),
        "extrap3": ({}, lambda: OurMOASHA(table, 5, 3, extrapolate=True, min_completed=3)),
        "all": ({"multi_fidelity": True, "proxy": "naswot", "candidates": 2},
                lambda: OurMOASHA(table, 5, 3, placement="adaptive", extrapolate=True,
                                  min_completed=3)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", default="digits", choices=["digits"],
                        help="the tuning table (the held-out one is never tuned on)")
    parser.add_argument("--seeds", type=int, default=30)
    parser.add_argument("--only", default="", help="comma-separated candidate names")
    args = parser.parse_args(argv)
    table = Table.load(name=args.table)
    seeds = list(range(TUNING_SEEDS, TUNING_SEEDS + args.seeds))
    measure = Hypervolume.of_table(table)
    budget = 16 * table.epochs
    points = np.arange(1, budget + 1)

    def run(options: dict, scheduler, sampler: str = "tpe") -> np.ndarray:
        return np.array([hypervolume_curve(table, simulate(
            table, OptunaProposer(table, sampler, seed, **options), scheduler(), budget),
            measure, points) for seed in seeds])

    random_ = run({}, FullBudget, "random")
    goal = 0.95 * np.median(random_[:, -1])
    print(f"table {table.name}: {len(table.arch_ids)} architectures; seeds {seeds[0]}-{seeds[-1]}; "
          f"random full-budget median {np.median(random_[:, -1]):.3f}", flush=True)
    chosen = candidates(table)
    for name in (args.only.split(",") if args.only else chosen):
        options, scheduler = chosen[name]
        t0 = time.time()
        median = np.median(run(dict(options), scheduler), axis=0)
        hit = np.flatnonzero(median >= goal - 1e-12)
        share = "-" if not len(hit) else f"{(hit[0] + 1) / budget:.0%}"
        print(f"{name:16s} 25% {median[budget // 4 - 1]:.3f} 50% {median[budget // 2 - 1]:.3f} "
              f"100% {median[-1]:.3f} reach {share}  ({time.time() - t0:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
