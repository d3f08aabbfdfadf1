"""`run_study(config, out_dir)`: the layout study, every cell a Ray Tune trial, then its outputs.

    from nas.layout_study import load_study_config, run_study
    result = run_study(load_study_config(quick=True), "studies/quick")
    result = run_study(None, "studies/quick", resume=True)   # continue a killed study

Cells already completed (or diverged) are never trained again; a Ctrl-C or SIGTERM stops the
running cells as a search does (`nas.signals`). When every cell has an outcome, the readings,
rankings and report are written (`results.layout_study`).

Cells train in two phases of one Ray session: first every cell without a teacher (the layouts,
the ConViT comparison, the distillation comparison's plain runs, its teachers among them), then
the distilled runs, each from the teacher the driver saved from the first phase
(STUDY/teachers/<cell_id>.yaml: an exported config with its weights). A distilled run whose
teacher did not complete is recorded failed, naming it.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ray import tune

from evaluators.data import describe_data
from nas.layout_study.cells import (DISTILLED, LAYOUTS, TEACHER_INPUT, TEACHER_WEIGHTS, Cell,
                                    cell_cost, comparison_cells, study_architectures, study_cells,
                                    train_cell)
from nas.layout_study.config import StudyConfig, train_changes_dict
from nas.layout_study.proxies import layout_proxies
from nas.ray_session import check_resources, quiet_ray, start_ray
from nas.signals import SearchStopped, StopSignals
from results.layout_study.comparisons import comparison_readings, comparison_table
from results.layout_study.objective_agreement import objective_agreement
from results.layout_study.rankings import rankings
from results.layout_study.readings import cell_table, curves_table
from results.layout_study.report import ProtocolCurves, render_study_report
from results.layout_study.study_directory import DONE, RAY_DIR, StudyDirectory, new_cell_record
from results.run_directory import now_iso
from search_spaces.architecture import Architecture

NUMBERS = ("step", "train_loss", "train_acc", "val_loss", "val_acc")
OPTIONAL_NUMBERS = ("teacher_agreement", "teacher_relabelled")  # distilled runs


@dataclass(frozen=True)
class StudyResult:
    """The study's directory, whether it was stopped before every cell had an outcome (and by which
    signal), and rankings.json's content (None until written)."""

    path: Path
    interrupted: bool
    rankings: dict[str, Any] | None
    signal: int | None = None


class CellRecords(tune.Callback):
    """Writes STUDY/cells/<cell_id>.json as each cell trains (on the driver)."""

    def __init__(self, study: StudyDirectory, costs: dict[str, dict[str, int]], total: int):
        self.study = study
        self.costs = costs
        self.total = total
        self.t0 = time.time()
        self.started: dict[str, float] = {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        cell = trial.config["cell"]
        self.started[cell["cell_id"]] = time.time()
        self.study.write_cell(_new_record(cell, self.costs))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        record = self.study.read_cell(trial.config["cell"]["cell_id"])
        if record is None:
            return
        if "step" in result:
            point = {k: float(result[k]) for k in NUMBERS + OPTIONAL_NUMBERS if k in result}
            record["curve"] = [p for p in record["curve"] if p["step"] != point["step"]] + [point]
        if result.get("final"):
            record["status"] = ("failed" if result.get("failed") else
                                "diverged" if result.get("diverged") else "completed")
            record["error"] = result.get("error_text")
            record["train_images"] = int(result.get("train_images", 0))
            if "reached_target" in result:
                record["reached_target"] = bool(result["reached_target"])
            if "heldout_loss" in result:
                record["heldout"] = {"loss": result["heldout_loss"], "acc": result["heldout_acc"]}
            if "val_predictions" in result:
                record["val_predictions"] = result["val_predictions"]
            record["ended"] = now_iso()
            record["wall_time_s"] = round(time.time() - self.started.get(record["cell_id"], time.time()), 2)
        self.study.write_cell(record)
        if result.get("final"):
            self._progress(record)

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any,
                      **info: Any) -> None:
        """A teacher's run: its weights and input normalisation become STUDY/teachers/<cell>."""
        cell = trial.config["cell"]
        folder = checkpoint.path.rstrip("/")
        with checkpoint.filesystem.open_input_stream(f"{folder}/{TEACHER_WEIGHTS}") as f:
            weights = f.read()
        with checkpoint.filesystem.open_input_stream(f"{folder}/{TEACHER_INPUT}") as f:
            preprocessing = json.loads(f.read())
        self.study.write_teacher(cell["cell_id"], cell["arch"], _arch_id(cell["arch"]), weights,
                                 preprocessing)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self.study.read_cell(trial.config["cell"]["cell_id"])
        if record is not None:
            record.update(status="failed", ended=now_iso(),
                          error=f"the trial's process failed: {getattr(trial, 'error_file', '')}")
            self.study.write_cell(record)
            self._progress(record)

    def _progress(self, record: dict[str, Any]) -> None:
        cells, _ = self.study.read_cells()
        done = sum(c["status"] in DONE for c in cells)
        last = record["curve"][-1] if record["curve"] else {}
        detail = (f"val acc {last['val_acc']:.3f}, train loss {last['train_loss']:.3f}"
                  if last else record.get("error") or "")
        print(f"[{time.time() - self.t0:5.0f}s] {done}/{self.total} cells: {record['cell_id']} "
              f"{record['status']} ({detail}, {record['wall_time_s']} s)", flush=True)


