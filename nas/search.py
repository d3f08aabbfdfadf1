"""`search(config)`: one layout search, Optuna sampling and Ray Tune running the trials.

    from nas.search import search
    from nas.config import load_config
    summary = search(load_config("my_search.yaml"))        # runs/<timestamp>-<name>/
    summary = search(run_dir="runs/...", resume=True)       # continue an interrupted one
    summary = search(config, run_dir="s3://bucket/runs/x?endpoint_override=host:9000&scheme=http")

Steps: check that the run storage (a folder or a URI) can be written, resolve the space against
the data set, refuse a budget no architecture can meet (all before Ray starts), open the run
directory and its Optuna study, start or join Ray, run Tune (BudgetedOptunaSearch, early stopping
by multi-objective ASHA (`nas.moasha`) or ASHA, records and TensorBoard scalars written by driver
callbacks, weights uploaded by Tune's checkpoints), and
write summary.json when every trial has ended. An interrupted search (Ctrl-C, SIGTERM, a killed
driver, a store that went away) leaves its run resumable with `resume=True`, wherever the
directory is moved (`nas.resume`).
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
from nas.placement import MemoryPlan, memory_settings, plan_memory, trial_resources
from nas.progress import ProgressCallback, format_summary, summarize
from nas.ray_session import check_resources, quiet_ray, start_ray
from nas.resume import ResumePlan, plan_resume
from nas.signals import SearchStopped, StopSignals
from results.run_directory import CONFIG_FILE, FINISHED, RAY_DIR, RunDirError, RunDirectory
from results.storage import StorageError, is_uri, join, open_storage
from search_spaces.space import SearchSpace

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class RunSummary:
    """What a search produced: its directory, whether it was interrupted (and by which signal,
    if one stopped it), and summary.json's content (counts per status, rejections by reason,
    best trials, Pareto front, timing)."""

    run_dir: Path | str  # a URI for a run kept in an object store
    interrupted: bool
    data: dict[str, Any]
    signal: int | None = None

    @property
    def counts(self) -> dict[str, int]:
        return self.data["counts"]

    def __str__(self) -> str:
        return format_summary(self.data)


def new_run_dir(config: SearchConfig) -> Path | str:
    """<out_dir>/<UTC timestamp>-<name>, unique; a URI when out_dir is one."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    name, n = f"{stamp}-{config.name}", 1
    location = join(config.out_dir, name)
    while (not RunDirectory(location).is_empty() if is_uri(location)
           else Path(location).exists()):
        n += 1
        location = join(config.out_dir, f"{name}-{n}")
    return location


def open_run_to_resume(location: str | Path | RunDirectory) -> tuple[RunDirectory, SearchConfig]:
    """An interrupted run and its stored config, before Ray starts: the storage is probed, what
    an earlier session left in this machine's spool is uploaded, and the directory is checked."""
    store = location if isinstance(location, RunDirectory) else \
        RunDirectory(location if is_uri(location) else Path(location).resolve(), writer=True)
    store.probe()
    uploaded = store.storage.drain()
    if uploaded:
        print(f"resume: uploaded {uploaded} file(s) an earlier session left in the local spool",
              flush=True)
    store.check()  # RunDirError (a ValueError) names what is wrong
    try:
        config = SearchConfig.from_dict(store.read_config())
    except ValueError as exc:
        raise RunDirError(store.location(CONFIG_FILE),
                          f"not a usable search config: {exc}") from None
    return store, config


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


def make_budget(config: SearchConfig, space: SearchSpace, memory: MemoryPlan | None = None):
    """The budget: FLOPs/params as configured, and each trial's memory (`memory`: the plan of
    `nas.placement.plan_memory`; None: memory is not priced); refuses one the space cannot
    meet."""
    from evaluators.cost import Budget

    if not config.budget.enabled and memory is None:
        return None
    budget = Budget(max_flops=config.budget.max_flops, max_params=config.budget.max_params,
                    resolution=space.resolution,
                    max_memory=None if memory is None else memory.max_memory,
                    memory=None if memory is None else memory_settings(config))
    checks = [(arch, budget.check(arch)) for arch in space.smallest()]
    if not any(check.fits for _, check in checks):
        arch, check = min(checks, key=lambda ac: (ac[1].cost.flops, ac[1].cost.params))
        raise SearchConfigError(
            "budget", f"no architecture of the space fits: the cheapest ({arch.layout}, "
            f"{check.cost}) is over budget: {'; '.join(check.reasons)}")
    return budget


