"""The cells of a layout study and the Ray Tune trainable that trains one.

A cell is one architecture trained at one data size with one seed: the seed draws the training
subset (or the deformations), the initial weights and the batch order. The run is measured
`evaluations` times, evenly spaced over its steps, in eval mode without augmentation: training loss
and accuracy (on up to `train.train_eval_images` training images), validation loss and accuracy
(the real validation split, the same for every cell); a deformed size also measures, at the end,
the loss on deformations of validation images that training never saw.

Cells belong to one of three groups (`comparison`): the layouts (CoAtNet's study), the
distillation comparison (each layout without and with a teacher: its cells also record their
final predicted class of every validation image, so that any two can be compared, and the
teacher's run hands its weights to the driver) and the ConViT comparison (DeiT- and ConViT-style
stacks).
"""

from __future__ import annotations

import json
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from evaluators.cost import count_cost
from evaluators.data import ImageData, ImageSplit, small_data
from evaluators.deformed_data import Deformation, deformed_data, deformed_images
from evaluators.distillation import DistillConfig
from evaluators.trainer import TrainConfig, Trainer
from evaluators.trial import load_trial_data
from nas.layout_study.config import ConvitComparison, SizeConfig, StudyConfig, parse_size
from search_spaces.architecture import Architecture
from search_spaces.presets import layout_study, vit_study

FINAL_KEY = "final"
LAYOUTS, DISTILLATION, CONVIT = "layouts", "distillation", "convit"
PLAIN, DISTILLED = "plain", "distilled"  # the two arms of the distillation comparison
TEACHER_WEIGHTS, TEACHER_INPUT = "model.pt", "input.json"  # in a teacher cell's checkpoint


@dataclass(frozen=True)
class Cell:
    """One run. `layout`: the layout (or `DeiT` / `ConViT` in the ConViT comparison); `arm`,
    `teacher_cell` and `teaches` only in the distillation comparison (the distilled arm's teacher:
    the plain run of the teacher layout, same seed, at the comparison's teacher size; `teaches`:
    this run is a teacher and hands its weights on)."""

    layout: str
    size: SizeConfig
    seed: int
    architecture: Architecture
    comparison: str = LAYOUTS
    arm: str | None = None
    teacher_cell: str | None = None
    teaches: bool = False

    @property
    def cell_id(self) -> str:
        size = self.size.label.replace("/class", "pc").replace(" ", "")
        if self.comparison == DISTILLATION:
            return f"distill_{self.layout}_{size}_s{self.seed}_{self.arm}"
        if self.comparison == CONVIT:
            return f"convit_{self.layout}_{size}_s{self.seed}"
        return f"{self.layout}_{size}_s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        out = {"cell_id": self.cell_id, "layout": self.layout, "size": self.size.to_dict(),
               "size_label": self.size.label, "seed": self.seed,
               "arch": self.architecture.to_dict()}
        if self.comparison != LAYOUTS:
            out.update(comparison=self.comparison, arm=self.arm, teacher_cell=self.teacher_cell,
                       teaches=self.teaches)
        return out


def study_architectures(config: StudyConfig, num_classes: int, in_channels: int
                        ) -> dict[str, Architecture]:
    """The study's layouts at its resolution, matched in parameters (`presets.layout_study`)."""
    every = all_layouts(config, num_classes, in_channels)
    return {name: every[name] for name in config.architectures.layouts}


def all_layouts(config: StudyConfig, num_classes: int, in_channels: int) -> dict[str, Architecture]:
    a = config.architectures
    return layout_study(config.resolution, in_channels, num_classes, a.width_scale, a.head_size,
                        a.s1_stride)


def convit_architectures(config: StudyConfig, num_classes: int, in_channels: int
                         ) -> dict[str, Architecture]:
    """The ConViT comparison's DeiT- and ConViT-style stacks (`presets.vit_study`; its default
    shape when the study has no ConViT comparison)."""
    c = config.convit or ConvitComparison()
    return vit_study(config.resolution, in_channels, num_classes, c.width, c.depth, c.local_blocks,
                     c.head_size, c.patch_size)


def study_cells(config: StudyConfig, architectures: dict[str, Architecture]) -> list[Cell]:
    """Every cell of the layouts, size by size (smallest budget first), then layout, then seed
    (the size's own seeds where it has them)."""
    return [Cell(layout, size, seed, arch) for size in config.sizes
            for layout, arch in architectures.items() for seed in size.seeds or config.seeds]


def comparison_cells(config: StudyConfig, num_classes: int, in_channels: int) -> list[Cell]:
    """The cells of the comparisons the config asks for: per seed, the distillation comparison's
    teacher (at its teacher size) and plain runs (the teacher layout's among them, whether or not
    it is a student), then its distilled runs; then the ConViT comparison, size by size."""
    cells = []
    if config.distillation is not None:
        d = config.distillation
        layouts = {**all_layouts(config, num_classes, in_channels),
                   **convit_architectures(config, num_classes, in_channels)}
        plain = list(dict.fromkeys([d.teacher, *d.layouts]))
        for seed in d.seeds or config.seeds:
            teacher = Cell(d.teacher, d.teacher_training, seed, layouts[d.teacher], DISTILLATION,
                           PLAIN, teaches=True)
            students = [Cell(name, d.size, seed, layouts[name], DISTILLATION, PLAIN)
                        for name in plain]
            cells += [teacher] + [c for c in students if c.cell_id != teacher.cell_id]
            cells += [Cell(name, d.size, seed, layouts[name], DISTILLATION, DISTILLED,
                           teacher.cell_id) for name in d.layouts]
    if config.convit is not None:
        c = config.convit
        stacks = convit_architectures(config, num_classes, in_channels)
        cells += [Cell(name, size, seed, arch, CONVIT) for size in c.sizes
                  for name, arch in stacks.items() for seed in c.seeds or config.seeds]
    return cells


