"""The run directory: the on-disk format of one search, written by `nas/` and read by `results/`.

    RUN/search.yaml            the resolved search config (canonical form, with `objectives`)
    RUN/trials/<trial_id>.json one record per trial, replaced atomically on every update;
                               rejected candidates are `rejected-<number>.json`
    RUN/weights/<trial_id>.pt  trained state_dict of finished trials (load with weights_only=True)
    RUN/summary.json           counts and timing, written when the search ends (absent while it
                               runs or after an interruption)
    RUN/study.journal          the Optuna study (journal storage): every candidate and what it
                               was told; what `--resume` continues and optuna-dashboard opens
                               (absent when config `optuna.storage` names a database)
    RUN/tensorboard/<trial_id>/ every metric of every epoch as TensorBoard scalars
    RUN/ray/                   Ray Tune's working files of each session (never read back)
    RUN/searcher_gave_up.txt   why the searcher ended early (no candidate within budget)

`RunDirectory(location)` is the one way in: typed reads and atomic writes of those files, where
RUN is a local folder or a URI (`s3://bucket/prefix`, `gs://...`, `file://...`: see
`results.storage`). `read_run` reads a whole run for reporting; one unreadable record among
readable ones is skipped with a warning and listed, never fatal. Every write replaces a whole file
atomically (a local temporary file moved into place with `os.replace`, or one PUT of an object),
so a reader never sees half a file and a killed writer loses at most its last update.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

import yaml

from results.objectives import Objective, as_objectives
from results.storage import (LocalStorage, SpooledStorage, Storage, cache_dir, is_uri,
                             open_storage, split)
from search_spaces.architecture import Architecture, ArchitectureError

STATUSES = ("completed", "pruned", "failed", "diverged", "rejected", "running")  # report order
FINISHED = ("completed", "pruned", "failed", "diverged")  # trained trials that ended
COMPLETED = "completed"  # the only status that ranks: trained its whole budget
CONFIG_FILE = "search.yaml"
SUMMARY_FILE = "summary.json"
TRIALS_DIR = "trials"
WEIGHTS_DIR = "weights"
RAY_DIR = "ray"
TENSORBOARD_DIR = "tensorboard"
GAVE_UP_FILE = "searcher_gave_up.txt"
STUDY_FILE = "study.journal"
REQUIRED_FIELDS = ("trial_id", "status", "architecture")


class RunDirError(ValueError):
    """A missing, foreign or corrupt run directory or file; `path` names it."""

    def __init__(self, path: Path | str, message: str):
        super().__init__(f"{path}: {message}")
        self.path = path if is_uri(path) else Path(path)


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
    node: where the trial ran ({node_id, ip, hostname, pid} of its Ray worker), null until known.
    unscored: why a completed trial has no value for an objective (its run never reached the
    training loss that objective is read at); such a trial is on no front. Null otherwise.
    rung_decisions: what the early-stopping scheduler decided at each rung the trial reached
    ({rung, epoch, action: continue|stop, reason}); stopped_at_rung / stop_reason: the rung
    (1 = the grace period) and the reason of the decision that stopped it, null otherwise.
    failure_reason: why a failed trial failed, when known (`out_of_memory`); memory: for one
    that ran out of memory, {priced_bytes, observed_bytes, settings, advice}
    (`results.failures`). Null otherwise.
    """
    if status not in STATUSES:
        raise ValueError(f"status: unknown trial status {status!r} (known: {list(STATUSES)})")
    record = {
        "trial_id": trial_id, "number": number, "status": status, "arch_id": arch_id,
        "layout": layout, "architecture": dict(architecture), "cost": dict(cost),
        "metrics": {}, "history": [], "objectives": {}, "error": None, "rejection": None,
        "epochs_done": 0, "epochs_budget": epochs_budget, "started": None, "ended": None,
        "wall_time_s": None, "weights": None, "optuna_state": None, "node": None,
        "unscored": None,
        "rung_decisions": [], "stopped_at_rung": None, "stop_reason": None,
        "failure_reason": None, "memory": None,
    }
    unknown = sorted(set(fields) - set(record))
    if unknown:
        raise ValueError(f"{unknown[0]}: not a trial record field")
    record.update(fields)
    return record


