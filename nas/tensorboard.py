"""Every metric of every epoch of every trial as TensorBoard scalars: RUN/tensorboard/<trial_id>/,
written by the driver as results arrive, so `tensorboard --logdir RUN` shows one run per trial.

Events are written with `torch.utils.tensorboard.SummaryWriter` (it needs the `tensorboard`
package: `pip install "hybrid-nas[tensorboard]"`; without it the search says so once and goes
on). For a run at a URI they are written in this machine's folder for the run and uploaded after
each epoch. A trial trained again after an interruption starts its folder afresh.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

from ray import tune

from nas.tracking import metrics_of, record_id_of
from results.run_directory import TENSORBOARD_DIR, RunDirectory
from results.storage import cache_dir

MISSING = ("tensorboard: the `tensorboard` package is not installed, so no TensorBoard scalars are "
           "written (pip install \"hybrid-nas[tensorboard]\")")


def summary_writer_class() -> type | None:
    """torch's SummaryWriter, or None when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter


class TensorBoardCallback(tune.Callback):
    """Writes each trial's per-epoch metrics (step = epoch) under RUN/tensorboard/<record_id>/."""

    def __init__(self, store: RunDirectory):
        self.store = store
        self._writers: dict[str, Any] = {}
        self._uploaded: dict[Path, int] = {}  # event file -> its size when last uploaded

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_writers": {}, "_uploaded": {}}

    @property
    def folder(self) -> Path:
        """Where the events are written on this machine."""
        if self.store.is_local:
            return Path(self.store.location(TENSORBOARD_DIR))
        return cache_dir(self.store.storage.uri) / TENSORBOARD_DIR

    def setup(self, **info: Any) -> None:
        if summary_writer_class() is None:
            print(MISSING, file=sys.stderr, flush=True)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record_id = record_id_of(trial)
        self._close(record_id)
        shutil.rmtree(self.folder / record_id, ignore_errors=True)  # a rerun starts afresh
        if not self.store.is_local:
            self.store.clear_folder(f"{TENSORBOARD_DIR}/{record_id}")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        metrics = metrics_of(result)
        epoch = int(metrics.pop("epoch", 0))
        writer = self._writer(record_id_of(trial))
        if writer is None or epoch < 1:
            return
        for name, value in sorted(metrics.items()):
            writer.add_scalar(name, value, global_step=epoch)
        writer.flush()
        self._upload(record_id_of(trial))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(record_id_of(trial))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._close(record_id_of(trial))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        for record_id in list(self._writers):
            self._close(record_id)

    def _writer(self, record_id: str) -> Any:
        if record_id not in self._writers:
            writer_class = summary_writer_class()
            if writer_class is None:
                return None
            self._writers[record_id] = writer_class(log_dir=str(self.folder / record_id))
        return self._writers[record_id]

    def _close(self, record_id: str) -> None:
        writer = self._writers.pop(record_id, None)
        if writer is not None:
            writer.close()
            self._upload(record_id)

    def _upload(self, record_id: str) -> None:
        if self.store.is_local:
            return
        for path in sorted((self.folder / record_id).glob("events.*")):
            data = path.read_bytes()
            if self._uploaded.get(path) != len(data):  # event files only grow
                self.store.write_file(f"{TENSORBOARD_DIR}/{record_id}/{path.name}", data)
                self._uploaded[path] = len(data)
