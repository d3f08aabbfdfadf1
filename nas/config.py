"""What one search runs: the search space, the trial (data, regimes, epochs), the FLOP/param
budget, the objectives, the sampler, the early-stopping scheduler, the resources per trial and
where the run directory goes. Loaded from YAML (`load_config`), validated on load; every error
names the field (`search.<field>: ...`)."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import yaml

from evaluators.proxies import PROXIES as PROXY_NAMES
from evaluators.trial import TrialConfig
from nas.rungs import PLACEMENTS
from results.objectives import METRIC_DIRECTIONS, Objective
from results.storage import check_no_credentials
from search_spaces.fields import FieldError, check_keys, from_mapping, typed
from search_spaces.space import SearchSpace

DEFAULT_CONFIG = "default_search.yaml"

SAMPLERS = ("tpe", "nsga2", "random")
SCHEDULERS = ("moasha", "asha", "none")


class SearchConfigError(FieldError):
    """A malformed search config; `field` is the dotted path of the offending field."""

    prefix = "search."


@dataclass(frozen=True)
class SamplerConfig:
    """Optuna sampler: `tpe` (multi-objective TPE), `nsga2` or `random`; seeded.
    startup_trials: random trials before TPE models the space (NSGA-II: population size)."""

    name: str = "tpe"
    """The Optuna sampler: `tpe` (multi-objective TPE), `nsga2` (NSGA-II) or `random`."""
    seed: int = 0
    """The sampler's seed: the same seed proposes the same architectures from the same results."""
    startup_trials: int = 4
    """Random trials before TPE models the space (for NSGA-II: its population size)."""
    multi_fidelity: bool = False
    """Propose from a TPE model fitted on every trial's readings at the latest epoch that enough
    trials reached (BOHB-style, `nas.multi_fidelity`), not only on the trials that finished."""
    min_points: int = 6
    """multi_fidelity: trials an epoch needs readings of before its model proposes."""
    proxy: str | None = None
    """A zero-cost proxy (`evaluators.proxies`: `naswot`, `synflow`, `grad_norm`) that screens
    candidates when they are priced: of `proxy_candidates` new ones within budget, only the
    highest-scoring trains. null: no screening."""
    proxy_candidates: int = 4
    """proxy: candidates priced and scored for each one that trains."""


@dataclass(frozen=True)
class BudgetConfig:
    """Upper limits priced before training (fvcore multiply-adds, parameters) at the trial's
    resolution; null = no limit. `max_memory`: one trial's peak memory (`evaluators.memory`:
    host memory for CPU trials, device memory for GPU trials), in bytes or as "4GiB", "512MiB",
    "8G"; null: this machine's memory shared among the trials that run at once
    (`nas.placement`). `max_attempts`: candidates priced per suggestion before the searcher
    gives up on the space."""

    max_flops: int | None = None
    """The most fvcore multiply-adds a candidate may cost at the trial's resolution, priced before
    it trains; null: no limit."""
    max_params: int | None = None
    """The most parameters a candidate may have; null: no limit."""
    max_memory: int | str | None = None
    """The most memory one trial may need at its peak, priced before it trains (host memory for CPU
    trials, device memory for GPU trials), in bytes or as "4GiB", "512MiB", "8G"; null: this
    machine's memory shared among the trials that run at once, printed at start."""
    max_attempts: int = 50
    """Candidates priced per suggestion before the searcher gives up on the space."""

    def __post_init__(self) -> None:
        if self.max_memory is not None:
            from evaluators.memory import parse_bytes

            try:
                object.__setattr__(self, "max_memory", parse_bytes(self.max_memory))
            except FieldError as exc:
                raise SearchConfigError("budget.max_memory", exc.message) from None

    @property
    def enabled(self) -> bool:
        return self.max_flops is not None or self.max_params is not None


