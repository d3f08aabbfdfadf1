"""The cells of a layout study and the Ray Tune trainable that trains one.

A cell is one layout trained at one data size with one seed: the seed draws the training subset
(or the deformations), the initial weights and the batch order. The run is measured `evaluations`
times, evenly spaced over its steps, in eval mode without augmentation: training loss and accuracy
(on up to `train.train_eval_images` training images), validation loss and accuracy (the real
validation split, the same for every cell); a deformed size also measures, at the end, the loss on
deformations of validation images that training never saw.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

import torch

from evaluators.cost import count_cost
from evaluators.data import ImageData, ImageSplit, small_data
from evaluators.deformed_data import deformed_data, deformed_images
from evaluators.trainer import Trainer
from evaluators.trial import load_trial_data
from nas.layout_study.config import SizeConfig, StudyConfig, parse_size
from search_spaces.architecture import Architecture
from search_spaces.presets import layout_study

FINAL_KEY = "final"


@dataclass(frozen=True)
class Cell:
    layout: str
    size: SizeConfig
    seed: int
    architecture: Architecture

    @property
    def cell_id(self) -> str:
        size = self.size.label.replace("/class", "pc").replace(" ", "")
        return f"{self.layout}_{size}_s{self.seed}"

    def to_dict(self) -> dict[str, Any]:
        return {"cell_id": self.cell_id, "layout": self.layout, "size": self.size.to_dict(),
                "size_label": self.size.label, "seed": self.seed,
                "arch": self.architecture.to_dict()}


def study_architectures(config: StudyConfig, num_classes: int, in_channels: int
                        ) -> dict[str, Architecture]:
    """The study's layouts at its resolution, matched in parameters (`presets.layout_study`)."""
    a = config.architectures
    every = layout_study(config.resolution, in_channels, num_classes, a.width_scale, a.head_size,
                         a.s1_stride)
    return {name: every[name] for name in a.layouts}


def study_cells(config: StudyConfig, architectures: dict[str, Architecture]) -> list[Cell]:
    """Every cell, size by size (smallest budget first), then layout, then seed."""
    return [Cell(layout, size, seed, arch) for size in config.sizes
            for layout, arch in architectures.items() for seed in config.seeds]


def training_set(data: ImageData, size: SizeConfig, seed: int) -> ImageData:
    if size.deformed:
        return deformed_data(data, size.deformed_per_class, seed=seed)
    if size.per_class is None:
        return data
    return small_data(data, per_class=size.per_class, seed=seed)


def train_cell(config: dict[str, Any]) -> None:
    """Ray Tune trainable: train one cell, reporting each evaluation; the last report carries
    `final` = 1 and, for a deformed size, the held-out loss. An error is reported, not raised."""
    from ray import tune

    cell, study = config["cell"], StudyConfig.from_dict(config["study"])
    threads = int(config.get("threads", 1))
    torch.set_num_threads(threads)
    try:
        arch = Architecture.from_dict(cell["arch"])
        size = parse_size(cell["size"])
        data = load_trial_data(study.data, study.data_path, study.resolution, study.val_fraction,
                               study.data_seed, arch.in_channels)
        train_data = training_set(data, size, cell["seed"])
        train = study.train.replace(
            epochs=study.evaluations, steps_per_epoch=max(1, size.steps // study.evaluations),
            seed=cell["seed"], threads=threads,
            device="cuda" if study.resources.gpus_per_trial > 0 and torch.cuda.is_available()
            else "cpu")
        trainer = Trainer(arch, train_data, train)
        last: dict[str, float] = {}
        while trainer.status == "running":
            metrics = trainer.run_epoch()
            if metrics is None:
                break
            last = {"step": float(trainer.step), "train_loss": metrics["train_loss"],
                    "train_acc": metrics["train_acc"], "val_loss": metrics["val_loss"],
                    "val_acc": metrics["val_acc"]}
            if trainer.status == "running":
                tune.report(last)
        final = {**last, FINAL_KEY: 1.0, "diverged": float(trainer.status == "diverged"),
                 "train_images": float(len(train_data.train_y))}
        if trainer.status == "completed" and size.deformed:
            x, y = deformed_images(data.val.images(), data.val_y, study.heldout_per_class,
                                   seed=10_000 + cell["seed"])
            final["heldout_loss"], final["heldout_acc"] = trainer.evaluate(ImageSplit.in_memory(x, y))
        if trainer.error:
            final["error_text"] = trainer.error
        tune.report(final)
    except Exception as exc:  # noqa: BLE001 - a broken cell is recorded, the study goes on
        tune.report({FINAL_KEY: 1.0, "failed": 1.0,
                     "error_text": f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}"})


def cell_cost(arch: Architecture) -> dict[str, int]:
    cost = count_cost(arch)
    return {"params": int(cost.params), "flops": int(cost.flops)}

