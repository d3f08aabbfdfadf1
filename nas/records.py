"""The run directory: one JSON record per trial, the resolved config, and a summary.

Layout (what `results/` reads, through `read_run` / `read_records`):

    RUN_DIR/search.yaml            the resolved search config (canonical form, with `objectives`)
    RUN_DIR/trials/<trial_id>.json one record per trial, replaced atomically on every update;
                                   rejected candidates are `rejected-<number>.json`
    RUN_DIR/summary.json           counts and timing, written when the search ends (absent while
                                   it runs or after an interruption)
    RUN_DIR/ray/                   Ray Tune's experiment directory (what `--resume` restores)
    RUN_DIR/weights/<trial_id>.pt  trained state_dict of finished trials (weights_only=True)

A record holds the fields of `new_record` (see there). Every write goes to a temporary file
first and is moved into place with `os.replace`, so a reader never sees half a record and a killed
writer loses at most its last update.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import yaml

STATUSES = ("completed", "pruned", "failed", "diverged", "rejected", "running")  # report order
FINISHED = ("completed", "pruned", "failed", "diverged")  # trained trials that ended
CONFIG_FILE = "search.yaml"
SUMMARY_FILE = "summary.json"
TRIALS_DIR = "trials"
WEIGHTS_DIR = "weights"
RAY_DIR = "ray"
GAVE_UP_FILE = "searcher_gave_up.txt"  # why the searcher ended early (no candidate within budget)


class RunDirError(ValueError):
    """A missing, foreign or corrupt run directory; the message names the path."""


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def new_record(trial_id: str, number: int, status: str, architecture: Mapping[str, Any],
               arch_id: str, layout: str, cost: Mapping[str, int], epochs_budget: int,
               **fields: Any) -> dict[str, Any]:
    """A trial record with every field present (defaults for the ones not given).

    number: Optuna's trial number (sampling order; rejected candidates take numbers too).
    optuna_state: what the searcher told Optuna (COMPLETE / PRUNED / FAIL), null until told.
    """
    if status not in STATUSES:
        raise ValueError(f"status: unknown trial status {status!r} (known: {list(STATUSES)})")
    record = {
        "trial_id": trial_id, "number": number, "status": status, "arch_id": arch_id,
        "layout": layout, "architecture": dict(architecture), "cost": dict(cost),
        "metrics": {}, "history": [], "objectives": {}, "error": None, "rejection": None,
        "epochs_done": 0, "epochs_budget": epochs_budget, "started": None, "ended": None,
        "wall_time_s": None, "weights": None, "optuna_state": None,
    }
    unknown = sorted(set(fields) - set(record))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a trial record field")
    record.update(fields)
    return record


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_path(run_dir: str | Path, trial_id: str) -> Path:
    return Path(run_dir) / TRIALS_DIR / f"{trial_id}.json"


def write_record(run_dir: str | Path, record: Mapping[str, Any]) -> None:
    """Write (replace) one trial record atomically."""
    _atomic_write(record_path(run_dir, record["trial_id"]),
                  json.dumps(record, indent=1, default=_jsonable, allow_nan=True))


def read_record(run_dir: str | Path, trial_id: str) -> dict[str, Any] | None:
    """One trial's record, or None if it has none yet."""
    path = record_path(run_dir, trial_id)
    if not path.exists():
        return None
    return _load_json(path)


def update_record(run_dir: str | Path, trial_id: str, **fields: Any) -> dict[str, Any] | None:
    """Change fields of an existing record (read, merge, write); None if there is no record."""
    record = read_record(run_dir, trial_id)
    if record is None:
        return None
    record.update(fields)
    write_record(run_dir, record)
    return record


def read_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """Every trial record of a run (also one that is still going), in sampling order."""
    run_dir = _check_run_dir(run_dir)
    records = [_load_json(p) for p in sorted((run_dir / TRIALS_DIR).glob("*.json"))]
    return sorted(records, key=lambda r: (r.get("number", -1), r.get("trial_id", "")))


@dataclass(frozen=True)
class Run:
    """A run directory read back: its config (plain mapping), trial records and summary."""

    path: Path
    config: dict[str, Any]
    records: list[dict[str, Any]]
    summary: dict[str, Any] | None  # None while the search runs or after an interruption

    @property
    def objectives(self) -> list[dict[str, str]]:
        """[{name, direction: min|max}, ...] as the search used them."""
        return list(self.config.get("objectives", []))


def read_run(run_dir: str | Path) -> Run:
    """Read a whole run directory; RunDirError names what is missing or corrupt."""
    path = _check_run_dir(run_dir)
    try:
        config = yaml.safe_load((path / CONFIG_FILE).read_text())
    except yaml.YAMLError as exc:
        raise RunDirError(f"{path / CONFIG_FILE}: not valid YAML: {exc}") from None
    if not isinstance(config, dict):
        raise RunDirError(f"{path / CONFIG_FILE}: expected a mapping")
    summary_path = path / SUMMARY_FILE
    summary = _load_json(summary_path) if summary_path.exists() else None
    return Run(path=path, config=config, records=read_records(path), summary=summary)


def write_config(run_dir: str | Path, config: Mapping[str, Any]) -> None:
    _atomic_write(Path(run_dir) / CONFIG_FILE, yaml.safe_dump(dict(config), sort_keys=False))


def write_summary(run_dir: str | Path, summary: Mapping[str, Any]) -> None:
    _atomic_write(Path(run_dir) / SUMMARY_FILE,
                  json.dumps(summary, indent=1, default=_jsonable, allow_nan=True))


def clear_summary(run_dir: str | Path) -> None:
    (Path(run_dir) / SUMMARY_FILE).unlink(missing_ok=True)


def is_run_dir(path: str | Path) -> bool:
    path = Path(path)
    return (path / CONFIG_FILE).is_file() and (path / TRIALS_DIR).is_dir()


def _check_run_dir(run_dir: str | Path) -> Path:
    path = Path(run_dir)
    if not path.is_dir():
        raise RunDirError(f"{path}: no such run directory")
    if not is_run_dir(path):
        raise RunDirError(f"{path}: not a hybrid-nas run directory "
                          f"(expected {CONFIG_FILE} and {TRIALS_DIR}/ inside)")
    return path


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(f"{path}: corrupt JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RunDirError(f"{path}: expected a JSON object")
    return data


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to a record")