@dataclass(frozen=True)
class SchedulerConfig:
    """Early stopping, with epochs as time; rungs at grace_period * reduction_factor**k epochs
    below the trial's `train.epochs` (the max budget: a trial that gets there completes).

    name: `moasha` (multi-objective ASHA, `nas.moasha`: at each rung the top 1/reduction_factor
    by non-dominated sorting on all the search's objectives continue), `asha` (Ray Tune's ASHA
    on one objective: `metric`, null: the first; `mode` defaults to its direction), or `none`
    (every trial trains its full budget). null: `moasha` for a search with several objectives,
    `asha` for one. A search is never culled on a metric it does not optimise."""

    name: str | None = None
    """`moasha` (multi-objective ASHA: at each rung the top 1/reduction_factor by non-dominated
    sorting on all the objectives go on), `asha` (Ray Tune's ASHA on one objective) or `none` (every
    trial trains its full budget). null: `moasha` for a search with several objectives, `asha` for
    one."""
    metric: str | None = None
    """`asha` only: the objective it culls on (one of the search's objectives); null: the first."""
    mode: str | None = None
    """`asha` only: `min` or `max`; null: the objective's direction."""
    grace_period: int = 1
    """Epochs to the first rung: rungs sit at grace_period x reduction_factor^k epochs, below
    `trial.train.epochs`."""
    reduction_factor: float = 3.0
    """At each rung the top 1/reduction_factor of the trials recorded there go on (a number > 1)."""
    placement: str = "fixed"
    """`moasha`: `fixed` (rungs at grace_period x reduction_factor^k) or `adaptive` (the first rung
    moves to the earliest epoch whose readings rank the search's finished trials as their
    full-budget values do, `nas.rungs`)."""
    extrapolate: bool = False
    """`moasha`: rank trials at a rung by their full-budget values as predicted from their learning
    curves (a line fitted on the finished trials) rather than by their readings there."""
    min_completed: int = 5
    """`moasha`, adaptive placement or extrapolation: finished trials needed before either acts."""
    rank_threshold: float = 0.6
    """`moasha`, adaptive placement: the Kendall tau-b (on every objective) an epoch's readings
    need with the full-budget values for the first rung to move there."""


@dataclass(frozen=True)
class ResourcesConfig:
    """Per trial: CPUs (= torch threads) and GPUs (fractions share one GPU). `num_cpus`: CPUs of
    the local Ray started when no cluster address is given (null: all of this machine's)."""

    cpus_per_trial: float = 1.0
    """CPUs per trial, which are also its torch threads."""
    gpus_per_trial: float = 0.0
    """GPUs per trial; a fraction (<= 1) shares one GPU between trials; 0: the CPU."""
    max_concurrent_trials: int = 2
    """Trials that run at once."""
    num_cpus: int | None = None
    """CPUs of the local Ray started when no cluster address is given; null: all of this machine's."""

    @property
    def threads(self) -> int:
        return max(1, int(self.cpus_per_trial))


def validate_resources(r: ResourcesConfig, error: type[FieldError]) -> None:
    """Raise `error` naming the `resources.*` field that cannot be satisfied."""
    if not r.cpus_per_trial > 0:
        raise error("resources.cpus_per_trial", f"must be > 0, got {r.cpus_per_trial}")
    if r.gpus_per_trial < 0 or not math.isfinite(r.gpus_per_trial):
        raise error("resources.gpus_per_trial", f"must be >= 0, got {r.gpus_per_trial}")
    if r.gpus_per_trial > 1 and not float(r.gpus_per_trial).is_integer():
        raise error("resources.gpus_per_trial",
                    "fractions are for sharing one GPU: use a value <= 1 or a whole number")
    if r.max_concurrent_trials < 1:
        raise error("resources.max_concurrent_trials", "must be >= 1")
    if r.num_cpus is not None and r.num_cpus < 1:
        raise error("resources.num_cpus", "must be >= 1 or null")


@dataclass(frozen=True)
class OptunaConfig:
    """Where the Optuna study is kept. `storage`: null (the default) for a journal file in the
    run directory (RUN/study.journal); or an RDB URL every node and optuna-dashboard can reach,
    e.g. `sqlite:////shared/studies.db` or `postgresql://user@host/db` (the study is named after
    the run directory). A URL must not hold a password: give it through the database's own
    environment or files (PGPASSWORD or ~/.pgpass, ~/.my.cnf), never in the run's config."""

    storage: str | None = None
    """Where the Optuna study is kept: null for a journal file in the run directory
    (`RUN/study.journal`), or a database URL every node and optuna-dashboard reach
    (`sqlite:////shared/studies.db`, `postgresql://user@host/db`), never holding a password."""


