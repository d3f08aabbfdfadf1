"""What a layout study runs: the data, the five layouts and how they are scaled, the data sizes and
each one's training budget, the seeds, how often a run is measured, the resources, and the two
comparisons beside the layouts (`distillation`: DeiT's claim; `convit`: ConViT's). Loaded from
YAML (`load_study_config`; `quick=True` for the built-in quick protocol), validated on load; every
error names the field (`study.sizes[1].steps: ...`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from evaluators.data import DataError
from evaluators.deformed_data import Deformation
from evaluators.distillation import check_distill_options
from evaluators.trainer import TrainConfig
from nas.config import ResourcesConfig, validate_resources
from search_spaces.fields import FieldError, check_keys, from_mapping, typed
from search_spaces.presets import LAYOUT_STUDY, VIT_STUDY

FULL_CONFIG = "layout_study.yaml"
QUICK_CONFIG = "layout_study_quick.yaml"
FIT_CONFIG = "layout_study_fit.yaml"
PROTOCOLS = {"full": FULL_CONFIG, "quick": QUICK_CONFIG, "fit": FIT_CONFIG}  # built-in configs
# The paper trains the layout study without augmentation or regularization (CoAtNet 2.2).
STUDY_TRAIN_DEFAULTS = {"batch_size": 32, "augment": False, "label_smoothing": 0.0,
                        "warmup_epochs": 1.0, "train_eval_images": 500}
# DeiT's regularizers (DeiT-Ti's values; RandAugment and repeated augmentation are options a
# comparison's `train` can add): what both arms of the distillation comparison train with, as DeiT
# trains its students.
DEIT_RECIPE = {"augment": True, "mixup": 0.8, "cutmix": 1.0, "label_smoothing": 0.1,
               "drop_path": 0.1, "random_erasing": 0.25}
# What a comparison's `train` may change: the recipe, not the budget, seed or placement.
FIXED_TRAIN_FIELDS = ("epochs", "steps_per_epoch", "seed", "threads", "device", "distill")


class StudyConfigError(FieldError):
    prefix = "study."


@dataclass(frozen=True)
class SizeConfig:
    """One training-set size: `per_class` real images of each class (null: all of them), or
    `deformed_per_class` deformations of the real training images per class (the large-data
    regime, `evaluators.deformed_data`); `steps` optimiser steps of training at this size.

    `target_loss` (the fit protocol): `steps` is then the cap, and the length of the learning-rate
    schedule; generalization at this size is read at `target_loss` itself."""

    per_class: int | None = None
    """Real training images per class; null (`all` in YAML): every one."""
    deformed_per_class: int | None = None
    """Instead: random affine deformations of the real training images per class (the large-data
    regime)."""
    steps: int = 200
    """Optimiser steps of training at this size (with `target_loss`: the cap)."""
    target_loss: float | None = None
    """The fit protocol: train each run until its measured training loss is at or below this
    level, then stop (generalization is read there); a run that never gets there is kept with the
    loss it reached. null: train every step."""
    seeds: tuple[int, ...] | None = None
    """This size's own seeds (e.g. fewer for a long capacity budget); null: the study's."""

    @property
    def label(self) -> str:
        if self.deformed_per_class is not None:
            return f"deformed {self.deformed_per_class}/class"
        return "all" if self.per_class is None else f"{self.per_class}/class"

    @property
    def deformed(self) -> bool:
        return self.deformed_per_class is not None

    def to_dict(self) -> dict[str, Any]:
        if self.deformed:
            out = {"deformed_per_class": self.deformed_per_class, "steps": self.steps}
        else:
            out = {"per_class": "all" if self.per_class is None else self.per_class,
                   "steps": self.steps}
        if self.target_loss is not None:
            out["target_loss"] = self.target_loss
        if self.seeds is not None:
            out["seeds"] = list(self.seeds)
        return out


@dataclass(frozen=True)
class ArchitecturesConfig:
    """How `search_spaces.presets.layout_study` scales the five layouts to the data: widths times
    `width_scale`, attention heads of `head_size` channels, S1's stride."""

    width_scale: float = 0.125
    """The factor on CoAtNet-0's widths."""
    head_size: int = 8
    """Channels per attention head."""
    s1_stride: int = 1
    """The stride of stage S1 (1 or 2)."""
    layouts: tuple[str, ...] = LAYOUT_STUDY
    """The layouts trained (of `C-C-C-C`, `C-C-C-T`, `C-C-T-T`, `C-T-T-T`, `ViT_REL`)."""


