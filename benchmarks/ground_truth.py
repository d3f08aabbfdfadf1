"""Tabular ground truth: every epoch of a fixed, seeded sample of a search's architectures within
its budget, trained with that search's trial, so that a search can be replayed on the table
without training (`benchmarks/simulate.py`). Two tables (`TABLES`):
- `digits`: the default search (`nas/default_search.yaml`), the table the defaults are tuned on;
- `heldout`: another regime a user would run (`benchmarks/heldout_search.yaml`: 5 training
  images per class, another data split, 12 epochs, a smaller FLOP/param budget), never used to
  choose a default.

    python benchmarks/ground_truth.py [--table digits] [--architectures 320] [--workers 2] [--seed 0]

Steps (each resumable; a rerun skips what is done):
1. Price every architecture of the space (`digits_space_costs.parquet`: arch_id, layout, the
   sampled choices, params, FLOPs, whether it fits the default budget): a spanning sample
   traced with fvcore, the rest as sums of their parts' costs, checked exact (`price_space`). The simulator
   checks a proposal's budget against it, as the real searcher does. (`<table>_` prefixes every
   file name.)
2. Shuffle the architectures that fit with `--seed` and train the first `--architectures` with
   `evaluators.trial.run_trial` (no Ray), one process per worker, one torch thread each. Each
   finished architecture's rows, one per epoch with every metric the trial reports and the
   epoch's wall time, are appended to `digits_ground_truth.jsonl` at once (flushed, fsynced);
   a killed run loses at most the architectures in training. A larger `--architectures` later
   extends the same seeded order.
3. Write `digits_ground_truth.parquet` (the table) and `digits_ground_truth.json` (how it was
   made: trial config, budget, seed, date, torch version, machine, wall time).
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402

from nas.config import SearchConfig, default_config, load_config  # noqa: E402
from search_spaces.architecture import ATTENTION_BLOCKS, Architecture  # noqa: E402
from search_spaces.space import SearchSpace, sample_architecture  # noqa: E402

DATA_DIR = Path(__file__).resolve().parent / "data"
TABLES = {  # table name -> its search config (None: the built-in default search)
    "digits": None,
    "heldout": Path(__file__).resolve().parent / "heldout_search.yaml",
}
# train.* settings a table trains with other than its config's. The digits table's first 126
# architectures were trained (2026-12-01/02) before the trainer had `channels_last` (then: the
# contiguous layout); its extension keeps that, so that every row was trained the same way.
TRIAL_OVERRIDES = {"digits": {"channels_last": False}}


@dataclass(frozen=True)
class TableFiles:
    """Where one table's files live: `<name>_space_costs.parquet` (every architecture's cost),
    `<name>_ground_truth.jsonl` (finished trials as they come; git-ignored), `.parquet` (the
    table) and `.json` (its provenance)."""

    name: str = "digits"
    out: Path = DATA_DIR

    @property
    def costs(self) -> Path:
        return self.out / f"{self.name}_space_costs.parquet"

    @property
    def rows(self) -> Path:
        return self.out / f"{self.name}_ground_truth.jsonl"

    @property
    def table(self) -> Path:
        return self.out / f"{self.name}_ground_truth.parquet"

    @property
    def provenance(self) -> Path:
        return self.out / f"{self.name}_ground_truth.json"


def table_search(name: str = "digits") -> tuple[SearchConfig, SearchSpace]:
    """A table's search config and its space at the trial's resolution (digits: 10 classes,
    1 channel, as the search resolves them)."""
    from nas.search import resolve_space

    if name not in TABLES:
        raise ValueError(f"unknown table {name!r}: expected one of {', '.join(TABLES)}")
    config = default_config() if TABLES[name] is None else load_config(TABLES[name])
    return config, resolve_space(config)


def default_search() -> tuple[SearchConfig, SearchSpace]:
    """The default search's config and space (the `digits` table's)."""
    return table_search("digits")


def space_architectures(space: SearchSpace) -> list[Architecture]:
    """Every architecture of the space, built through `sample_architecture` from each
    combination of its choices, sorted by arch_id (an order independent of the enumeration)."""
    found: dict[str, Architecture] = {}
    for params in _all_choices(space):
        arch = sample_architecture(optuna.trial.FixedTrial(params), space)
        found[arch.arch_id] = arch
    return [found[key] for key in sorted(found)]


def _all_choices(space: SearchSpace) -> Iterator[dict[str, Any]]:
    for layout in space.layouts():
        names, options = [], []
        for kind in space.stem.kind:
            if kind != "conv":
                raise NotImplementedError("the ground truth enumerates conv stems only")
        names.append("stem_width")
        options.append(list(space.stem.width))
        for i, (block, c) in enumerate(zip(layout.split("-"), space.stages), start=1):
            names += [f"s{i}_depth", f"s{i}_width", f"s{i}_expansion"]
            options += [list(range(c.depth[0], c.depth[1] + 1)), list(c.width), list(c.expansion)]
            if block in ATTENTION_BLOCKS:
                names.append(f"s{i}_head_size")
                options.append(list(c.head_size))
        for combo in itertools.product(*options):
            yield {"layout": layout, "stem_kind": "conv", **dict(zip(names, combo))}


def choices(arch: Architecture) -> dict[str, Any]:
    """The sampled choices of an architecture as flat columns (what the simulator's
    nearest-neighbour lookup compares)."""
    row: dict[str, Any] = {"layout": arch.layout, "stem_width": arch.stem.width}
    for i, stage in enumerate(arch.stages, start=1):
        row[f"s{i}_block"] = stage.block
        row[f"s{i}_depth"] = stage.depth
        row[f"s{i}_width"] = stage.width
        row[f"s{i}_head_size"] = stage.head_size if stage.block in ATTENTION_BLOCKS else 0
    return row


def _price(arch_dict: dict[str, Any]) -> dict[str, Any]:
    from evaluators.cost import count_cost

    arch = Architecture.from_dict(arch_dict)
    cost = count_cost(arch)
    return {"arch_id": arch.arch_id, "params": int(cost.params), "flops": int(cost.flops)}


def components(row: dict[str, Any], stages: int) -> list[tuple]:
    """The parts of a network whose cost depends on nothing else: the stem (its width), each
    stage (its input width, block, depth, width, head size) and the head (the last width and
    block). `HybridNet` is stem -> stages -> head in sequence, each stage at a fixed grid, so an
    architecture's FLOPs and parameters are the sums of its parts' (checked, not assumed:
    `price_space` verifies every prediction it can against fvcore)."""
    parts, width = [("stem", row["stem_width"])], row["stem_width"]
    for i in range(1, stages + 1):
        parts.append((f"s{i}", width, row[f"s{i}_block"], row[f"s{i}_depth"], row[f"s{i}_width"],
                      row[f"s{i}_head_size"]))
        width = row[f"s{i}_width"]
    parts.append(("head", width, row[f"s{stages}_block"]))
    return parts


def _design(rows: list[dict[str, Any]], stages: int) -> tuple[np.ndarray, dict[tuple, int]]:
    index: dict[tuple, int] = {}
    for row in rows:
        for part in components(row, stages):
            index.setdefault(part, len(index))
    design = np.zeros((len(rows), len(index)))
    for r, row in enumerate(rows):
        for part in components(row, stages):
            design[r, index[part]] = 1.0
    return design, index


def price_space(config: SearchConfig, space: SearchSpace, files: TableFiles, pool, checks: int = 40,
                seed: int = 0) -> pd.DataFrame:
    """Every architecture's cost and whether it fits the budget, cached in `out`.

    fvcore takes one to three seconds per architecture here, so the space (thousands) is not
    traced one by one. In a seeded order, the architectures that bring a part (`components`)
    not yet spanned are traced (a basis: about 70), each part's cost is solved for by least
    squares, and every architecture is priced as the sum of its parts. `checks` more
    architectures of that order, outside the basis, are traced as well and must be predicted
    exactly (to the unit); otherwise this stops. Column `priced_by` says which rows fvcore
    traced (their own values are kept)."""
    path = files.costs
    if path.is_file():
        return pd.read_parquet(path)
    archs = space_architectures(space)
    rows = [{"arch_id": a.arch_id, **choices(a),
             "architecture": json.dumps(a.to_dict(), sort_keys=True)} for a in archs]
    design, _ = _design(rows, len(space.stages))
    full_rank = np.linalg.matrix_rank(design)
    basis: list[int] = []
    order = np.random.default_rng(seed).permutation(len(archs))
    for i in order:
        if np.linalg.matrix_rank(design[basis + [i]]) > len(basis):
            basis.append(int(i))
            if len(basis) == full_rank:
                break
    held = [int(i) for i in order if i not in set(basis)][:checks]
    pick = basis + held
    print(f"pricing {len(archs)} architectures: fvcore traces {len(basis)} that span their parts "
          f"and {len(held)} to check; the rest are sums of their parts...", flush=True)
    t0 = time.time()
    traced = list(pool.imap(_price, [archs[i].to_dict() for i in pick], chunksize=2))
    target = np.array([[t["params"], t["flops"]] for t in traced], dtype=float)
    solution, *_ = np.linalg.lstsq(design[basis], target[:len(basis)], rcond=None)
    miss = np.abs(design[held] @ solution - target[len(basis):]).max(initial=0.0)
    if miss > 0.5:
        raise RuntimeError(f"checked architectures mispredicted by up to {miss:.1f}: the costs "
                           "are not sums of the parts")
    predicted = np.rint(design @ solution).astype(np.int64)
    predicted[pick] = target.astype(np.int64)
    costs = pd.DataFrame(rows)
    costs["params"], costs["flops"] = predicted[:, 0], predicted[:, 1]
    costs["priced_by"] = "sum of parts"
    costs.loc[pick, "priced_by"] = "fvcore"
    b = config.budget
    costs["fits"] = (costs["flops"] <= (b.max_flops or np.inf)) \
        & (costs["params"] <= (b.max_params or np.inf))
    costs.to_parquet(path, index=False)
    print(f"priced in {time.time() - t0:.0f} s ({len(held)} checks predicted exactly): "
          f"{int(costs['fits'].sum())} of {len(costs)} fit the budget", flush=True)
    return costs


def sample_order(costs: pd.DataFrame, seed: int) -> list[str]:
    """The architectures that fit, in the seeded order they are trained in."""
    fitting = sorted(costs.loc[costs["fits"], "arch_id"])
    return [fitting[i] for i in np.random.default_rng(seed).permutation(len(fitting))]


def _train(job: tuple[str, dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    """One architecture's trial in a worker: a row per epoch with every metric and the epoch's
    wall time (the first epoch's includes building the model and measuring its latency)."""
    import torch

    from evaluators.trial import TrialConfig, run_trial

    arch_id, arch_dict, trial_dict = job
    torch.set_num_threads(1)
    arch = Architecture.from_dict(arch_dict)
    t0 = time.perf_counter()
    outcome = run_trial(arch, TrialConfig.from_dict(trial_dict))
    rows, previous = [], 0.0
    for metrics in outcome.history:
        rows.append({**metrics, "epoch_time_s": metrics["wall_time_s"] - previous})
        previous = metrics["wall_time_s"]
    return {"arch_id": arch_id, "status": outcome.status, "error": outcome.error,
            "trial_time_s": time.perf_counter() - t0, "rows": rows}


def read_done(files: TableFiles) -> dict[str, dict[str, Any]]:
    """arch_id -> finished result from the rows file (a line cut off by a kill is ignored); with
    no rows file (a fresh clone: it is not committed), from the committed table."""
    done: dict[str, dict[str, Any]] = {}
    path = files.rows
    if not path.is_file() and files.table.is_file():
        return results_of_table(pd.read_parquet(files.table))
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                result = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[result["arch_id"]] = result
    return done


def results_of_table(table: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """The finished results a written table holds, as `read_done` gives them (the inverse of
    `write_table`): per architecture its status, error, trial time and per-epoch rows."""
    meta = {"sample_index", "arch_id", "layout", "stem_width", "architecture", "params", "flops",
            "status", "error", "trial_time_s"} | {c for c in table.columns if c[0] == "s" and c[1].isdigit()}
    metrics = [c for c in table.columns if c not in meta]
    done = {}
    for arch_id, rows in table.sort_values(["sample_index", "epoch"]).groupby("arch_id", sort=False):
        first = rows.iloc[0]
        trained = rows[rows["epoch"].notna()]
        done[arch_id] = {"arch_id": arch_id, "status": first["status"],
                         "error": None if pd.isna(first["error"]) else first["error"],
                         "trial_time_s": float(first["trial_time_s"]),
                         "rows": [{k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
                                  for r in trained[metrics].to_dict("records")]}
    return done


def write_table(done: dict[str, dict[str, Any]], order: list[str], costs: pd.DataFrame,
                files: TableFiles) -> pd.DataFrame:
    """One row per (architecture, epoch), in the seeded order: choices, cost, status, every
    metric, the epoch's wall time, and `sample_index` (position in the order)."""
    by_id = costs.set_index("arch_id")
    frames = []
    for index, arch_id in enumerate(a for a in order if a in done):
        result = done[arch_id]
        meta = {"sample_index": index, "arch_id": arch_id, **by_id.loc[arch_id].drop(["fits", "priced_by"]).to_dict(),
                "status": result["status"], "error": result["error"],
                "trial_time_s": result["trial_time_s"]}
        frames.append(pd.DataFrame([{**meta, **row} for row in result["rows"]] or [meta]))
    table = pd.concat(frames, ignore_index=True)
    table.to_parquet(files.table, index=False, compression="zstd")
    return table


def provenance(config: SearchConfig, args: argparse.Namespace, costs: pd.DataFrame,
               table: pd.DataFrame, wall_s: float) -> dict[str, Any]:
    import torch

    def git(*cmd: str) -> str | None:
        try:
            return subprocess.run(["git", *cmd], capture_output=True, text=True, check=True,
                                  cwd=Path(__file__).parent).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return None

    cpu = next((line.split(":", 1)[1].strip() for line in
                Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")),
               platform.processor()) if Path("/proc/cpuinfo").is_file() else platform.processor()
    return {
        "what": "every epoch of a seeded sample of the search's space within its budget, "
                "trained with its trial (evaluators.trial.run_trial, no Ray)",
        "table": args.table,
        "config": None if TABLES[args.table] is None else
        str(TABLES[args.table].relative_to(Path(__file__).resolve().parents[1])),
        "space": config.space, "resolution": config.trial.resolution,
        "trial": config.to_dict()["trial"],
        "trial_overrides": {f"train.{k}": v for k, v in TRIAL_OVERRIDES.get(args.table, {}).items()},
        "budget": config.to_dict()["budget"],
        "objectives": [o.to_dict() for o in config.objectives],
        "scheduler": config.to_dict()["scheduler"], "sampler": config.to_dict()["sampler"],
        "seed": args.seed, "architectures": int(table["arch_id"].nunique()),
        "space_size": int(len(costs)), "fit_budget": int(costs["fits"].sum()),
        "sample": "the architectures that fit the budget, sorted by arch_id, permuted with "
                  "numpy.random.default_rng(seed); the first `architectures` of that order "
                  "(sample_index: the position in it)",
        "pricing": f"{int((costs['priced_by'] == 'fvcore').sum())} architectures traced with "
                   "fvcore (a seeded set spanning every stem/stage/head part, plus checks "
                   "predicted exactly), the rest priced as sums of their parts' costs",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__, "optuna": optuna.__version__, "python": platform.python_version(),
        "machine": {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
                    "workers": args.workers, "threads_per_worker": 1,
                    "note": "cores shared with other work: wall times are noisy"},
        "wall_time_s_this_run": round(wall_s, 1),
        "trial_time_s_total": round(float(table.groupby("arch_id")["trial_time_s"].first().sum()), 1),
        "git_commit": git("rev-parse", "HEAD"),
        "columns": "sample_index, arch_id, layout, stem_width, s{i}_block/depth/width/head_size, "
                   "params, flops, architecture (canonical JSON), status, error, trial_time_s, "
                   "epoch, every metric run_trial reports, epoch_time_s",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", choices=sorted(TABLES), default="digits")
    parser.add_argument("--architectures", type=int, default=320)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checks", type=int, default=40,
                        help="architectures traced with fvcore to check the space's pricing")
    parser.add_argument("--out", type=Path, default=DATA_DIR)
    parser.add_argument("--table-only", action="store_true",
                        help="train nothing: write the table of what is trained so far")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    config, space = table_search(args.table)
    files = TableFiles(args.table, args.out)
    trial = config.to_dict()["trial"]
    trial_dict = {**trial, "resolution": space.resolution,
                  "train": {**trial["train"], "threads": 1, "device": "cpu",
                            **TRIAL_OVERRIDES.get(args.table, {})}}
    started = time.time()
    rows_path = files.rows
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(args.workers) as pool:
        costs = price_space(config, space, files, pool, args.checks, args.seed)
        order = sample_order(costs, args.seed)[:args.architectures]
        done = read_done(files)
        if not rows_path.is_file() and done:  # carried over from the committed table
            rows_path.write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in done.values()))
        todo = [] if args.table_only else [a for a in order if a not in done]
        print(f"{sum(a in done for a in order)} of {len(order)} architectures done; training {len(todo)} "
              f"({args.workers} at a time)", flush=True)
        archs = costs.set_index("arch_id")["architecture"]
        jobs = [(a, json.loads(archs[a]), trial_dict) for a in todo]
        with rows_path.open("a") as sink:
            for n, result in enumerate(pool.imap_unordered(_train, jobs), start=1):
                sink.write(json.dumps(result, allow_nan=True) + "\n")
                sink.flush()
                os.fsync(sink.fileno())
                done[result["arch_id"]] = result
                if n % 10 == 0 or n == len(jobs):
                    rate = (time.time() - started) / n
                    print(f"{n}/{len(jobs)} trained, {rate:.1f} s each, about "
                          f"{rate * (len(jobs) - n) / 60:.0f} min left", flush=True)
    table = write_table(done, order, costs, files)
    info = provenance(config, args, costs, table, time.time() - started)
    files.provenance.write_text(json.dumps(info, indent=1) + "\n")
    print(f"{info['architectures']} architectures, {len(table)} rows -> {files.table}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
