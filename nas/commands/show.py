"""`hybrid-nas show RUN_DIR`: the best trials of a run as a table in the terminal."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "show", help="print a run's best trials as a table",
        description="Print the best completed trials (by Pareto rank of the run's objectives, or "
                    "by --by METRIC) and the trial counts by status. Works on a running run.")
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="a search's run directory: a folder or a URI (s3://..., gs://...)")
    parser.add_argument("--top", type=int, default=10, metavar="K", help="rows to show (default 10)")
    parser.add_argument("--by", default=None, metavar="METRIC",
                        help="sort by this metric or objective (default: Pareto rank)")
    direction = parser.add_mutually_exclusive_group()
    direction.add_argument("--min", dest="minimize", action="store_true", default=None,
                           help="lower is better for --by (default: inferred)")
    direction.add_argument("--max", dest="minimize", action="store_false",
                           help="higher is better for --by")
    parser.add_argument("--all", action="store_true",
                        help="list every trial (any status) in sampling order instead")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from results.show import format_best

    print(format_best(args.run_dir, top=args.top, by=args.by, minimize=args.minimize,
                      every_trial=args.all))
    return 0