@dataclass(frozen=True)
class CheapReadingsConfig:
    """The readings a search trial can take alone, checked against the study's: validation accuracy
    at each fixed training-loss level of `matched_losses` (a trial has no other run to match), and
    the fit after `steps` steps. Analysis only: they change no training."""

    matched_losses: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5)
    """Fixed training-loss levels at which validation accuracy is read, as a search trial can read
    it."""
    steps: int = 100
    """The step after which the fit is read, as a short search trial reads it."""


@dataclass(frozen=True)
class DistillationComparison:
    """Comparison (a), DeiT's claim that distillation from a convnet narrows attention's
    generalization gap. At `size`, for every seed, each of `layouts` (the study's layouts, or the
    ConViT comparison's `DeiT` / `ConViT` stacks: class-token students, which distil through
    DeiT's distillation token and second head) trains twice with the study's
    training changed by `train` (default: DeiT's regularizers): without a teacher, and with
    distillation (`mode`, `temperature`, `alpha`, `teacher_pass`: `train.distill`'s options) from
    the `teacher` layout's own run without one (same seed: the same training images, recipe and
    budget; never a validation image). `teacher_size`: the teacher's own training set and budget
    instead (e.g. every training image: a teacher that knows more than its student, as DeiT's is
    stronger than DeiT; still never a validation image; it also trains, as a reference, at `size`).
    `teacher_train`: with `teacher_size`, the teacher's own recipe changes instead of `train` (DeiT's
    teacher was trained on its own recipe, not its students'); null: `train`.
    `seeds` / `evaluations` null: the study's."""

    size: SizeConfig = SizeConfig(5, None, 100)
    """The students' training set and budget."""
    layouts: tuple[str, ...] = LAYOUT_STUDY
    """The students: the study's layouts, or the ConViT comparison's `DeiT` / `ConViT` stacks."""
    teacher: str = "C-C-C-C"
    """The layout that teaches: its own run without a teacher (same seed), at `teacher_size`
    when one is given."""
    teacher_size: SizeConfig | None = None
    """The teacher's own training set and budget (never a validation image); null: the students'
    `size`."""
    seeds: tuple[int, ...] | None = None
    """The seeds of this comparison; null: the study's."""
    evaluations: int | None = None
    """Measurements per run; null: the study's."""
    train: Mapping[str, Any] = field(default_factory=lambda: dict(DEIT_RECIPE))
    """Changes to the study's training for both arms (default: DeiT's regularizers); not the budget,
    seed or placement."""
    teacher_train: Mapping[str, Any] | None = None
    """With `teacher_size`: the teacher's own recipe changes instead of `train`; null: `train`."""
    mode: str = "hard"
    """`hard` or `soft`, as `train.distill.mode`."""
    temperature: float = 1.0
    """As `train.distill.temperature`."""
    alpha: float = 0.5
    """As `train.distill.alpha`."""
    teacher_pass: str = "batch"
    """`batch` or `once`, as `train.distill.teacher_pass`."""

    @property
    def teacher_training(self) -> SizeConfig:
        """The size the teacher trains at: `teacher_size`, else the students' `size`."""
        return self.teacher_size or self.size

    @property
    def teacher_recipe(self) -> Mapping[str, Any]:
        """The `train` changes the teacher's run trains with."""
        return self.train if self.teacher_train is None else self.teacher_train

    def to_dict(self) -> dict[str, Any]:
        return {"size": self.size.to_dict(), "layouts": list(self.layouts), "teacher": self.teacher,
                "teacher_size": None if self.teacher_size is None else self.teacher_size.to_dict(),
                "seeds": None if self.seeds is None else list(self.seeds),
                "evaluations": self.evaluations, "train": train_changes_dict(self.train),
                "teacher_train": None if self.teacher_train is None
                else train_changes_dict(self.teacher_train),
                "mode": self.mode,
                "temperature": self.temperature, "alpha": self.alpha,
                "teacher_pass": self.teacher_pass}


