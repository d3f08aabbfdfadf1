"""The Ray Tune function trainable: one trial = one architecture trained by `evaluators.run_trial`.

Config keys (set by the searcher and `nas.search`): `arch` (canonical dict), `cost`
({params, flops, resolution, memory}: with `memory`, the trial evaluates in the chunk it was
priced at), `number` (Optuna's), `record_id` (the trial's record),
`position` (0-based, among the trained trials in suggestion order), `trial`
(evaluators.TrialConfig as a mapping), `threads` (= the trial's CPUs), `keep_weights`. No path:
a trial knows nothing of where the run directory lies.

Every epoch goes to Tune with `tune.report` (plus the cheap `flops`/`params`, the Ray node's id,
`node_id`, so the record says where the trial ran, and `memory_peak_bytes`, the most memory the
trial has held), except the last:
that one is sent after `run_trial` returns, marked `final` = 1 (and `diverged` = 1 when training
diverged, `failed` = 1 with the error text when the trial raised: reported, not raised, so Ray
keeps the reusable actor) and, when weights are kept, with a `tune.Checkpoint` holding the
state_dict. A trial whose last report lacks `final` was stopped early by the scheduler. The records themselves are
written on the driver (`nas.tracking`), so trials may run on any node of a cluster.
"""

from __future__ import annotations

import math
import tempfile
import traceback
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from evaluators.trial import TrialConfig, run_trial
from nas.searcher import DIVERGED_KEY, FAILED_KEY, FINAL_KEY
from results.objectives import METRIC_DIRECTIONS
from search_spaces.architecture import Architecture

WEIGHTS_FILE = "model.pt"
ERROR_KEY = "error_text"
NODE_KEY = "node_id"
MEMORY_KEY = "memory_peak_bytes"  # the most memory the trial held so far (`PeakMemory`)


def train_architecture(config: dict[str, Any]) -> None:
    """Train one sampled architecture and report each epoch to Ray Tune."""
    arch = Architecture.from_dict(config["arch"])
    threads = int(config.get("threads", 1))
    torch.set_num_threads(threads)
    trial_config = TrialConfig.from_dict(config["trial"])
    train = trial_config.train.replace(threads=threads)
    if train.device == "auto":
        # Ray no longer hides GPUs from trials given none: "auto" would put every such trial
        # on GPU 0. Use the GPU only when Ray assigned this trial one.
        train = train.replace(device="cuda" if ray.get_gpu_ids() else "cpu")
    priced = config["cost"].get("memory")
    if priced is not None:  # the evaluation chunk the trial was priced at (it follows memory)
        train = train.replace(eval_batch_size=int(priced["eval_chunk"]))
    trial_config = trial_config.replace(train=train)
    epochs = trial_config.train.epochs
    cheap = {"flops": float(config["cost"]["flops"]), "params": float(config["cost"]["params"]),
             NODE_KEY: ray.get_runtime_context().get_node_id()}  # sent with every report
    peak = PeakMemory(train.device)

    held: dict[str, dict[str, Any]] = {}

    def report(metrics: dict[str, float]) -> None:
        row = {**metrics, **cheap, MEMORY_KEY: peak.read(),
               FINAL_KEY: 0.0, DIVERGED_KEY: 0.0, FAILED_KEY: 0.0}
        if metrics["epoch"] >= epochs:
            held["last"] = row  # goes out below, as the final report
        else:
            tune.report(row)

    try:
        outcome = run_trial(arch, trial_config, report)
    except Exception as exc:  # noqa: BLE001 - any error of the trial ends the trial, not the search
        # Reported, not raised: Tune keeps the (reusable) actor and the search goes on.
        last = {**(held.get("last") or _empty_row()), **cheap, MEMORY_KEY: peak.read(),
                FINAL_KEY: 1.0, DIVERGED_KEY: 0.0, FAILED_KEY: 1.0,
                ERROR_KEY: f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}"}
        tune.report(last)
        return

    if "last" in held:
        last = held["last"]
    elif outcome.history:
        last = {**outcome.history[-1], **cheap}
    else:  # diverged in the first epoch: no good metrics at all
        last = {**_empty_row(), **cheap}
    last.update({FINAL_KEY: 1.0, DIVERGED_KEY: float(outcome.status == "diverged"), FAILED_KEY: 0.0})
    if outcome.error:
        last[ERROR_KEY] = outcome.error
    if outcome.model_state is not None and config.get("keep_weights", True):
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(outcome.model_state, Path(tmp) / WEIGHTS_FILE)
            tune.report(last, checkpoint=tune.Checkpoint.from_directory(tmp))
    else:
        tune.report(last)


class PeakMemory:
    """The most memory this trial has held: the process's peak resident memory (Linux VmHWM,
    set back to the current size when the trial starts, since Ray reuses worker processes), or
    for a CUDA trial the device's peak allocated memory. NaN where it cannot be read."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        else:
            try:
                with open("/proc/self/clear_refs", "w") as clear:
                    clear.write("5")
            except OSError:
                pass

    def read(self) -> float:
        if self.cuda:
            return float(torch.cuda.max_memory_allocated())
        try:
            with open("/proc/self/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        return float(int(line.split()[1]) * 1024)
        except OSError:
            pass
        return math.nan


def _empty_row() -> dict[str, float]:
    """A report for a trial with no good epoch: every metric NaN (Tune wants the keys)."""
    return {**{name: math.nan for name in METRIC_DIRECTIONS}, "epoch": 0.0}
