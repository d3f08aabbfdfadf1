"""Distillation from a trained teacher, as DeiT (Touvron et al. 2020) trains attention on little
data.

- The teacher: an exported config with trained weights from any earlier run (`results.export`
  writes them; read here through `evaluators.saved_model`), or `preset:NAME` with a weights file.
  It runs in eval mode, on the trial's device, fed the student's batches re-normalised to the
  mean/std its weights expect. A teacher for another class count, input size or channel count is
  an error naming `train.distill.teacher`.
- Its targets: `teacher_pass: batch` (DeiT's way) runs the teacher on every augmented (and mixed)
  batch the student sees; `teacher_pass: once` computes its logits on the un-augmented training
  images once per training set and reuses them (with Mixup/CutMix, mixed like the labels).
- The loss (`DistillationLoss`), with `alpha` = 0.5 by default:
  hard: (1 - alpha) CE(class head, labels) + alpha CE(distillation head, teacher's argmax);
  soft: (1 - alpha) CE(class head, labels) + alpha T^2 KL(teacher || student) at temperature T,
  the KL summed over classes and averaged over the batch (the paper's equation; DeiT's code
  divides the sum by batch x classes instead). A model with DeiT's distillation token gives each
  term its own head; a single-head model gives both terms its one output.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from evaluators.batches import BatchLoader, ImageSplit
from evaluators.data import ImageData
from evaluators.saved_model import SavedModelError, load_weights, read_saved_model, rebuild
from search_spaces.architecture import Architecture, ArchitectureError
from search_spaces.fields import FieldError, from_mapping
from search_spaces.model import build_model
from search_spaces.presets import PRESET_NAMES, get_preset

DISTILL_MODES = ("hard", "soft")
TEACHER_PASSES = ("batch", "once")
PRESET_PREFIX = "preset:"


@dataclass(frozen=True)
class DistillConfig:
    """`train.distill`: distil from a trained teacher.

    teacher: an exported config with weights (`hybrid-nas export`'s YAML, or any file of that
      form), or `preset:NAME` (a named preset built for the trial's data) with `weights`.
    weights: a state_dict file (.pt): required for a preset; for a config, replaces the weights it
      records. Paths are made absolute when the config is read (trials run in other folders).
    mode: `hard` (the teacher's argmax as a second label, DeiT's choice) or `soft` (KL at
      `temperature`). alpha: the weight of the teacher's term, 1 - alpha that of the labels'.
    teacher_pass: `batch` (the teacher runs on every augmented batch) or `once` (its logits on the
      un-augmented training images, computed once and reused).
    """

    teacher: str
    """An exported config with trained weights (`hybrid-nas export`'s YAML), or `preset:NAME` (a
    named preset built for the trial's data) with `weights`."""
    weights: str | None = None
    """A state_dict file (.pt): required for a preset; for a config, it replaces the weights the
    config records."""
    mode: str = "hard"
    """`hard` (the teacher's argmax as a second label, DeiT's choice) or `soft` (KL divergence at
    `temperature`)."""
    temperature: float = 1.0
    """The softmax temperature T of `soft` distillation (its term is scaled by T^2)."""
    alpha: float = 0.5
    """The weight of the teacher's term; the labels' term weighs 1 - alpha."""
    teacher_pass: str = "batch"
    """`batch` (the teacher runs on every augmented, mixed batch, as DeiT does) or `once` (its
    logits of the un-augmented training images, computed once and reused)."""

    def __post_init__(self) -> None:
        if not self.teacher:
            raise FieldError("train.distill.teacher", "give an exported config or preset:NAME")
        if self.teacher.startswith(PRESET_PREFIX):
            name = self.teacher[len(PRESET_PREFIX):]
            if name not in PRESET_NAMES:
                raise FieldError("train.distill.teacher",
                                 f"unknown preset {name!r} (known: {', '.join(PRESET_NAMES)})")
            if self.weights is None:
                raise FieldError("train.distill.weights", "a preset teacher needs its trained "
                                                          "weights (a state_dict .pt file)")
        else:
            object.__setattr__(self, "teacher", _absolute_file(self.teacher, "teacher"))
        if self.weights is not None:
            object.__setattr__(self, "weights", _absolute_file(self.weights, "weights"))
        check_distill_options(self.mode, self.temperature, self.alpha, self.teacher_pass)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DistillConfig":
        return from_mapping(cls, data, "train.distill", required={"teacher"})


def check_distill_options(mode: str, temperature: float, alpha: float, teacher_pass: str,
                          where: str = "train.distill",
                          error: type[FieldError] = FieldError) -> None:
    """`error` naming `where`.FIELD unless the options are valid."""
    if mode not in DISTILL_MODES:
        raise error(f"{where}.mode", f"must be one of {list(DISTILL_MODES)}, got {mode!r}")
    if teacher_pass not in TEACHER_PASSES:
        raise error(f"{where}.teacher_pass",
                    f"must be one of {list(TEACHER_PASSES)}, got {teacher_pass!r}")
    if not temperature > 0:
        raise error(f"{where}.temperature", f"must be > 0, got {temperature}")
    if not 0 <= alpha <= 1:
        raise error(f"{where}.alpha", f"must be in [0, 1], got {alpha}")


def _absolute_file(path: str, field: str) -> str:
    absolute = os.path.abspath(os.path.expanduser(path))
    if not os.path.isfile(absolute):
        raise FieldError(f"train.distill.{field}", f"no such file: {absolute}")
    return absolute


class Teacher:
    """A trained model in eval mode that gives distillation targets for a student's batches.

    `model` expects images normalised with `mean`/`std` (None: the student's); the student's
    batches, normalised with the data's own, are re-normalised per channel on the way in.
    """

    def __init__(self, model: nn.Module, architecture: Architecture, data: ImageData,
                 device: torch.device, mean: tuple[float, ...] | None = None,
                 std: tuple[float, ...] | None = None):
        self.architecture = architecture
        self.device = device
        self.model = model.to(device, memory_format=torch.channels_last).eval()
        for parameter in self.model.parameters():
            parameter.requires_grad_(False)
        self.loader = BatchLoader(data.mean, data.std, device)
        # x_teacher = (x * std_s + mean_s - mean_t) / std_t, per channel
        def channels(values: tuple[float, ...]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1)

        mean_s, std_s = channels(data.mean), channels(data.std)
        mean_t = mean_s if mean is None else channels(mean)
        std_t = std_s if std is None else channels(std)
        self.renormalise = None
        if not (torch.equal(mean_s, mean_t) and torch.equal(std_s, std_t)):
            self.renormalise = (std_s / std_t, (mean_s - mean_t) / std_t)
        self._logits: dict[int, tuple[ImageSplit, torch.Tensor]] = {}

    @torch.no_grad()  # not inference mode: the logits become training targets of a student
    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) student-normalised images -> (B, num_classes) float32 teacher logits."""
        if self.renormalise is not None:
            scale, shift = self.renormalise
            images = images * scale + shift
        autocast = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=autocast):
            return self.model(images).float()

    def split_logits(self, split: ImageSplit, batch_size: int = 512) -> torch.Tensor:
        """(N, num_classes) logits of every image of `split`, un-augmented, computed once per
        split and kept (on the device)."""
        held = self._logits.get(id(split))
        if held is None or held[0] is not split:
            chunks = []
            for start in range(0, len(split), batch_size):
                positions = torch.arange(start, min(start + batch_size, len(split)))
                chunks.append(self.logits(self.loader.load(split, positions)[0]))
            held = (split, torch.cat(chunks))
            self._logits[id(split)] = held
        return held[1]

    def predictions(self, split: ImageSplit) -> torch.Tensor:
        """(N,) the teacher's predicted class of every image of `split` (computed once)."""
        return self.split_logits(split).argmax(dim=1)


def load_teacher(config: DistillConfig, data: ImageData, device: torch.device) -> Teacher:
    """The teacher `config` names, checked against the student's data (class count, input size
    and channels, class names when recorded); errors name `train.distill.teacher`."""
    where = "train.distill.teacher"
    try:
        if config.teacher.startswith(PRESET_PREFIX):
            arch = get_preset(config.teacher[len(PRESET_PREFIX):], resolution=data.resolution,
                              num_classes=data.num_classes, in_channels=data.in_channels)
            model = build_model(arch)
            load_weights(model, config.weights)
            preprocessing = None
        else:
            saved = read_saved_model(config.teacher)
            if config.weights is None and saved.weights is None:
                raise FieldError(where, f"{config.teacher}: records no trained weights (give "
                                        "train.distill.weights)")
            arch, preprocessing = saved.architecture, saved.input or None
            check_teacher_fits(arch, data, preprocessing)
            model, _ = rebuild(saved, config.weights)
    except (SavedModelError, ArchitectureError) as exc:
        raise FieldError(where, str(exc)) from None
    mean, std = (preprocessing or {}).get("mean"), (preprocessing or {}).get("std")
    return Teacher(model, arch, data, device, mean, std)


def check_teacher_fits(arch: Architecture, data: ImageData,
                       preprocessing: Mapping[str, Any] | None) -> None:
    """FieldError naming `train.distill.teacher` unless the teacher reads the student's images
    and predicts the same classes."""
    for field, teacher_has, data_has in (("num_classes", arch.num_classes, data.num_classes),
                                         ("resolution", arch.resolution, data.resolution),
                                         ("in_channels", arch.in_channels, data.in_channels)):
        if teacher_has != data_has:
            raise FieldError("train.distill.teacher",
                             f"the teacher has {field} {teacher_has}, the data set {data.name!r} "
                             f"{data_has}: a teacher must read the student's images and predict "
                             "its classes")
    names = (preprocessing or {}).get("class_names")
    if names is not None and list(names) != list(data.class_names):
        raise FieldError("train.distill.teacher",
                         f"the teacher's classes {list(names)} are not the data set's "
                         f"{list(data.class_names)} (in that order)")


def student_architecture(arch: Architecture) -> Architecture:
    """The architecture a distilled student trains as: DeiT's design gives a class-token head a
    distillation token and a second head; a pooled head distils through its single output."""
    return arch.replace(distill_token=True) if arch.head == "token" else arch


def teacher_targets(teacher_logits: torch.Tensor, config: DistillConfig) -> torch.Tensor:
    """What the student learns from the teacher: its argmax (hard, (B,) class indices) or its
    probabilities at the temperature (soft, (B, num_classes))."""
    if config.mode == "hard":
        return teacher_logits.argmax(dim=1)
    return F.softmax(teacher_logits / config.temperature, dim=1)


class DistillationLoss:
    """The training loss with a teacher (see the module docstring). `outputs`: the logits of a
    single-head model, or (class-head logits, distillation-head logits); `targets`: the labels
    ((B,) indices or (B, K) mixed probabilities); `from_teacher`: `teacher_targets` (possibly
    mixed into (B, K) probabilities)."""

    def __init__(self, config: DistillConfig, label_smoothing: float = 0.0):
        self.config = config
        self.label_smoothing = label_smoothing

    def __call__(self, outputs: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
                 targets: torch.Tensor, from_teacher: torch.Tensor) -> torch.Tensor:
        logits, logits_dist = outputs if isinstance(outputs, tuple) else (outputs, outputs)
        logits, logits_dist = logits.float(), logits_dist.float()
        base = F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)
        alpha = self.config.alpha
        if self.config.mode == "hard":
            teacher_term = F.cross_entropy(logits_dist, from_teacher)
        else:
            t = self.config.temperature
            if from_teacher.dim() == 1:
                from_teacher = F.one_hot(from_teacher, logits_dist.shape[1]).float()
            teacher_term = F.kl_div(F.log_softmax(logits_dist / t, dim=1), from_teacher,
                                    reduction="batchmean") * (t * t)
        return (1.0 - alpha) * base + alpha * teacher_term


def teacher_classes(from_teacher: torch.Tensor) -> torch.Tensor:
    """(B,) the class the teacher's targets put first: (B,) indices as they are, (B, K)
    probabilities (soft, or mixed) by their argmax."""
    return from_teacher.argmax(dim=1) if from_teacher.dim() == 2 else from_teacher


def dominant_labels(labels: torch.Tensor, lam: float | None) -> torch.Tensor:
    """(B,) each training image's label as the loss weighs it: its own, or under Mixup/CutMix
    (`lam` its own label's weight, the partner's that of the batch reversed) the heavier one."""
    return labels if lam is None or lam >= 0.5 else labels.flip(0)


def agreement(student_predictions: torch.Tensor, teacher_predictions: torch.Tensor) -> float:
    """The share of images on which the student predicts the teacher's class."""
    return float((student_predictions == teacher_predictions).float().mean())
