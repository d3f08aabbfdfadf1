"""The search (nas/): config validation, the budget-aware searcher, and one real tiny search
(Ray Tune + OptunaSearch + ASHA, 2 trials at a time) whose run directory the other tests read.

The real search is shared by a module-scoped fixture: 7 trained trials at 16x16 with 4 optimiser
steps per epoch, a budget that rejects some candidates, ASHA on fit_full, and one trial made to
raise by a test trainable (`failing_at`) that wraps the real one."""

from __future__ import annotations

import math
import json
import time
from pathlib import Path
from urllib.request import urlopen

import pytest
import torch
import yaml
from optuna.trial import TrialState

from evaluators.cost import Budget, count_cost
from evaluators.memory import price_memory
from results import run_directory as records
from results.run_directory import RunDirectory
from nas.cli import main
from nas.config import SearchConfig, default_config, load_config
from nas.searcher import BudgetedOptunaSearch, make_sampler
from nas.study import create_study, load_study
from results.objectives import Objective
from results.table import load_table
from search_spaces.architecture import Architecture
from search_spaces.model import build_model
from search_spaces.space import default_space

EPOCHS = 3
NUM_TRIALS = 7
MAX_FLOPS = 2_500_000
MAX_PARAMS = 400_000
FAILING_POSITION = 2  # the third trained trial raises


def tiny_config(tmp: Path, **changes) -> dict:
    config = {
        "name": "tiny",
        "space": "digits",
        "trial": {"data": "digits", "resolution": 16, "small_per_class": 10,
                  "train": {"epochs": EPOCHS, "batch_size": 32, "steps_per_epoch": 4,
                            "eval_batch_size": 512}},
        "num_trials": NUM_TRIALS,
        # the raw gap, not the default matched-loss reading: 4 steps an epoch fit too little
        "objectives": [{"name": "gap", "direction": "min"}, {"name": "fit_full", "direction": "max"}],
        "sampler": {"name": "tpe", "seed": 0, "startup_trials": 4},
        "budget": {"max_flops": MAX_FLOPS, "max_params": MAX_PARAMS},
        # fit_full differs between architectures from the first epoch on, so ASHA stops some.
        "scheduler": {"name": "asha", "metric": "fit_full", "grace_period": 1,
                      "reduction_factor": 2},
        "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 2, "num_cpus": 2},
        "out_dir": str(tmp),
    }
    config.update(changes)
    return config


def failing_at(position: int):
    """A trainable: the real one, except that the trained trial at `position` (0-based, in
    suggestion order) raises inside training, as a broken data set or an out-of-memory would.
    Everything it needs is defined inside, so that Ray ships it to its workers by value."""
    def trainable(config):
        import nas.trainable

        class InjectedFailure(RuntimeError):
            pass

        if config["position"] != position:
            return nas.trainable.train_architecture(config)

        def broken_trial(*args, **kwargs):
            raise InjectedFailure(f"trial {config['number']} raises before training")

        real, nas.trainable.run_trial = nas.trainable.run_trial, broken_trial
        try:
            return nas.trainable.train_architecture(config)
        finally:
            nas.trainable.run_trial = real
    return trainable


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> records.Run:
    from nas.search import search

    tmp = tmp_path_factory.mktemp("search")
    summary = search(SearchConfig.from_dict(tiny_config(tmp)), run_dir=tmp / "run",
                     trainable=failing_at(FAILING_POSITION))
    assert not summary.interrupted
    return records.read_run(summary.run_dir)


OBJECTIVES = (("gap", "min"), ("fit_full", "max"))


def make_searcher(run_dir: Path, space, sampler: str, seed: int = 0,
                  objectives=OBJECTIVES, **kwargs) -> BudgetedOptunaSearch:
    """A searcher over a new study kept in `run_dir`, as a search makes one."""
    store = RunDirectory(run_dir)
    store.create()
    study = create_study(run_dir, "test", [Objective(n, d) for n, d in objectives],
                         make_sampler(sampler, seed, 4))
    return BudgetedOptunaSearch(space, objectives, study, str(run_dir), **kwargs)


