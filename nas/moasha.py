"""The multi-objective ASHA scheduler for Ray Tune: at each rung a trial trains on only if it is in
the top 1/reduction_factor of the trials recorded there, by non-dominated sorting on the search's
objectives (the rule and its tie-breaks: `nas.rungs`).

Its state is never saved with Tune: a search builds it at the start of every session from the
run's records (`Rungs.from_records`), which hold every reported epoch. Each decision is handed to
the records callback (`pop_decision`), which writes it into the trial's record in the same write
as the epoch it was taken on, so a driver killed at any moment leaves records and rung state that
agree: a trial whose record says it was stopped is pruned on resume (`nas.resume`), one whose
decision never reached its record is trained again and judged again.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from nas.rungs import RungDecision, Rungs
from nas.searcher import DIVERGED_KEY, FAILED_KEY, FINAL_KEY
from nas.tracking import record_id_of


class MOASHAScheduler(FIFOScheduler):
    """Stops a trial at a rung unless `rungs.decide` promotes it; trials at their full budget and
    final reports (completed, failed, diverged) are left alone: they end by themselves."""

    def __init__(self, rungs: Rungs):
        super().__init__()
        self.rungs = rungs
        self._decisions: dict[tuple[str, int], RungDecision] = {}

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        epoch = result.get("epoch")
        if not isinstance(epoch, (int, float)):
            return TrialScheduler.CONTINUE
        record_id = record_id_of(trial)
        if result.get(FINAL_KEY):  # its full-budget values: what adaptive rungs learn from
            if int(epoch) == self.rungs.max_t and not (result.get(FAILED_KEY)
                                                       or result.get(DIVERGED_KEY)):
                self.rungs.record(record_id, int(epoch), self.rungs.values_of(result))
            return TrialScheduler.CONTINUE
        decision = self.rungs.decide(record_id, int(epoch), self.rungs.values_of(result))
        if decision is None:
            return TrialScheduler.CONTINUE
        self._decisions[(record_id, int(epoch))] = decision
        return TrialScheduler.CONTINUE if decision.promote else TrialScheduler.STOP

    def pop_decision(self, record_id: str, epoch: int) -> RungDecision | None:
        """The decision taken on this trial's report of `epoch`, once (for its record)."""
        return self._decisions.pop((record_id, epoch), None)

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the rungs are rebuilt from the records at every session start."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore (see `save`)."""

    def debug_string(self) -> str:
        counts = ", ".join(f"epoch {e}: {len(at)}" for e, at in self.rungs.recorded.items())
        return f"MOASHA: trials recorded per rung: {counts or 'no rungs'}"
