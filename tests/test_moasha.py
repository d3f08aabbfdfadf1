"""Multi-objective ASHA (`nas.rungs`, `nas.moasha`): promotion at a rung on hand-made values
(mixed directions, ties, missing readings), the config that makes it the default of
multi-objective searches, its state rebuilt from the records after a kill, and a real search
killed while it decides, then resumed: every pruned trial stays off the front, and its record
says at which rung and why it stopped."""

from __future__ import annotations

import copy
import math
import time
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from ray.tune.schedulers import TrialScheduler

from nas.config import SearchConfig, default_config
from nas.moasha import MOASHAScheduler
from nas.rungs import Rungs, promotion_order, rung_epochs
from nas.tracking import RecordsCallback
from results import run_directory as records
from results.run_directory import RunDirectory
from search_spaces.space import default_space
from test_search import make_searcher, tiny_config
from test_search_resume import trial_records

MAX, MIN = "max", "min"


def decide_all(rungs: Rungs, arrivals: list[tuple[str, tuple]], epoch: int = 1) -> dict[str, bool]:
    return {key: rungs.decide(key, epoch, values).promote for key, values in arrivals}


# ---- the rule ----------------------------------------------------------------------------------

def test_rungs_lie_at_grace_period_times_powers_of_the_reduction_factor():
    assert rung_epochs(9, 1, 3) == (1, 3)
    assert rung_epochs(9, 3, 3) == (3,)
    assert rung_epochs(8, 1, 2) == (1, 2, 4)
    assert rung_epochs(3, 3, 3) == ()
    rungs = Rungs([("a", MAX)], 9, 1, 3)
    assert rungs.decide("t", 2, [0.5]) is None  # no rung at epoch 2: nothing to decide
    assert rungs.rung_of(3) == 2


def test_promotion_follows_the_fronts_under_mixed_directions():
    # accuracy (max) and loss (min): each arrival is judged against the trials already there
    rungs = Rungs([("acc", MAX), ("loss", MIN)], 9, 1, 2)
    decisions = decide_all(rungs, [
        ("t1", (0.5, 0.5)),   # first at the rung: continues
        ("t2", (0.4, 0.6)),   # dominated by t1 (worse on both), 1 of 2 may go on: stops
        ("t3", (0.9, 0.1)),   # dominates both: continues
        ("t4", (0.6, 0.3)),   # second front of 4 (only t3 dominates it), 2 may go on
        ("t5", (0.55, 0.2)),  # beside t4 on the second front; 3 of 5 may go on
    ])
    assert decisions == {"t1": True, "t2": False, "t3": True, "t4": True, "t5": True}
    reason = rungs.decide("t2", 1, (0.4, 0.6)).reason
    assert reason.startswith("rung 1 (epoch 1): front 4 of 4, place 5 of 5")
    # the same numbers with loss maximised instead: t2 leaves the last front
    keys = ["t1", "t2", "t3", "t4"]
    values = np.array([(0.5, 0.5), (0.4, 0.6), (0.9, 0.1), (0.6, 0.3)])
    assert list(promotion_order(values, [MAX, MIN], keys).fronts) == [2, 3, 0, 1]
    assert list(promotion_order(values, [MAX, MAX], keys).fronts) == [0, 0, 0, 0]