@dataclass(frozen=True)
class ConvitComparison:
    """Comparison (b), ConViT's claim that gated positional attention (G) is ahead of plain
    attention (A) at small data sizes, the difference shrinking with more data: a DeiT-style and a
    ConViT-style stack (`search_spaces.presets.vit_study`: `width`, `depth`, `local_blocks` G
    blocks, heads of `head_size`, `patch_size` patches; matched in parameters) trained at each of
    `sizes`, with the study's training changed by `train`. `seeds` / `evaluations` null: the
    study's."""

    sizes: tuple[SizeConfig, ...] = (SizeConfig(5, None, 100), SizeConfig(20, None, 150),
                                     SizeConfig(None, None, 200))
    """The training sets and budgets both stacks train at."""
    width: int = 32
    """The stacks' width (channels)."""
    depth: int = 6
    """Blocks per stack."""
    local_blocks: int = 5
    """Gated positional (`G`) blocks at the start of the ConViT-style stack; the rest are plain `A`."""
    head_size: int = 8
    """Channels per attention head."""
    patch_size: int = 4
    """The side of the patches of the patch stem (must divide the resolution)."""
    seeds: tuple[int, ...] | None = None
    """The seeds of this comparison; null: the study's."""
    evaluations: int | None = None
    """Measurements per run; null: the study's."""
    train: Mapping[str, Any] = field(default_factory=dict)
    """Changes to the study's training (recipe only, not the budget, seed or placement)."""

    def to_dict(self) -> dict[str, Any]:
        return {"sizes": [s.to_dict() for s in self.sizes], "width": self.width,
                "depth": self.depth, "local_blocks": self.local_blocks, "head_size": self.head_size,
                "patch_size": self.patch_size,
                "seeds": None if self.seeds is None else list(self.seeds),
                "evaluations": self.evaluations, "train": train_changes_dict(self.train)}


