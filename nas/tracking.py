"""Driver-side record keeping: a Ray Tune callback that writes each trial's record as it goes.

A record is written when the trial starts, after every reported epoch, and when it ends; the end
status comes from what Tune saw: `completed` (its final report arrived), `diverged`, `pruned`
(stopped by the scheduler before its final report) or `failed` (raised; the error text is kept,
and a trial that ran out of memory, killed by the OOM killer or failing an allocation, is marked
`failure_reason: out_of_memory` with its priced and observed memory and the settings that lower
it: `results.failures`).
A multi-objective scheduler's rung decisions (`nas.moasha`) go into the record in the same write
as the epoch they were taken on (`rung_decisions`, and `stopped_at_rung`/`stop_reason` for the
decision that stopped it). Records are keyed by the record id the searcher gave the trial (a
trial trained again after an interruption keeps its id), and written on the driver, so trials
may run on any node: a trial's weights reach the run through Ray Tune's checkpoint upload to the
run storage, and the driver copies them to RUN/weights/. Each record notes the node that ran it.

For a run at a URI, a write the store refuses stays in the driver's local spool
(`results.storage.SpooledStorage`); at the end of that Tune step the search stops with that error,
and `--resume` uploads the spool first. A trial that errors while the store is out is left
`running`, so that resume trains it again rather than recording a failure that was the store's.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Protocol

import pyarrow.fs
from ray import tune

from nas.searcher import DIVERGED_KEY, FAILED_KEY, FINAL_KEY, trial_outcome, unscored_reason
from nas.trainable import ERROR_KEY, MEMORY_KEY, NODE_KEY, WEIGHTS_FILE
from results.failures import OUT_OF_MEMORY, failure_reason, memory_failure
from results.run_directory import RunDirectory, new_record, now_iso
from search_spaces.architecture import Architecture

# Keys Ray Tune adds to every result; they are not trial metrics.
TUNE_KEYS = {
    "done", "training_iteration", "trial_id", "date", "timestamp", "time_this_iter_s",
    "time_total_s", "pid", "hostname", "node_ip", "time_since_restore",
    "iterations_since_restore", "checkpoint_dir_name", "should_checkpoint", "config",
    "experiment_tag", "episodes_total", "timesteps_total", "timesteps_since_restore",
    FINAL_KEY, DIVERGED_KEY, FAILED_KEY, ERROR_KEY, NODE_KEY,
}


def record_id_of(trial: Any) -> str:
    """The id of a Tune trial's record (the searcher's, kept across interruptions)."""
    return str(trial.config.get("record_id", trial.trial_id))


def metrics_of(result: dict[str, Any]) -> dict[str, float]:
    """The trial's own numeric metrics from a Tune result."""
    return {k: float(v) for k, v in result.items()
            if k not in TUNE_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool)}


class Decisions(Protocol):
    """Where the records learn a scheduler's decision on a report (`nas.moasha`)."""

    def pop_decision(self, record_id: str, epoch: int) -> Any: ...


