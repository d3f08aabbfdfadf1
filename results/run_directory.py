"""The run directory: the on-disk format of one search, written by `nas/` and read by `results/`.

    RUN/search.yaml            the resolved search config (canonical form, with `objectives`)
    RUN/trials/<trial_id>.json one record per trial, replaced atomically on every update;
                               rejected candidates are `rejected-<number>.json`
    RUN/weights/<trial_id>.pt  trained state_dict of finished trials (load with weights_only=True)
    RUN/summary.json           counts and timing, written when the search ends (absent while it
                               runs or after an interruption)
    RUN/study.journal          the Optuna study (journal storage): every candidate and what it
                               was told; what `--resume` continues and optuna-dashboard opens
    RUN/ray/                   Ray Tune's working files of each session (never read back)
    RUN/searcher_gave_up.txt   why the searcher ended early (no candidate within budget)

`RunDirectory(path)` is the one way in: typed reads and atomic writes of those files. `read_run`
reads a whole run for reporting; one unreadable record among readable ones is skipped with a
warning and listed, never fatal. Every write goes to a temporary file first and is moved into
place with `os.replace`, so a reader never sees half a file and a killed writer loses at most
its last update.
"""

from __future__ import annotations

import json
import os
import tempfile
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import yaml

from results.objectives import Objective, as_objectives
from search_spaces.architecture import Architecture, ArchitectureError

STATUSES = ("completed", "pruned", "failed", "diverged", "rejected", "running")  # report order
FINISHED = ("completed", "pruned", "failed", "diverged")  # trained trials that ended
COMPLETED = "completed"  # the only status that ranks: trained its whole budget
CONFIG_FILE = "search.yaml"
SUMMARY_FILE = "summary.json"
TRIALS_DIR = "trials"
WEIGHTS_DIR = "weights"
RAY_DIR = "ray"
GAVE_UP_FILE = "searcher_gave_up.txt"
STUDY_FILE = "study.journal"
REQUIRED_FIELDS = ("trial_id", "status", "architecture")


