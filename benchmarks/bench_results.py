"""Results at scale: load a run of N synthetic trials, rank it, and write its report.

    python benchmarks/bench_results.py [--trials 10000]

Records are written with results/run_directory.py; architectures are real (a pool sampled from the default
space, priced once with count_cost) and metrics are random. Prints seconds per step.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from results.figures import build_figures  # noqa: E402
from results.pareto import pareto_ranks  # noqa: E402
from results.report import render_html  # noqa: E402
from results.run_directory import read_run  # noqa: E402
from results.table import load_table, save_table  # noqa: E402
from run_factory import make_record, sample_architectures, write_record, write_run  # noqa: E402


def timed(label: str, fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    print(f"{label:<42} {time.perf_counter() - start:8.3f} s")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--pool", type=int, default=40, help="distinct architectures")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        write_run(run_dir, n_trials=0)
        pool = sample_architectures(args.pool, seed=1)
        templates = [make_record(arch, i, "completed", rng) for i, arch in enumerate(pool)]
        start = time.perf_counter()
        statuses = rng.choice(["completed"] * 8 + ["pruned", "rejected"], size=args.trials)
        for number in range(args.trials):
            arch = pool[number % len(pool)]
            record = make_record(arch, number, str(statuses[number]), rng) if number < len(pool) \
                else dict(templates[number % len(pool)], trial_id=f"trial_{number:06d}", number=number,
                          status=str(statuses[number]),
                          objectives={"gap": float(rng.uniform()), "fit_full": float(rng.uniform())},
                          metrics=dict(templates[0]["metrics"], val_acc=float(rng.uniform())))
            write_record(run_dir, record)
        print(f"{'write ' + str(args.trials) + ' records (setup)':<42} "
              f"{time.perf_counter() - start:8.3f} s")
        run = timed("read_run (parse + validate records)", read_run, run_dir)
        table = timed("load_table (rows + Pareto ranks)", load_table, run)
        timed("save_table (parquet + csv)", save_table, run_dir, table)
        for k in (2, 3):
            values = rng.normal(size=(args.trials, k))
            timed(f"pareto_ranks n={args.trials} k={k}", pareto_ranks, values, ["min", "max", "min"][:k])
        figures = timed("build_figures", build_figures, table)
        html = timed("render_html", render_html, table, figures, run.config)
        print(f"report size {len(html) / 1e6:.1f} MB for {len(table)} rows")


if __name__ == "__main__":
    main()
