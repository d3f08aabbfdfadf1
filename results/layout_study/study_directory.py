"""A layout study's directory: its config and one record per cell (layout x data size x seed).

    STUDY/study.yaml            the resolved study config
    STUDY/cells/<cell_id>.json  one record per cell, replaced atomically as the cell trains:
                                layout, size, seed, architecture, params, FLOPs, status, the
                                curve (one point per evaluation) and, for deformed sizes, the
                                loss on deformations of validation images it never saw; a
                                comparison's cell also its `comparison` (and the distillation
                                comparison's `arm`, `teacher_cell`, `val_predictions`)
    STUDY/teachers/<cell_id>.yaml, .pt   the distillation comparison's teachers, as exported
                                configs (architecture, weights, input) with their weights
    STUDY/study.csv, curves.csv, comparisons.csv, rankings.json, report.html   the outputs
                                (`results.layout_study`)
    STUDY/ray/                  Ray Tune's working files of each session (never read back)

A killed study resumes from the records: completed (or diverged) cells stand, the rest train again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

from results.run_directory import RunDirError, atomic_write, jsonable, load_json, now_iso
from results.storage import LocalStorage

CONFIG_FILE = "study.yaml"
CELLS_DIR = "cells"
TEACHERS_DIR = "teachers"
RAY_DIR = "ray"
CELL_STATUSES = ("completed", "diverged", "failed", "running")
DONE = ("completed", "diverged")  # a cell that trained its whole budget (diverged: it stopped)


def new_cell_record(cell_id: str, layout: str, size: str, seed: int, architecture: Mapping,
                    arch_id: str, params: int, flops: int, train_images: int, steps: int,
                    deformed: bool, comparison: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A cell record as it starts training; `comparison`: a comparison cell's {comparison, arm,
    teacher_cell}."""
    return {"cell_id": cell_id, "layout": layout, "size": size, "seed": seed,
            "architecture": dict(architecture), "arch_id": arch_id, "params": params,
            "flops": flops, "train_images": train_images, "steps": steps, "deformed": deformed,
            "status": "running", "curve": [], "heldout": None, "error": None,
            "started": now_iso(), "ended": None, "wall_time_s": None, **(comparison or {})}


class StudyDirectory:
    """One study's files, read and written through these methods."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __str__(self) -> str:
        return str(self.root)

    def exists(self) -> bool:
        return (self.root / CONFIG_FILE).is_file()

    def read_config(self) -> dict[str, Any]:
        path = self.root / CONFIG_FILE
        if not path.is_file():
            raise RunDirError(self.root, "not a layout-study directory (no study.yaml)")
        try:
            config = yaml.safe_load(path.read_text())
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise RunDirError(path, f"not valid YAML: {exc}") from None
        if not isinstance(config, dict):
            raise RunDirError(path, "expected a mapping (the study config)")
        return config

    def write_config(self, config: Mapping[str, Any]) -> None:
        atomic_write(self.root / CONFIG_FILE, yaml.safe_dump(dict(config), sort_keys=False))
        (self.root / CELLS_DIR).mkdir(exist_ok=True)

    def cell_path(self, cell_id: str) -> Path:
        return self.root / CELLS_DIR / f"{cell_id}.json"

    def read_cell(self, cell_id: str) -> dict[str, Any] | None:
        path = self.cell_path(cell_id)
        return load_json(path) if path.is_file() else None

    def write_cell(self, record: Mapping[str, Any]) -> None:
        import json

        atomic_write(self.cell_path(record["cell_id"]),
                     json.dumps(record, indent=1, default=jsonable, allow_nan=True))

    def read_cells(self) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
        """Every readable cell record, and (path, reason) for each unreadable one."""
        cells, unreadable = [], []
        folder = self.root / CELLS_DIR
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            if path.name.startswith("."):
                continue
            try:
                record = load_json(path)
                if record.get("status") not in CELL_STATUSES or "cell_id" not in record:
                    raise RunDirError(path, "not a cell record")
                cells.append(record)
            except RunDirError as exc:
                unreadable.append((str(path), str(exc).removeprefix(f"{path}: ")))
        return cells, unreadable

    def teacher_config_path(self, cell_id: str) -> Path:
        return self.root / TEACHERS_DIR / f"{cell_id}.yaml"

    def write_teacher(self, cell_id: str, architecture: Mapping[str, Any], arch_id: str,
                      weights: bytes, preprocessing: Mapping[str, Any]) -> Path:
        """A teacher run's weights and an exported config of it (the form `train.distill.teacher`
        reads), the weights first: a config on disk always has its weights."""
        folder = self.root / TEACHERS_DIR
        folder.mkdir(exist_ok=True)
        LocalStorage(folder).write_bytes(f"{cell_id}.pt", weights)
        path = self.teacher_config_path(cell_id)
        atomic_write(path, yaml.safe_dump({"architecture": dict(architecture), "arch_id": arch_id,
                                           "weights": f"{cell_id}.pt", "input": dict(preprocessing)},
                                          sort_keys=False))
        return path

    def write_output(self, name: str, text: str) -> Path:
        path = self.root / name
        atomic_write(path, text)
        return path
