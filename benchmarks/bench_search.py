"""Search overheads: Ray start-up, per-trial scheduling overhead with and without reused actors,
and the speed-up of 2 concurrent trials over the same trials one after another in one process.

    python benchmarks/bench_search.py [--trials 8] [--real 4] [--resolution 16] [--steps 6]

Per-trial overhead: a trainable that imports what the real one imports (torch, the evaluators)
but does no training, N trials 2 at a time through the real searcher (BudgetedOptunaSearch):
(wall time of tuner.fit) / N. The speed-up: `--real` sampled architectures trained with
`run_trial` (1 thread each) sequentially in this process, then as Tune trials, 2 at a time.
On a shared machine the figures are noisy; compare the ratios printed side by side.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import optuna  # noqa: E402
import torch  # noqa: E402

from evaluators.trial import TrialConfig, run_trial  # noqa: E402
from search_spaces.architecture import Architecture  # noqa: E402
from search_spaces.space import default_space, sample_architecture  # noqa: E402


def idle_trainable(config: dict) -> None:
    """Real imports, no work: what Tune's scheduling costs per trial."""
    from ray import tune

    import evaluators.trial  # noqa: F401

    tune.report({"epoch": 1.0, "gap": 0.0, "fit_full": 1.0, "final": 1.0})


def training_trainable(config: dict) -> None:
    from ray import tune

    torch.set_num_threads(1)
    run_trial(Architecture.from_dict(config["arch"]), TrialConfig.from_dict(config["trial"]),
              lambda m: tune.report(m))


def tune_run(trainable, n: int, reuse: bool, space, storage: str, param_space: dict) -> float:
    from ray import tune

    from nas.searcher import BudgetedOptunaSearch, make_sampler
    from nas.study import create_study
    from results.objectives import Objective

    run_dir = Path(storage) / f"run-{time.time_ns()}"
    objectives = [("gap", "min"), ("fit_full", "max")]
    study = create_study(run_dir, "bench", [Objective(*o) for o in objectives],
                         make_sampler("random", 0, 1))
    searcher = BudgetedOptunaSearch(space, objectives, study, str(run_dir))
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 1}), param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=searcher, num_samples=n, max_concurrent_trials=2,
                                    reuse_actors=reuse),
        run_config=tune.RunConfig(storage_path=storage, name=f"bench-{time.time_ns()}", verbose=0))
    t0 = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8, help="idle trials per overhead run")
    parser.add_argument("--real", type=int, default=4, help="trained trials for the speed-up")
    parser.add_argument("--resolution", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6, help="optimiser steps per epoch")
    args = parser.parse_args()

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    import ray

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = default_space().replace(resolution=args.resolution)
    trial = {"data": "digits", "resolution": args.resolution,
             "train": {"epochs": args.epochs, "steps_per_epoch": args.steps, "threads": 1}}

    with tempfile.TemporaryDirectory() as storage:
        (Path(storage) / "trials").mkdir()
        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        startup = time.perf_counter() - t0
        print(f"Ray start-up (ray.init, local, 2 CPUs):          {startup:6.2f} s")

        overhead = {}
        for reuse in (True, False):
            wall = tune_run(idle_trainable, args.trials, reuse, space, storage, {})
            overhead[reuse] = wall / args.trials
            print(f"per-trial overhead, reuse_actors={reuse!s:5}:         {overhead[reuse]:6.2f} s "
                  f"({args.trials} idle trials, 2 at a time, {wall:.1f} s)")
        print(f"  reuse_actors saves {overhead[False] - overhead[True]:.2f} s per trial "
              f"({overhead[False] / overhead[True]:.1f}x less overhead)")

        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
        archs = [sample_architecture(study.ask(), space) for _ in range(args.real)]
        config = TrialConfig.from_dict(trial)
        run_trial(archs[0], config.replace(train=config.train.replace(epochs=1, steps_per_epoch=1)))
        t0 = time.perf_counter()
        for arch in archs:
            run_trial(arch, config)
        sequential = time.perf_counter() - t0
        print(f"{args.real} trials one after another, one process:       {sequential:6.1f} s")

        concurrent = _tune_fixed(archs, trial, storage)
        print(f"{args.real} trials through Tune, 2 concurrent (reused actors): {concurrent:6.1f} s")
        print(f"  speed-up of 2 concurrent trials: {sequential / concurrent:.2f}x "
              f"(ideal 2x on 2 idle cores)")
        ray.shutdown()


def _tune_fixed(archs: list[Architecture], trial: dict, storage: str) -> float:
    from ray import tune

    tuner = tune.Tuner(
        tune.with_resources(training_trainable, {"cpu": 1}),
        param_space={"arch": tune.grid_search([a.to_dict() for a in archs]), "trial": trial},
        tune_config=tune.TuneConfig(max_concurrent_trials=2, reuse_actors=True),
        run_config=tune.RunConfig(storage_path=storage, name="bench-train", verbose=0))
    t0 = time.perf_counter()
    tuner.fit()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
