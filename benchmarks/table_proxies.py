"""Zero-cost proxy scores of a ground-truth table's architectures (`benchmarks/ground_truth.py`),
as a search prices a candidate (`evaluators.proxy_score.ProxyScorer`: seeded initial weights, one
seeded batch of the table's own training images), so that a replayed search can rank or filter
its candidates by them (`benchmarks/simulate.py`), and how they rank with the table's objectives.

    python benchmarks/table_proxies.py [--table digits] [--architectures 250]

Writes `<table>_proxies.parquet` (arch_id, one column per proxy) for the first `--architectures`
of the table's seeded order (the architectures it holds or will hold); prints Kendall's tau-b of
each proxy against each objective's full-budget value over the trained ones.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd  # noqa: E402
import torch  # noqa: E402
from scipy.stats import kendalltau  # noqa: E402

from evaluators.proxies import PROXIES  # noqa: E402
from evaluators.proxy_score import ProxyScorer  # noqa: E402
from ground_truth import DATA_DIR, TABLES, TableFiles, sample_order, table_search  # noqa: E402
from search_spaces.architecture import Architecture  # noqa: E402


def proxies_file(files: TableFiles) -> Path:
    return files.out / f"{files.name}_proxies.parquet"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", choices=sorted(TABLES), default="digits")
    parser.add_argument("--architectures", type=int, default=320)
    parser.add_argument("--seed", type=int, default=0, help="the table's order seed")
    parser.add_argument("--out", type=Path, default=DATA_DIR)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config, space = table_search(args.table)
    files = TableFiles(args.table, args.out)
    costs = pd.read_parquet(files.costs).set_index("arch_id")
    order = sample_order(costs.reset_index(), args.seed)[:args.architectures]
    path = proxies_file(files)
    known = pd.read_parquet(path) if path.is_file() else pd.DataFrame(columns=["arch_id"])
    todo = [a for a in order if a not in set(known["arch_id"])]
    scorers = {name: ProxyScorer(config.trial.replace(resolution=space.resolution),
                                 space.in_channels, name) for name in PROXIES}
    t0, rows = time.time(), []
    for n, arch_id in enumerate(todo, start=1):
        arch = Architecture.from_dict(json.loads(costs.loc[arch_id, "architecture"]))
        rows.append({"arch_id": arch_id, **{name: s(arch) for name, s in scorers.items()}})
        if n % 25 == 0 or n == len(todo):
            print(f"{n}/{len(todo)} scored ({(time.time() - t0) / n:.2f} s each)", flush=True)
    frame = pd.concat([known, pd.DataFrame(rows)], ignore_index=True) if rows else known
    frame.to_parquet(path, index=False)
    if files.table.is_file():
        table = pd.read_parquet(files.table)
        final = table[table["epoch"] == config.epochs].merge(frame, on="arch_id")
        print(f"Kendall tau-b against the full-budget objectives ({len(final)} trained):")
        for name in PROXIES:
            cells = []
            for objective in config.objectives:
                ok = final[[name, objective.name]].dropna()
                tau = kendalltau(ok[name], ok[objective.name]).statistic
                cells.append(f"{objective.name} {tau:+.2f} (n={len(ok)})")
            print(f"  {name:10s} " + ", ".join(cells))
    print(f"{len(frame)} architectures -> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
