"""`hybrid-nas report RUN_DIR`: one self-contained HTML report of a run (opens offline)."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report", help="write an HTML report of a run (Pareto fronts, layouts, progress)",
        description="Write one self-contained HTML file (plotly.js embedded) with the run's Pareto "
                    "front, accuracy vs cost, layouts, stage choices and progress. Also saves "
                    "RUN_DIR/table.parquet and table.csv.")
    parser.add_argument("run_dir", metavar="RUN_DIR",
                        help="a search's run directory: a folder or a URI (s3://..., gs://...)")
    parser.add_argument("--out", type=Path, default=None, metavar="FILE",
                        help="HTML file to write (default: RUN_DIR/report.html)")
    parser.add_argument("--png", action="store_true",
                        help="also write one PNG per figure (needs kaleido; skipped if absent)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from results.report import write_report

    path = write_report(args.run_dir, out=args.out, png=args.png)
    print(f"report written to {path}")
    return 0