def training_set(data: ImageData, size: SizeConfig, seed: int,
                 deformation: Deformation = Deformation()) -> ImageData:
    if size.deformed:
        return deformed_data(data, size.deformed_per_class, seed=seed, deformation=deformation)
    if size.per_class is None:
        return data
    return small_data(data, per_class=size.per_class, seed=seed)


def cell_training(study: StudyConfig, cell: dict[str, Any]) -> tuple[TrainConfig, int]:
    """The cell's training config (its comparison's recipe, a teacher's run its teacher recipe; a
    distilled arm's teacher from `teacher_config`, the config the driver wrote for the teacher's
    run) and its evaluations.
    A run is trained in `evaluations` epochs, and `warmup_epochs` counts the study's epochs: a
    comparison measured a different number of times keeps the same warmup share of its steps."""
    comparison = cell.get("comparison", LAYOUTS)
    if comparison == LAYOUTS:
        return study.train, study.evaluations
    section = study.distillation if comparison == DISTILLATION else study.convit
    train = study.comparison_train(section.teacher_recipe if cell.get("teaches") else section.train)
    evaluations = section.evaluations or study.evaluations
    if evaluations != study.evaluations:
        train = train.replace(warmup_epochs=train.warmup_epochs * evaluations / study.evaluations)
    if cell.get("arm") == DISTILLED:
        d = study.distillation
        train = train.replace(distill=DistillConfig(cell["teacher_config"], mode=d.mode,
                                                    temperature=d.temperature, alpha=d.alpha,
                                                    teacher_pass=d.teacher_pass))
    return train, evaluations


def train_cell(config: dict[str, Any]) -> None:
    """Ray Tune trainable: train one cell, reporting each evaluation; the last report carries
    `final` = 1 and, for a deformed size, the held-out loss; a distillation cell's, its predicted
    classes of the validation images (`val_predictions`) and, for the teacher's run, its weights
    (a checkpoint). An error is reported, not raised."""
    from ray import tune

    cell, study = config["cell"], StudyConfig.from_dict(config["study"])
    threads = int(config.get("threads", 1))
    torch.set_num_threads(threads)
    try:
        arch = Architecture.from_dict(cell["arch"])
        size = parse_size(cell["size"])
        data = load_trial_data(study.data, study.data_path, study.resolution, study.val_fraction,
                               study.data_seed, arch.in_channels)
        train_data = training_set(data, size, cell["seed"], study.deformation)
        recipe, evaluations = cell_training(study, cell)
        train = recipe.replace(
            epochs=evaluations, steps_per_epoch=max(1, size.steps // evaluations),
            seed=cell["seed"], threads=threads,
            device="cuda" if study.resources.gpus_per_trial > 0 and torch.cuda.is_available()
            else "cpu")
        trainer = Trainer(arch, train_data, train)
        last: dict[str, float] = {}
        reached = False
        while trainer.status == "running":
            metrics = trainer.run_epoch()
            if metrics is None:
                break
            last = {"step": float(trainer.step), "train_loss": metrics["train_loss"],
                    "train_acc": metrics["train_acc"], "val_loss": metrics["val_loss"],
                    "val_acc": metrics["val_acc"]}
            for name in ("teacher_agreement", "teacher_relabelled"):
                if name in metrics:
                    last[name] = metrics[name]
            reached = reached_target(size, metrics["train_loss"])
            if trainer.status == "running" and not reached:
                tune.report(last)
            if reached:  # the fit protocol: this run has fit its training set
                break
        final = {**last, FINAL_KEY: 1.0, "diverged": float(trainer.status == "diverged"),
                 "train_images": float(len(train_data.train_y))}
        if size.target_loss is not None:
            final["reached_target"] = float(reached)
        completed = trainer.status == "completed" or reached
        if completed and size.deformed:
            x, y = deformed_images(data.val.images(), data.val_y, study.heldout_per_class,
                                   seed=10_000 + cell["seed"], deformation=study.deformation)
            final["heldout_loss"], final["heldout_acc"] = trainer.evaluate(ImageSplit.in_memory(x, y))
        if completed and cell.get("comparison") == DISTILLATION:
            predicted = trainer.predicted_classes(data.val).tolist()
            final["val_predictions"] = ",".join(map(str, predicted))
        if trainer.error:
            final["error_text"] = trainer.error
        if completed and cell.get("teaches"):
            with tempfile.TemporaryDirectory() as folder:
                torch.save(trainer.state_dict_cpu(), Path(folder) / TEACHER_WEIGHTS)
                (Path(folder) / TEACHER_INPUT).write_text(json.dumps(
                    {"data": data.name, "mean": list(data.mean), "std": list(data.std),
                     "class_names": list(data.class_names)}))
                tune.report(final, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report(final)
    except Exception as exc:  # noqa: BLE001 - a broken cell is recorded, the study goes on
        tune.report({FINAL_KEY: 1.0, "failed": 1.0,
                     "error_text": f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}"})


def reached_target(size: SizeConfig, train_loss: float) -> bool:
    """Whether a run of the fit protocol may stop: its measured training loss is at or below its
    size's `target_loss` (never, for a size without one)."""
    return size.target_loss is not None and train_loss <= size.target_loss


def cell_cost(arch: Architecture) -> dict[str, int]:
    cost = count_cost(arch)
    return {"params": int(cost.params), "flops": int(cost.flops)}
