"""`search(config)`: one layout search, Optuna sampling and Ray Tune running the trials.

    from nas.search import search
    from nas.config import load_config
    summary = search(load_config("my_search.yaml"))        # runs/<timestamp>-<name>/
    summary = search(run_dir="runs/...", resume=True)       # continue an interrupted one

Steps: resolve the space against the data set, refuse a budget no architecture can meet (before
Ray starts), start or join Ray, run Tune (BudgetedOptunaSearch + ASHA, records written by the
driver callback), and write summary.json when every trial has ended. An interrupted search
(Ctrl-C, or a killed driver) leaves its directory resumable with `resume=True`.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from nas.config import SearchConfig, SearchConfigError, default_config
from nas.progress import ProgressCallback, format_summary, summarize
from results.objectives import METRIC_DIRECTIONS
from results.run_directory import FINISHED, RAY_DIR, RunDirError, RunDirectory, read_run
from search_spaces.space import SearchSpace

logger = logging.getLogger(__name__)

# Experiment state (trial statuses + searcher) is saved at most this often (seconds); a killed
# driver loses at most this much Tune state (the trainable replays trials that had finished).
CHECKPOINT_PERIOD_S = "1"
LOCAL_NODE_IP = "127.0.0.1"


@dataclass(frozen=True)
class RunSummary:
    """What a search produced: its directory, whether it was interrupted, and summary.json's
    content (counts per status, rejections by reason, best trials, Pareto front, timing)."""

    run_dir: Path
    interrupted: bool
    data: dict[str, Any]

    @property
    def counts(self) -> dict[str, int]:
        return self.data["counts"]

    def __str__(self) -> str:
        return format_summary(self.data)


def new_run_dir(config: SearchConfig) -> Path:
    """runs/<UTC timestamp>-<name>, unique."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(config.out_dir) / f"{stamp}-{config.name}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def resolve_space(config: SearchConfig) -> SearchSpace:
    """The config's space matched to the data set (classes, from its listing: no image is
    decoded here) and the trial's resolution."""
    from evaluators.data import describe_data

    space = config.load_space()
    resolution = config.trial.resolution or space.resolution
    info = describe_data(config.trial.data, config.trial.data_path)
    try:
        return space.replace(resolution=resolution, num_classes=info.num_classes)
    except ValueError as exc:
        raise SearchConfigError("trial.resolution", f"does not suit the space: {exc}") from None


def make_budget(config: SearchConfig, space: SearchSpace):
    """The FLOP/param budget (None if the config sets none); refuses one the space cannot meet."""
    from evaluators.cost import Budget

    if not config.budget.enabled:
        return None
    budget = Budget(max_flops=config.budget.max_flops, max_params=config.budget.max_params,
                    resolution=space.resolution)
    checks = [(arch, budget.check(arch)) for arch in space.smallest()]
    if not any(check.fits for _, check in checks):
        arch, check = min(checks, key=lambda ac: (ac[1].cost.flops, ac[1].cost.params))
        raise SearchConfigError(
            "budget", f"no architecture of the space fits: the cheapest ({arch.layout}, "
            f"{check.cost}) is over budget: {'; '.join(check.reasons)}")
    return budget


def search(config: SearchConfig | None = None, run_dir: str | Path | None = None,
           resume: bool = False, address: str | None = None,
           trainable: Callable[[dict[str, Any]], None] | None = None) -> RunSummary:
    """Run (or with `resume=True` continue) a search; returns its summary.

    resume: `run_dir` must be an interrupted run; its stored config is used, except `resources`
    when a `config` is given (e.g. other GPUs per trial). address: join this Ray cluster
    (shared storage needed for RUN_DIR); default: start a local Ray. trainable: the function each
    trial runs (default `nas.trainable.train_architecture`); wrap that one to add logging,
    profiling or faults around every trial.
    """
    started = time.time()
    if resume:
        run_dir, config = _resumable(run_dir, config)
    else:
        config = config or default_config()
        run_dir = Path(run_dir) if run_dir is not None else new_run_dir(config)
        if run_dir.exists() and any(run_dir.iterdir()):
            raise RunDirError(run_dir, f"run directory exists and is not empty "
                                       f"(continue it with --resume {run_dir})")
    run_dir = run_dir.resolve()
    space = resolve_space(config)
    budget = make_budget(config, space)  # fails before Ray starts

    _quiet_ray_env()
    import ray

    t0 = time.time()
    started_ray = _start_ray(config, address)
    ray_startup_s = time.time() - t0
    try:
        _check_resources(config)
        store = RunDirectory(run_dir)
        store.create()
        if not resume:
            store.write_config(config.to_dict())
        store.clear_summary()
        trial_fn = _trainable(config, trainable)
        tuner = (_restore_tuner(run_dir, config, trial_fn) if resume
                 else _new_tuner(run_dir, config, space, budget, trial_fn))
        print(f"search: {config.num_trials} trials of {config.epochs} epochs, "
              f"{config.resources.max_concurrent_trials} at a time -> {run_dir}", flush=True)
        results = tuner.fit()
        unfinished = len(results) - results.num_terminated - results.num_errors
    finally:
        if started_ray:
            ray.shutdown()
    store = RunDirectory(run_dir)
    trained = sum(1 for r in store.read_records() if r["status"] in FINISHED)
    interrupted = unfinished > 0 or (trained < config.num_trials and len(results) < config.num_trials
                                     and store.gave_up() is None)
    objectives = [{"name": o.name, "direction": o.direction} for o in config.objectives]
    data = summarize(str(run_dir), objectives, config.num_trials, time.time() - started,
                     ray_startup_s, interrupted)
    if not interrupted:
        store.write_summary(data)
    summary = RunSummary(run_dir=run_dir, interrupted=interrupted, data=data)
    print(summary, flush=True)
    return summary


