"""`hybrid-nas study [CONFIG]`: the CoAtNet layout study (section 2.2) on this machine's data."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "study", help="reproduce CoAtNet's layout study (generalization and capacity rankings)",
        description="Train the five layouts of CoAtNet's study (C-C-C-C, C-C-C-T, C-C-T-T, "
                    "C-T-T-T, ViT_REL), matched in parameters, at several data sizes with several "
                    "seeds; read generalization at matched training loss and capacity on a large "
                    "deformed set; rank both against the paper's (Kendall tau-b with intervals). "
                    "Beside them, when the config asks: each layout without and with distillation "
                    "from a C-C-C-C teacher (DeiT's claim), and ConViT- against DeiT-style stacks "
                    "across data sizes (ConViT's claim). Writes study.csv, curves.csv, "
                    "comparisons.csv, rankings.json and report.html.")
    parser.add_argument("config", nargs="?", type=Path, metavar="CONFIG",
                        help="study config YAML (default: the built-in full protocol)")
    parser.add_argument("--quick", action="store_true",
                        help="the built-in quick protocol (under 20 minutes on two CPU cores)")
    parser.add_argument("--out", type=Path, metavar="DIR",
                        help="the study directory to create (default: studies/<timestamp>-<name>)")
    parser.add_argument("--resume", type=Path, metavar="DIR",
                        help="continue the study in DIR: finished cells are not trained again")
    parser.add_argument("--address", metavar="ADDR",
                        help="join this Ray cluster (DIR must be on storage every node sees)")
    parser.add_argument("--concurrent", type=int, metavar="N", help="cells training at once")
    parser.add_argument("--protocol", choices=("quick", "fit", "full"),
                        help="a built-in protocol: quick (--quick), fit (train every run to a "
                             "low training loss, then read generalization there), full")
    parser.add_argument("--report", type=Path, metavar="DIR",
                        help="write the outputs of the finished study in DIR again from its "
                             "records (no training)")
    parser.add_argument("--beside", type=Path, metavar="DIR",
                        help="draw the Figure 2 of the study in DIR (its study.csv and "
                             "curves.csv) under this one's in the report")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    from datetime import datetime, timezone

    from nas.layout_study import StudyConfig, load_study_config, run_study
    from nas.layout_study.runner import rewrite_outputs
    from results.layout_study.report import ProtocolCurves
    from results.layout_study.study_directory import StudyDirectory

    if args.report is not None:
        if args.config is not None or args.resume is not None or args.quick or args.protocol:
            raise ValueError("--report rewrites a finished study's outputs: give only DIR "
                             "(and --beside)")
        rewrite_outputs(args.report, args.beside)
        return 0
    if args.protocol is not None and (args.quick or args.config is not None):
        raise ValueError("give one of CONFIG, --quick and --protocol")
    protocol = "quick" if args.quick else args.protocol
    beside = None if args.beside is None else ProtocolCurves.read(args.beside)
    if args.resume is not None:
        if args.config is not None or args.out is not None or protocol is not None:
            raise ValueError("--resume continues a study with its stored config: "
                             "CONFIG, --quick, --protocol and --out cannot be combined with it")
        config = StudyConfig.from_dict(StudyDirectory(args.resume).read_config())
        out = args.resume
    else:
        config = load_study_config(args.config, protocol=protocol)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        out = args.out or Path("studies") / f"{stamp}-{config.name}"
    if args.concurrent is not None:
        config = config.replace(resources=dataclasses.replace(
            config.resources, max_concurrent_trials=args.concurrent))
    result = run_study(config, out, resume=args.resume is not None, address=args.address,
                       beside=beside)
    if result.signal is not None:
        return 128 + result.signal
    return 130 if result.interrupted else 0