def test_ties_in_a_front_go_to_the_extremes_then_the_most_isolated():
    # one front of four (both maximised): A and D are the extremes, C is more isolated than B
    rungs = Rungs([("a", MAX), ("b", MAX)], 9, 1, 2)
    decisions = decide_all(rungs, [("A", (1.0, 0.0)), ("B", (0.9, 0.2)), ("C", (0.5, 0.6)),
                                   ("D", (0.0, 1.0))])
    assert decisions == {"A": True, "B": False, "C": True, "D": True}
    keys = ["A", "B", "C", "D"]
    order = promotion_order(np.array([rungs.recorded[1][k] for k in keys]), [MAX, MAX], keys)
    assert [keys[i] for i in np.argsort(order.places)] == ["A", "D", "C", "B"]
    assert "4th of 4 in its front by crowding distance" in rungs.decide("B", 1, (0.9, 0.2)).reason
    # identical values share a front and tie: the smaller key goes first
    twins = Rungs([("a", MAX), ("b", MAX)], 9, 1, 2)
    assert decide_all(twins, [("t2", (0.5, 0.5)), ("t1", (0.5, 0.5))]) == {"t2": True, "t1": True}
    assert twins.decide("t2", 1, (0.5, 0.5)).promote is False  # judged again: t1 is first now


def test_missing_readings_rank_last_on_their_objective_and_all_missing_never_goes_on():
    rungs = Rungs([("acc_at_level", MAX), ("fit", MAX)], 9, 1, 2)
    # a NaN reading alone at a rung: nothing to rank it by, never promoted (unlike ASHA's first)
    first = rungs.decide("failed", 1, (math.nan, math.nan))
    assert not first.promote and "no finite objective value" in first.reason
    assert not rungs.decide("inf", 1, (math.inf, -math.inf)).promote
    # not there yet (NaN) is worse than any reading, but the trial still counts on the other
    keys = ["fits-best", "reads", "fits-worst"]
    values = np.array([(math.nan, 0.9), (0.6, 0.5), (math.nan, 0.4)])
    order = promotion_order(values, [MAX, MAX], keys)
    assert list(order.fronts) == [0, 0, 1]
    rungs = Rungs([("acc_at_level", MAX), ("fit", MAX)], 9, 1, 2)
    assert decide_all(rungs, list(zip(keys, map(tuple, values)))) == \
        {"fits-best": True, "reads": True, "fits-worst": False}


def test_scheduler_leaves_final_reports_and_the_full_budget_alone():
    scheduler = MOASHAScheduler(Rungs([("a", MAX)], 3, 1, 3))
    trial = SimpleNamespace(trial_id="x", config={"record_id": "r"})
    # a failed or diverged trial's final report, at a rung epoch: it ends by itself, unrecorded
    final = {"epoch": 1.0, "a": math.nan, "final": 1.0, "failed": 1.0}
    assert scheduler.on_trial_result(None, trial, final) == TrialScheduler.CONTINUE
    assert scheduler.rungs.recorded[1] == {} and scheduler.pop_decision("r", 1) is None
    assert scheduler.on_trial_result(None, trial, {"epoch": 3.0, "a": 0.1}) == TrialScheduler.CONTINUE
    assert scheduler.on_trial_result(None, trial, {"epoch": 1.0, "a": 0.1}) == TrialScheduler.CONTINUE
    assert scheduler.pop_decision("r", 1).promote and scheduler.pop_decision("r", 1) is None


# ---- config ---------------------------------------------------------------------------------------

def test_moasha_is_the_default_of_multi_objective_searches(tmp_path):
    assert default_config().scheduler.name == "moasha"
    base = {k: v for k, v in tiny_config(tmp_path).items() if k != "scheduler"}
    assert SearchConfig.from_dict(base).scheduler.name == "moasha"
    single = SearchConfig.from_dict({**base, "objectives": [{"name": "fit_full"}]})
    assert single.scheduler.name == "asha"
    assert SearchConfig.from_dict(single.to_dict()) == single  # the resolved name round-trips


@pytest.mark.parametrize("scheduler, field, words", [
    ({"name": "moasha", "reduction_factor": 1}, "scheduler.reduction_factor", "must be a number > 1"),
    ({"name": "moasha", "grace_period": 0}, "scheduler.grace_period", "must be >= 1"),
    ({"name": "moasha", "metric": "gap"}, "scheduler.metric", "all the search's objectives"),
    ({"name": "mosha"}, "scheduler.name", "unknown scheduler"),
])
def test_bad_scheduler_fields_are_named(tmp_path, scheduler, field, words):
    with pytest.raises(ValueError) as err:
        SearchConfig.from_dict(tiny_config(tmp_path, scheduler=scheduler))
    assert str(err.value).startswith(f"search.{field}: ") and words in str(err.value)


