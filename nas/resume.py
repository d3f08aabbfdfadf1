"""Continuing an interrupted search from what its run directory holds: the trial records and the
Optuna study. No Ray Tune state is read back (nothing is unpickled, and nothing in the run names
an absolute path), so a run can be resumed where it now lies: copied, moved, or someone else's.

`plan_resume` lines the two up after an interruption at any moment:
- a record that finished stands, and Optuna is told its outcome if the driver died before it was;
- a trial that was running (its record `running`, unreadable, or never written) is trained again
  from the start under the same record id: nothing finished is lost, nothing is trained twice;
- except one whose record holds the rung decision that stopped it (the driver died between the
  decision and the end of the trial): the decision stands, the trial is `pruned`;
- a candidate rejected before training whose record was never written gets it now;
- a trial that ran out of memory (`failure_reason: out_of_memory`) is trained again, under its
  record id, only when a setting that lowers memory changed since (with `--resume` only
  `resources.max_concurrent_trials` can: fewer at a time); otherwise it stays failed and a note
  says which settings would lower it. A trial trained again this way keeps its Optuna trial,
  already told FAIL: its new values reach the records, not the sampler.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import optuna
from optuna.trial import TrialState

from nas.searcher import FINISHED_STATES, Rerun, rejected_record, tell
from nas.study import RECORD_ATTR, REJECTION_ATTR
from results.failures import OUT_OF_MEMORY
from results.objectives import is_value
from results.run_directory import FINISHED, RunDirectory, UnreadableRecordWarning, now_iso

LOST = ("lost: the driver stopped while this trial ran, and the run holds no Optuna trial to train "
        "it again")
STATES = {"completed": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
          "failed": TrialState.FAIL, "diverged": TrialState.FAIL}


@dataclass(frozen=True)
class ResumePlan:
    """finished: trained trials that ended (they count towards the requested number);
    rerun: trials to train again first; notes: what was repaired, one line each."""

    finished: int
    rerun: tuple[Rerun, ...]
    notes: tuple[str, ...] = field(default=())


def plan_resume(store: RunDirectory, study: optuna.Study, objectives: list[str],
                epochs: int, memory_knobs: dict | None = None) -> ResumePlan:
    """Reconcile the records with the study (see the module docstring); repairs the records.
    memory_knobs: the settings that lower a trial's memory as this session has them
    (`nas.search.memory_knobs`); None: trials that ran out of memory stay failed."""
    records, unreadable = store.scan_records()
    by_id = {str(r["trial_id"]): r for r in records}
    damaged = {_record_id(path) for path, _ in unreadable}
    notes = [f"record {path} is unreadable ({reason}): that trial is trained again"
             for path, reason in unreadable]
    for line in notes:
        warnings.warn(line, UnreadableRecordWarning, stacklevel=2)
    rerun, in_study = [], set()
    for trial in study.get_trials(deepcopy=False):
        record_id = trial.user_attrs.get(RECORD_ATTR)
        if record_id is None:  # a candidate that never trained
            if REJECTION_ATTR in trial.user_attrs and trial.state in FINISHED_STATES \
                    and f"rejected-{trial.number}" not in by_id:
                store.write_record(rejected_record(trial, epochs))
            elif trial.state == TrialState.RUNNING:  # priced when the driver died: never used
                study.tell(trial.number, state=TrialState.FAIL)
            continue
        in_study.add(record_id)
        record = by_id.get(record_id)
        if record is not None and record["status"] == "running" and record_id not in damaged \
                and record.get("stopped_at_rung") is not None:
            record.update(status="pruned", ended=now_iso())
            store.write_record(record)
            notes.append(f"trial {record_id} was stopped at rung {record['stopped_at_rung']} "
                         "before the driver died: pruned")
        if record is not None and record.get("failure_reason") == OUT_OF_MEMORY \
                and record_id not in damaged:
            changed = _memory_changes(record, memory_knobs)
            if changed:
                record.update(status="running", ended=None)
                store.write_record(record)
                notes.append(f"trial {record_id} ran out of memory; {changed} since: trained again")
                rerun.append(Rerun(record_id, trial.number))
                in_study.add(record_id)
                continue
            memory = record.get("memory") or {}
            notes.append(f"warning: trial {record_id} ran out of memory and is not trained again "
                         "with the same settings; " + memory.get("advice", "lower train.batch_size"))
        if record is not None and record["status"] in FINISHED and record_id not in damaged:
            if trial.state == TrialState.RUNNING:  # finished, but Optuna was never told
                values = [record["objectives"].get(name) for name in objectives]
                state = STATES[record["status"]]
                if state == TrialState.COMPLETE and not all(map(is_value, values)):
                    state = TrialState.PRUNED  # completed but unscored (nas.searcher.trial_outcome)
                told = tell(study, trial.number, state, values)
                store.update_record(record_id, optuna_state=told.state.name)
                notes.append(f"told Optuna how trial {record_id} ended ({told.state.name})")
            continue
        rerun.append(Rerun(record_id, trial.number))
    for record in records:  # running records the study knows nothing of (its file was replaced)
        if record["status"] == "running" and str(record["trial_id"]) not in in_study:
            record.update(status="failed", ended=now_iso(), error=LOST)
            store.write_record(record)
            notes.append(f"trial {record['trial_id']} was running and cannot be trained again: failed")
    records, _ = store.scan_records()
    finished = sum(1 for r in records if r["status"] in FINISHED
                   and str(r["trial_id"]) not in {again.record_id for again in rerun})
    if rerun:
        notes.append(f"{len(rerun)} interrupted trial(s) train again from the start: "
                     + ", ".join(again.record_id for again in rerun))
    return ResumePlan(finished=finished, rerun=tuple(rerun), notes=tuple(notes))


def _memory_changes(record: dict, knobs: dict | None) -> str:
    """Which settings that lower memory differ from those the record's trial ran out with
    ("" when none, or when either side is unknown)."""
    before = (record.get("memory") or {}).get("settings") or {}
    if not knobs or not before:
        return ""
    return ", ".join(f"{name} {before[name]} -> {knobs[name]}" for name in before
                     if name in knobs and knobs[name] != before[name])


def _record_id(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return name[:-len(".json")] if name.endswith(".json") else name