def search(config: SearchConfig | None = None, run_dir: str | Path | RunDirectory | None = None,
           resume: bool = False, address: str | None = None,
           trainable: Callable[[dict[str, Any]], None] | None = None) -> RunSummary:
    """Run (or with `resume=True` continue) a search; returns its summary.

    run_dir: a folder or a URI (s3://, gs://, file://); default <out_dir>/<UTC time>-<name>.
    resume: `run_dir` must be an interrupted run; it continues where it lies (copied or moved
    runs too) from its records and Optuna study, with its stored config, except `resources` and
    `num_trials` when a `config` is given (other GPUs per trial, more trials). address: join this
    Ray cluster (`auto` or host:port; the run must be on storage every node reaches: a URI or a
    shared file system); default: start a local Ray. trainable: the
    function each trial runs (default `nas.trainable.train_architecture`); wrap that one to add
    logging, profiling or faults around every trial. SIGTERM stops a search as Ctrl-C does
    (`nas.signals`); the summary says which signal stopped it.
    """
    started = time.time()
    if resume:
        store, config = _resumable(run_dir, config)
    else:
        config = config or default_config()
        store = _new_run(config, run_dir)
    space = resolve_space(config)
    memory = plan_memory(config, space, memory_settings(config))
    budget = make_budget(config, space, memory)  # fails before Ray starts
    for line in memory.describe(config.resources.max_concurrent_trials):
        print(line, flush=True)
    from evaluators.trial import prepare_trial_data

    prepare_trial_data(config.trial, space.resolution, space.in_channels)  # decode once, before Ray

    ray_startup_s = None
    with StopSignals() as stop:
        try:
            ray_startup_s = _run_session(store, config, space, budget, resume, address,
                                         trainable, stop, memory)
        except SearchStopped:
            if not store.is_run():
                raise  # stopped before the run directory was made: nothing to resume
    trained = sum(1 for r in store.read_records() if r["status"] in FINISHED)
    interrupted = trained < config.num_trials and store.gave_up() is None
    objectives = [o.to_dict() for o in config.objectives]
    data = summarize(store, objectives, config.num_trials, time.time() - started,
                     ray_startup_s, interrupted)
    if not interrupted:
        store.write_summary(data)
    summary = RunSummary(run_dir=store.root, interrupted=interrupted, data=data,
                         signal=stop.received)
    print(summary, flush=True)
    return summary


