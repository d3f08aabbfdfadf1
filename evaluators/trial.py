"""One search trial: train an architecture in the small-data regime and in the full regime side by
side, and report the readings a search compares it by after every epoch.

- Small-data regime (the generalization reading): `small_per_class` training images per class (or
  a `small_fraction` of each class). It reports `val_acc_at_matched_loss`: validation accuracy
  where the training curve first comes down to `train.matched_loss` (interpolated; NaN until
  then), the paper's comparison at the same training loss, and `gap_at_matched_loss` there; also
  the raw `gap` = val_loss - train_loss and `gap_acc` = train_acc - val_acc, which reward
  networks that never fit.
- Full regime: every training image. It reports `fit_full` = exp(-train_loss), the geometric-mean
  probability given to the true training label (maximise): how far the network fits the full set
  within the trial's budget. It is not called capacity: the layout study (`hybrid-nas study`)
  reads capacity after a long budget on a large deformed set, and reports how well this short
  reading ranks like it. Also `val_loss`/`val_acc`.

Both regimes start from the same initial weights (same seed) and get the same budget: the same
number of epochs of the same number of optimiser steps (a small-data epoch cycles its few images
until it has taken as many steps as a full epoch). Losses are measured in eval mode without
augmentation over the whole training set and the shared validation set.

A trial that distils (`train.distill`) loads its teacher once for both regimes and reports
`teacher_agreement` (full regime) and `teacher_agreement_small`: the share of validation images on
which the student predicts the teacher's class; and `teacher_relabelled` / `_small`: the share of
the epoch's training images on which the teacher's class is not the label (`evaluators.trainer`).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from search_spaces.fields import FieldError, from_mapping
from evaluators.data import ImageData, load_data, prepare_data, small_data
from evaluators.distillation import load_teacher
from evaluators.latency import measure_latency
from evaluators.trainer import Metrics, TrainConfig, Trainer, resolve_device
from search_spaces.architecture import Architecture


@dataclass(frozen=True)
class TrialConfig:
    """Data (`data` name, `data_path` for local data sets, `resolution` None = the
    architecture's), the small-data regime size, and how to train (`train`).

    cifar10 and imagefolder data are decoded once into the data cache and memory-mapped by every
    trial: `cache_dir` (None: $HYBRID_NAS_CACHE, else ~/.cache/hybrid-nas/data; one per machine,
    or on storage every node shares), `decode_workers` (processes that decode a missing entry;
    None: every CPU), `skip_corrupt` (leave unreadable images out, counted in the
    `skipped_images` metric, instead of failing on the first).
    """

    data: str = "digits"
    """The data set: `digits` (scikit-learn's bundled handwritten digits), `cifar10` or
    `imagefolder` (both read from `data_path`)."""
    data_path: str | None = None
    """The folder of a local data set: CIFAR-10's python batches, or an image folder
    (`<class>/*.png|jpg|jpeg`, or `train/<class>/...` and `val/<class>/...`)."""
    resolution: int | None = None
    """The side in pixels images are resized to; null: the architecture's."""
    val_fraction: float = 0.2
    """The share of each class held out for validation (stratified) when the data have no validation
    split of their own."""
    data_seed: int = 0
    """The seed of the validation split and of the small-data regime's subset."""
    small_per_class: int | None = 20
    """Training images per class in the small-data regime (where generalization is read); give this
    or `small_fraction`."""
    small_fraction: float | None = None
    """The share of each class's training images in the small-data regime, instead of
    `small_per_class`."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """How both regimes train (`trial.train.*`)."""
    cache_dir: str | None = None
    """Where `cifar10` and `imagefolder` data are decoded once and memory-mapped by every trial;
    null: `$HYBRID_NAS_CACHE`, else `~/.cache/hybrid-nas/data`."""
    skip_corrupt: bool = False
    """Leave unreadable images out (printed, and counted in the `skipped_images` metric) instead of
    failing on the first."""
    decode_workers: int | None = None
    """Processes that decode a missing cache entry; null: every CPU."""

    def __post_init__(self) -> None:
        if (self.small_per_class is None) == (self.small_fraction is None):
            raise FieldError("trial.small_per_class",
                              "give exactly one of small_per_class and small_fraction")
        if self.small_per_class is not None and self.small_per_class < 1:
            raise FieldError("trial.small_per_class", f"must be >= 1, got {self.small_per_class}")
        if self.small_fraction is not None and not 0 < self.small_fraction <= 1:
            raise FieldError("trial.small_fraction", f"must be in (0, 1], got {self.small_fraction}")
        if not 0 < self.val_fraction < 1:
            raise FieldError("trial.val_fraction", f"must be in (0, 1), got {self.val_fraction}")
        if self.resolution is not None and self.resolution < 1:
            raise FieldError("trial.resolution", f"must be >= 1 or null, got {self.resolution}")
        if self.decode_workers is not None and self.decode_workers < 1:
            raise FieldError("trial.decode_workers", f"must be >= 1 or null, got {self.decode_workers}")
        if self.cache_dir is not None:  # trial workers may run in other directories: make it absolute
            object.__setattr__(self, "cache_dir", os.path.abspath(os.path.expanduser(self.cache_dir)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrialConfig":
        """Parse e.g. `{data: digits, small_per_class: 20, train: {epochs: 8, lr: 0.002}}`; a
        given `small_fraction` replaces the default `small_per_class`."""
        data = dict(data)
        if "small_fraction" in data and "small_per_class" not in data:
            data["small_per_class"] = None
        try:
            if "train" in data:  # its own parser: it reads the nested `distill` section
                data["train"] = TrainConfig.from_dict(data["train"] or {})
            return from_mapping(cls, data, "trial")
        except FieldError as exc:  # TrainConfig's own checks name `train.*`: say where it sits
            if exc.field.startswith("trial."):
                raise
            raise FieldError(f"trial.{exc.field}", exc.message) from None

    def replace(self, **changes: Any) -> "TrialConfig":
        return dataclasses.replace(self, **changes)


@dataclass
class TrialOutcome:
    """status "completed" or "diverged"; history: one flat metrics dict per good epoch;
    gate_values: mean sigmoid(lambda) per G block of the full-regime model at the end;
    model_state: the full-regime model's state_dict on CPU (None after a divergence);
    architecture: the architecture trained (a distilled class-token student's has its
    distillation token: save `model_state` with it)."""

    status: str
    history: list[Metrics]
    error: str | None = None
    gate_values: list[float] = field(default_factory=list)
    model_state: dict[str, torch.Tensor] | None = None
    architecture: Architecture | None = None

    @property
    def final(self) -> Metrics:
        """The last epoch's metrics ({} if none)."""
        return self.history[-1] if self.history else {}


def run_trial(arch: Architecture, config: TrialConfig,
              report: Callable[[Metrics], None] | None = None) -> TrialOutcome:
    """Train `arch` in both regimes, one epoch of each per step, calling `report(metrics)` with one
    flat dict of floats after every epoch. A diverging run ends "diverged"; it does not raise."""
    data = load_trial_data(config.data, config.data_path, config.resolution or arch.resolution,
                           config.val_fraction, config.data_seed, arch.in_channels, config.cache_dir,
                           config.skip_corrupt, config.decode_workers)
    small = small_data(data, per_class=config.small_per_class, fraction=config.small_fraction,
                       seed=config.data_seed)
    started = time.perf_counter()
    distill = config.train.distill
    teacher = load_teacher(distill, data, resolve_device(config.train.device)) if distill else None
    full_run = Trainer(arch, data, config.train, teacher)
    small_train = config.train
    if small_train.steps_per_epoch is None:
        small_train = small_train.replace(steps_per_epoch=full_run.steps_per_epoch)
    small_run = Trainer(arch, small, small_train, teacher)
    # Measured once, before training: weights do not change the cost of a forward pass.
    latency_ms = measure_latency(full_run.model, (1, arch.in_channels, data.resolution, data.resolution))
    history: list[Metrics] = []
    for _ in range(config.train.epochs):
        s = small_run.run_epoch()
        f = full_run.run_epoch() if s is not None else None
        if s is None or f is None:
            regime = "small-data" if s is None else "full"
            error = f"{regime} regime: {(small_run if s is None else full_run).error}"
            return TrialOutcome("diverged", history, error, architecture=full_run.architecture)
        metrics = {
            "epoch": f["epoch"],
            "gap": s["gap"], "gap_acc": s["gap_acc"], "fit_full": f["fit"],
            "train_loss_small": s["train_loss"], "train_acc_small": s["train_acc"],
            "val_loss_small": s["val_loss"], "val_acc_small": s["val_acc"],
            "val_acc_at_matched_loss": s["val_acc_at_matched_loss"],
            "gap_at_matched_loss": s["gap_at_matched_loss"],
            "train_loss_full": f["train_loss"], "train_acc_full": f["train_acc"],
            "val_loss": f["val_loss"], "val_acc": f["val_acc"],
            "lr": f["lr"],
            "images_per_s": _combined_throughput(s, f),
            "wall_time_s": time.perf_counter() - started,
            "latency_ms": latency_ms,
            "train_images_small": float(len(small.train_y)),
            "train_images_full": float(len(data.train_y)),
        }
        if teacher is not None:
            metrics["teacher_agreement"] = f["teacher_agreement"]
            metrics["teacher_agreement_small"] = s["teacher_agreement"]
            metrics["teacher_relabelled"] = f["teacher_relabelled"]
            metrics["teacher_relabelled_small"] = s["teacher_relabelled"]
        if config.skip_corrupt:
            metrics["skipped_images"] = float(len(data.skipped))
        gates = full_run.gate_values()
        metrics.update({f"gate_{i}": g for i, g in enumerate(gates)})
        history.append(metrics)
        if report is not None:
            report(metrics)
    return TrialOutcome("completed", history, None, full_run.gate_values(), full_run.state_dict_cpu(),
                        full_run.architecture)


def _combined_throughput(small: Metrics, full: Metrics) -> float:
    images = small["images_per_s"] * small["train_time_s"] + full["images_per_s"] * full["train_time_s"]
    return images / (small["train_time_s"] + full["train_time_s"])


def prepare_trial_data(config: TrialConfig, resolution: int, in_channels: int) -> None:
    """Decode the trials' data set into the data cache now unless it is there (a search driver
    calls this before the first trial, so that the decoding and its progress happen once, in
    front of the user; the driver never holds the images). Digits need nothing."""
    if config.data != "digits":
        prepare_data(config.data, config.resolution or resolution, config.data_path, in_channels,
                     config.cache_dir, config.skip_corrupt, config.decode_workers)


@functools.lru_cache(maxsize=4)
def load_trial_data(name: str, path: str | None, resolution: int, val_fraction: float, seed: int,
                    in_channels: int, cache_dir: str | None = None, skip_corrupt: bool = False,
                    decode_workers: int | None = None) -> ImageData:
    """The data set, opened once per process (a Ray worker runs many trials on the same data):
    memory-mapped from the data cache, so it holds labels and indices, not images."""
    data = load_data(name, resolution, path=None if path is None else Path(path),
                     val_fraction=val_fraction, seed=seed, in_channels=in_channels,
                     cache_dir=cache_dir, skip_corrupt=skip_corrupt, decode_workers=decode_workers)
    if data.skipped:
        print(f"{name}: {len(data.skipped)} unreadable image(s) left out (trial.skip_corrupt), "
              f"e.g. {data.skipped[0]}", flush=True)
    return data
