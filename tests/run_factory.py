"""Test helper: write run directories with results/run_directory.py (the writer a real search uses), holding
real architectures sampled from the default search space and their real cost (count_cost).

Only the training metrics are synthetic (seeded random numbers); everything the results code derives
from an architecture (choices, arch_id, layout, params, FLOPs, the rebuilt model) is real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import optuna
import torch

from evaluators.cost import count_cost
from results import run_directory as run_format
from results.run_directory import RunDirectory
from search_spaces.architecture import Architecture
from search_spaces.space import default_space, sample_architecture

# Tests share one seed so they sample the same architectures and count_cost's cache prices each once.
SEED = 3
OBJECTIVES = [{"name": "gap", "direction": "min"}, {"name": "fit_full", "direction": "max"}]
# One of each non-completed status, then completed trials.
STATUS_CYCLE = ("completed", "completed", "pruned", "completed", "failed", "completed",
                "diverged", "completed", "rejected", "completed", "completed", "completed")


def real_cost(arch: Architecture) -> dict:
    """params/FLOPs from evaluators.cost.count_cost (fvcore, multiply-adds)."""
    cost = count_cost(arch)
    return {"params": int(cost.params), "flops": int(cost.flops), "resolution": arch.resolution}


def sample_architectures(n: int, seed: int = 0) -> list[Architecture]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    space = default_space()
    return [sample_architecture(study.ask(), space) for _ in range(n)]


def write_record(run_dir: Path, record: dict) -> Path:
    """Through results/run_directory.py, the writer a real search uses."""
    store = RunDirectory(run_dir)
    store.write_record(record)
    return store.record_path(record["trial_id"])


def make_record(arch: Architecture, number: int, status: str, rng: np.random.Generator,
                epochs: int = 3) -> dict:
    """A record as a real search writes it; metrics are seeded random but plausible."""
    rejected = status == "rejected"
    epochs_done = {"completed": epochs, "pruned": 1, "failed": 1, "diverged": 2,
                   "rejected": 0, "running": 1}[status]
    history = []
    for epoch in range(1, epochs_done + 1):
        train_loss = float(rng.uniform(0.05, 1.5))
        val_acc = float(rng.uniform(0.5, 0.99))
        history.append({
            "epoch": float(epoch), "gap": float(rng.uniform(0.0, 0.8)),
            "gap_acc": float(rng.uniform(0.0, 0.3)), "fit_full": float(np.exp(-train_loss)),
            "train_loss_small": float(rng.uniform(0.05, 1.0)), "val_loss_small": float(rng.uniform(0.2, 2)),
            "train_loss_full": train_loss, "train_acc_full": float(rng.uniform(0.5, 1.0)),
            "val_loss": float(rng.uniform(0.1, 2.0)), "val_acc": val_acc,
            "val_acc_at_matched_loss": float("nan"), "images_per_s": float(rng.uniform(50, 500)),
            "wall_time_s": float(rng.uniform(1, 10))})
    metrics = history[-1] if history else {}
    if status == "completed":
        objectives = {"gap": metrics["gap"], "fit_full": metrics["fit_full"]}
    elif status == "pruned":
        # An ASHA-stopped trial whose last values would dominate everything: must not rank.
        objectives = {"gap": -1.0, "fit_full": 1.0}
    else:
        objectives = {}
    trial_id = f"rejected-{number}" if rejected else f"trial_{number:05d}"
    return run_format.new_record(
        trial_id, number, status, arch.to_dict(), arch.arch_id, arch.layout, real_cost(arch),
        epochs, metrics=metrics, history=history, objectives=objectives,
        error="RuntimeError: boom in forward\n" if status == "failed" else
              ("loss is NaN at epoch 2" if status == "diverged" else None),
        rejection="flops 9.9M > max_flops 5M" if rejected else None, epochs_done=epochs_done,
        started=None if rejected else "2026-11-23T18:00:00+00:00",
        ended=None if status in ("rejected", "running") else "2026-11-23T18:01:00+00:00",
        wall_time_s=None if status in ("rejected", "running") else float(rng.uniform(5, 60)),
        optuna_state={"completed": "COMPLETE", "pruned": "PRUNED", "failed": "FAIL",
                      "diverged": "FAIL", "rejected": "FAIL"}.get(status))


def write_run(run_dir: Path, n_trials: int = 12, seed: int = 0, statuses=STATUS_CYCLE,
              finished: bool = True, weights_for: int = 1) -> list[dict]:
    """A run directory with `n_trials` records (statuses cycled from `statuses`), search.yaml and,
    when `finished`, summary.json. The first `weights_for` completed trials keep weights."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    RunDirectory(run_dir).write_config({
        "name": "synthetic", "space": "digits", "objectives": OBJECTIVES, "num_trials": n_trials,
        "trial": {"train": {"epochs": 3}}, "budget": {"max_flops": 5_000_000, "max_params": None}})
    (run_dir / run_format.TRIALS_DIR).mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    records = []
    for number, arch in enumerate(sample_architectures(n_trials, seed)):
        record = make_record(arch, number, statuses[number % len(statuses)], rng)
        if record["status"] == "completed" and weights_for > 0:
            weights_for -= 1
            from search_spaces.model import build_model

            torch.manual_seed(number)
            path = run_dir / "weights" / f"{record['trial_id']}.pt"
            path.parent.mkdir(exist_ok=True)
            torch.save(build_model(arch).state_dict(), path)
            record["weights"] = f"weights/{path.name}"
        write_record(run_dir, record)
        records.append(record)
    if finished:
        counts = {s: sum(r["status"] == s for r in records) for s in set(statuses)}
        RunDirectory(run_dir).write_summary({"counts": counts, "wall_time_s": 12.5})
    return records
