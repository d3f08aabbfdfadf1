"""Get the chosen networks out of a run: YAML configs with their metrics, and a one-call rebuild.

An exported config is a mapping `{architecture, arch_id, layout, trial_id, run_dir, metrics,
objectives, pareto_rank, cost, weights, input, artifacts}` (`input`: the data set, the per-channel
mean/std the weights expect and the class names; `artifacts`: the standalone files written beside
it, see results/standalone.py); `Architecture.load(path)` reads it as a plain architecture too.
`build(path)` returns the model, with the trained weights when the run kept them.
"""

from __future__ import annotations

import functools
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from torch import nn

from evaluators.data import load_data
from evaluators.saved_model import (SavedModel, SavedModelError, load_weights, read_config_mapping,
                                    rebuild, saved_model_from_mapping)
from results.objectives import natural_direction
from results.pareto import objective_column
from results.run_directory import COMPLETED, Run, read_run
from results.standalone import ARTIFACT_FORMATS, artifact_metadata, require_packages, write_artifacts
from results.table import load_table, table_objectives
from search_spaces.architecture import Architecture
from search_spaces.model import build_model

FORMATS = ("yaml", *ARTIFACT_FORMATS)  # yaml is always written; the others beside it on request


class ExportError(SavedModelError):
    """A bad export request or exported config; `path` names the file when there is one. (Errors
    of the config's architecture and weights are `SavedModelError`s, its base.)"""


@dataclass(frozen=True)
class ExportedConfig(SavedModel):
    """An exported config as read back: the architecture, weights and input (`SavedModel`) and
    what the run knew about it."""

    metrics: dict
    cost: dict
    artifacts: dict[str, dict]  # format -> {file (relative to the config), max_abs_diff}
    artifact_errors: dict[str, str]  # format -> why that artifact was not written


def choose(table: pd.DataFrame, pareto: bool = False, top: int | None = None, by: str | None = None,
           minimize: bool | None = None) -> pd.DataFrame:
    """Completed trials on the first Pareto front of the run's objectives (ordered by the first
    objective), or the `top` trials by metric `by` (direction inferred unless `minimize` is given)."""
    done = table[table["status"] == COMPLETED]
    if pareto == (top is not None):
        raise ExportError("choose either the Pareto front (--pareto) or the top K (--top K --by METRIC)")
    if pareto:
        front = done[done["pareto_rank"] == 0]
        first = table_objectives(table)[0]
        return front.sort_values(objective_column(front, first.name) if len(front) else "number",
                                 ascending=first.direction == "min", kind="stable")
    check_top(top)
    if by is None:
        raise ExportError("--top needs --by METRIC (e.g. --by val_acc)")
    column = _metric_column(table, by)
    ascending = minimize if minimize is not None else metric_direction(table, by) == "min"
    ranked = done.assign(_key=pd.to_numeric(done[column], errors="coerce")).dropna(subset="_key")
    return ranked.sort_values("_key", ascending=ascending, kind="stable").drop(columns="_key").head(top)