def run_study(config: StudyConfig | None, out_dir: str | Path, resume: bool = False,
              address: str | None = None, beside: ProtocolCurves | None = None) -> StudyResult:
    """Run (or with `resume=True` continue) the layout study in `out_dir`; returns its result.
    `beside`: another protocol's runs, drawn in the report's Figure 2 under this one's."""
    started = time.time()
    study = StudyDirectory(out_dir)
    if resume:
        config = StudyConfig.from_dict(study.read_config()) if config is None else config
    else:
        if config is None:
            raise ValueError("run_study: give a StudyConfig (or resume=True)")
        if study.root.exists() and any(not p.name.startswith(".") for p in study.root.iterdir()):
            raise ValueError(f"{study.root}: study directory exists and is not empty "
                             f"(continue it with --resume {study.root})")
    info = describe_data(config.data, config.data_path)
    architectures = study_architectures(config, info.num_classes, info.in_channels)
    layout_cells = study_cells(config, architectures)
    cells = layout_cells + comparison_cells(config, info.num_classes, info.in_channels)
    named = {**architectures, **{cell.layout: cell.architecture for cell in cells}}
    costs = {name: cell_cost(arch) for name, arch in named.items()}
    for name, cost in costs.items():
        print(f"{name:8s} params {cost['params']:>10,}  FLOPs {cost['flops']:>13,}  "
              f"({named[name].layout}, depths "
              f"{'-'.join(str(s.depth) for s in named[name].stages)})", flush=True)
    study.write_config(config.to_dict())
    todo = [c for c in cells if not _done(study, c)]
    compared = len(cells) - len(layout_cells)
    seeds = sorted({len(s.seeds or config.seeds) for s in config.sizes})
    print(f"study: {len(cells)} cells ({len(config.architectures.layouts)} layouts x "
          f"{len(config.sizes)} sizes x {'-'.join(map(str, seeds))} seeds"
          + (f", {compared} in the comparisons" if compared else "")
          + f"), {len(todo)} to train -> {study.root}", flush=True)
    phases = [[c for c in todo if c.arm != DISTILLED], [c for c in todo if c.arm == DISTILLED]]
    with StopSignals() as stop:
        try:
            if todo:
                _train(study, config, phases, costs, len(cells), address, stop)
        except SearchStopped as exc:
            stop.received = exc.signum
    records, _ = study.read_cells()
    finished = {r["cell_id"] for r in records if r["status"] in ("completed", "diverged", "failed")}
    missing = [c.cell_id for c in cells if c.cell_id not in finished]
    if missing:
        print(f"study: INTERRUPTED with {len(missing)} cells to go: resume with "
              f"`hybrid-nas study --resume {study.root}`", flush=True)
        return StudyResult(study.root, True, None, stop.received)
    ranks = write_outputs(study, config, [r for r in records if r["cell_id"] in
                                          {c.cell_id for c in cells}], time.time() - started,
                          beside)
    return StudyResult(study.root, False, ranks, stop.received)


def _done(study: StudyDirectory, cell: Cell) -> bool:
    """Whether a cell stands: it trained its budget, and a teacher's run also left its teacher."""
    if (study.read_cell(cell.cell_id) or {}).get("status") not in DONE:
        return False
    return not cell.teaches or study.teacher_config_path(cell.cell_id).is_file()