def test_the_session_builds_moasha_from_the_records_and_asha_for_one_metric(tmp_path):
    from ray.tune.schedulers import ASHAScheduler

    from nas.search import _new_scheduler

    store = RunDirectory(tmp_path)
    store.create()
    arch = default_space().smallest()[0]
    history = [{"epoch": 1.0, "gap": 0.3, "fit_full": 0.2}, {"epoch": 2.0, "gap": 0.2, "fit_full": 0.4}]
    store.write_record(records.new_record("r0", 0, "pruned", arch.to_dict(), arch.arch_id,
                                          arch.layout, {}, 3, history=history))
    config = SearchConfig.from_dict(tiny_config(tmp_path, scheduler={"name": "moasha"}))
    scheduler = _new_scheduler(store, config)
    assert isinstance(scheduler, MOASHAScheduler)
    assert scheduler.rungs.state() == {1: {"r0": (0.3, 0.2)}}  # eta 3 over 3 epochs: one rung
    asha = _new_scheduler(store, SearchConfig.from_dict(tiny_config(tmp_path)))
    assert isinstance(asha, ASHAScheduler) and asha.metric == "fit_full"


# ---- state after a kill -----------------------------------------------------------------------------

def test_rungs_rebuilt_from_the_records_after_a_kill_decide_as_before(tmp_path):
    from nas.resume import plan_resume

    objectives = [("gap", MIN), ("fit_full", MAX)]
    searcher = make_searcher(tmp_path, default_space(), "random")
    store = RunDirectory(tmp_path)
    scheduler = MOASHAScheduler(Rungs(objectives, 4, 1, 2))  # rungs at epochs 1 and 2
    callback = RecordsCallback(store, ["gap", "fit_full"], 4, decisions=scheduler)
    trials = {f"r{i}": SimpleNamespace(trial_id=f"tune{i}", config=searcher.suggest(f"r{i}"),
                                       last_result={}) for i in range(5)}

    def report(key, epoch, gap, fit, written=True):
        trial, result = trials[key], {"epoch": float(epoch), "gap": gap, "fit_full": fit}
        action = scheduler.on_trial_result(None, trial, result)
        if written:  # Tune calls the records callback after the scheduler, with the same result
            callback.on_trial_result(0, [], trial, result)
            trial.last_result = result
        return action

    def stopped(key):
        callback.on_trial_complete(0, [], trials[key])
        searcher.on_trial_complete(trials[key].trial_id, trials[key].last_result)

    for trial in trials.values():
        callback.on_trial_start(0, [], trial)
    # arrivals out of record order (r2, r0, r3, r1), so that rebuilding cannot replay them
    assert report("r2", 1, 0.5, 0.5) == "CONTINUE"  # first at the rung
    assert report("r0", 1, 0.2, 0.8) == "CONTINUE"  # dominates r2
    assert report("r3", 1, 0.9, 0.1) == "STOP"      # 3rd front of 3, 2 of 3 may go on
    stopped("r3")
    assert report("r1", 1, 0.6, 0.4) == "STOP"      # 3rd of 4 fronts, 2 may go on
    stopped("r1")
    assert report("r0", 2, 0.1, 0.9) == "CONTINUE"
    # the driver dies: r2 was stopped at rung 2 and its record says so, but it never ended;
    # r4's rung-1 decision was taken but its epoch never reached its record
    assert report("r2", 2, 0.4, 0.6) == "STOP"
    live = copy.deepcopy(scheduler.rungs)
    report("r4", 1, 0.1, 0.9, written=False)

    rebuilt = Rungs.from_records(store.read_records(), objectives, 4, 1, 2)
    assert rebuilt.state() == live.state()
    for key, epoch, values in [("p1", 1, (0.3, 0.7)), ("p2", 2, (0.05, 0.2)), ("p3", 1, (0.3, 0.1))]:
        assert rebuilt.decide(key, epoch, values) == live.decide(key, epoch, values)

    plan = plan_resume(store, searcher.study, ["gap", "fit_full"], 4)
    assert sorted(r.record_id for r in plan.rerun) == ["r0", "r4"]  # r4 is judged again
    r2 = store.read_record("r2")
    assert r2["status"] == "pruned" and r2["optuna_state"] == "PRUNED"  # the decision stands
    assert r2["stopped_at_rung"] == 2 and r2["epochs_done"] == 2
    assert r2["stop_reason"].startswith("rung 2 (epoch 2): front 2 of 2, place 2 of 2")
    assert [d["action"] for d in r2["rung_decisions"]] == ["continue", "stop"]
    for key in ("r1", "r3"):
        record = store.read_record(key)
        assert record["status"] == "pruned" and record["optuna_state"] == "PRUNED"
        assert record["stopped_at_rung"] == 1 and record["epochs_done"] == 1
        assert record["stop_reason"] == record["rung_decisions"][-1]["reason"]
    assert store.read_record("r0")["stopped_at_rung"] is None