@dataclass(frozen=True)
class StudyConfig:
    """One layout study. A cell is one layout trained at one size with one seed (the seed draws the
    subset, the initial weights and the batch order); every cell is one Ray Tune trial."""

    name: str = "layout-study"
    """The study's name."""
    data: str = "digits"
    """The data set: `digits`, `cifar10` or `imagefolder` (as `trial.data` of a search)."""
    data_path: str | None = None
    """The folder of a local data set."""
    resolution: int = 32
    """The side in pixels images are resized to."""
    val_fraction: float = 0.2
    """The share of each class held out for validation (stratified)."""
    data_seed: int = 0
    """The seed of the validation split."""
    architectures: ArchitecturesConfig = field(default_factory=ArchitecturesConfig)
    """How the five layouts are scaled to the data (`architectures.*`)."""
    sizes: tuple[SizeConfig, ...] = (SizeConfig(5, None, 100), SizeConfig(20, None, 150),
                                     SizeConfig(None, None, 200), SizeConfig(None, 1000, 320))
    """The training-set sizes, each with its training budget (`sizes[i].*`)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds: each draws a cell's subset, initial weights and batch order."""
    evaluations: int = 10
    """Measurements per run (training and validation loss and accuracy, in eval mode)."""
    heldout_per_class: int = 200
    """Deformations of validation images per class on which a deformed size's held-out loss is
    measured."""
    deformation: Deformation = field(default_factory=Deformation)
    """How a deformed size's images are made (`deformation.*`): affine ranges, clutter, noise."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(**STUDY_TRAIN_DEFAULTS))
    """How every cell trains (`train.*`, a search's `trial.train`; the study's defaults: batch 32,
    no augmentation or regularization, as the paper trains it)."""
    cheap: CheapReadingsConfig = field(default_factory=CheapReadingsConfig)
    """The readings a search trial can take alone, checked against the study's (`cheap.*`)."""
    bootstrap: int = 2000
    """Bootstrap resamples of the seeds for the 95% intervals."""
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    """CPUs, GPUs and concurrency per cell, as a search's `resources`."""
    distillation: DistillationComparison | None = None
    """Comparison (a), DeiT's claim (`distillation.*`); null: not run."""
    convit: ConvitComparison | None = None
    """Comparison (b), ConViT's claim (`convit.*`); null: not run."""

    def __post_init__(self) -> None:
        for name in ("sizes", "seeds"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        _validate(self)

    def replace(self, **changes: Any) -> "StudyConfig":
        return dataclasses.replace(self, **changes)

    def comparison_train(self, changes: Mapping[str, Any]) -> TrainConfig:
        """The study's training with a comparison's `train` changes."""
        return self.train.replace(**changes)

    def to_dict(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        data.update(
            architectures={**dataclasses.asdict(self.architectures),
                           "layouts": list(self.architectures.layouts)},
            sizes=[s.to_dict() for s in self.sizes], seeds=list(self.seeds),
            deformation=dataclasses.asdict(self.deformation),
            train=dataclasses.asdict(self.train),
            cheap={"matched_losses": list(self.cheap.matched_losses), "steps": self.cheap.steps},
            resources=dataclasses.asdict(self.resources),
            distillation=None if self.distillation is None else self.distillation.to_dict(),
            convit=None if self.convit is None else self.convit.to_dict())
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "StudyConfig":
        values = check_keys(data, "", {f.name for f in dataclasses.fields(cls)},
                            error=StudyConfigError)
        for name in ("name", "data"):
            if name in values:
                values[name] = typed(values[name], "str", name, StudyConfigError)
        for name in ("resolution", "data_seed", "evaluations", "heldout_per_class", "bootstrap"):
            if name in values:
                values[name] = typed(values[name], "int", name, StudyConfigError)
        if "data_path" in values:
            values["data_path"] = typed(values["data_path"], "str | None", "data_path",
                                        StudyConfigError)
        if "val_fraction" in values:
            values["val_fraction"] = typed(values["val_fraction"], "float", "val_fraction",
                                           StudyConfigError)
        if "architectures" in values:
            arch = dict(check_keys(values["architectures"], "architectures",
                                   {f.name for f in dataclasses.fields(ArchitecturesConfig)},
                                   error=StudyConfigError))
            if "layouts" in arch:
                arch["layouts"] = tuple(_names(arch["layouts"], "architectures.layouts"))
            values["architectures"] = from_mapping(ArchitecturesConfig, arch, "architectures",
                                                   error=StudyConfigError)
        if "sizes" in values:
            values["sizes"] = tuple(parse_size(item, f"sizes[{i}]")
                                    for i, item in enumerate(_list(values["sizes"], "sizes")))
        if "seeds" in values:
            values["seeds"] = _seeds(values["seeds"], "seeds")
        if "train" in values:
            train = {**STUDY_TRAIN_DEFAULTS, **check_keys(values["train"], "train",
                                                         {f.name for f in dataclasses.fields(TrainConfig)},
                                                         error=StudyConfigError)}
            try:
                values["train"] = TrainConfig.from_dict(train)
            except FieldError as exc:
                raise StudyConfigError(exc.field, exc.message) from None
        if "deformation" in values:
            try:
                values["deformation"] = from_mapping(Deformation, values["deformation"] or {},
                                                     "deformation", error=StudyConfigError)
            except DataError as exc:
                field_name, _, message = str(exc).partition(": ")
                raise StudyConfigError(field_name, message) from None
        if "cheap" in values:
            cheap = dict(check_keys(values["cheap"] or {}, "cheap", {"matched_losses", "steps"},
                                    error=StudyConfigError))
            if "matched_losses" in cheap:
                cheap["matched_losses"] = tuple(
                    typed(v, "float", f"cheap.matched_losses[{i}]", StudyConfigError)
                    for i, v in enumerate(_list(cheap["matched_losses"], "cheap.matched_losses")))
            values["cheap"] = from_mapping(CheapReadingsConfig, cheap, "cheap", error=StudyConfigError)
        if "resources" in values:
            values["resources"] = from_mapping(ResourcesConfig, values["resources"] or {}, "resources",
                                               error=StudyConfigError)
        if values.get("distillation") is not None:
            values["distillation"] = _distillation(values["distillation"])
        if values.get("convit") is not None:
            values["convit"] = _convit(values["convit"])
        return cls(**values)


def load_study_config(path: str | Path | None = None, quick: bool = False,
                      protocol: str | None = None) -> StudyConfig:
    """Read a study config from YAML; None = a built-in protocol: `protocol` (quick, fit or
    full; `quick=True` is `protocol="quick"`, the one sized for half an hour on two CPU cores),
    default full."""
    if path is None:
        protocol = protocol or ("quick" if quick else "full")
        if protocol not in PROTOCOLS:
            raise StudyConfigError("protocol", f"unknown built-in protocol {protocol!r} "
                                   f"(known: {sorted(PROTOCOLS)})")
        text = resources.files("nas").joinpath(PROTOCOLS[protocol]).read_text()
        where = "built-in " + PROTOCOLS[protocol]
    else:
        if not Path(path).is_file():
            raise FileNotFoundError(f"study config {str(path)!r}: no such file")
        text, where = Path(path).read_text(), str(path)
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise StudyConfigError("config", f"{where} is not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise StudyConfigError("config", f"{where}: expected a mapping at the top level")
    return StudyConfig.from_dict(data)


def _distillation(value: Any) -> DistillationComparison:
    where = "distillation"
    names = {f.name for f in dataclasses.fields(DistillationComparison)}
    values = dict(check_keys(value, where, names, error=StudyConfigError))
    if "size" in values:
        values["size"] = parse_size(values["size"], f"{where}.size")
    if values.get("teacher_size") is not None:
        values["teacher_size"] = parse_size(values["teacher_size"], f"{where}.teacher_size")
    if "layouts" in values:
        values["layouts"] = tuple(_names(values["layouts"], f"{where}.layouts",
                                         LAYOUT_STUDY + VIT_STUDY))
    if "teacher" in values:
        values["teacher"] = _names([values["teacher"]], f"{where}.teacher",
                                   LAYOUT_STUDY + VIT_STUDY)[0]
    _comparison_common(values, where)
    if values.get("teacher_train") is not None:
        if values.get("teacher_size") is None:
            raise StudyConfigError(f"{where}.teacher_train", "needs teacher_size: without it the "
                                   "teacher is the teacher layout's own student run")
        values["teacher_train"] = _train_changes(values["teacher_train"], f"{where}.teacher_train")
    return from_mapping(DistillationComparison, values, where, error=StudyConfigError)


def _convit(value: Any) -> ConvitComparison:
    where = "convit"
    values = dict(check_keys(value, where, {f.name for f in dataclasses.fields(ConvitComparison)},
                             error=StudyConfigError))
    if "sizes" in values:
        values["sizes"] = tuple(parse_size(item, f"{where}.sizes[{i}]")
                                for i, item in enumerate(_list(values["sizes"], f"{where}.sizes")))
    _comparison_common(values, where)
    return from_mapping(ConvitComparison, values, where, error=StudyConfigError)


def _comparison_common(values: dict[str, Any], where: str) -> None:
    """Parse in place what both comparisons have: seeds, evaluations and the `train` changes."""
    if values.get("seeds") is not None:
        values["seeds"] = _seeds(values["seeds"], f"{where}.seeds")
    if "train" in values:
        values["train"] = _train_changes(values["train"], f"{where}.train")


def _train_changes(value: Any, where: str) -> dict[str, Any]:
    """A comparison's recipe changes, typed and checked as TrainConfig's own fields."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    train = dict(check_keys(value or {}, where, names, error=StudyConfigError))
    fixed = sorted(set(train) & set(FIXED_TRAIN_FIELDS))
    if fixed:
        raise StudyConfigError(f"{where}.{fixed[0]}", "a comparison changes the recipe, "
                               "not the budget, seed or placement (set by the study)")
    try:
        parsed = TrainConfig.from_dict(train)
    except FieldError as exc:  # "train.FIELD": the comparison's own key in front
        raise StudyConfigError(f"{where}.{exc.field.split('.', 1)[1]}", exc.message) from None
    return {name: getattr(parsed, name) for name in train}


def train_changes_dict(changes: Mapping[str, Any]) -> dict[str, Any]:
    """A comparison's `train` changes as plain YAML values (nested options as mappings)."""
    return {name: dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
            for name, value in changes.items()}


def _seeds(value: Any, where: str) -> tuple[int, ...]:
    return tuple(typed(s, "int", f"{where}[{i}]", StudyConfigError)
                 for i, s in enumerate(_list(value, where)))


def _list(value: Any, where: str) -> list:
    if not isinstance(value, list) or not value:
        raise StudyConfigError(where, "expected a non-empty list")
    return value


def _names(value: Any, where: str, known: tuple[str, ...] = LAYOUT_STUDY) -> list[str]:
    names = _list(value, where)
    for name in names:
        if name not in known:
            raise StudyConfigError(where, f"unknown layout {name!r} (known: {list(known)})")
    return names


def parse_size(item: Any, where: str = "size") -> SizeConfig:
    """A size from its mapping (`SizeConfig.to_dict`'s form, as a config writes it)."""
    values = dict(check_keys(item, where, {"per_class", "deformed_per_class", "steps",
                                           "target_loss", "seeds"}, error=StudyConfigError))
    if values.get("seeds") is not None:
        values["seeds"] = _seeds(values["seeds"], f"{where}.seeds")
    if values.get("per_class") == "all":
        values["per_class"] = None
    elif "per_class" not in values and "deformed_per_class" not in values:
        raise StudyConfigError(where, "give per_class (a number or 'all') or deformed_per_class")
    if "per_class" in values and "deformed_per_class" in values:
        raise StudyConfigError(where, "give one of per_class and deformed_per_class")
    return from_mapping(SizeConfig, values, where, error=StudyConfigError)


def _validate(config: StudyConfig) -> None:
    if not config.sizes:
        raise StudyConfigError("sizes", "at least one data size is required")
    labels = [s.label for s in config.sizes]
    for i, size in enumerate(config.sizes):
        where = f"sizes[{i}]"
        for name in ("per_class", "deformed_per_class"):
            value = getattr(size, name)
            if value is not None and value < 1:
                raise StudyConfigError(f"{where}.{name}", f"must be >= 1, got {value}")
        if size.target_loss is not None and not (size.target_loss > 0
                                                 and math.isfinite(size.target_loss)):
            raise StudyConfigError(f"{where}.target_loss",
                                   f"must be a positive number or null, got {size.target_loss}")
        if size.seeds is not None and len(set(size.seeds)) != len(size.seeds):
            raise StudyConfigError(f"{where}.seeds", f"expected distinct seeds, got {list(size.seeds)}")
        if size.steps < config.evaluations:
            raise StudyConfigError(f"{where}.steps", f"{size.steps} steps cannot hold "
                                   f"{config.evaluations} evaluations")
        if labels.count(size.label) > 1:
            raise StudyConfigError(where, f"size {size.label!r} is listed twice")
    if not config.seeds or len(set(config.seeds)) != len(config.seeds):
        raise StudyConfigError("seeds", f"expected distinct seeds, got {list(config.seeds)}")
    if config.evaluations < 2:
        raise StudyConfigError("evaluations", "must be >= 2 (a curve needs two points)")
    for name in ("resolution", "heldout_per_class", "bootstrap"):
        if getattr(config, name) < 1:
            raise StudyConfigError(name, f"must be >= 1, got {getattr(config, name)}")
    if not 0 < config.val_fraction < 1:
        raise StudyConfigError("val_fraction", f"must be in (0, 1), got {config.val_fraction}")
    a = config.architectures
    if not a.width_scale > 0:
        raise StudyConfigError("architectures.width_scale", f"must be > 0, got {a.width_scale}")
    if a.s1_stride not in (1, 2):
        raise StudyConfigError("architectures.s1_stride", f"must be 1 or 2, got {a.s1_stride}")
    if a.head_size < 1:
        raise StudyConfigError("architectures.head_size", f"must be >= 1, got {a.head_size}")
    if not all(level > 0 for level in config.cheap.matched_losses) or config.cheap.steps < 1:
        raise StudyConfigError("cheap", "matched_losses must be > 0 and steps >= 1")
    validate_resources(config.resources, StudyConfigError)
    for where, comparison in (("distillation", config.distillation), ("convit", config.convit)):
        if comparison is not None:
            _validate_comparison(config, where, comparison)


def _validate_comparison(config: StudyConfig, where: str,
                         comparison: DistillationComparison | ConvitComparison) -> None:
    seeds = comparison.seeds
    if seeds is not None and (not seeds or len(set(seeds)) != len(seeds)):
        raise StudyConfigError(f"{where}.seeds", f"expected distinct seeds, got {list(seeds)}")
    evaluations = comparison.evaluations or config.evaluations
    if comparison.evaluations is not None and comparison.evaluations < 2:
        raise StudyConfigError(f"{where}.evaluations", "must be >= 2 (a curve needs two points)")
    distillation = isinstance(comparison, DistillationComparison)
    if distillation:
        named = [("size", comparison.size)]
        if comparison.teacher_size is not None:
            named.append(("teacher_size", comparison.teacher_size))
    else:
        named = [(f"sizes[{i}]", size) for i, size in enumerate(comparison.sizes)]
    for field_name, size in named:
        if size.steps < evaluations:
            raise StudyConfigError(f"{where}.{field_name}.steps",
                                   f"{size.steps} steps cannot hold {evaluations} evaluations")
        for name in ("per_class", "deformed_per_class"):
            value = getattr(size, name)
            if value is not None and value < 1:
                raise StudyConfigError(f"{where}.{field_name}.{name}", f"must be >= 1, got {value}")
    if distillation:
        check_distill_options(comparison.mode, comparison.temperature, comparison.alpha,
                              comparison.teacher_pass, where, StudyConfigError)
    else:
        for name in ("width", "depth", "head_size", "patch_size"):
            value = getattr(comparison, name)
            if value < 1:
                raise StudyConfigError(f"{where}.{name}", f"must be >= 1, got {value}")
        if not 0 < comparison.local_blocks < comparison.depth:
            raise StudyConfigError(f"{where}.local_blocks", f"must be in [1, depth - 1 = "
                                   f"{comparison.depth - 1}], got {comparison.local_blocks}")
        if comparison.width % comparison.head_size:
            raise StudyConfigError(f"{where}.width", f"width {comparison.width} is not divisible by "
                                   f"head_size {comparison.head_size}")
        if config.resolution % comparison.patch_size:
            raise StudyConfigError(f"{where}.patch_size", f"{comparison.patch_size} does not divide "
                                   f"the resolution {config.resolution}")