def _run_session(store: RunDirectory, config: SearchConfig, space: SearchSpace, budget,
                 resume: bool, address: str | None,
                 trainable: Callable[[dict[str, Any]], None] | None,
                 stop: StopSignals, memory: MemoryPlan | None = None) -> float | None:
    """One session of a search: open (or create) the run and its study, start Ray, run Tune
    until the requested trials are trained or a stop signal arrives. Returns Ray's start-up time
    (None when nothing was left to train)."""
    from nas.searcher import BudgetedOptunaSearch, make_sampler
    from nas.study import StudyHome

    s = config.sampler
    study, home, plan = None, None, ResumePlan(finished=0, rerun=())
    if resume:
        home = StudyHome(store, config.name, config.optuna.storage)
        if not home.exists() and not store.scan_records()[0]:
            resume = False  # stopped before its study was made: nothing ran, so start it afresh
    if resume:
        study = home.load(make_sampler(s.name, s.seed, s.startup_trials))
        # A new seed per session: a resumed sampler must not replay the first session's draws.
        study.sampler = make_sampler(s.name, s.seed + len(study.trials), s.startup_trials)
        store.write_config(config.to_dict())  # what this session runs (--trials may raise it)
        plan = plan_resume(store, study, [o.name for o in config.objectives], config.epochs,
                           memory_knobs(config))
        home.sync()
        for note in plan.notes:
            print(f"resume: {note}", flush=True)
        if plan.finished >= config.num_trials:
            print(f"search: all {config.num_trials} trials already trained", flush=True)
            return None

    quiet_ray()
    import ray

    t0 = time.time()
    # a local Ray offers trials the memory they may share here (GPU trials: Ray's default)
    host_memory = memory.trial_memory if memory is not None and memory.device == "cpu" else None
    started_ray = start_ray(config.resources, address, host_memory)
    ray_startup_s = time.time() - t0
    stop.reinstall()  # Ray's core worker installs its own SIGTERM handler (a stack dump)
    try:
        check_resources(config.resources)  # before a new run directory is made
        if study is None:  # the config first: from then on the run is resumable
            store.write_config(config.to_dict())
            home = StudyHome(store, config.name, config.optuna.storage, fresh=True)
            study = home.create(config.objectives, make_sampler(s.name, s.seed, s.startup_trials))
            store.create()
        store.clear_summary()
        store.clear_gave_up()
        remaining = config.num_trials - plan.finished
        searcher = BudgetedOptunaSearch(
            space=space, objectives=[(o.name, o.direction) for o in config.objectives],
            study=study, run_dir=store, budget=budget, max_attempts=config.budget.max_attempts,
            epochs=config.epochs, rerun=plan.rerun, sync_study=home.sync,
            **proposal_options(config, space, session_seed=s.seed + len(study.trials)))
        tuner = _new_tuner(store, config, searcher, remaining, _trainable(config, trainable))
        print(f"search: {remaining} of {config.num_trials} trials of {config.epochs} epochs to "
              f"train, {config.resources.max_concurrent_trials} at a time -> {store.root}",
              flush=True)
        stop.tuning = True
        try:
            tuner.fit()
        except Exception as exc:  # noqa: BLE001 - a store that went away ends the search clearly
            error = _storage_error(exc)
            if error is None:
                raise
            for name in ("ray", "ray.tune", "ray.train"):  # its syncs keep failing: our line says it
                logging.getLogger(name).setLevel(logging.CRITICAL)
            store.storage.raise_if_failed()  # names the spool and how to resume
            raise StorageError(f"{error}; the search stopped: resume it with `hybrid-nas search "
                               f"--resume {store.root}` once the store is reachable") from None
        finally:
            stop.tuning = False
            home.sync()
    finally:
        if started_ray:
            ray.shutdown()
    store.storage.raise_if_failed()
    return ray_startup_s


def proposal_options(config: SearchConfig, space: SearchSpace,
                     session_seed: int | None = None) -> dict[str, Any]:
    """The searcher's smarter proposals from `sampler.*` (`nas.proposals`: a multi-fidelity
    model, a zero-cost proxy screen); empty when neither is on."""
    s = config.sampler
    screen = s.proxy is not None and s.proxy_candidates > 1
    if not (s.multi_fidelity or screen):
        return {}
    from nas.proposals import Proposals

    scorer = None
    if screen:
        from evaluators.proxy_score import ProxyScorer

        scorer = ProxyScorer(config.trial.replace(resolution=space.resolution),
                             space.in_channels, s.proxy, seed=s.seed)
    return {"proposals": Proposals(
        space, [o.direction for o in config.objectives], config.epochs, s.multi_fidelity,
        s.min_points, scorer, s.proxy_candidates, s.startup_trials,
        s.seed if session_seed is None else session_seed)}


def _new_run(config: SearchConfig, run_dir: str | Path | RunDirectory | None) -> RunDirectory:
    """The run directory a new search makes, after checking (before Ray starts) that its storage
    can be written and that nothing is there yet."""
    if isinstance(run_dir, RunDirectory):
        store = run_dir
    else:
        open_storage(run_dir if run_dir is not None else config.out_dir).probe()
        location = run_dir if run_dir is not None else new_run_dir(config)
        store = RunDirectory(location if is_uri(location) else Path(location).resolve(),
                             writer=True)
    if not store.is_empty():
        raise RunDirError(store.root, f"run directory exists and is not empty "
                                      f"(continue it with --resume {store.root})")
    store.storage.discard_spool()  # what a removed earlier run at this URI left on this machine
    return store


def _resumable(run_dir: str | Path | RunDirectory | None,
               config: SearchConfig | None) -> tuple[RunDirectory, SearchConfig]:
    if run_dir is None:
        raise ValueError("resume: give the run directory to continue")
    store, stored = open_run_to_resume(run_dir)
    if config is not None:
        stored = stored.replace(resources=config.resources, num_trials=config.num_trials)
    return store, stored