class RecordsCallback(tune.Callback):
    """Writes RUN/trials/<record_id>.json for every trial Tune runs, and copies kept weights
    into RUN/weights/. decisions: the scheduler whose rung decisions go into the records."""

    def __init__(self, store: RunDirectory, objectives: list[str], epochs: int,
                 decisions: Decisions | None = None,
                 memory_settings: dict[str, Any] | None = None):
        self.store = store
        self.memory_settings = dict(memory_settings or {})  # for out-of-memory records
        self.objectives = list(objectives)
        self.epochs = epochs
        self.decisions = decisions
        self._t0: dict[str, float] = {}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record_id = record_id_of(trial)
        self._t0[record_id] = time.time()
        config = trial.config
        arch = Architecture.from_dict(config["arch"])
        self.store.write_record(new_record(
            trial_id=record_id, number=int(config["number"]), status="running",
            architecture=arch.to_dict(), arch_id=arch.arch_id, layout=arch.layout,
            cost=dict(config["cost"]), epochs_budget=self.epochs, started=now_iso()))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict,
                        **info: Any) -> None:
        record = self.store.read_record(record_id_of(trial))
        if record is None:
            return
        row = metrics_of(result)
        epoch = row.get("epoch", 0.0)
        history = [h for h in record["history"] if h.get("epoch") != epoch]
        if epoch > 0:
            history.append(row)
            history.sort(key=lambda h: h.get("epoch", 0.0))
        record.update(history=history, metrics=history[-1] if history else row,
                      epochs_done=int(max((h.get("epoch", 0) for h in history), default=0)))
        decision = self.decisions.pop_decision(record_id_of(trial), int(epoch)) \
            if self.decisions is not None else None
        if decision is not None:
            _note_decision(record, decision)
        if result.get(ERROR_KEY):
            record["error"] = str(result[ERROR_KEY])
        if result.get(NODE_KEY):
            record["node"] = {"node_id": result[NODE_KEY], "ip": result.get("node_ip"),
                              "hostname": result.get("hostname"), "pid": result.get("pid")}
        self.store.write_record(record)

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any,
                      **info: Any) -> None:
        source = f"{checkpoint.path.rstrip('/')}/{WEIGHTS_FILE}"
        if checkpoint.filesystem.get_file_info(source).type != pyarrow.fs.FileType.File:
            return
        record_id = record_id_of(trial)
        name = self.store.save_weights(record_id, source, filesystem=checkpoint.filesystem)
        self.store.update_record(record_id, weights=name)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.store.storage.raise_if_failed()  # a write the store refused: stop the search now

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        last = trial.last_result or {}
        status, _, _ = trial_outcome(last, self.objectives)
        unscored = unscored_reason(last, self.objectives) if status == "completed" else None
        self._finish(trial, status, unscored=unscored)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if not self.store.storage.healthy():
            return  # maybe the store's fault (a checkpoint upload): left running, trained again
        error, full_text = _error_text(trial)
        self._finish(trial, "failed", error=error, full_error=full_text)

    def _finish(self, trial: Any, status: str, error: str | None = None,
                unscored: str | None = None, full_error: str | None = None) -> None:
        record_id = record_id_of(trial)
        record = self.store.read_record(record_id)
        if record is None:
            return
        record["status"] = status
        if error is not None:
            record["error"] = error
        if status == "failed":
            record["failure_reason"] = failure_reason(full_error or record.get("error"))
            if record["failure_reason"] == OUT_OF_MEMORY:
                priced = (record.get("cost") or {}).get("memory") or {}
                observed = (trial.last_result or {}).get(MEMORY_KEY)
                record["memory"] = memory_failure(
                    priced.get("peak_bytes"),
                    observed if isinstance(observed, (int, float)) and observed == observed
                    else None, self.memory_settings)
        record["unscored"] = unscored
        if status == "completed" and record["metrics"]:
            record["objectives"] = {name: record["metrics"].get(name, math.nan)
                                    for name in self.objectives}
        record["ended"] = now_iso()
        t0 = self._t0.pop(record_id, None)
        record["wall_time_s"] = None if t0 is None else round(time.time() - t0, 3)
        self.store.write_record(record)


def _note_decision(record: dict[str, Any], decision: Any) -> None:
    """Add a rung decision to a record (one per rung: a trial trained again replaces its own)."""
    kept = [d for d in record.get("rung_decisions") or [] if d.get("rung") != decision.rung]
    record["rung_decisions"] = sorted(kept + [decision.to_dict()], key=lambda d: d["rung"])
    if not decision.promote:
        record.update(stopped_at_rung=decision.rung, stop_reason=decision.reason)


def _error_text(trial: Any) -> tuple[str, str]:
    """The error of a failed trial: the last line of its traceback file, else Tune's summary;
    and the file's whole text (where Ray says why a worker died)."""
    path = getattr(trial, "error_file", None)
    try:
        text = Path(path).read_text().strip() if path else ""
    except OSError:
        text = ""
    if not text:
        return "trial raised (no error text recorded by Ray Tune)", ""
    lines = [line for line in text.splitlines() if line.strip()]
    # Keep the exception line(s), not Ray's wrapping traceback.
    tail = [line for line in lines if "Error" in line or "Exception" in line]
    line = (tail[-1] if tail else lines[-1]).strip()
    if failure_reason(text) == OUT_OF_MEMORY and failure_reason(line) is None:
        why = next(x.strip() for x in lines if failure_reason(x) == OUT_OF_MEMORY)
        line = f"{line} ({why})"  # the line that says it was memory
    return line, text