def ray_trial_dirs(run: records.Run) -> list[Path]:
    """Ray Tune's trial folders of the run's single session (RUN/ray/session-*/<trial>)."""
    sessions = list((run.path / records.RAY_DIR).iterdir())
    assert len(sessions) == 1 and sessions[0].name.startswith("session-")
    return [p for p in sessions[0].iterdir() if p.is_dir()]


def trained(run: records.Run) -> list[dict]:
    return [r for r in run.records if r["status"] != "rejected"]


# ---- the real search -----------------------------------------------------------------------------

@pytest.mark.slow
def test_a_run_that_never_reaches_the_matched_loss_is_completed_but_unscored(tmp_path, capsys):
    """The default objectives read val acc where the training loss comes down to
    train.matched_loss; a run too short to get there trained its whole budget without error:
    completed, not failed, with the reason recorded, Optuna told no made-up value, on no front."""
    from nas.search import search

    config = tiny_config(tmp_path, num_trials=2, scheduler={"name": "none"})
    del config["objectives"]  # the defaults
    config["trial"]["train"].update(epochs=1, steps_per_epoch=2, matched_loss=0.05)
    summary = search(SearchConfig.from_dict(config), run_dir=tmp_path / "run")
    run = records.read_run(summary.run_dir)
    ran = trained(run)
    assert len(ran) == 2
    for r in ran:
        assert r["status"] == "completed" and r["error"] is None, r
        assert r["metrics"]["train_loss_small"] > 0.05
        assert math.isnan(r["objectives"]["val_acc_at_matched_loss"])
        assert "train.matched_loss" in r["unscored"] and r["optuna_state"] == "PRUNED"
    table = load_table(run)
    assert table["pareto_rank"].isna().all() and table["unscored"].notna().sum() == 2
    assert json.loads((summary.run_dir / "summary.json").read_text())["pareto_front"] == []
    assert "2 completed without a value for every objective" in capsys.readouterr().out


@pytest.mark.slow
def test_search_records_every_trial_architecture_cost_and_metrics(run):
    recs = trained(run)
    assert len(recs) == NUM_TRIALS
    assert all(r["status"] in records.FINISHED for r in recs)
    assert run.summary is not None and run.summary["trained"] == NUM_TRIALS
    assert [o.to_dict() for o in run.objectives] == [{"name": "gap", "direction": "min"},
                              {"name": "fit_full", "direction": "max"}]
    for r in recs:
        arch = Architecture.from_dict(r["architecture"])
        assert arch.arch_id == r["arch_id"] and arch.layout == r["layout"]
        cost = count_cost(arch)
        memory = price_memory(arch, 32, 512, "cpu").to_dict()  # the trial's batch sizes, on the CPU
        assert r["cost"] == {"params": cost.params, "flops": cost.flops, "resolution": 16,
                             "memory": memory}
        assert r["started"] and r["ended"] and r["wall_time_s"] is not None
        if r["status"] == "failed":
            continue
        assert 1 <= r["epochs_done"] == len(r["history"]) <= EPOCHS
        assert [h["epoch"] for h in r["history"]] == list(range(1, r["epochs_done"] + 1))
        assert r["metrics"] == r["history"][-1]
        for key in ("gap", "fit_full", "val_acc", "train_loss_full"):
            assert math.isfinite(r["metrics"][key])
    # Ray ran exactly the trained trials (rejected candidates never reached it), in one session.
    assert len(ray_trial_dirs(run)) == NUM_TRIALS