def _new_record(cell: dict[str, Any], costs: dict[str, dict[str, int]]) -> dict[str, Any]:
    comparison = ({k: cell[k] for k in ("comparison", "arm", "teacher_cell")}
                  if cell.get("comparison", LAYOUTS) != LAYOUTS else None)
    return new_cell_record(cell["cell_id"], cell["layout"], cell["size_label"], cell["seed"],
                           cell["arch"], _arch_id(cell["arch"]), train_images=0,
                           steps=int(cell["size"]["steps"]),
                           deformed="deformed_per_class" in cell["size"],
                           comparison=comparison, **costs[cell["layout"]])


def _with_teacher(study: StudyDirectory, cell: Cell, costs: dict[str, dict[str, int]]
                  ) -> dict[str, Any] | None:
    """A distilled cell's config with its teacher's exported config; None (and the cell recorded
    failed) when the teacher's run left none."""
    path = study.teacher_config_path(cell.teacher_cell)
    if path.is_file():
        return {**cell.to_dict(), "teacher_config": str(path.resolve())}
    teacher = study.read_cell(cell.teacher_cell) or {"status": "missing"}
    record = _new_record(cell.to_dict(), costs)
    record.update(status="failed", ended=now_iso(),
                  error=f"its teacher {cell.teacher_cell} did not complete "
                        f"(status {teacher['status']}): no teacher to distil from")
    study.write_cell(record)
    print(f"study: {cell.cell_id} failed: {record['error']}", flush=True)
    return None


def _train(study: StudyDirectory, config: StudyConfig, phases: list[list[Cell]],
           costs: dict[str, dict[str, int]], total: int, address: str | None,
           stop: StopSignals) -> None:
    quiet_ray()
    import ray

    started_ray = start_ray(config.resources, address)
    stop.reinstall()
    try:
        check_resources(config.resources)
        records = CellRecords(study, costs, total)
        for phase in phases:
            if stop.received is not None:
                break
            configs = [c.to_dict() if c.arm != DISTILLED else _with_teacher(study, c, costs)
                       for c in phase]
            configs = [c for c in configs if c is not None]
            if configs:
                _fit(study, config, configs, records, stop)
    finally:
        if started_ray:
            ray.shutdown()


def _fit(study: StudyDirectory, config: StudyConfig, cells: list[dict[str, Any]],
         records: CellRecords, stop: StopSignals) -> None:
    r = config.resources
    session = datetime.now(timezone.utc).strftime("session-%Y%m%d-%H%M%S-%f")
    tuner = tune.Tuner(
        tune.with_resources(train_cell, {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial}),
        param_space={"cell": tune.grid_search(cells), "study": config.to_dict(),
                     "threads": r.threads},
        tune_config=tune.TuneConfig(num_samples=1, max_concurrent_trials=r.max_concurrent_trials,
                                    reuse_actors=True, trial_dirname_creator=_trial_dirname),
        run_config=tune.RunConfig(name=session, storage_path=str(study.root / RAY_DIR),
                                  callbacks=[records],
                                  failure_config=tune.FailureConfig(max_failures=0),
                                  verbose=0))
    stop.tuning = True
    try:
        tuner.fit()
    finally:
        stop.tuning = False


def rewrite_outputs(out_dir: str | Path, beside: str | Path | None = None) -> dict[str, Any]:
    """Write a finished study's outputs again from its records (e.g. after an upgrade, or to draw
    another protocol's Figure 2 `beside` it: a folder with that study's study.csv and
    curves.csv); the wall time already recorded is kept."""
    study = StudyDirectory(out_dir)
    if not study.exists():
        raise FileNotFoundError(f"{study.root}: not a study directory (no study.yaml)")
    config = StudyConfig.from_dict(study.read_config())
    records, _ = study.read_cells()
    wall = None
    if (study.root / "rankings.json").is_file():
        wall = json.loads((study.root / "rankings.json").read_text()).get("wall_time_s")
    return write_outputs(study, config, records, wall,
                         None if beside is None else ProtocolCurves.read(beside))


