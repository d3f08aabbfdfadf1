"""Train one architecture on image data and measure it after every epoch (batches come from
`evaluators.batches`: gathered from the data set's pixel array, normalised on the device).

Definitions (the same in every metrics dict, here and in `evaluators.trial`):
- train_loss / train_acc: cross-entropy (no label smoothing) and accuracy over the whole training
  set, measured in eval mode without augmentation after the epoch, not the running loss of the
  augmented batches (that one is `fit_loss`).
- gap = val_loss - train_loss (minimise); gap_acc = train_acc - val_acc.
- fit = exp(-train_loss): the geometric-mean probability the model gives to the true
  training label, in (0, 1] (maximise).
- val_acc_at_matched_loss / gap_at_matched_loss: validation accuracy and val_loss - train_loss
  where the training curve first comes down to `matched_loss`, interpolated between the epochs
  around that crossing (`evaluators.curves.value_at_loss`); NaN until then (the paper's
  "accuracy at the same training loss").
- teacher_agreement (when distilling): the share of validation images on which the student
  predicts the teacher's class. teacher_relabelled: the share of the epoch's training images, as
  augmented and mixed, on which the teacher's class is not the label (the heavier one of a mix):
  where hard distillation says something the labels do not.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from evaluators.augment import Augment
from evaluators.batches import BatchLoader, ImageSplit
from evaluators.curves import value_at_loss
from evaluators.data import ImageData
from evaluators.memory import release_freed_memory
from evaluators.distillation import (DistillationLoss, DistillConfig, Teacher, agreement,
                                     dominant_labels, load_teacher, student_architecture,
                                     teacher_classes, teacher_targets)
from evaluators.rand_augment import RandAugment, RandAugmentConfig
from evaluators.regularizers import BatchMixer, mix_targets, random_erasing
from search_spaces.architecture import Architecture
from search_spaces.fields import FieldError, from_mapping
from search_spaces.model import HybridNet, build_model

Metrics = dict[str, float]


@dataclass(frozen=True)
class TrainConfig:
    """How to train. The schedule is per step: linear warmup over `warmup_epochs`, then cosine
    decay to zero at the end of `epochs`. AdamW decays weights of matrices and kernels only.

    threads: torch CPU threads (None: leave torch's setting). device: "auto" (CUDA if present,
    else CPU), "cpu", "cuda" or "cuda:N". augment: random crop (`crop_padding` pixels, None =
    resolution // 8) and horizontal flip (`flip`, None = only for data sets that allow it).
    steps_per_epoch: optimiser steps per epoch (None: one pass over the training set).
    train_eval_images: measure train_loss/train_acc on a fixed seeded subset of this many
    training images (None: all; worth setting for large data sets, where the eval-mode pass over
    every training image costs about a third of an epoch).
    matched_loss: training loss at which `val_acc_at_matched_loss` is read.
    grad_clip: clip the global gradient norm to this value before each step (null: no clipping;
    ViT and CoAtNet train with 1.0).

    DeiT's recipe for little data, all off by default (DeiT: mixup 0.8, cutmix 1.0, drop_path 0.1,
    random_erasing 0.25, label_smoothing 0.1, rand_augment {ops 2, magnitude 9, magnitude_std
    0.5}, repeated_augment 3):
    distill: distil from a trained teacher (`evaluators.distillation.DistillConfig`: teacher,
      weights, mode hard|soft, temperature, alpha, teacher_pass batch|once); null: no teacher.
    mixup / cutmix: Beta(alpha, alpha) parameter of Mixup / CutMix (0: off); with both on, CutMix
      is chosen for a batch with probability `mix_switch_prob`. Labels are mixed in the same
      proportion (soft targets).
    drop_path: stochastic depth of the last block (0 at the first, linear in between), applied
      when the model is built (not part of the architecture: same arch_id, same weights).
    random_erasing: the probability of erasing one random rectangle of an image (to noise).
    rand_augment: RandAugment after the crop and flip (`evaluators.rand_augment`); null: off.
    repeated_augment: each batch holds batch_size / N distinct images, each N times (augmented
      and mixed independently): DeiT's repeated augmentation (Hoffer et al. 2020); 1: off.

    How the steps run (same arithmetic up to rounding; `benchmarks/gpu_check.py` measures each):
    bf16_autocast: forward passes under bf16 autocast on a CUDA device that supports bf16 (the
      loss and the optimiser stay fp32); false: fp32 there too. The CPU always runs fp32.
    channels_last: model and batches in channels-last memory (faster convolutions on GPU and on
      CPU); false: contiguous NCHW.
    compile: train through `torch.compile(model)` (TorchInductor; the first steps compile, and a
      C++ compiler must be installed on the CPU). Evaluation runs the eager model, same weights.
    """

    epochs: int = 10
    """Epochs of training: a trial's full budget, and the scheduler's unit of time."""
    batch_size: int = 64
    """Training images per optimiser step."""
    lr: float = 2e-3
    """AdamW's peak learning rate (after the warmup, before the cosine decay)."""
    weight_decay: float = 0.05
    """AdamW's weight decay, on matrices and kernels only (not on biases, norms and gates)."""
    warmup_epochs: float = 1.0
    """Epochs of linear warmup; then cosine decay to zero at the end of `epochs`."""
    label_smoothing: float = 0.0
    """Label smoothing of the training loss (the reported losses are plain cross-entropy)."""
    seed: int = 0
    """The seed of the initial weights, the batch order and the augmentation: the same seed gives
    the same numbers on the same machine."""
    threads: int | None = 1
    """torch CPU threads; null: leave torch's setting. A search sets it to
    `resources.cpus_per_trial`."""
    device: str = "auto"
    """`auto` (CUDA when present, else the CPU), `cpu`, `cuda` or `cuda:N`."""
    augment: bool = True
    """Random crop and horizontal flip of the training batches."""
    matched_loss: float = 0.25
    """The training loss at which `val_acc_at_matched_loss` and `gap_at_matched_loss` are read."""
    crop_padding: int | None = None
    """Zero padding of the random crop, in pixels; null: resolution // 8."""
    flip: bool | None = None
    """Horizontal flip; null: only for data sets that allow it (not digits)."""
    steps_per_epoch: int | None = None
    """Optimiser steps per epoch; null: one pass over the training set."""
    eval_batch_size: int = 512
    """Images per batch of the eval-mode measurements."""
    train_eval_images: int | None = None
    """Measure train_loss / train_acc on a fixed seeded subset of this many training images; null:
    all of them (worth setting for large data sets, where that pass costs about a third of an
    epoch)."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this value before each step; null: no clipping (ViT and
    CoAtNet train with 1.0)."""
    distill: DistillConfig | None = None
    """Distil from a trained teacher (`distill.*`); null: no teacher."""
    mixup: float = 0.0
    """The Beta(alpha, alpha) parameter of Mixup (DeiT: 0.8); 0: off."""
    cutmix: float = 0.0
    """The Beta(alpha, alpha) parameter of CutMix (DeiT: 1.0); 0: off."""
    mix_switch_prob: float = 0.5
    """With both Mixup and CutMix on, the probability that a batch gets CutMix."""
    drop_path: float = 0.0
    """Stochastic depth of the last block, 0 at the first and linear in between (DeiT: 0.1); a
    property of the built model, not of the architecture (same arch_id, same weights)."""
    random_erasing: float = 0.0
    """The probability of erasing one random rectangle of an image, to noise (DeiT: 0.25)."""
    rand_augment: RandAugmentConfig | None = None
    """RandAugment after the crop and flip (`rand_augment.*`); null: off."""
    repeated_augment: int = 1
    """Repeated augmentation: each batch holds batch_size / N distinct images, each N times,
    augmented and mixed independently (DeiT: 3); 1: off."""
    bf16_autocast: bool = True
    """On a CUDA device that supports bf16, forward passes under bf16 autocast."""
    channels_last: bool = True
    """Model and batches in channels-last memory (faster convolutions on GPU and on CPU)."""
    compile: bool = False
    """Train through `torch.compile(model)` (TorchInductor: the first steps compile; on the CPU a C++
    compiler must be installed). Evaluation runs the eager model, with the same weights."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "eval_batch_size"):
            _require(getattr(self, name) >= 1, name, "must be >= 1")
        _require(self.lr > 0 and math.isfinite(self.lr), "lr", "must be a positive number")
        _require(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        _require(self.warmup_epochs >= 0, "warmup_epochs", "must be >= 0")
        _require(0 <= self.label_smoothing < 1, "label_smoothing", "must be in [0, 1)")
        _require(self.threads is None or self.threads >= 1, "threads", "must be >= 1 or null")
        _require(self.matched_loss > 0, "matched_loss", "must be > 0")
        _require(self.crop_padding is None or self.crop_padding >= 0, "crop_padding", "must be >= 0")
        _require(self.grad_clip is None or self.grad_clip > 0, "grad_clip", "must be > 0 or null")
        _require(self.distill is None or isinstance(self.distill, DistillConfig), "distill",
                 "expected a mapping {teacher, mode, ...} or null")
        for name in ("mixup", "cutmix"):
            _require(getattr(self, name) >= 0, name, "must be >= 0 (0: off)")
        for name in ("mix_switch_prob", "random_erasing"):
            _require(0 <= getattr(self, name) <= 1, name, "must be in [0, 1]")
        _require(0 <= self.drop_path < 1, "drop_path", "must be in [0, 1)")
        _require(self.rand_augment is None or isinstance(self.rand_augment, RandAugmentConfig),
                 "rand_augment", "expected a mapping {ops, magnitude, ...} or null")
        _require(1 <= self.repeated_augment <= self.batch_size, "repeated_augment",
                 "must be between 1 (off) and batch_size")
        for name in ("steps_per_epoch", "train_eval_images"):
            value = getattr(self, name)
            _require(value is None or value >= 1, name, "must be >= 1 or null")
        _require(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
                 "device", "must be 'auto', 'cpu', 'cuda' or 'cuda:N'")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        values = dict(data) if isinstance(data, Mapping) else data
        nested = {"distill": DistillConfig, "rand_augment": RandAugmentConfig}
        parsed = {}
        for name, config_type in nested.items():
            value = values.pop(name, None) if isinstance(values, dict) else None
            if value is not None and not isinstance(value, config_type):
                value = config_type.from_dict(value)
            parsed[name] = value
        return from_mapping(cls, values, "train").replace(**parsed)

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)


def _require(ok: bool, field: str, message: str) -> None:
    if not ok:
        raise FieldError(f"train.{field}", message)


@dataclass
class TrainResult:
    """status "completed" or "diverged"; history: one metrics dict per good epoch; model: the
    trained module (after a divergence its weights are not usable)."""

    status: str
    history: list[Metrics]
    error: str | None
    model: nn.Module


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class Trainer:
    """One model on one data set, trained an epoch at a time (`run_epoch`), so that a trial can
    interleave two regimes. Seeded: the model init (global torch seed at construction) and every
    shuffle, augmentation and regularizer draw (a private generator) follow `config.seed`.

    With `config.distill`, a class-token architecture trains with DeiT's distillation token
    (`architecture` is the one trained); `teacher` shares an already loaded teacher (a trial's two
    regimes use one), else the trainer loads it."""

    def __init__(self, arch: Architecture | nn.Module, data: ImageData, config: TrainConfig,
                 teacher: Teacher | None = None):
        self.config = config
        self.device = resolve_device(config.device)
        cuda = self.device.type == "cuda"
        if not cuda and config.threads is not None:
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        if isinstance(arch, Architecture):
            self.architecture: Architecture | None = \
                student_architecture(arch) if config.distill is not None else arch
            model = _build(self.architecture, data, config.drop_path)
        else:
            if config.drop_path > 0:
                raise FieldError("train.drop_path", "stochastic depth is set when the model is "
                                                    "built: give the trainer an Architecture")
            self.architecture, model = getattr(arch, "arch", None), arch
        # channels_last: faster convolutions on GPU and, measured here, ~25% on CPU too
        self.memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.model = model.to(self.device, memory_format=self.memory_format).train()
        bf16 = config.bf16_autocast and cuda and torch.cuda.is_bf16_supported()
        self.autocast_dtype = torch.bfloat16 if bf16 else None
        # The training forward pass; evaluation keeps the eager model (other batch sizes, eval
        # mode and inference mode would each compile again). Both hold the same parameters.
        self.train_forward: nn.Module = torch.compile(self.model) if config.compile else self.model
        # Images stay where the data set keeps them (memory-mapped uint8); each batch is gathered,
        # moved and normalised on the device as it is needed.
        self.loader = BatchLoader(data.mean, data.std, self.device)
        self.train_set, self.val_set = data.train, data.val
        self.num_train = len(self.train_set)
        self.measured_set = self.train_set
        if config.train_eval_images is not None and config.train_eval_images < self.num_train:
            pick = torch.randperm(self.num_train, generator=torch.Generator().manual_seed(config.seed))
            self.measured_set = self.train_set.subset(pick[:config.train_eval_images].sort().values)
        self.batch_size = min(config.batch_size, self.num_train)
        self.steps_per_epoch = config.steps_per_epoch or math.ceil(self.num_train / self.batch_size)
        self.total_steps = config.epochs * self.steps_per_epoch
        self.warmup_steps = round(config.warmup_epochs * self.steps_per_epoch)
        self.optimizer = torch.optim.AdamW(_param_groups(self.model, config.weight_decay),
                                           lr=config.lr, fused=cuda or None)
        self.generator = torch.Generator(self.device).manual_seed(config.seed)
        # The batch order is drawn on the CPU, where the images are gathered (on CUDA a device
        # draw would make every step wait for the GPU); on the CPU it is the one generator.
        self._order_generator = self.generator if not cuda else torch.Generator().manual_seed(config.seed)
        padding = data.resolution // 8 if config.crop_padding is None else config.crop_padding
        flip = data.flip_invariant if config.flip is None else config.flip
        self.augment = Augment(padding, flip) if config.augment else None
        self.rand_augment = None if config.rand_augment is None else \
            RandAugment(config.rand_augment, data.mean, data.std)
        self.num_classes = data.num_classes
        if isinstance(self.model, HybridNet):
            self.model.set_drop_path_generator(self.generator)
        self.mixer = None
        if config.mixup > 0 or config.cutmix > 0:
            self.mixer = BatchMixer(config.mixup, config.cutmix, config.mix_switch_prob,
                                    self._order_generator)
        self.teacher, self.distillation_loss, self._teacher_train_logits = None, None, None
        self._relabelled_share = math.nan  # teacher_relabelled of the last train_steps
        if config.distill is not None:
            self.teacher = teacher or load_teacher(config.distill, data, self.device)
            self.distillation_loss = DistillationLoss(config.distill, config.label_smoothing)
            if isinstance(self.model, HybridNet):
                self.model.set_distilled_training(True)
            if config.distill.teacher_pass == "once":
                self._teacher_train_logits = self.teacher.split_logits(self.train_set,
                                                                       config.eval_batch_size)
        self.epoch = self.step = 0
        self.status, self.error = "running", None
        self.history: list[Metrics] = []
        self._order = torch.empty(0, dtype=torch.long)
        self._cursor = 0
        self._started = time.perf_counter()

    # ---- schedule and batches ------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """Linear warmup to `lr`, then cosine decay towards 0 at the end of the last epoch."""
        if step < self.warmup_steps:
            return self.config.lr * (step + 1) / self.warmup_steps
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.config.lr * 0.5 * (1.0 + math.cos(math.pi * progress))

    def _next_indices(self) -> torch.Tensor:
        """The next batch from an endless stream of seeded permutations of the training set; with
        repeated augmentation, ceil(batch_size / N) of them, each N times in a row."""
        repeats = self.config.repeated_augment
        distinct = -(-self.batch_size // repeats)
        if self._cursor + distinct > len(self._order):
            fresh = torch.randperm(self.num_train, generator=self._order_generator)
            self._order = torch.cat([self._order[self._cursor:], fresh])
            self._cursor = 0
        idx = self._order[self._cursor:self._cursor + distinct]
        self._cursor += distinct
        if repeats > 1:
            idx = idx.repeat_interleave(repeats)[:self.batch_size]
        return idx

    # ---- one epoch ----------------------------------------------------------------------------
    def run_epoch(self) -> Metrics | None:
        """Train one epoch, then measure. Returns the metrics, or None when the loss stopped being
        finite (status becomes "diverged"; `history` keeps the last good epochs)."""
        if self.status != "running":
            raise RuntimeError(f"trainer is {self.status}")
        config = self.config
        fit_loss, train_time = self.train_steps(self.steps_per_epoch)
        if self.device.type == "cpu":  # evaluation must not stack on the steps' freed heap
            release_freed_memory()
        lr = self.lr_at(self.step - 1)
        self.epoch += 1
        if not math.isfinite(fit_loss):
            return self._diverge(f"training loss became non-finite ({fit_loss}) in epoch {self.epoch}")
        train_loss, train_acc = self.evaluate(self.measured_set)
        val_loss, val_acc, val_predictions = self._measure(self.val_set, self.teacher is not None)
        if self.device.type == "cpu":  # nor the next regime's steps on evaluation's
            release_freed_memory()
        if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
            return self._diverge(f"evaluation loss became non-finite after epoch {self.epoch}")
        losses = [h["train_loss"] for h in self.history] + [train_loss]
        level = config.matched_loss
        matched_acc = value_at_loss(losses, [h["val_acc"] for h in self.history] + [val_acc], level)
        matched_val_loss = value_at_loss(losses, [h["val_loss"] for h in self.history] + [val_loss],
                                         level)
        metrics = {
            "epoch": float(self.epoch),
            "train_loss": train_loss, "train_acc": train_acc,
            "val_loss": val_loss, "val_acc": val_acc,
            "gap": val_loss - train_loss, "gap_acc": train_acc - val_acc,
            "fit": math.exp(-train_loss),
            "val_acc_at_matched_loss": matched_acc,
            "gap_at_matched_loss": matched_val_loss - level,
            "fit_loss": fit_loss, "lr": lr,
            "images_per_s": self.steps_per_epoch * self.batch_size / train_time,
            "train_time_s": train_time,
            "wall_time_s": time.perf_counter() - self._started,
        }
        if self.teacher is not None:
            metrics["teacher_agreement"] = agreement(val_predictions,
                                                     self.teacher.predictions(self.val_set))
            metrics["teacher_relabelled"] = self._relabelled_share
        if self.epoch >= config.epochs:
            self.status = "completed"
        self.history.append(metrics)
        return metrics

    def train_steps(self, steps: int) -> tuple[float, float]:
        """Take `steps` optimiser steps; returns (mean training loss, seconds). The loss is that of
        the augmented (regularized) batches (with label smoothing, and the teacher's term when
        distilling); NaN/inf once training diverged."""
        config, model = self.config, self.model
        check_each_step = self.device.type == "cpu"  # free on CPU; on CUDA it would sync
        model.train()
        started = time.perf_counter()
        loss_sum = torch.zeros((), device=self.device)
        relabelled = torch.zeros((), device=self.device)
        for _ in range(steps):
            lr = self.lr_at(self.step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            idx = self._next_indices()
            x, y = self.loader.load(self.train_set, idx)
            if self.augment is not None:
                x = self.augment(x, self.generator)
            if self.rand_augment is not None:
                x = self.rand_augment(x, self.generator)
            if config.random_erasing > 0:
                x = random_erasing(x, config.random_erasing, self.generator)
            targets, lam = y, None
            if self.mixer is not None:
                mixed = self.mixer(x)
                x, lam = mixed.images, mixed.lam
                targets = mix_targets(y, lam, self.num_classes)
            x = self._in_layout(x)
            with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                enabled=self.autocast_dtype is not None):
                logits = self.train_forward(x)
            if self.distillation_loss is not None:
                from_teacher = self._from_teacher(x, idx, lam)
                loss = self.distillation_loss(logits, targets, from_teacher)
                relabelled += (teacher_classes(from_teacher) != dominant_labels(y, lam)).sum()
            else:
                loss = F.cross_entropy(logits.float(), targets,
                                       label_smoothing=config.label_smoothing)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if config.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            self.optimizer.step()
            self.step += 1
            loss_sum += loss.detach()
            if check_each_step and not torch.isfinite(loss):
                break
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._relabelled_share = float(relabelled) / (steps * self.batch_size)
        return float(loss_sum) / steps, time.perf_counter() - started

    def _in_layout(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the model's memory format."""
        return channels_last(x) if self.config.channels_last else x.contiguous()

    def _from_teacher(self, x: torch.Tensor, idx: torch.Tensor, lam: float | None) -> torch.Tensor:
        """The teacher's targets for a batch: from its forward pass on the batch itself
        (teacher_pass batch), or from its logits of the un-augmented images, mixed like the labels
        (teacher_pass once)."""
        distill = self.config.distill
        if self._teacher_train_logits is None:
            return teacher_targets(self.teacher.logits(x), distill)
        targets = teacher_targets(self._teacher_train_logits[idx.to(self.device)], distill)
        return targets if lam is None else mix_targets(targets, lam, self.num_classes)

    def _diverge(self, message: str) -> None:
        self.status, self.error = "diverged", message
        return None

    def evaluate(self, images: ImageSplit) -> tuple[float, float]:
        """Mean cross-entropy and accuracy in eval mode, streamed in chunks of `eval_batch_size`."""
        loss, accuracy, _ = self._measure(images)
        return loss, accuracy

    def predicted_classes(self, images: ImageSplit) -> torch.Tensor:
        """(N,) the model's predicted class of every image of `images`, in eval mode."""
        return self._measure(images, keep_predictions=True)[2]

    @torch.inference_mode()
    def _measure(self, images: ImageSplit, keep_predictions: bool = False
                 ) -> tuple[float, float, torch.Tensor | None]:
        """`evaluate`, also giving the predicted class of every image when asked."""
        self.model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=self.device)
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        predictions = []
        for start in range(0, len(images), self.config.eval_batch_size):
            positions = torch.arange(start, min(start + self.config.eval_batch_size, len(images)))
            xb, yb = self.loader.load(images, positions)
            xb = self._in_layout(xb)
            with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32,
                                enabled=self.autocast_dtype is not None):
                logits = self.model(xb).float()
            loss_sum += F.cross_entropy(logits, yb, reduction="sum").double()
            predicted = logits.argmax(dim=1)
            correct += (predicted == yb).sum()
            if keep_predictions:
                predictions.append(predicted)
        self.model.train()
        return (float(loss_sum) / len(images), float(correct) / len(images),
                torch.cat(predictions) if keep_predictions else None)

    def gate_values(self) -> list[float]:
        """Per G-block mean sigmoid(lambda) of the model ([] if it has none)."""
        read = getattr(self.model, "gate_values", None)
        return [float(v) for v in read()] if callable(read) else []

    def state_dict_cpu(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu", copy=True) for k, v in self.model.state_dict().items()}


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) with channel stride 1. Unlike `x.contiguous(memory_format=torch.channels_last)`
    this also re-lays out one-channel images (for C=1 both layouts count as contiguous, but the
    convolutions pick their slower path for NCHW strides: ~20% of a step here)."""
    if x.stride(1) == 1:
        return x
    return torch.empty_like(x, memory_format=torch.channels_last).copy_(x)


def train(arch: Architecture | nn.Module, data: ImageData, config: TrainConfig,
          on_epoch: Callable[[Metrics], None] | None = None) -> TrainResult:
    """Train for `config.epochs`, calling `on_epoch(metrics)` after each. Never raises on a
    diverging run: it ends with status "diverged" and the history of its good epochs."""
    trainer = Trainer(arch, data, config)
    while trainer.status == "running":
        metrics = trainer.run_epoch()
        if metrics is not None and on_epoch is not None:
            on_epoch(metrics)
    return TrainResult(trainer.status, trainer.history, trainer.error, trainer.model)


def _build(arch: Architecture, data: ImageData, drop_path: float = 0.0) -> nn.Module:
    for field, want, have in (("resolution", data.resolution, arch.resolution),
                              ("in_channels", data.in_channels, arch.in_channels),
                              ("num_classes", data.num_classes, arch.num_classes)):
        if want != have:
            raise FieldError(f"architecture.{field}",
                              f"is {have} but the data set {data.name!r} has {want}")
    return build_model(arch, drop_path=drop_path)


NO_DECAY_NAMES = ("bias_table", "pos_embed", "class_token", "distill_token")  # as DeiT/ConViT


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Weight decay on matrices and kernels; none on biases, norm scales, gates (1-D), relative
    bias tables, position embeddings and the class token."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            skip = param.dim() < 2 or name.endswith(NO_DECAY_NAMES)
            (no_decay if skip else decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]