# ---- a real search, killed while it decides -------------------------------------------------------

@pytest.mark.slow
def test_a_real_search_killed_at_a_rung_decision_resumes_with_pruned_trials_off_the_front(tmp_path):
    from test_search_resume import cli, finished, kill_group

    num_trials = 6
    config = tiny_config(tmp_path, num_trials=num_trials, budget={"max_flops": 2_500_000},
                         scheduler={"name": "moasha", "grace_period": 1, "reduction_factor": 3})
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    run_dir = tmp_path / "run"

    def decided() -> dict[str, dict]:
        return {r["trial_id"]: r for r in trial_records(run_dir)
                if r.get("stopped_at_rung") is not None}

    proc = cli(str(path), "--out", str(run_dir))
    deadline = time.time() + 240
    while not decided():  # SIGKILL the moment a stop decision reaches a record
        assert proc.poll() is None, f"no trial was stopped:\n{proc.stdout.read()}"
        assert time.time() < deadline, "timed out waiting for a rung decision"
        time.sleep(0.05)
    kill_group(proc)
    before_stops, before_finished = decided(), finished(run_dir)

    proc = cli("--resume", str(run_dir))
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    run = records.read_run(run_dir)
    trained = [r for r in run.records if r["status"] != "rejected"]
    assert len(trained) == num_trials and run.summary["trained"] == num_trials
    by_id = {r["trial_id"]: r for r in trained}
    for trial_id, record in before_stops.items():  # a decision taken stands
        assert by_id[trial_id]["status"] == "pruned"
        assert by_id[trial_id]["stop_reason"] == record["stop_reason"]
    for trial_id, record in before_finished.items():
        assert by_id[trial_id]["history"] == record["history"]
    pruned = [r for r in trained if r["status"] == "pruned"]
    completed = [r for r in trained if r["status"] == "completed"]
    assert pruned and completed
    front = set(run.summary["pareto_front"])
    for r in pruned:
        assert r["trial_id"] not in front and r["objectives"] == {}
        assert r["optuna_state"] == "PRUNED" and r["stopped_at_rung"] == 1 and r["epochs_done"] == 1
        assert r["stop_reason"].startswith("rung 1 (epoch 1): front ")
        assert "may continue" in r["stop_reason"]
        assert r["rung_decisions"] == [{"rung": 1, "epoch": 1, "action": "stop",
                                        "reason": r["stop_reason"]}]
    for r in completed:
        assert r["rung_decisions"][0]["action"] == "continue" and r["stop_reason"] is None
    assert front and front <= {r["trial_id"] for r in completed}