def check_top(top: int) -> None:
    """Refuse a row count below 1 (`--top 0` would silently show or export nothing)."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ExportError(f"--top must be a positive integer, got {top}")


def formats_requested(values: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    """The formats of `--format` values (repeated and/or comma-separated), yaml always first."""
    asked = [part.strip() for value in values or () for part in value.split(",") if part.strip()]
    unknown = [fmt for fmt in asked if fmt not in FORMATS]
    if unknown:
        raise ExportError(f"--format {unknown[0]!r}: unknown format (choose from {', '.join(FORMATS)})")
    return tuple(fmt for fmt in FORMATS if fmt == "yaml" or fmt in asked)


def metric_direction(table: pd.DataFrame, name: str) -> str:
    """'min' or 'max': the run's objective direction for `name`, else the metric's natural one
    (unknown metrics: lower is better for losses and times, higher otherwise)."""
    for objective in table_objectives(table):
        if objective.name == name:
            return objective.direction
    return natural_direction(name)


def _metric_column(table: pd.DataFrame, name: str) -> str:
    try:
        return objective_column(table, name)
    except ValueError:
        numeric = sorted(c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])
                         and not re.match(r"s\d+_|num_|in_channels|number|epochs_", c))
        raise ExportError(f"--by {name!r}: no such metric in this run (numeric columns: "
                          f"{', '.join(numeric)})") from None


def export_architectures(run_dir: str | Path, out_dir: str | Path | None = None, pareto: bool = False,
                         top: int | None = None, by: str | None = None,
                         minimize: bool | None = None,
                         formats: tuple[str, ...] = ("yaml",)) -> list[Path]:
    """Write one YAML config per chosen trial into `out_dir` (default RUN_DIR/exported/pareto or
    RUN_DIR/exported/top<K>-<METRIC>) and return the paths. A repeated architecture is written
    once, for its best trial; earlier exports in that folder (`NN-*.yaml`, `.onnx`, `.pt2`) are
    replaced. `formats` may add standalone artifacts beside each config ("onnx", "pt2"): the config
    records those written (`artifacts`) and why any was not (`artifact_errors`)."""
    formats = formats_requested(formats)
    standalone = tuple(fmt for fmt in formats if fmt != "yaml")
    require_packages(standalone)
    run = read_run(run_dir)
    table = load_table(run)
    chosen = choose(table, pareto=pareto, top=top, by=by, minimize=minimize)
    chosen = chosen.drop_duplicates("arch_id", keep="first")
    if not len(chosen):
        raise ExportError("no completed trial to export yet", run.path)
    selection = "pareto" if pareto else f"top{top}-{by}"
    out = Path(out_dir) if out_dir is not None else run.output_dir / "exported" / selection
    out.mkdir(parents=True, exist_ok=True)
    for fmt in FORMATS:  # a previous export of this folder: replaced whole
        for old in out.glob(f"[0-9][0-9]-*.{fmt}"):
            old.unlink()
    records = {str(r["trial_id"]): r for r in run.records}
    paths = []
    for position, row in enumerate(chosen.itertuples(index=False), start=1):
        record = records[row.trial_id]
        arch = run.architecture(record)
        path = out / f"{position:02d}-{row.layout}-{row.arch_id}.yaml"
        config = exported_config(run, record, row.pareto_rank, out)
        config["input"] = input_preprocessing(run.config.get("trial") or {}, arch)
        config["artifacts"], errors = standalone_artifacts(config, arch, path, standalone)
        if errors:
            config["artifact_errors"] = errors
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        paths.append(path)
    return paths


def standalone_artifacts(config: dict[str, Any], arch: Architecture, config_path: Path,
                         formats: tuple[str, ...]) -> tuple[dict[str, dict], dict[str, str]]:
    """Write the standalone artifacts of one exported config beside it, from the model its YAML
    rebuilds (architecture and trained weights, as `build` loads them). Returns the `artifacts`
    mapping (format -> file relative to the config and the check's max abs logit difference) and
    the errors of those not written (format -> reason)."""
    if not formats:
        return {}, {}
    if config["weights"] is None:
        reason = "no trained weights recorded for this trial (the run did not keep them)"
        return {}, {fmt: reason for fmt in formats}
    model = build_model(arch)
    try:
        load_weights(model, (config_path.parent / config["weights"]).resolve())
    except SavedModelError as exc:
        return {}, {fmt: str(exc) for fmt in formats}
    written, failed = write_artifacts(model, arch, config_path.with_suffix(""), formats,
                                      artifact_metadata(arch, config["input"]))
    return ({a.fmt: {"file": a.path.name, "max_abs_diff": a.max_abs_diff} for a in written},
            {error.fmt: error.reason for error in failed})


@functools.lru_cache(maxsize=8)
def _preprocessing(data: str, data_path: str | None, resolution: int, val_fraction: float,
                   data_seed: int, in_channels: int, cache_dir: str | None, skip_corrupt: bool) -> dict[str, Any]:
    images = load_data(data, resolution, path=data_path, val_fraction=val_fraction, seed=data_seed,
                       in_channels=in_channels, cache_dir=cache_dir, skip_corrupt=skip_corrupt)
    return {"data": data, "data_path": data_path, "resolution": resolution,
            "in_channels": in_channels, "mean": list(images.mean), "std": list(images.std),
            "class_names": list(images.class_names)}


def input_preprocessing(trial: dict, arch: Architecture) -> dict[str, Any] | None:
    """What the trained weights expect as input: the data set, the per-channel mean and std the
    trial normalised with (pixels in [0, 1]) and the class names, recomputed from the run's
    trial config: from the data cache's metadata (per-image pixel sums, labels) when the cache
    holds the data set, no image decoded. None (with a warning) when that data cannot be read here
    any more."""
    try:
        return _preprocessing(trial.get("data", "digits"), trial.get("data_path"),
                              int(trial.get("resolution") or arch.resolution),
                              float(trial.get("val_fraction", 0.2)), int(trial.get("data_seed", 0)),
                              arch.in_channels, trial.get("cache_dir"), bool(trial.get("skip_corrupt", False)))
    except (OSError, ValueError) as exc:
        warnings.warn(f"input normalisation not exported: {exc}", stacklevel=2)
        return None


def exported_config(run: Run, record: dict, pareto_rank: float, out_dir: Path) -> dict[str, Any]:
    """The YAML mapping for one trial record (weights as a path relative to `out_dir`)."""
    arch = run.architecture(record)
    weights = None
    if record.get("weights"):
        candidate = _weights_here(run, record["weights"], Path(out_dir))
        if candidate.is_file():
            weights = os.path.relpath(candidate, Path(out_dir).resolve())
        else:
            warnings.warn(f"trial {record['trial_id']}: recorded weights {candidate} are missing; "
                          "exporting without them", stacklevel=2)
    return {
        "architecture": arch.to_dict(),
        "arch_id": arch.arch_id,
        "layout": arch.layout,
        "trial_id": str(record["trial_id"]),
        "run_dir": str(run.path.resolve()) if isinstance(run.path, Path) else run.path,
        "metrics": _plain(record.get("metrics") or {}),
        "objectives": _plain(record.get("objectives") or {}),
        "pareto_rank": None if pareto_rank is None or math.isnan(pareto_rank) else int(pareto_rank),
        "cost": _plain(record.get("cost") or {}),
        "weights": weights,
    }


def _weights_here(run: Run, name: str, out_dir: Path) -> Path:
    """A trial's weights file on this machine: in the run, or for a run at a URI copied from
    there to out_dir/<name> (the exported config then points at that copy)."""
    if isinstance(run.path, Path):
        return (run.path / name).resolve()
    local = (out_dir / name).resolve()
    try:
        run.store.fetch(name, local)
    except FileNotFoundError:
        pass  # reported as missing by the caller
    return local


def _plain(mapping: dict) -> dict:
    """YAML-safe copy: numbers as Python int/float (NaN stays NaN), the rest as given."""
    out = {}
    for key, value in mapping.items():
        if hasattr(value, "item"):
            value = value.item()
        out[str(key)] = value
    return out


def read_config(path: str | Path) -> ExportedConfig:
    """Read an exported config (or a bare architecture YAML); errors name the file and field."""
    data = read_config_mapping(path)
    saved = saved_model_from_mapping(path, data)
    artifacts, errors = (data.get(field) or {} for field in ("artifacts", "artifact_errors"))
    for field, value in (("artifacts", artifacts), ("artifact_errors", errors)):
        if not isinstance(value, dict):
            raise ExportError(f"{field}: expected a mapping by format, got {value!r}", path)
    return ExportedConfig(**vars(saved), metrics=dict(data.get("metrics") or {}),
                          cost=dict(data.get("cost") or {}), artifacts=artifacts,
                          artifact_errors=errors)


def build(config_path: str | Path, weights: str | Path | None = None, load_weights: bool = True,
          device: str | torch.device | None = None) -> nn.Module:
    """Rebuild the exported model; load `weights` if given, else the recorded trained weights
    (unless `load_weights` is False). State dicts load with `weights_only=True`."""
    model, _, _ = build_with_info(config_path, weights, load_weights, device)
    return model


def build_with_info(config_path: str | Path, weights: str | Path | None = None,
                    load_weights: bool = True, device: str | torch.device | None = None
                    ) -> tuple[nn.Module, ExportedConfig, Path | None]:
    """`build`, also returning the config read and the weights file actually loaded (or None)."""
    config = read_config(config_path)
    model, source = rebuild(config, weights, load_weights, device)
    return model, config, source


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