def _resumable(run_dir: str | Path | None, config: SearchConfig | None) -> tuple[Path, SearchConfig]:
    if run_dir is None:
        raise ValueError("resume: give the run directory to continue")
    run_dir = Path(run_dir)
    run = read_run(run_dir)  # RunDirError (a ValueError) names what is wrong
    if not (run_dir / RAY_DIR / "tuner.pkl").exists():
        raise RunDirError(run_dir, f"no Ray Tune state in {RAY_DIR}/ to resume "
                                   "(the search never started)")
    stored = SearchConfig.from_dict(run.config)
    if config is not None:
        stored = stored.replace(resources=config.resources)
    return run_dir, stored


def _quiet_ray_env() -> None:
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", CHECKPOINT_PERIOD_S)
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # verbose=0 means silent
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")  # the records keep the error text
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def _start_ray(config: SearchConfig, address: str | None) -> bool:
    """Join `address` or start a local Ray; True if this call started it (and should stop it)."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    else:
        ray.init(num_cpus=config.resources.num_cpus, include_dashboard=False,
                 _node_ip_address=LOCAL_NODE_IP,  # a local Ray talks to itself over loopback only
                 logging_level=logging.WARNING, log_to_driver=False)
    return True


def _check_resources(config: SearchConfig) -> None:
    """A trial that asks for more than the cluster has would wait forever: refuse it now."""
    import ray

    have = ray.cluster_resources()
    r = config.resources
    for name, want, key in (("cpus_per_trial", r.cpus_per_trial, "CPU"),
                            ("gpus_per_trial", r.gpus_per_trial, "GPU")):
        if want > have.get(key, 0.0):
            raise SearchConfigError(f"resources.{name}", f"{want:g} per trial, but the Ray cluster "
                                    f"has {have.get(key, 0.0):g} {key}s")


def _trainable(config: SearchConfig, trainable: Callable[[dict[str, Any]], None] | None):
    from ray import tune

    from nas.trainable import train_architecture

    r = config.resources
    return tune.with_resources(trainable or train_architecture,
                               {"cpu": r.cpus_per_trial, "gpu": r.gpus_per_trial})


def _param_space(run_dir: Path, config: SearchConfig) -> dict[str, Any]:
    """Constants every trial's config carries beside the searcher's `arch`, `cost`, `number`."""
    return {"trial": config.to_dict()["trial"], "threads": config.resources.threads,
            "keep_weights": config.keep_weights, "run_dir": str(run_dir)}


def trial_dirname(trial: Any) -> str:
    return trial.trial_id


def _new_tuner(run_dir: Path, config: SearchConfig, space: SearchSpace, budget, trial_fn):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from nas.searcher import BudgetedOptunaSearch, make_sampler
    from nas.tracking import RecordsCallback

    s = config.sampler
    searcher = BudgetedOptunaSearch(
        space=space, objectives=[(o.name, o.direction) for o in config.objectives],
        sampler=make_sampler(s.name, s.seed, s.startup_trials), run_dir=str(run_dir),
        budget=budget, max_attempts=config.budget.max_attempts, epochs=config.epochs)
    sch = config.scheduler
    if sch.name == "asha" and config.epochs > sch.grace_period:
        scheduler = ASHAScheduler(
            time_attr="epoch", metric=sch.metric, mode=sch.mode or METRIC_DIRECTIONS[sch.metric],
            max_t=config.epochs, grace_period=sch.grace_period,
            reduction_factor=sch.reduction_factor,
            stop_last_trials=False)  # a trial in its last epoch ends by itself, with its final report
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        trial_fn,
        param_space=_param_space(run_dir, config),
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=config.num_trials,
            max_concurrent_trials=config.resources.max_concurrent_trials, reuse_actors=True,
            trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=RAY_DIR, storage_path=str(run_dir),
            callbacks=[RecordsCallback([o.name for o in config.objectives], config.epochs),
                       ProgressCallback(config.num_trials)],
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            verbose=0),
    )


def _restore_tuner(run_dir: Path, config: SearchConfig, trial_fn):
    from ray import tune

    return tune.Tuner.restore(str(run_dir / RAY_DIR), trial_fn,
                              resume_unfinished=True, resume_errored=False, restart_errored=False,
                              param_space=_param_space(run_dir, config))