@pytest.mark.slow
def test_over_budget_architectures_never_train(run):
    rejected = [r for r in run.records if r["status"] == "rejected"]
    duplicates = [r for r in rejected if r["rejection"].startswith("duplicate of trial")]
    over_budget = [r for r in rejected if r not in duplicates]
    assert over_budget, "the budget should have rejected some candidates"
    for r in rejected:
        assert r["history"] == [] and r["epochs_done"] == 0 and r["metrics"] == {}
        assert r["trial_id"] not in {p.name for p in ray_trial_dirs(run)}
    for r in over_budget:
        assert r["cost"]["flops"] > MAX_FLOPS or r["cost"]["params"] > MAX_PARAMS
        assert r["rejection"] and r["optuna_state"] == "PRUNED"
    by_id = {r["trial_id"]: r for r in trained(run)}
    for r in duplicates:  # an architecture is trained once: its twin's numbers stand for it
        assert by_id[r["rejection"].split()[-1]]["arch_id"] == r["arch_id"]
    assert len({r["arch_id"] for r in trained(run)}) == NUM_TRIALS
    for r in trained(run):
        assert r["cost"]["flops"] <= MAX_FLOPS and r["cost"]["params"] <= MAX_PARAMS
    assert run.summary["counts"]["rejected"] == len(rejected)
    assert sum(run.summary["rejected_by"].values()) >= len(rejected)
    # Sampling numbers are Optuna's: rejected and trained candidates share one sequence.
    assert sorted(r["number"] for r in run.records) == list(range(len(run.records)))


@pytest.mark.slow
def test_asha_stopped_trial_is_pruned_not_completed(run):
    pruned = [r for r in run.records if r["status"] == "pruned"]
    completed = [r for r in run.records if r["status"] == "completed"]
    assert pruned, "ASHA should have stopped at least one trial early"
    assert completed
    for r in pruned:
        assert r["epochs_done"] < EPOCHS
        assert r["optuna_state"] == "PRUNED"  # what the searcher told Optuna
        assert r["objectives"] == {}
        assert r["trial_id"] not in run.summary["pareto_front"]
    for r in completed:
        assert r["epochs_done"] == EPOCHS and r["optuna_state"] == "COMPLETE"
        assert set(r["objectives"]) == {"gap", "fit_full"}
    assert set(run.summary["pareto_front"]) <= {r["trial_id"] for r in completed}


@pytest.mark.slow
def test_raising_trial_is_failed_and_the_others_finish(run):
    failed = [r for r in run.records if r["status"] == "failed"]
    assert len(failed) == 1
    assert "InjectedFailure" in failed[0]["error"]
    assert failed[0]["optuna_state"] == "FAIL"
    others = [r for r in trained(run) if r["status"] != "failed"]
    assert len(others) == NUM_TRIALS - 1
    assert all(r["status"] in ("completed", "pruned") for r in others)


@pytest.mark.slow
def test_kept_weights_rebuild_the_trained_model(run):
    completed = [r for r in run.records if r["status"] == "completed"]
    for r in completed:
        state = torch.load(run.path / r["weights"], weights_only=True)
        model = build_model(Architecture.from_dict(r["architecture"]))
        fresh = {k: v.clone() for k, v in model.state_dict().items()}
        model.load_state_dict(state)  # strict: every tensor present with the right shape
        # trained, not the initialisation: some weights moved
        assert any(not torch.equal(fresh[k], v) for k, v in state.items() if v.is_floating_point())


@pytest.mark.slow
def test_optuna_dashboard_serves_every_trial_of_the_run(run, tmp_path):
    """optuna-dashboard on the run's journal (what the README tells users to start) answers with
    every candidate: state, values and the user attributes the searcher set."""
    from servers import start_dashboard, stop

    proc, url = start_dashboard(str(run.path / records.STUDY_FILE), tmp_path / "dashboard.log")
    try:
        studies = json.loads(urlopen(f"{url}/api/studies", timeout=30).read())["study_summaries"]
        assert [s["study_name"] for s in studies] == ["tiny"]
        detail = json.loads(urlopen(f"{url}/api/studies/{studies[0]['study_id']}",
                                    timeout=60).read())
    finally:
        stop(proc)
    served = {t["number"]: t for t in detail["trials"]}
    assert sorted(served) == sorted(r["number"] for r in run.records)
    for r in run.records:
        trial = served[r["number"]]
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        assert trial["state"] == {"COMPLETE": "Complete", "PRUNED": "Pruned",
                                  "FAIL": "Fail"}[r["optuna_state"]], r["trial_id"]
        assert attrs["layout"] == r["layout"]
        assert attrs["params"] == str(r["cost"]["params"])
        assert attrs["flops"] == str(r["cost"]["flops"])
        if r["status"] == "rejected":
            assert attrs["rejection"] == r["rejection"]
        else:
            assert attrs["trial_id"] == attrs["record_id"] == r["trial_id"]
        if r["status"] == "completed":
            assert trial["values"] == pytest.approx([r["objectives"]["gap"],
                                                     r["objectives"]["fit_full"]])
    keys = {a["key"]: a["sortable"] for a in detail["union_user_attrs"]}
    assert keys["params"] and keys["flops"]  # flat numbers: sortable columns


