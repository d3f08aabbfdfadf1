"""The search's Optuna study, kept with the run so that a search resumes from it, a copied or moved
run carries it along, and optuna-dashboard shows it (`StudyHome` says where):

- a local run: the journal file RUN/study.journal (`optuna-dashboard RUN/study.journal`);
- a run at a URI: an object store cannot append, so the journal is written in this machine's
  folder for the run (`results.storage.cache_dir`) and copied whole to RUN/study.journal after
  each change the searcher makes (`sync`); a resumed search fetches it back, keeping the local
  copy when it extends the stored one (a driver killed before its last copy);
- config `optuna.storage`, an RDB URL (`sqlite:///...`, `postgresql://...`): a database every
  node and optuna-dashboard can reach; the study is named after the run directory.

Only the search driver writes the study. A journal is locked with `flock`, which the operating
system releases when the driver dies (a killed driver leaves no stale lock to wait out), and a
line half-written by a killed driver is cut off before the study is opened again.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Sequence

import optuna
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from results.objectives import Objective
from results.run_directory import STUDY_FILE, RunDirectory
from results.storage import cache_dir

# User attributes of every Optuna trial the searcher creates (what optuna-dashboard shows).
ARCH_ATTR = "arch"          # the canonical architecture mapping
COST_ATTR = "cost"          # {params, flops, resolution}
RECORD_ATTR = "record_id"   # the trial record's id (trials/<record_id>.json), set when accepted
REJECTION_ATTR = "rejection"  # why a candidate was not trained (over budget, duplicate)
# Also flat `layout`, `params`, `flops` (every candidate) and `trial_id` (= record_id), which the
# dashboard lists as columns, and `position` (order among the trained trials).


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


class _NotingJournal(JournalFileBackend):
    """A journal file that remembers whether lines were added since it was last copied."""

    def __init__(self, path: Path):
        super().__init__(str(path), lock_obj=_FlockLock(str(path)))
        self.path = path
        self.changed = False

    def append_logs(self, logs) -> None:
        super().append_logs(logs)
        self.changed = True


class StudyHome:
    """Where one run's study lives (see the module docstring), and how it is opened."""

    def __init__(self, run: RunDirectory, name: str, url: str | None = None, fresh: bool = False):
        """fresh: a new run, which must not pick up what an earlier run at its URI left in this
        machine's cache."""
        self.run = run
        self.url = url
        self._journal: _NotingJournal | None = None
        ahead = False
        if url is not None:
            self.name = run.name
            self.storage: BaseStorage = RDBStorage(url)
        else:
            self.name = name
            if run.is_local:
                path = Path(run.location(STUDY_FILE))
            else:
                path = cache_dir(run.storage.uri) / STUDY_FILE
                path.parent.mkdir(parents=True, exist_ok=True)
                if fresh:
                    path.unlink(missing_ok=True)
                ahead = _fetch(run, path)
            _drop_partial_line(path)
            self._journal = _NotingJournal(path)
            self._journal.changed = not run.is_local and ahead
            self.storage = JournalStorage(self._journal)

    @property
    def mirrored(self) -> bool:
        return self._journal is not None and not self.run.is_local

    def exists(self) -> bool:
        """Does the run hold this study yet?"""
        if self._journal is not None:
            return self._journal.path.is_file() and self._journal.path.stat().st_size > 0
        return any(s.study_name == self.name for s in self.storage.get_all_studies())

    def create(self, objectives: Sequence[Objective],
               sampler: optuna.samplers.BaseSampler) -> optuna.Study:
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        directions = ["minimize" if o.direction == "min" else "maximize" for o in objectives]
        try:
            study = optuna.create_study(storage=self.storage, study_name=self.name,
                                        directions=directions, sampler=sampler)
        except optuna.exceptions.DuplicatedStudyError:
            raise ValueError(f"search.optuna.storage: the database already holds a study named "
                             f"{self.name!r} (a run directory of the same name): name this run "
                             "differently") from None
        self.sync()
        return study

    def load(self, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
        """The study of an earlier session; FileNotFoundError if the run has none."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        where = self.url or self.run.location(STUDY_FILE)
        if not self.exists():
            raise FileNotFoundError(f"{where}: no Optuna study for this run, so it cannot be "
                                    "resumed (it was made by an older hybrid-nas, or removed)")
        try:
            return optuna.load_study(study_name=self.name, storage=self.storage, sampler=sampler)
        except KeyError:
            raise ValueError(f"{where}: holds no study named {self.name!r}") from None

    def sync(self) -> None:
        """Copy the journal whole to the run storage if it changed (runs at a URI only)."""
        if self.mirrored and self._journal.changed:
            self._journal.changed = False
            self.run.write_study_journal(self._journal.path.read_bytes())


def study_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / STUDY_FILE


def create_study(run_dir: str | Path, name: str, objectives: Sequence[Objective],
                 sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """A new study in a local run directory's journal."""
    return StudyHome(RunDirectory(run_dir), name).create(objectives, sampler)


def load_study(run_dir: str | Path, name: str, sampler: optuna.samplers.BaseSampler) -> optuna.Study:
    """The study in a local run directory's journal; FileNotFoundError if the run has none."""
    return StudyHome(RunDirectory(run_dir), name).load(sampler)


def _fetch(run: RunDirectory, local: Path) -> bool:
    """Bring the run's stored journal into the local copy, unless the local copy already holds
    it and more (lines written after the last upload of a driver that was killed). True when the
    local copy is ahead of the stored one (it should be uploaded)."""
    stored = run.read_study_journal()
    held = local.read_bytes() if local.is_file() else b""
    if stored is None or held.startswith(stored):
        return len(held) > len(stored or b"")
    partial = local.with_name(local.name + ".partial")
    partial.write_bytes(stored)
    os.replace(partial, local)
    return False


def _drop_partial_line(path: Path) -> None:
    if not path.is_file():
        return
    with open(path, "rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
