"""`hybrid-nas search [CONFIG]`: run a layout search (the built-in default without CONFIG), or
continue an interrupted one with `--resume RUN_DIR`."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "search", help="run a layout search (Optuna sampling, Ray Tune trials)",
        description="Sample architectures from a search space with Optuna, price them against "
                    "the FLOP/param budget, train the ones that fit as Ray Tune trials (ASHA stops "
                    "weak ones early) and write every trial to a run directory. Without CONFIG "
                    "the built-in default runs (CoAtNet-style layouts on digits).")
    parser.add_argument("config", nargs="?", type=Path, metavar="CONFIG",
                        help="search config YAML (default: the built-in nas/default_search.yaml)")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue the interrupted search in RUN_DIR (a folder or a URI), "
                             "wherever it now lies, from its trial records and Optuna study (its "
                             "stored config is used; --trials, --concurrent and the resource "
                             "flags may change it)")
    parser.add_argument("--address", metavar="ADDR",
                        help="join this Ray cluster (auto, or the head's HOST:PORT; the run must "
                             "be on storage every node reaches: a URI or a shared file system); "
                             "default: start a local Ray")
    parser.add_argument("--gpus-per-trial", type=float, metavar="F",
                        help="GPUs per trial; fractions share a GPU (default: from the config)")
    parser.add_argument("--cpus-per-trial", type=float, metavar="N",
                        help="CPUs (= torch threads) per trial (default: from the config)")
    parser.add_argument("--concurrent", type=int, metavar="N",
                        help="trials running at once (default: from the config)")
    parser.add_argument("--trials", type=int, metavar="N", help="number of trained trials")
    parser.add_argument("--out", metavar="RUN_DIR",
                        help="the run directory to create: a folder or a URI (s3://bucket/prefix"
                             "[?endpoint_override=HOST:PORT&scheme=http], gs://..., file://...; "
                             "credentials from the environment) (default: "
                             "<out_dir>/<UTC time>-<name>)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from nas.config import load_config
    from nas.search import open_run_to_resume, search

    run_dir = args.out
    if args.resume is not None:
        if args.config is not None or args.out is not None:
            raise ValueError("--resume continues a run where it lies, with its stored config: "
                             "CONFIG and --out cannot be combined with it")
        run_dir, config = open_run_to_resume(args.resume)
    else:
        config = load_config(args.config)
    resources = config.resources
    for flag, name in (("gpus_per_trial", "gpus_per_trial"), ("cpus_per_trial", "cpus_per_trial"),
                       ("concurrent", "max_concurrent_trials")):
        value = getattr(args, flag)
        if value is not None:
            resources = dataclasses.replace(resources, **{name: value})
    changes = {"resources": resources}
    if args.trials is not None:
        changes["num_trials"] = args.trials
    config = config.replace(**changes)  # validated again: a bad flag value names its field
    summary = search(config, run_dir=run_dir, resume=args.resume is not None, address=args.address)
    if summary.signal is not None:
        return 128 + summary.signal  # 143 after SIGTERM, as the shell reports it
    return 130 if summary.interrupted else 0