@pytest.mark.slow
def test_tensorboard_scalars_hold_every_metric_of_every_epoch(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = run.path / records.TENSORBOARD_DIR
    trained_ids = {r["trial_id"] for r in trained(run) if r["history"]}
    assert {p.name for p in folder.iterdir()} >= trained_ids
    for r in trained(run):
        if not r["history"]:
            continue
        events = EventAccumulator(str(folder / r["trial_id"]), size_guidance={"scalars": 0})
        events.Reload()
        for name in r["history"][-1]:
            if name == "epoch" or not math.isfinite(r["history"][-1][name]):
                continue
            written = {e.step: e.value for e in events.Scalars(name) if math.isfinite(e.value)}
            expected = {int(h["epoch"]): h[name] for h in r["history"] if math.isfinite(h[name])}
            assert written == pytest.approx(expected, rel=1e-6, abs=1e-9), (r["trial_id"], name)


# ---- the searcher, without Ray -------------------------------------------------------------------

def test_searcher_prices_before_suggesting_and_tells_optuna_what_happened(tmp_path):
    store = RunDirectory(tmp_path)
    store.write_config({})
    store.create()
    space = default_space()
    budget = Budget(max_params=300_000)
    searcher = make_searcher(tmp_path, space, "random", budget=budget, epochs=EPOCHS)
    configs = [searcher.suggest(f"t{i}") for i in range(6)]
    for config in configs:
        assert count_cost(Architecture.from_dict(config["arch"])).params <= 300_000
    rejected = [r for r in RunDirectory(tmp_path).read_records() if r["status"] == "rejected"
                and not r["rejection"].startswith("duplicate")]
    assert rejected and all(r["cost"]["params"] > 300_000 for r in rejected)
    states = {t.number: t for t in searcher.study.get_trials(deepcopy=False)}
    for r in rejected:
        trial = states[r["number"]]
        assert trial.state == TrialState.PRUNED and trial.constraints["params"] > 0
    for name in ("t0", "t1", "t2", "t3", "t4", "t5"):  # records for the outcome updates
        store.write_record(records.new_record(name, 0, "running", {}, "x", "C", {}, EPOCHS))
    done = {"gap": 0.1, "fit_full": 0.9}
    searcher.on_trial_complete("t0", {**done, "final": 1.0})                  # trained to the end
    searcher.on_trial_complete("t1", {**done, "final": 0.0})                  # ASHA stopped it
    searcher.on_trial_complete("t2", {**done, "final": 1.0, "diverged": 1.0})
    searcher.on_trial_complete("t3", {**done, "final": 1.0, "failed": 1.0})
    searcher.on_trial_complete("t4", None, error=True)                        # Ray saw an error
    searcher.on_trial_complete("t5", {"gap": math.nan, "fit_full": 0.5, "final": 1.0})  # unscored
    states = {t.number: t for t in searcher.study.get_trials(deepcopy=False)}
    expect = {"t0": "COMPLETE", "t1": "PRUNED", "t2": "FAIL", "t3": "FAIL", "t4": "FAIL",
              "t5": "PRUNED"}
    for trial_id, state in expect.items():
        number = configs[int(trial_id[1])]["number"]
        assert states[number].state.name == state, trial_id
        assert store.read_record(trial_id)["optuna_state"] == state
    assert states[configs[0]["number"]].values == [0.1, 0.9]


def test_sampling_is_seeded(tmp_path):
    def numbers(seed):
        s = make_searcher(tmp_path / f"seed{seed}-{time.time_ns()}", default_space(), "tpe",
                          seed=seed, objectives=(("gap", "min"),))
        return [Architecture.from_dict(s.suggest(f"t{i}")["arch"]).arch_id for i in range(3)]
    assert numbers(1) == numbers(1)
    assert numbers(1) != numbers(2)


# ---- config and fast failures ----------------------------------------------------------------------

def test_default_config_round_trips_and_fits_its_budget():
    config = default_config()
    assert SearchConfig.from_dict(config.to_dict()) == config
    assert SearchConfig.from_dict(yaml.safe_load(config.to_yaml())) == config
    assert config.num_trials >= 6 and config.resources.max_concurrent_trials == 2
    from nas.search import make_budget, resolve_space
    assert make_budget(config, resolve_space(config)) is not None


@pytest.mark.parametrize("change, field", [
    ({"num_trials": "many"}, "num_trials"),
    ({"objectives": [{"name": "accuracy"}]}, "objectives[0].name"),
    ({"objectives": [{"name": "gap", "direction": "up"}]}, "objectives[0].direction"),
    ({"sampler": {"name": "cmaes"}}, "sampler.name"),
    ({"budget": {"max_flops": -5}}, "budget.max_flops"),
    ({"budget": {"max_flop": 5}}, "budget.max_flop"),
    ({"scheduler": {"metric": "speed"}}, "scheduler.metric"),
    ({"resources": {"gpus_per_trial": 1.5}}, "resources.gpus_per_trial"),
    ({"trial": {"train": {"epochs": "ten"}}}, "trial.train.epochs"),
    ({"trial": {"dataset": "digits"}}, "trial.dataset"),
    ({"colour": "blue"}, "colour"),
])
def test_malformed_config_names_the_field(tmp_path, change, field):
    with pytest.raises(ValueError) as err:
        SearchConfig.from_dict(tiny_config(tmp_path, **change))
    assert field in str(err.value)


def test_cli_reports_malformed_and_impossible_configs_before_ray_starts(tmp_path, capsys):
    import ray

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("name: x\nnum_trials: [1,\n")
    assert main(["search", str(bad_yaml)]) == 2
    assert "not valid YAML" in capsys.readouterr().err

    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(yaml.safe_dump(tiny_config(tmp_path, budget={"max_flop": 10})))
    assert main(["search", str(wrong)]) == 2
    assert "search.budget.max_flop: unknown field" in capsys.readouterr().err

    impossible = tmp_path / "impossible.yaml"
    impossible.write_text(yaml.safe_dump(tiny_config(tmp_path, budget={"max_params": 1000})))
    assert main(["search", str(impossible), "--out", str(tmp_path / "never")]) == 2
    err = capsys.readouterr().err
    assert "search.budget: no architecture of the space fits" in err and "params" in err
    assert not ray.is_initialized()
    assert not (tmp_path / "never").exists()

    assert main(["search", "--resume", str(tmp_path / "missing")]) == 2
    assert "no such run directory" in capsys.readouterr().err


def test_load_config_resolves_a_space_next_to_the_config(tmp_path):
    space = default_space().to_dict()
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    (tmp_path / "search.yaml").write_text(yaml.safe_dump(tiny_config(tmp_path, space="space.yaml")))
    config = load_config(tmp_path / "search.yaml")
    assert Path(config.space) == (tmp_path / "space.yaml").resolve()
    assert config.load_space() == default_space()


def test_records_are_atomic_and_corruption_is_named(tmp_path):
    with pytest.raises(records.RunDirError, match="not a hybrid-nas run directory"):
        records.read_run(tmp_path)
    arch = default_space().smallest()[0]
    store = RunDirectory(tmp_path)
    store.write_config({"objectives": [{"name": "gap", "direction": "min"}]})
    store.write_record(records.new_record("a", 0, "running", arch.to_dict(), arch.arch_id,
                                          arch.layout, {}, 3))
    assert store.update_record("a", status="completed")["status"] == "completed"
    assert records.read_run(tmp_path).records[0]["status"] == "completed"
    assert not list((tmp_path / records.TRIALS_DIR).glob(".*"))  # no temporary files left
    (tmp_path / records.TRIALS_DIR / "b.json").write_text("{not json")
    with pytest.warns(records.UnreadableRecordWarning, match="b.json: corrupt JSON"):
        assert [r["trial_id"] for r in store.read_records()] == ["a"]
    _, unreadable = store.scan_records()
    assert [Path(path).name for path, _ in unreadable] == ["b.json"]
    with pytest.raises(records.RunDirError, match="b.json: corrupt JSON"):
        store.read_record("b")


@pytest.mark.slow
def test_gpus_the_cluster_lacks_are_refused_not_waited_for(tmp_path, capsys):
    import ray

    path = tmp_path / "gpu.yaml"
    path.write_text(yaml.safe_dump(tiny_config(tmp_path)))
    have = 0 if not torch.cuda.is_available() else torch.cuda.device_count()
    code = main(["search", str(path), "--gpus-per-trial", str(have + 1),
                 "--out", str(tmp_path / "run")])
    assert code == 2
    assert "but the Ray cluster has" in capsys.readouterr().err
    assert not ray.is_initialized()  # the Ray this search started is stopped again
    assert not (tmp_path / "run").exists()


def test_an_architecture_is_trained_once_and_a_spent_space_ends_the_search(tmp_path):
    from ray.tune.search import Searcher

    store = RunDirectory(tmp_path)
    store.write_config({})
    store.create()
    one = default_space().to_dict()  # collapse every choice: a space of one architecture
    one["stem"] = {k: v[:1] for k, v in one["stem"].items()}
    one["stages"] = [{k: (v[:1] if k != "depth" else [v[0], v[0]]) if isinstance(v, list) else v
                      for k, v in stage.items()} for stage in one["stages"]]
    from search_spaces.space import SearchSpace
    space = SearchSpace.from_dict(one)
    assert space.size() == 1
    searcher = make_searcher(tmp_path, space, "random", max_attempts=3)
    first = searcher.suggest("t0")
    assert first["arch"] == space.smallest()[0].to_dict()
    store.write_record(records.new_record("t0", 0, "running", {}, "x", "C", {}, 1))
    searcher.on_trial_complete("t0", {"gap": 0.2, "fit_full": 0.7, "final": 1.0})
    assert searcher.suggest("t1") == Searcher.FINISHED
    dups = [r for r in RunDirectory(tmp_path).read_records() if r["status"] == "rejected"]
    assert len(dups) == 3 and all(r["rejection"] == "duplicate of trial t0" for r in dups)
    told = searcher.study.get_trials(deepcopy=False)
    assert [t.values for t in told[1:]] == [[0.2, 0.7]] * 3  # the twin's numbers, not retrained
    assert "3 already trained, 0 over budget" in (tmp_path / records.GAVE_UP_FILE).read_text()


def test_a_new_searcher_over_the_stored_study_carries_on(tmp_path):
    # What --resume builds: a new searcher over the study an interrupted driver left on disk.
    space = default_space()
    budget = Budget(max_flops=7_000_000)  # rejects about 3 of 4 candidates of the default space
    first = make_searcher(tmp_path, space, "random", budget=budget)
    given = [first.suggest(f"t{i}") for i in range(3)]
    store = RunDirectory(tmp_path)
    store.write_record(records.new_record("t0", 0, "running", {}, "x", "C", {}, EPOCHS))
    first.on_trial_complete("t0", {"gap": 0.3, "fit_full": 0.6, "final": 1.0})
    numbers_before = len(first.study.trials)
    # the driver dies; a new process opens the same journal
    study = load_study(tmp_path, "test", make_sampler("random", 1, 4))
    assert len(study.trials) == numbers_before
    assert study.trials[given[0]["number"]].values == [0.3, 0.6]
    again = BudgetedOptunaSearch(space, OBJECTIVES, study, str(tmp_path), budget=budget)
    trained = {Architecture.from_dict(c["arch"]).arch_id for c in given}
    for i in range(3, 9):
        config = again.suggest(f"t{i}")
        assert Architecture.from_dict(config["arch"]).arch_id not in trained
        assert config["number"] >= numbers_before and config["position"] == i
    numbers = [json.loads(p.read_text())["number"]
               for p in (tmp_path / records.TRIALS_DIR).glob("rejected-*.json")]
    assert len(numbers) == len(set(numbers))  # no number stands for two candidates


def test_plan_resume_lines_up_records_and_study_after_a_kill(tmp_path):
    from nas.resume import plan_resume
    from nas.study import RECORD_ATTR

    space = default_space()
    searcher = make_searcher(tmp_path, space, "random", budget=Budget(max_flops=7_000_000))
    given = {f"t{i}": searcher.suggest(f"t{i}") for i in range(5)}
    store = RunDirectory(tmp_path)

    def record(trial_id, status, **fields):
        arch = Architecture.from_dict(given[trial_id]["arch"])
        store.write_record(records.new_record(trial_id, given[trial_id]["number"], status,
                                              arch.to_dict(), arch.arch_id, arch.layout,
                                              given[trial_id]["cost"], EPOCHS, **fields))
    # t0 finished and Optuna was told; t1 finished but the driver died before telling Optuna;
    # t2 was running; t3's record was cut off mid-write; t4 never got a record at all
    record("t0", "running")
    searcher.on_trial_complete("t0", {"gap": 0.2, "fit_full": 0.8, "final": 1.0})
    record("t0", "completed", objectives={"gap": 0.2, "fit_full": 0.8})
    record("t1", "completed", objectives={"gap": 0.4, "fit_full": 0.5})
    record("t2", "running")
    store.record_path("t3").write_text('{"trial_id": "t3", "status": "runn')
    # a rejected candidate whose record was lost, and a candidate priced when the driver died
    lost = next(p for p in sorted((tmp_path / records.TRIALS_DIR).glob("rejected-*.json")))
    lost.unlink()
    dangling = searcher.study.ask()
    with pytest.warns(records.UnreadableRecordWarning, match="t3.json"):
        plan = plan_resume(store, searcher.study, ["gap", "fit_full"], EPOCHS)
    assert plan.finished == 2
    assert [(r.record_id, r.number) for r in plan.rerun] == \
        [(i, given[i]["number"]) for i in ("t2", "t3", "t4")]
    trials = searcher.study.get_trials(deepcopy=False)
    assert trials[given["t1"]["number"]].values == [0.4, 0.5]
    assert store.read_record("t1")["optuna_state"] == "COMPLETE"
    assert lost.is_file() and json.loads(lost.read_text())["status"] == "rejected"
    assert trials[dangling.number].state == TrialState.FAIL
    assert RECORD_ATTR not in trials[dangling.number].user_attrs
    # a searcher given the plan hands the interrupted trials out first, under their old ids
    again = BudgetedOptunaSearch(space, OBJECTIVES, searcher.study, str(tmp_path),
                                 rerun=plan.rerun)
    for trial_id in ("t2", "t3", "t4"):
        config = again.suggest(f"new-{trial_id}")
        assert config["record_id"] == trial_id and config["arch"] == given[trial_id]["arch"]
    fresh = again.suggest("new")
    assert fresh["record_id"] == "new" and fresh["number"] > dangling.number


def test_a_journal_line_cut_off_by_a_kill_is_dropped(tmp_path):
    searcher = make_searcher(tmp_path, default_space(), "random")
    searcher.suggest("t0")
    path = tmp_path / records.STUDY_FILE
    before = len(searcher.study.trials)
    with open(path, "ab") as f:
        f.write(b'{"op_code": 5, "worker_id": "x", "trial_id": 0, "us')  # half a line
    study = load_study(tmp_path, "test", make_sampler("random", 0, 4))
    assert len(study.trials) == before
    study.ask()  # and the journal takes new lines after the repair
    assert len(load_study(tmp_path, "test", make_sampler("random", 0, 4)).trials) == before + 1