class RunDirError(ValueError):
    """A missing, foreign or corrupt run directory or file; `path` names it."""

    def __init__(self, path: Path | str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = Path(path)


class UnreadableRecordWarning(UserWarning):
    """A trial record that could not be read was skipped (the run lists it in `unreadable`)."""


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


class RunDirectory:
    """One run's storage: the files above, each read and written through one method."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def __str__(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.root)!r})"

    # ---- the run as a whole -------------------------------------------------------------------
    def is_run(self) -> bool:
        """Does this hold a run (its config, written first when a search starts)?"""
        return (self.root / CONFIG_FILE).is_file()

    def check(self) -> None:
        """Raise RunDirError saying what is missing unless this is a run directory."""
        if not self.root.is_dir():
            raise RunDirError(self.root, "no such run directory")
        if not (self.root / CONFIG_FILE).is_file():
            what = "no search.yaml" + ("" if (self.root / TRIALS_DIR).is_dir() else " and no trials/")
            raise RunDirError(self.root, f"not a hybrid-nas run directory ({what})")

    def create(self) -> None:
        (self.root / TRIALS_DIR).mkdir(parents=True, exist_ok=True)

    # ---- config -------------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        path = self.root / CONFIG_FILE
        try:
            config = yaml.safe_load(path.read_text())
        except FileNotFoundError:
            raise RunDirError(path, "missing (not a hybrid-nas run directory)") from None
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise RunDirError(path, f"not valid YAML: {exc}") from None
        if not isinstance(config, dict):
            raise RunDirError(path, "expected a mapping (the resolved search config)")
        return config

    def write_config(self, config: Mapping[str, Any]) -> None:
        atomic_write(self.root / CONFIG_FILE, yaml.safe_dump(dict(config), sort_keys=False))

    def read_objectives(self) -> list[Objective]:
        config, path = self.read_config(), self.root / CONFIG_FILE
        if "objectives" not in config:
            raise RunDirError(path, "no 'objectives' list")
        try:
            return as_objectives(config["objectives"])
        except (ValueError, TypeError) as exc:
            raise RunDirError(path, f"objectives: {exc}") from None

    # ---- trial records -------------------------------------------------------------------------
    def record_path(self, trial_id: str) -> Path:
        return self.root / TRIALS_DIR / f"{trial_id}.json"

    def read_record(self, trial_id: str) -> dict[str, Any] | None:
        """One trial's record, None if it has none; RunDirError if the file is corrupt."""
        path = self.record_path(trial_id)
        if not path.exists():
            return None
        return load_json(path)

    def write_record(self, record: Mapping[str, Any]) -> None:
        """Write (replace) one trial record atomically."""
        atomic_write(self.record_path(record["trial_id"]),
                      json.dumps(record, indent=1, default=jsonable, allow_nan=True))

    def update_record(self, trial_id: str, **fields: Any) -> dict[str, Any] | None:
        """Change fields of an existing record (read, merge, write); None if there is no record."""
        record = self.read_record(trial_id)
        if record is None:
            return None
        record.update(fields)
        self.write_record(record)
        return record

    def scan_records(self) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
        """Every readable trial record in sampling order, and (path, reason) for each record that
        cannot be read (corrupt, truncated, or missing a required field); never raises for one."""
        folder = self.root / TRIALS_DIR
        records, unreadable = [], []
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            if path.name.startswith("."):
                continue  # an in-flight temporary of an atomic write
            try:
                records.append(_checked_record(load_json(path), path))
            except RunDirError as exc:
                unreadable.append((str(path), str(exc).removeprefix(f"{path}: ")))
            except FileNotFoundError:
                continue  # replaced or removed while we listed
        records.sort(key=lambda r: (_sort_number(r.get("number")), str(r.get("trial_id", ""))))
        return records, unreadable

    def read_records(self) -> list[dict[str, Any]]:
        """The readable records (see `scan_records`), with a warning for each unreadable one."""
        records, unreadable = self.scan_records()
        for path, reason in unreadable:
            warnings.warn(f"skipping unreadable trial record {path}: {reason}",
                          UnreadableRecordWarning, stacklevel=2)
        return records

    # ---- summary, weights, markers -------------------------------------------------------------
    def read_summary(self) -> dict[str, Any] | None:
        """summary.json, or None while the search runs (or if it is unreadable, with a warning)."""
        path = self.root / SUMMARY_FILE
        if not path.is_file():
            return None
        try:
            return load_json(path)
        except RunDirError as exc:
            warnings.warn(f"ignoring {exc}", UnreadableRecordWarning, stacklevel=2)
            return None

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        atomic_write(self.root / SUMMARY_FILE,
                      json.dumps(summary, indent=1, default=jsonable, allow_nan=True))

    def clear_summary(self) -> None:
        (self.root / SUMMARY_FILE).unlink(missing_ok=True)

    def weights_name(self, trial_id: str) -> str:
        """Where a trial's weights go, relative to the run (what its record's `weights` holds)."""
        return f"{WEIGHTS_DIR}/{trial_id}.pt"

    def save_weights(self, trial_id: str, source: Path) -> str:
        """Copy a weights file into the run atomically; returns its name relative to the run."""
        name = self.weights_name(trial_id)
        _atomic_copy(source, self.root / name)
        return name

    def write_gave_up(self, message: str) -> None:
        atomic_write(self.root / GAVE_UP_FILE, message + "\n")

    def clear_gave_up(self) -> None:
        (self.root / GAVE_UP_FILE).unlink(missing_ok=True)

    def gave_up(self) -> str | None:
        """Why the searcher ended the search early (no candidate within budget), or None."""
        path = self.root / GAVE_UP_FILE
        return path.read_text().strip() if path.is_file() else None


@dataclass(frozen=True)
class Run:
    """A run directory read back for reporting: its config, objectives, the readable trial records
    (sampling order) with their parsed architectures, the summary, and the records skipped."""

    path: Path
    config: dict[str, Any]
    objectives: tuple[Objective, ...]
    records: tuple[dict[str, Any], ...]
    summary: dict[str, Any] | None  # None while the search runs or after an interruption
    unreadable: tuple[tuple[str, str], ...] = ()  # (record path, reason), skipped with a warning
    architectures: dict[str, Architecture] = field(default_factory=dict, repr=False)

    def architecture(self, record: Mapping[str, Any]) -> Architecture:
        """The parsed architecture of one of this run's records."""
        return self.architectures[str(record["trial_id"])]


def read_run(location: str | Path | RunDirectory) -> Run:
    """Read a whole run directory; RunDirError names what is missing. An unreadable record among
    readable ones is skipped with a warning (and listed in `unreadable`)."""
    run_dir = location if isinstance(location, RunDirectory) else RunDirectory(location)
    run_dir.check()
    config = run_dir.read_config()
    objectives = run_dir.read_objectives()
    records, unreadable = run_dir.scan_records()
    kept, architectures = [], {}
    for record in records:
        try:
            architectures[str(record["trial_id"])] = Architecture.from_dict(record["architecture"])
            kept.append(record)
        except ArchitectureError as exc:
            unreadable.append((str(run_dir.record_path(record["trial_id"])), f"architecture: {exc}"))
    for path, reason in unreadable:
        warnings.warn(f"skipping unreadable trial record {path}: {reason}",
                      UnreadableRecordWarning, stacklevel=2)
    if unreadable and not kept:
        first, reason = unreadable[0]
        raise RunDirError(first, f"no readable trial record ({len(unreadable)} unreadable; "
                                 f"first: {reason})")
    return Run(run_dir.root, config, tuple(objectives), tuple(kept), run_dir.read_summary(),
               tuple(unreadable), architectures)


# ---- files --------------------------------------------------------------------------------------

def atomic_write(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    try:
        partial.write_bytes(Path(source).read_bytes())
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def load_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; RunDirError naming the file if it is corrupt."""
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(path, f"corrupt JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RunDirError(path, "expected a JSON object")
    return data


def _checked_record(record: dict[str, Any], path: Path) -> dict[str, Any]:
    missing = [key for key in REQUIRED_FIELDS if key not in record]
    if missing:
        raise RunDirError(path, f"missing field {missing[0]!r}")
    if record["status"] not in STATUSES:
        raise RunDirError(path, f"unknown status {record['status']!r} (known: {list(STATUSES)})")
    return record


def _sort_number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else -1.0


def jsonable(value: Any) -> Any:
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to a record")
