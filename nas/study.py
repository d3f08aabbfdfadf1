"""The search's Optuna study, kept in the run directory (a journal file) so that a search resumes
from it, a copied or moved run carries it along, and `optuna-dashboard RUN/study.journal` shows it.

Only the search driver writes the study. The journal is locked with `flock`, which the operating
system releases when the driver dies (a killed driver leaves no stale lock to wait out), and a
line half-written by a killed driver is cut off before the study is opened again.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Sequence

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

from results.objectives import Objective
from results.run_directory import STUDY_FILE

# User attributes of every Optuna trial the searcher creates (what optuna-dashboard shows).
ARCH_ATTR = "arch"          # the canonical architecture mapping
COST_ATTR = "cost"          # {params, flops, resolution}
RECORD_ATTR = "record_id"   # the trial record's id (trials/<record_id>.json), set when accepted
REJECTION_ATTR = "rejection"  # why a candidate was not trained (over budget, duplicate)


class _FlockLock:
    """An exclusive `flock` on a lock file beside the journal: released by the OS if we die.
    (Optuna's journal calls only `acquire` and `release` of its lock object.)"""

    def __init__(self, path: str):
        self._path = path + ".lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        self._fd = os.open(self._path, os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return True

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def study_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / STUDY_FILE


def storage(run_dir: str | Path) -> JournalStorage:
    """The run's journal storage, after cutting off a last line that a killed writer left half
    written (Optuna would refuse the whole journal once another line follows it)."""
    path = study_path(run_dir)
    _drop_partial_line(path)
    return JournalStorage(JournalFileBackend(str(path), lock_obj=_FlockLock(str(path))))


def create_study(run_dir: str | Path, name: str, objectives: Sequence[Objective],
                 sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = ["minimize" if o.direction == "min" else "maximize" for o in objectives]
    return optuna.create_study(storage=storage(run_dir), study_name=name, directions=directions,
                               sampler=sampler)


def load_study(run_dir: str | Path, name: str, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """The study of an earlier session; FileNotFoundError if the run has none."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not study_path(run_dir).is_file():
        raise FileNotFoundError(f"{study_path(run_dir)}: no Optuna study in this run directory, "
                                "so it cannot be resumed (it was made by an older hybrid-nas, or "
                                "the file was removed)")
    try:
        return optuna.load_study(study_name=name, storage=storage(run_dir), sampler=sampler)
    except KeyError:
        raise ValueError(f"{study_path(run_dir)}: holds no study named {name!r}") from None


def _drop_partial_line(path: Path) -> None:
    if not path.is_file():
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
