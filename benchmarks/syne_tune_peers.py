"""Syne Tune's multi-objective searchers (syne-tune 0.16) as proposers of the search-quality
simulator (`simulate.Proposer`), to run beside Optuna's samplers at full budget.

What 0.16 ships for more than one objective, read from the installed package:
- `MultiObjectiveRegularizedEvolution` (`mo-rea`): regularized evolution whose parents are picked by
  non-dominated sorting. Its default population (100) exceeds the 16-40 trials a simulated search
  makes, which leaves it random search throughout; we give it a population of 10 and a tournament
  of 5 (not tuned on any table).
- `ExpectedHyperVolumeImprovement` (`ehvi`, baseline `EHVI`): model-based, one BoTorch GP per
  objective, qLogEHVI; needs `botorch`. We take its `optimization_strategy="random"` (the
  acquisition on 200 random points, the best one kept): its default, gradient ascent from 20
  restarts, took 364 s for one simulated search of 144 epochs against 63 s (seed 0, this 2-core
  machine, 2026-12-03), too slow for 30 seeds x 2 tables.
- `MultiObjectiveMultiSurrogateSearcher` (random-scalarization BO) is in the wheel but does not
  import: its modules (`random_scalarization`, `legacy_model_based_searcher`) are not shipped.
- `MultiObjectiveRandomSearcher` (random search, covered by Optuna's random sampler already).

Driven through the searcher API as Syne Tune's `SingleFidelityScheduler` drives it: `suggest()`,
then `on_trial_complete(trial_id, config, metrics)` with every metric minimised (maximised
objectives negated), or `on_trial_error(trial_id)`. The proposer keeps the real searcher's rules
(as `simulate.OptunaProposer`): a candidate over the budget costs nothing and is told as an error;
one whose table row was trained already is a duplicate, told its twin's values when known (an
error otherwise), at most `max_attempts` in a row. A stopped ("pruned"), unscored or diverged
("fail") trial is told as an error too: Syne Tune's full-budget searchers learn from completed
trials only (`on_trial_result` is a no-op for both), and an error is what their scheduler reports
for a trial that ends without a final result, so the searcher drops it.

Three departures from the wheel, each because the shipped code cannot search this table otherwise:
- Seeding. Both searchers draw their random configurations from NumPy's global generator
  (`Domain.sample()` without a `random_state`), and EHVI seeds and draws from torch's global one.
  Each proposer keeps its own NumPy and torch generator states, swapped in around every call into
  the searcher, so the same seed gives the same trials whatever else runs in the process.
- EHVI's data. As shipped it pairs configurations (in trial-id order) with results (in completion
  order), which differ when 2 workers finish out of order; it never forgets a trial that errored
  (pending forever, so fantasised on); and it puts the hypervolume reference point at 2 on its
  maximised outputs (the negated metrics), which no metric here reaches, so every improvement is
  zero. `_SimulatedEHVI` pairs each result with its own configuration, drops errored trials, and
  rescales each objective it reads to its observed range (best 3.1, worst 2.1), placing the
  reference point 10% of that range beyond the worst value seen, as `simulate.Hypervolume` does.
- EHVI's precision. It builds its outcomes, reference point and pending points as float32
  (`torch.Tensor`) beside a float64 GP, which BoTorch 0.18 refuses ("expected scalar type Double
  but found Float"); with `double_precision=False` the GP fit failed often and it fell back to
  random proposals. Its calls run with torch's default dtype set to float64, so all is double.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, Sequence

import numpy as np
import optuna
import torch

from search_spaces.architecture import ATTENTION_BLOCKS
from search_spaces.space import SearchSpace, sample_architecture

PEERS = {  # display name -> searcher key of SyneTuneProposer
    "mo-rea (syne tune, full budget)": "mo-rea",
    "ehvi (syne tune, full budget)": "ehvi",
}
MOREA_POPULATION, MOREA_SAMPLE = 10, 5


def config_space(space: SearchSpace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The space's choices as Syne Tune domains, named as `sample_architecture` reads them, and
    the choices with a single option (kept out of the searcher: constants it cannot vary).
    Sizes are ordinal (nearby values encode nearby); head sizes are given for every stage that
    can be attention (ignored by `sample_architecture` where the layout puts convolution)."""
    from syne_tune.config_space import choice, ordinal, randint

    options: dict[str, list[Any]] = {"layout": list(space.layouts()),
                                     "stem_kind": list(space.stem.kind),
                                     "stem_width": sorted(space.stem.width)}
    if "patch" in space.stem.kind:
        options["stem_patch_size"] = sorted(space.stem.patch_size)
    domains: dict[str, Any] = {}
    for i, c in enumerate(space.stages, start=1):
        lo, hi = c.depth
        if hi > lo:
            domains[f"s{i}_depth"] = randint(lo, hi)
        else:
            options[f"s{i}_depth"] = [lo]
        options[f"s{i}_width"] = sorted(c.width)
        options[f"s{i}_expansion"] = sorted(c.expansion)
        if any(b in ATTENTION_BLOCKS for b in c.block):
            options[f"s{i}_head_size"] = sorted(c.head_size)
    constants = {name: values[0] for name, values in options.items() if len(values) == 1}
    for name, values in options.items():
        if len(values) > 1:
            domains[name] = (choice(values) if name in ("layout", "stem_kind")
                             else ordinal(values, kind="equal"))
    return domains, constants


