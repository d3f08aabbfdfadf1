"""`hybrid-nas export RUN_DIR`: write chosen architectures as YAML configs with their metrics."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="export the Pareto front or the top K trials as YAML configs",
        description="Write one YAML config per chosen trial (architecture, arch_id, metrics, "
                    "cost, weights path). Rebuild any of them with `hybrid-nas build CONFIG`.")
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="a search's run directory: a folder or a URI (s3://..., gs://...)")
    choice = parser.add_mutually_exclusive_group(required=True)
    choice.add_argument("--pareto", action="store_true",
                        help="the first Pareto front of the run's objectives")
    choice.add_argument("--top", type=int, metavar="K", help="the K best trials by --by METRIC")
    parser.add_argument("--by", default=None, metavar="METRIC", help="metric or objective for --top")
    direction = parser.add_mutually_exclusive_group()
    direction.add_argument("--min", dest="minimize", action="store_true", default=None,
                           help="lower is better for --by (default: inferred)")
    direction.add_argument("--max", dest="minimize", action="store_false",
                           help="higher is better for --by")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="output folder (default: RUN_DIR/exported/pareto or RUN_DIR/exported/topK-METRIC; "
                             "an earlier export there is replaced)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from results.export import export_architectures

    paths = export_architectures(args.run_dir, out_dir=args.out, pareto=args.pareto, top=args.top,
                                 by=args.by, minimize=args.minimize)
    for path in paths:
        print(path)
    print(f"exported {len(paths)} architecture(s); rebuild one with: hybrid-nas build {paths[0]}")
    return 0