def _storage_error(exc: BaseException) -> StorageError | None:
    """The StorageError behind an error Ray Tune raised, if a store failure caused it."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, StorageError):
            return exc
        seen.add(id(exc))
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__
    return None


def _trainable(config: SearchConfig, trainable: Callable[[dict[str, Any]], None] | None):
    from ray import tune

    from nas.trainable import train_architecture

    r = config.resources
    return tune.with_resources(trainable or train_architecture, trial_resources(
        r.cpus_per_trial, r.gpus_per_trial, memory_settings(config).device))


def _param_space(config: SearchConfig) -> dict[str, Any]:
    """Constants every trial's config carries beside the searcher's `arch`, `cost`, `number`,
    `record_id` and `position` (no path: trials never touch the run directory)."""
    return {"trial": config.to_dict()["trial"], "threads": config.resources.threads,
            "keep_weights": config.keep_weights}


def memory_knobs(config: SearchConfig) -> dict[str, Any]:
    """The settings that lower a trial's memory, as they are in this search (for the records of
    trials that ran out of it)."""
    train = config.trial.train
    return {"train.batch_size": train.batch_size, "train.eval_batch_size": train.eval_batch_size,
            "trial.resolution": config.trial.resolution,
            "resources.max_concurrent_trials": config.resources.max_concurrent_trials}


def trial_dirname(trial: Any) -> str:
    return trial.trial_id


def _new_scheduler(store: RunDirectory, config: SearchConfig):
    """The session's early stopping. MOASHA's rungs are rebuilt from the records (a resumed
    search never restores Tune's state); Ray Tune's ASHA starts empty each session."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    from nas.moasha import MOASHAScheduler
    from nas.rungs import Rungs

    sch = config.scheduler
    if sch.name == "none" or config.epochs <= sch.grace_period:
        return FIFOScheduler()
    if sch.name == "moasha":
        return MOASHAScheduler(Rungs.from_records(
            store.read_records(), config.objectives, config.epochs, sch.grace_period,
            sch.reduction_factor, placement=sch.placement, extrapolate=sch.extrapolate,
            min_completed=sch.min_completed, rank_threshold=sch.rank_threshold))
    objective = config.scheduler_objective()
    return ASHAScheduler(
        time_attr="epoch", metric=objective.name, mode=objective.direction,
        max_t=config.epochs, grace_period=sch.grace_period, reduction_factor=sch.reduction_factor,
        stop_last_trials=False)  # a trial in its last epoch ends by itself, with its final report


def _new_tuner(store: RunDirectory, config: SearchConfig, searcher, num_samples: int, trial_fn):
    """A fresh Tune experiment for this session, under RUN/ray/session-<time>. Tune's own state is
    never restored: a resumed search is a new session over the same records and study."""
    from ray import tune
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback

    from nas.moasha import MOASHAScheduler
    from nas.tensorboard import TensorBoardCallback
    from nas.tracking import RecordsCallback

    scheduler = _new_scheduler(store, config)
    decisions = scheduler if isinstance(scheduler, MOASHAScheduler) else None  # into the records
    session = datetime.now(timezone.utc).strftime("session-%Y%m%d-%H%M%S-%f")
    storage_path, storage_filesystem = store.storage.ray_storage(RAY_DIR)
    # Tune's own TensorBoard logger would put a second copy of every metric under RUN/ray/, keyed
    # by Tune's trial ids: nas.tensorboard writes them once, per record (CSV/JSON logs stay).
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    return tune.Tuner(
        trial_fn,
        param_space=_param_space(config),
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=num_samples,
            max_concurrent_trials=config.resources.max_concurrent_trials, reuse_actors=True,
            trial_dirname_creator=trial_dirname),
        run_config=tune.RunConfig(
            name=session, storage_path=storage_path, storage_filesystem=storage_filesystem,
            callbacks=[RecordsCallback(store, [o.name for o in config.objectives], config.epochs,
                                       decisions, memory_knobs(config)),
                       TensorBoardCallback(store), ProgressCallback(store, config.num_trials),
                       CSVLoggerCallback(), JsonLoggerCallback()],
            failure_config=tune.FailureConfig(max_failures=0, fail_fast=False),
            verbose=0),
    )
