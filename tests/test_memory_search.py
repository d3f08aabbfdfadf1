"""Memory in a real search: every trial's cost holds its priced memory, Ray is asked for it, the
evaluation chunk follows it, a budget rejects what cannot fit, and a trial killed for memory (its
address space limited by RLIMIT_AS from a test trainable) is recorded `out_of_memory` while the
others finish. Plus the machine's memory and the plan, without Ray."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evaluators.memory import RUNTIME_BYTES, GiB, MiB, MemorySettings, price_memory
from nas.config import SearchConfig
from nas.placement import (DRIVER_RESERVE_BYTES, host_memory, memory_settings, plan_memory,
                           trial_resources)
from nas.search import resolve_space
from results import run_directory as records
from results.failures import OUT_OF_MEMORY, failure_reason

NUM_TRIALS = 3
STARVED_POSITION = 1


def tiny_config(tmp: Path, **changes) -> dict:
    config = {
        "name": "memory",
        "space": "digits",
        "trial": {"data": "digits", "resolution": 16, "small_per_class": 10,
                  "train": {"epochs": 1, "batch_size": 32, "steps_per_epoch": 2}},
        "num_trials": NUM_TRIALS,
        "objectives": [{"name": "gap", "direction": "min"}, {"name": "fit_full", "direction": "max"}],
        "sampler": {"name": "random", "seed": 0},
        "scheduler": {"name": "none"},
        "resources": {"cpus_per_trial": 1, "max_concurrent_trials": 2, "num_cpus": 2},
        "out_dir": str(tmp),
        "keep_weights": False,
    }
    config.update(changes)
    return config


def starved_at(position: int):
    """A trainable: the real one, except that the trained trial at `position` trains with batches
    of 1024 and takes its training steps with its address space limited to 64 MiB more than the
    process already maps (RLIMIT_AS, set when the first step starts: its data loaded, its
    libraries imported), so that a step's allocation fails as it does on a machine out of
    memory. The limit is lifted afterwards (Ray may reuse the worker)."""
    def trainable(config):
        import copy
        import resource

        import evaluators.trainer
        import nas.trainable

        if config["position"] != position:
            return nas.trainable.train_architecture(config)
        config = copy.deepcopy(config)
        config["trial"]["train"]["batch_size"] = 1024
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        real = evaluators.trainer.Trainer.train_steps

        def starved(self, steps):
            with open("/proc/self/status") as status:
                mapped = next(int(line.split()[1]) * 1024 for line in status
                              if line.startswith("VmSize:"))
            resource.setrlimit(resource.RLIMIT_AS, (mapped + 64 * 2 ** 20, hard))
            try:
                return real(self, steps)
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (soft, hard))

        evaluators.trainer.Trainer.train_steps = starved
        try:
            return nas.trainable.train_architecture(config)
        finally:
            evaluators.trainer.Trainer.train_steps = real
    return trainable


def read_record(run_dir: Path, trial_id: str) -> dict:
    return json.loads((Path(run_dir) / "trials" / f"{trial_id}.json").read_text())


@pytest.mark.slow
def test_a_trial_out_of_memory_is_recorded_so_and_the_others_finish(tmp_path, capsys):
    from nas.search import search

    summary = search(SearchConfig.from_dict(tiny_config(tmp_path)), run_dir=tmp_path / "run",
                     trainable=starved_at(STARVED_POSITION))
    assert not summary.interrupted
    out = capsys.readouterr().out
    assert "memory: " in out and "per trial" in out  # the plan, printed at the start
    run = records.read_run(summary.run_dir)
    trained = sorted((r for r in run.records if r["status"] != "rejected"),
                     key=lambda r: r["number"])
    assert len(trained) == NUM_TRIALS
    starved = [r for r in trained if r["status"] == "failed"]
    assert len(starved) == 1, [(r["status"], r["error"]) for r in trained]
    record = starved[0]
    assert record["failure_reason"] == OUT_OF_MEMORY, record["error"]
    memory = record["memory"]
    assert memory["priced_bytes"] == record["cost"]["memory"]["peak_bytes"] > 0
    assert memory["settings"]["train.batch_size"] == 32
    assert "train.batch_size" in memory["advice"] and "max_concurrent_trials" in memory["advice"]
    assert record["optuna_state"] == "FAIL"
    others = [r for r in trained if r is not record]
    assert all(r["status"] == "completed" and r["failure_reason"] is None for r in others)
    for r in others:  # priced, and seen: the trial's peak resident memory was reported
        priced = r["cost"]["memory"]
        assert priced["eval_chunk"] == 512 and priced["batch_size"] == 32
        observed = r["metrics"]["memory_peak_bytes"]
        # a 16 px digits trial: the runtime dominates; the process held within 2x of the price
        assert priced["peak_bytes"] / 2 < observed < 2 * priced["peak_bytes"]
    # read back from disk as written
    on_disk = json.loads((summary.run_dir / "trials" / f"{record['trial_id']}.json").read_text())
    assert on_disk["failure_reason"] == OUT_OF_MEMORY

    # --resume with the same settings: it stays failed, with a warning naming what to lower
    same = SearchConfig.from_dict(tiny_config(tmp_path))
    search(same, run_dir=summary.run_dir, resume=True)
    out = capsys.readouterr().out
    assert f"warning: trial {record['trial_id']} ran out of memory" in out
    assert "train.batch_size" in out
    assert read_record(summary.run_dir, record["trial_id"])["status"] == "failed"
    # fewer trials at a time: a setting that lowers memory changed, so it trains again
    fewer = SearchConfig.from_dict(tiny_config(tmp_path, resources={
        "cpus_per_trial": 1, "max_concurrent_trials": 1, "num_cpus": 2}))
    search(fewer, run_dir=summary.run_dir, resume=True)
    out = capsys.readouterr().out
    assert "resources.max_concurrent_trials 2 -> 1 since: trained again" in out
    again = read_record(summary.run_dir, record["trial_id"])
    assert again["status"] == "completed" and again["failure_reason"] is None


def test_a_memory_budget_rejects_what_cannot_fit(tmp_path):
    from nas.search import make_budget

    config = SearchConfig.from_dict(tiny_config(tmp_path, trial={
        "data": "digits", "resolution": 32, "train": {"batch_size": 256}}))
    space = resolve_space(config)
    settings = memory_settings(config)
    prices = sorted(settings.price(a).peak_bytes for a in space.smallest())
    limit = (prices[0] + prices[-1]) // 2  # between the cheapest and dearest smallest candidates
    config = config.replace(budget=config.budget.__class__(max_memory=limit))
    plan = plan_memory(config, space, settings)
    assert plan.max_memory == limit and not plan.default
    budget = make_budget(config, space, plan)
    checks = [budget.check(a) for a in space.smallest()]
    assert any(c.fits for c in checks) and not all(c.fits for c in checks)
    over = next(c for c in checks if not c.fits)
    assert over.memory.peak_bytes > limit
    assert any(reason.startswith("memory ") and "train.batch_size" in reason
               for reason in over.reasons)


def test_default_budget_shares_the_machine_and_says_when_fewer_fit(tmp_path):
    config = SearchConfig.from_dict(tiny_config(tmp_path, trial={
        "data": "digits", "resolution": 32, "train": {"batch_size": 64}}))
    space = resolve_space(config)
    settings = memory_settings(config)
    plan = plan_memory(config, space, settings)
    host, _ = host_memory()
    assert plan.default and plan.trial_memory == host - DRIVER_RESERVE_BYTES
    assert plan.max_memory == plan.trial_memory // 2 and plan.fit == 2
    assert len(plan.describe(2)) == 1
    # ask for far more trials at once than the machine holds: fewer fit, and it is said
    many = config.replace(resources=config.resources.__class__(
        cpus_per_trial=1, max_concurrent_trials=10_000, num_cpus=2))
    cheapest = min(settings.price(a).peak_bytes for a in space.smallest())
    plan = plan_memory(many, space, settings)
    assert plan.fit < 10_000 and plan.max_memory >= cheapest
    assert plan.fit == plan.trial_memory // cheapest or plan.trial_memory // plan.fit >= cheapest
    lines = plan.describe(10_000)
    assert len(lines) == 2 and "10000 trials at a time do not fit" in lines[1]


def test_a_budget_below_the_cheapest_candidate_is_refused(tmp_path):
    config = SearchConfig.from_dict(tiny_config(tmp_path, budget={"max_memory": "100MiB"}))
    space = resolve_space(config)
    with pytest.raises(ValueError, match="budget.max_memory.*cheapest"):
        plan_memory(config, space, memory_settings(config))


def test_trials_ask_ray_for_their_priced_memory():
    request = trial_resources(1.0, 0.0, "cpu")({"cost": {"memory": {"peak_bytes": 3 * GiB}}})
    assert request.bundles == [{"CPU": 1.0, "memory": float(3 * GiB)}]
    gpu = trial_resources(1.0, 0.5, "cuda")({"cost": {"memory": {"peak_bytes": 3 * GiB}}})
    assert gpu.bundles[0]["GPU"] == 0.5 and gpu.bundles[0]["memory"] < 3 * GiB


@pytest.mark.parametrize("text", [
    "ray.exceptions.OutOfMemoryError: Task was killed due to the node running low on memory.",
    "A worker died or was killed while executing a task by an unexpected system error. ... (1) "
    "the process was killed by the OOM killer due to high memory usage.",
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB",
    "RuntimeError: [enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't "
    "allocate memory: you tried to allocate 1073741824 bytes.",
    "MemoryError",
])
def test_out_of_memory_errors_are_named(text):
    assert failure_reason(text) == OUT_OF_MEMORY


def test_other_errors_are_not_called_memory():
    assert failure_reason("InjectedFailure: trial 3 raises before training") is None
    assert failure_reason(None) is None


def test_settings_of_a_search_price_its_memory(tmp_path):
    config = SearchConfig.from_dict(tiny_config(tmp_path))
    settings = memory_settings(config)
    assert settings == MemorySettings(batch_size=32, eval_batch_size=512, device="cpu")
    arch = resolve_space(config).smallest()[0]
    assert settings.price(arch) is price_memory(arch, 32, 512, "cpu")
    assert settings.price(arch).peak_bytes < 1 * GiB + 600 * MiB


def test_gpu_trials_without_a_gpu_here_are_priced_not_limited(tmp_path, monkeypatch):
    import nas.placement
    from nas.search import make_budget

    monkeypatch.setattr(nas.placement, "gpu_memory", lambda: 0)
    config = SearchConfig.from_dict(tiny_config(tmp_path, resources={
        "cpus_per_trial": 1, "gpus_per_trial": 1, "max_concurrent_trials": 2}))
    settings = memory_settings(config)
    assert settings.device == "cuda"
    plan = plan_memory(config, resolve_space(config), settings)
    assert plan.max_memory is None and "no GPU on this machine" in plan.describe(2)[0]
    budget = make_budget(config, resolve_space(config), plan)
    check = budget.check(resolve_space(config).smallest()[0])
    assert check.fits and check.memory.device == "cuda"
    assert check.memory.runtime_bytes == RUNTIME_BYTES["cuda"]