def write_outputs(study: StudyDirectory, config: StudyConfig, records: list[dict[str, Any]],
                  wall_time_s: float | None = None,
                  beside: ProtocolCurves | None = None) -> dict[str, Any]:
    """study.csv, curves.csv, rankings.json and report.html from the cell records (and
    comparisons.csv when the study ran a comparison); `beside`: another protocol's runs, whose
    Figure 2 the report draws under this one's."""
    info = describe_data(config.data, config.data_path)
    sizes = [s.label for s in config.sizes]
    layout_records = [r for r in records if r.get("comparison", LAYOUTS) == LAYOUTS]
    table = cell_table(layout_records, sizes, info.num_classes, config.cheap.matched_losses,
                       config.cheap.steps, {s.label: s.target_loss for s in config.sizes})
    architectures = study_architectures(config, info.num_classes, info.in_channels)
    table = table.merge(layout_proxies(config, architectures), on=["layout", "seed"], how="left")
    curves = curves_table(layout_records)
    ranks = rankings(table, curves, sizes, config.bootstrap)
    ranks.update(objective_agreement(table, ranks))
    compared = comparison_table(records)
    ranks.update(comparison_readings(
        compared, config.distillation.teacher if config.distillation else None,
        [s.label for s in config.convit.sizes] if config.convit else None, config.bootstrap))
    if ranks.get("distillation") is not None:
        d = config.distillation
        ranks["distillation"].update(recipe=train_changes_dict(d.train),
                                     teacher_recipe=train_changes_dict(d.teacher_recipe))
    ranks["wall_time_s"] = None if wall_time_s is None else round(wall_time_s, 1)
    study.write_output("study.csv", table.to_csv(index=False))
    study.write_output("curves.csv", curves.to_csv(index=False))
    if len(compared):
        study.write_output("comparisons.csv", compared.to_csv(index=False))
    study.write_output("rankings.json", json.dumps(_plain(ranks), indent=1))
    study.write_output("report.html", render_study_report(
        config.name, table, curves, ranks, sizes,
        (study.root / "study.yaml").read_text(), wall_time_s, beside))
    for reading in ("generalization", "capacity"):
        r = ranks[reading]
        print(f"{reading}: {' > '.join(r['order'])}  (paper: {r['paper']})  tau-b {r['tau_b']:.2f} "
              f"[{r['interval_95'][0]:.2f}, {r['interval_95'][1]:.2f}]", file=sys.stdout, flush=True)
    best = ranks["best_objectives"]
    print(f"readings a search trial can take that agree best: generalization "
          f"{best['generalization']}, capacity {best['capacity']} (report: objective agreement)",
          flush=True)
    for line in _comparison_lines(ranks):
        print(line, flush=True)
    print(f"study: outputs in {study.root} (report.html, study.csv, curves.csv, "
          f"{'comparisons.csv, ' if len(compared) else ''}rankings.json)", flush=True)
    return ranks


def _comparison_lines(ranks: dict[str, Any]) -> list[str]:
    """One line per student layout and per ConViT size: mean over seeds, [95% interval]."""
    def shown(reading: dict[str, Any]) -> str:
        low, high = reading["interval_95"]
        return f"{reading['mean']:+.3f} [{low:+.3f}, {high:+.3f}]"

    lines = []
    d = ranks.get("distillation")
    for layout, r in (d or {}).get("layouts", {}).items():
        acc, agree = r["val_acc"], r["teacher_agreement"]
        trained = ", ".join(d.get("teacher_sizes") or d["sizes"])
        lines.append(f"distillation from {d['teacher']} (trained at {trained}) at "
                     f"{', '.join(d['sizes'])}: {layout} val acc "
                     f"{acc['plain']['mean']:.3f} -> {acc['distilled']['mean']:.3f} "
                     f"({shown(acc['difference'])}), agreement with the teacher "
                     f"{agree['plain']['mean']:.3f} -> {agree['distilled']['mean']:.3f} "
                     f"({shown(agree['difference'])})")
    c = ranks.get("convit")
    for size, r in (c or {}).get("per_size", {}).items():
        lines.append(f"convit at {size}: DeiT-style {r['DeiT']['mean']:.3f}, ConViT-style "
                     f"{r['ConViT']['mean']:.3f} (ConViT - DeiT {shown(r['difference'])})")
    return lines


def _arch_id(arch: dict[str, Any]) -> str:
    return Architecture.from_dict(arch).arch_id


def _trial_dirname(trial: Any) -> str:
    return trial.trial_id


def _plain(value: Any) -> Any:
    """JSON-safe: NaN as null, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):
        return _plain(value.item())
    return value