def _ehvi_class():
    from syne_tune.optimizer.schedulers.multiobjective.expected_hyper_volume_improvement import (
        ExpectedHyperVolumeImprovement,
    )

    class _SimulatedEHVI(ExpectedHyperVolumeImprovement):
        """Syne Tune's EHVI with each result paired to its own configuration, errored trials
        dropped, and its inputs scaled so that its fixed reference point (2) lies 10% of each
        objective's observed range beyond the worst value (see the module docstring)."""

        def on_trial_error(self, trial_id: int) -> None:
            # no longer pending (not fantasised on); its configuration stays in trial_configs,
            # which numbers trials by its length, and is read only with a result
            self.cleanup_pending(trial_id)

        def _observed_ids(self) -> list[int]:
            return sorted(self.trial_observations)

        def _configs_with_results(self) -> list[dict]:
            return [self.trial_configs[i] for i in self._observed_ids()]

        def objectives(self) -> np.ndarray:
            if not self.trial_observations:
                return np.zeros((0, 0))
            raw = np.array([self.trial_observations[i] for i in self._observed_ids()], float)
            lo, hi = raw.min(axis=0), raw.max(axis=0)
            span = np.where(hi > lo, hi - lo, 1.0)
            return (raw - lo) / span - 3.1  # EHVI maximises 3.1 - z, z in [0, 1]: 1 = worst

    return _SimulatedEHVI


def make_searcher(key: str, domains: dict[str, Any], seed: int):
    """A Syne Tune multi-objective searcher by key (`PEERS`'s values)."""
    if key == "mo-rea":
        from syne_tune.optimizer.schedulers.multiobjective import (
            MultiObjectiveRegularizedEvolution,
        )

        return MultiObjectiveRegularizedEvolution(domains, population_size=MOREA_POPULATION,
                                                  sample_size=MOREA_SAMPLE, random_seed=seed)
    if key == "ehvi":
        return _ehvi_class()(domains, optimization_strategy="random", random_seed=seed)
    raise ValueError(f"searcher {key!r}: expected one of {sorted(PEERS.values())}")


class SyneTuneProposer:
    """A Syne Tune multi-objective searcher over the search space, by the real searcher's rules
    (budget, duplicates, `max_attempts`); see the module docstring for what each outcome tells
    the searcher."""

    def __init__(self, table: Any, searcher: str, seed: int, max_attempts: int = 50):
        self.table = table
        self.signs = [-1.0 if d == "max" else 1.0 for d in table.directions]  # Syne Tune minimises
        self.domains, self.constants = config_space(table.space)
        self.max_attempts = max_attempts
        self.trained: set[int] = set()
        self.values: dict[int, list[float]] = {}
        self._next_id = 0
        self._numpy = np.random.RandomState(seed).get_state()
        generator = torch.Generator()
        generator.manual_seed(seed)
        self._torch = generator.get_state()
        with self._own_randomness():
            self.searcher = make_searcher(searcher, self.domains, seed)

    @contextlib.contextmanager
    def _own_randomness(self) -> Iterator[None]:
        """The searcher draws from the global NumPy and torch generators: give it this
        proposer's states, and put back whatever the process had."""
        numpy_before, torch_before = np.random.get_state(), torch.random.get_rng_state()
        dtype_before = torch.get_default_dtype()
        np.random.set_state(self._numpy)
        torch.random.set_rng_state(self._torch)
        torch.set_default_dtype(torch.float64)
        try:
            yield
        finally:
            self._numpy, self._torch = np.random.get_state(), torch.random.get_rng_state()
            np.random.set_state(numpy_before)
            torch.random.set_rng_state(torch_before)
            torch.set_default_dtype(dtype_before)

    def _suggest(self) -> tuple[int, dict[str, Any]] | None:
        from syne_tune.config_space import cast_config_values

        with self._own_randomness():
            config = self.searcher.suggest()
        if config is None:
            return None
        trial_id, self._next_id = self._next_id, self._next_id + 1
        return trial_id, cast_config_values(config, self.domains)

    def _complete(self, trial_id: int, config: dict[str, Any], values: Sequence[float]) -> None:
        metrics = [sign * float(v) for sign, v in zip(self.signs, values)]
        with self._own_randomness():
            self.searcher.on_trial_complete(trial_id, config, metrics)

    def _error(self, trial_id: int) -> None:
        with self._own_randomness():
            self.searcher.on_trial_error(trial_id)

    def architecture(self, config: dict[str, Any]) -> Any:
        params = {name: value.item() if isinstance(value, np.generic) else value
                  for name, value in {**self.constants, **config}.items()}
        return sample_architecture(optuna.trial.FixedTrial(params), self.table.space)

    def ask(self) -> tuple[Any, int] | None:
        for _ in range(self.max_attempts):
            suggested = self._suggest()
            if suggested is None:
                return None
            trial_id, config = suggested
            arch = self.architecture(config)
            if not self.table.fits.get(arch.arch_id, False):
                self._error(trial_id)
                continue
            row = self.table.nearest(arch)
            if row in self.trained:
                known = self.values.get(row)
                if known is not None:
                    self._complete(trial_id, config, known)
                else:
                    self._error(trial_id)
                continue
            self.trained.add(row)
            return (trial_id, config, row), row
        return None

    def tell(self, handle: Any, state: str, values: Sequence[float] | None) -> None:
        trial_id, config, row = handle
        if state == "complete":
            self.values[row] = list(values)
            self._complete(trial_id, config, values)
        else:
            self._error(trial_id)