class RunDirectory:
    """One run's storage: the files above, each read and written through one method.

    location: a folder or a URI. writer: the search driver's view of a run at a URI: writes are
    spooled on this machine until uploaded, so none is lost when the store goes away
    (`results.storage.SpooledStorage`); readers leave it False."""

    def __init__(self, location: str | Path | Storage, writer: bool = False):
        if isinstance(location, Storage):
            self.storage = location
        else:
            self.storage = open_storage(location)
            if writer and self.storage.local_root is None:
                self.storage = SpooledStorage(self.storage, cache_dir(self.storage.uri) / "spool")

    @property
    def root(self) -> Path | str:
        """Where the run is: a Path for a local run, its URI (without credentials) otherwise."""
        return self.storage.location()

    @property
    def is_local(self) -> bool:
        return self.storage.local_root is not None

    @property
    def name(self) -> str:
        """The run directory's own name (`<UTC time>-<name>`)."""
        return split(self.root)[1]

    def location(self, name: str) -> Path | str:
        """Where one of the run's files is (a Path, or a URI): for messages and local tools."""
        return self.storage.location(name)

    def __str__(self) -> str:
        return str(self.root)

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.root)!r})"

    # ---- the run as a whole -------------------------------------------------------------------
    def is_run(self) -> bool:
        """Does this hold a run (its config, written first when a search starts)?"""
        return self.storage.exists(CONFIG_FILE)

    def is_empty(self) -> bool:
        """Is there nothing at this location yet (a new run may be made here)?"""
        return self.storage.is_empty()

    def check(self) -> None:
        """Raise RunDirError saying what is missing unless this is a run directory."""
        if self.is_run():
            return
        missing = not self.storage.local_root.is_dir() if self.is_local else self.is_empty()
        if missing:
            raise RunDirError(self.root, "no such run directory")
        has_trials = bool(self.storage.list_files(TRIALS_DIR))
        raise RunDirError(self.root, "not a hybrid-nas run directory (no search.yaml"
                                     + ("" if has_trials else " and no trials/") + ")")

    def create(self) -> None:
        if self.is_local:
            (self.storage.local_root / TRIALS_DIR).mkdir(parents=True, exist_ok=True)

    def probe(self) -> None:
        """StorageError (one line, naming the location) unless the run can be written here."""
        self.storage.probe()

    # ---- config -------------------------------------------------------------------------------
    def read_config(self) -> dict[str, Any]:
        where = self.location(CONFIG_FILE)
        try:
            config = yaml.safe_load(self.storage.read_text(CONFIG_FILE))
        except FileNotFoundError:
            raise RunDirError(where, "missing (not a hybrid-nas run directory)") from None
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise RunDirError(where, f"not valid YAML: {exc}") from None
        if not isinstance(config, dict):
            raise RunDirError(where, "expected a mapping (the resolved search config)")
        return config

    def write_config(self, config: Mapping[str, Any]) -> None:
        self.storage.write_text(CONFIG_FILE, yaml.safe_dump(dict(config), sort_keys=False))

    def read_objectives(self) -> list[Objective]:
        config, where = self.read_config(), self.location(CONFIG_FILE)
        if "objectives" not in config:
            raise RunDirError(where, "no 'objectives' list")
        try:
            return as_objectives(config["objectives"])
        except (ValueError, TypeError) as exc:
            raise RunDirError(where, f"objectives: {exc}") from None

    # ---- trial records -------------------------------------------------------------------------
    def record_path(self, trial_id: str) -> Path | str:
        return self.location(_record_name(trial_id))

    def read_record(self, trial_id: str) -> dict[str, Any] | None:
        """One trial's record, None if it has none; RunDirError if the file is corrupt."""
        name = _record_name(trial_id)
        try:
            return _parse_json(self.storage.read_bytes(name), self.location(name))
        except FileNotFoundError:
            return None

    def write_record(self, record: Mapping[str, Any]) -> None:
        """Write (replace) one trial record atomically."""
        self.storage.write_text(_record_name(record["trial_id"]),
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
        records, unreadable = [], []
        names = [name for name in self.storage.list_files(TRIALS_DIR)
                 if name.endswith(".json") and not name.rsplit("/", 1)[-1].startswith(".")]
        for name, data in self.storage.read_many(names).items():  # ones removed meanwhile: gone
            where = self.location(name)
            try:
                records.append(_checked_record(_parse_json(data, where), where))
            except RunDirError as exc:
                unreadable.append((str(where), str(exc).removeprefix(f"{where}: ")))
        records.sort(key=lambda r: (_sort_number(r.get("number")), str(r.get("trial_id", ""))))
        return records, unreadable

    def read_records(self) -> list[dict[str, Any]]:
        """The readable records (see `scan_records`), with a warning for each unreadable one."""
        records, unreadable = self.scan_records()
        for path, reason in unreadable:
            warnings.warn(f"skipping unreadable trial record {path}: {reason}",
                          UnreadableRecordWarning, stacklevel=2)
        return records

    # ---- summary, weights, study, markers, other files -------------------------------------------
    def read_summary(self) -> dict[str, Any] | None:
        """summary.json, or None while the search runs (or if it is unreadable, with a warning)."""
        try:
            return _parse_json(self.storage.read_bytes(SUMMARY_FILE), self.location(SUMMARY_FILE))
        except FileNotFoundError:
            return None
        except RunDirError as exc:
            warnings.warn(f"ignoring {exc}", UnreadableRecordWarning, stacklevel=2)
            return None

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        self.storage.write_text(SUMMARY_FILE,
                                json.dumps(summary, indent=1, default=jsonable, allow_nan=True))

    def clear_summary(self) -> None:
        self.storage.delete(SUMMARY_FILE)

    def weights_name(self, trial_id: str) -> str:
        """Where a trial's weights go, relative to the run (what its record's `weights` holds)."""
        return f"{WEIGHTS_DIR}/{trial_id}.pt"

    def save_weights(self, trial_id: str, source: Path | str, filesystem: Any = None) -> str:
        """Copy a weights file into the run atomically (from a local path, or from `source` on a
        pyarrow `filesystem`: where Ray Tune put a checkpoint); returns its name in the run."""
        name = self.weights_name(trial_id)
        if filesystem is None:
            self.storage.upload(name, Path(source))
        else:
            self.storage.copy_in(name, filesystem, str(source))
        return name

    def fetch(self, name: str, target: Path) -> None:
        """Copy one of the run's files (e.g. a record's `weights`) to a local file."""
        self.storage.download(name, target)

    def read_study_journal(self) -> bytes | None:
        """The Optuna journal kept in the run (None if it has none)."""
        try:
            return self.storage.read_bytes(STUDY_FILE)
        except FileNotFoundError:
            return None

    def write_study_journal(self, data: bytes) -> None:
        self.storage.write_bytes(STUDY_FILE, data)

    def write_file(self, name: str, data: bytes | str) -> Path | str:
        """Write another file into the run (a report, a table, TensorBoard events); returns where."""
        self.storage.write_bytes(name, data.encode("utf-8") if isinstance(data, str) else data)
        return self.location(name)

    def clear_folder(self, folder: str) -> None:
        self.storage.delete_folder(folder)

    def write_gave_up(self, message: str) -> None:
        self.storage.write_text(GAVE_UP_FILE, message + "\n")

    def clear_gave_up(self) -> None:
        self.storage.delete(GAVE_UP_FILE)

    def gave_up(self) -> str | None:
        """Why the searcher ended the search early (no candidate within budget), or None."""
        try:
            return self.storage.read_text(GAVE_UP_FILE).strip()
        except FileNotFoundError:
            return None


@dataclass(frozen=True)
class Run:
    """A run directory read back for reporting: its config, objectives, the readable trial records
    (sampling order) with their parsed architectures, the summary, and the records skipped."""

    path: Path | str  # a Path for a local run, its URI otherwise
    config: dict[str, Any]
    objectives: tuple[Objective, ...]
    records: tuple[dict[str, Any], ...]
    summary: dict[str, Any] | None  # None while the search runs or after an interruption
    unreadable: tuple[tuple[str, str], ...] = ()  # (record path, reason), skipped with a warning
    architectures: dict[str, Architecture] = field(default_factory=dict, repr=False)
    store: RunDirectory | None = field(default=None, repr=False, compare=False)

    def architecture(self, record: Mapping[str, Any]) -> Architecture:
        """The parsed architecture of one of this run's records."""
        return self.architectures[str(record["trial_id"])]

    @property
    def name(self) -> str:
        return self.store.name if self.store is not None else Path(self.path).name

    @property
    def output_dir(self) -> Path:
        """Where report and export write by default: the run directory itself, or ./<run name>/
        in the current folder for a run at a URI (what you take away stays on this machine)."""
        return self.path if isinstance(self.path, Path) else Path.cwd() / self.name


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
               tuple(unreadable), architectures, run_dir)


# ---- files --------------------------------------------------------------------------------------

def atomic_write(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then move it into place."""
    LocalStorage(path.parent).write_text(path.name, text)


def load_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; RunDirError naming the file if it is corrupt."""
    return _parse_json(path.read_bytes(), path)


def _record_name(trial_id: str) -> str:
    return f"{TRIALS_DIR}/{trial_id}.json"


def _parse_json(data: bytes, where: Path | str) -> dict[str, Any]:
    try:
        parsed = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RunDirError(where, f"corrupt JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise RunDirError(where, "expected a JSON object")
    return parsed


def _checked_record(record: dict[str, Any], path: Path | str) -> dict[str, Any]:
    missing = [key for key in REQUIRED_FIELDS if key not in record]
    if missing:
        raise RunDirError(path, f"missing field {missing[0]!r}")
    if record["status"] not in STATUSES:
        raise RunDirError(path, f"unknown status {record['status']!r} (known: {list(STATUSES)})")
    return record


def _sort_number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else -1.0


def jsonable(value: Any) -> Any:
    """What json.dumps cannot write by itself: numpy/torch scalars, sets and tuples."""
    if hasattr(value, "item"):  # numpy / torch scalars
        return value.item()
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"cannot write {type(value).__name__} to a record")