@dataclass(frozen=True)
class SearchConfig:
    """One search. `space`: a built-in space name, a YAML path, or an inline mapping; it is made
    to match the data set (classes, channels) and the trial's resolution."""

    name: str = "search"
    """The run's name: new runs go to `<out_dir>/<UTC time>-<name>/` (no `/`)."""
    space: str | Mapping[str, Any] = "digits"
    """The search space: a built-in name (`digits`, `hybrid`, `coatnet`), a YAML path (relative to
    the config file) or the space inline; made to match the data set's classes and channels and the
    trial's resolution."""
    trial: TrialConfig = field(default_factory=TrialConfig)
    """The data, the two regimes and the training budget of every trial (`trial.*`)."""
    num_trials: int = 8
    """Trials to train; candidates rejected before training (over the budget, duplicates) do not
    count."""
    objectives: tuple[Objective, ...] = (Objective("val_acc_at_matched_loss", "max"),
                                         Objective("fit_full", "max"))
    """What the search optimises: a list of `{name, direction}` (or bare metric names, in their
    natural direction)."""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    """How Optuna proposes architectures (`sampler.*`)."""
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    """The FLOP/parameter limits every candidate is priced against before it trains (`budget.*`)."""
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    """Early stopping (`scheduler.*`)."""
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    """CPUs, GPUs and concurrency per trial (`resources.*`)."""
    optuna: OptunaConfig = field(default_factory=OptunaConfig)
    """Where the Optuna study is kept (`optuna.*`)."""
    out_dir: str = "runs"  # the folder or URI (s3://bucket/prefix, gs://...) new runs go under
    """The folder or URI (`s3://bucket/prefix`, `gs://...`) new runs go under."""
    keep_weights: bool = True
    """Save each trial's trained weights in the run directory (`weights/<trial_id>.pt`); export
    needs them."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "objectives", tuple(self.objectives))
        if self.scheduler.name is None:  # the default: every objective counts at the rungs
            name = "moasha" if len(self.objectives) > 1 else "asha"
            object.__setattr__(self, "scheduler", dataclasses.replace(self.scheduler, name=name))
        _validate(self)

    @property
    def epochs(self) -> int:
        return self.trial.train.epochs

    def scheduler_objective(self) -> Objective:
        """The objective single-metric ASHA culls on: `scheduler.metric`, else the first."""
        sch = self.scheduler
        chosen = next((o for o in self.objectives if o.name == sch.metric), self.objectives[0])
        return Objective(chosen.name, sch.mode or chosen.direction)

    def replace(self, **changes: Any) -> "SearchConfig":
        return dataclasses.replace(self, **changes)

    def load_space(self) -> SearchSpace:
        if isinstance(self.space, Mapping):
            return SearchSpace.from_dict(self.space)
        return SearchSpace.load(self.space)

    def to_dict(self) -> dict[str, Any]:
        """The canonical form (what `from_dict` reads back, and what search.yaml holds)."""
        return {
            "name": self.name,
            "space": dict(self.space) if isinstance(self.space, Mapping) else self.space,
            "trial": _plain(dataclasses.asdict(self.trial)),
            "num_trials": self.num_trials,
            "objectives": [dataclasses.asdict(o) for o in self.objectives],
            "sampler": dataclasses.asdict(self.sampler),
            "budget": dataclasses.asdict(self.budget),
            "scheduler": dataclasses.asdict(self.scheduler),
            "resources": dataclasses.asdict(self.resources),
            "optuna": dataclasses.asdict(self.optuna),
            "out_dir": self.out_dir,
            "keep_weights": self.keep_weights,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SearchConfig":
        if not isinstance(data, Mapping):
            raise SearchConfigError("config", f"expected a mapping, got {type(data).__name__}")
        values = check_keys(data, "", {f.name for f in dataclasses.fields(cls)},
                            error=SearchConfigError)
        if "trial" in values:
            if not isinstance(values["trial"], Mapping):
                raise SearchConfigError("trial", "expected a mapping")
            try:
                values["trial"] = TrialConfig.from_dict(values["trial"])
            except FieldError as exc:
                raise SearchConfigError(exc.field, exc.message) from None
        if "objectives" in values:
            values["objectives"] = _objectives(values["objectives"])
        for name, kind in (("sampler", SamplerConfig), ("budget", BudgetConfig),
                           ("scheduler", SchedulerConfig), ("resources", ResourcesConfig),
                           ("optuna", OptunaConfig)):
            if name in values:
                values[name] = _section(kind, values[name], name)
        for name, want in (("name", "str"), ("num_trials", "int"), ("out_dir", "str"),
                           ("keep_weights", "bool")):
            if name in values:
                values[name] = typed(values[name], want, name, SearchConfigError)
        if "space" in values and not isinstance(values["space"], (str, Mapping)):
            raise SearchConfigError("space", "expected a space name, a YAML path or a mapping")
        return cls(**values)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def load_config(path: str | Path | None = None) -> SearchConfig:
    """Read a search config from YAML; None = the built-in default. A relative `space:` path is
    read relative to the config file."""
    if path is None:
        text = resources.files("nas").joinpath(DEFAULT_CONFIG).read_text()
        where = Path(DEFAULT_CONFIG)
    else:
        where = Path(path)
        if not where.is_file():
            raise FileNotFoundError(f"search config {str(where)!r}: no such file")
        text = where.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SearchConfigError("config", f"{where} is not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise SearchConfigError("config", f"{where}: expected a mapping at the top level")
    config = SearchConfig.from_dict(data)
    if path is not None and isinstance(config.space, str):
        local = where.parent / config.space
        if local.suffix in (".yaml", ".yml") and local.is_file():
            config = config.replace(space=str(local.resolve()))
    return config


def default_config() -> SearchConfig:
    return load_config(None)


# ---- parsing and validation ---------------------------------------------------------------------

def _section(cls: type, data: Any, where: str) -> Any:
    if data is None:
        return cls()
    return from_mapping(cls, data, where, error=SearchConfigError)


def _objectives(data: Any) -> tuple[Objective, ...]:
    if not isinstance(data, list) or not data:
        raise SearchConfigError("objectives", "expected a non-empty list of objectives")
    out = []
    for i, item in enumerate(data):
        where = f"objectives[{i}]"
        if isinstance(item, str):  # shorthand: a metric name with its natural direction
            item = {"name": item}
        if not isinstance(item, Mapping):
            raise SearchConfigError(where, "expected {name, direction} or a metric name")
        item = check_keys(item, where, {"name", "direction"}, {"name"}, SearchConfigError)
        name = item["name"]
        if name not in METRIC_DIRECTIONS:
            raise SearchConfigError(f"{where}.name",
                                    f"unknown metric {name!r} (known: {sorted(METRIC_DIRECTIONS)})")
        direction = item.get("direction", METRIC_DIRECTIONS[name])
        if direction not in ("min", "max"):
            raise SearchConfigError(f"{where}.direction",
                                    f"must be 'min' or 'max', got {direction!r}")
        out.append(Objective(name, direction))
    return tuple(out)


def _validate(config: SearchConfig) -> None:
    if not config.name or "/" in config.name:
        raise SearchConfigError("name", f"must be a non-empty name without '/', got {config.name!r}")
    if config.num_trials < 1:
        raise SearchConfigError("num_trials", f"must be >= 1, got {config.num_trials}")
    names = [o.name for o in config.objectives]
    for i, o in enumerate(config.objectives):
        if names.count(o.name) > 1:
            raise SearchConfigError(f"objectives[{i}].name", f"{o.name!r} is listed twice")
    s = config.sampler
    if s.name not in SAMPLERS:
        raise SearchConfigError("sampler.name", f"unknown sampler {s.name!r} (known: {list(SAMPLERS)})")
    if s.startup_trials < 1:
        raise SearchConfigError("sampler.startup_trials", "must be >= 1")
    if s.min_points < 2:
        raise SearchConfigError("sampler.min_points", f"must be >= 2, got {s.min_points}")
    if s.proxy is not None and s.proxy not in PROXY_NAMES:
        raise SearchConfigError("sampler.proxy",
                                f"unknown proxy {s.proxy!r} (known: {list(PROXY_NAMES)}, or null)")
    if s.proxy_candidates < 1:
        raise SearchConfigError("sampler.proxy_candidates", f"must be >= 1, got {s.proxy_candidates}")
    b = config.budget
    for name in ("max_flops", "max_params"):
        value = getattr(b, name)
        if value is not None and value <= 0:
            raise SearchConfigError(f"budget.{name}", f"must be positive or null, got {value}")
    if b.max_attempts < 1:
        raise SearchConfigError("budget.max_attempts", "must be >= 1")
    sch = config.scheduler
    if sch.name not in SCHEDULERS:
        raise SearchConfigError("scheduler.name",
                                f"unknown scheduler {sch.name!r} (known: {list(SCHEDULERS)})")
    if sch.metric is not None and sch.metric not in METRIC_DIRECTIONS:
        raise SearchConfigError("scheduler.metric",
                                f"unknown metric {sch.metric!r} (known: {sorted(METRIC_DIRECTIONS)})")
    if sch.name == "asha" and sch.metric is not None and sch.metric not in names:
        raise SearchConfigError("scheduler.metric",
                                f"{sch.metric!r} is not one of the search's objectives {names}: "
                                "a search is culled only on what it optimises")
    if sch.mode not in (None, "min", "max"):
        raise SearchConfigError("scheduler.mode", f"must be 'min', 'max' or null, got {sch.mode!r}")
    for name in ("metric", "mode"):
        if sch.name == "moasha" and getattr(sch, name) is not None:
            raise SearchConfigError(f"scheduler.{name}", "moasha ranks trials on all the search's "
                                    f"objectives; {name} is for the single-metric asha")
    if sch.grace_period < 1:
        raise SearchConfigError("scheduler.grace_period", "must be >= 1")
    if sch.placement not in PLACEMENTS:
        raise SearchConfigError("scheduler.placement",
                                f"must be one of {list(PLACEMENTS)}, got {sch.placement!r}")
    if sch.min_completed < 2:
        raise SearchConfigError("scheduler.min_completed", f"must be >= 2, got {sch.min_completed}")
    if not -1.0 <= sch.rank_threshold <= 1.0:
        raise SearchConfigError("scheduler.rank_threshold",
                                f"must be a Kendall tau in [-1, 1], got {sch.rank_threshold!r}")
    if sch.name != "moasha" and (sch.placement != "fixed" or sch.extrapolate):
        raise SearchConfigError("scheduler.placement" if sch.placement != "fixed"
                                else "scheduler.extrapolate",
                                "adaptive rungs and extrapolation are moasha's options")
    if not (sch.reduction_factor > 1 and math.isfinite(sch.reduction_factor)):
        raise SearchConfigError("scheduler.reduction_factor",
                                f"must be a number > 1, got {sch.reduction_factor!r}")
    validate_resources(config.resources, SearchConfigError)
    if not isinstance(config.trial, TrialConfig):
        raise SearchConfigError("trial", "expected a TrialConfig")
    if config.optuna.storage is not None:
        _check_rdb_url(config.optuna.storage)
    try:
        check_no_credentials(config.out_dir)
    except ValueError as exc:
        raise SearchConfigError("out_dir", str(exc)) from None


def _check_rdb_url(url: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise SearchConfigError("optuna.storage", "not a database URL; expected e.g. "
                                "sqlite:///studies.db or postgresql://user@host/db (null: a "
                                "journal file in the run directory)") from None
    if parsed.password is not None:
        raise SearchConfigError("optuna.storage", "the URL holds a password, which would be "
                                "written into the run: give it through the database's environment "
                                "or files instead (PGPASSWORD or ~/.pgpass, ~/.my.cnf)")
    if parsed.get_backend_name() not in ("sqlite", "postgresql", "mysql", "oracle", "mssql"):
        raise SearchConfigError("optuna.storage", f"unknown database {parsed.drivername!r} "
                                "(sqlite, postgresql, mysql, ...)")


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
