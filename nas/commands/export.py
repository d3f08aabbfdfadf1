"""`hybrid-nas export RUN_DIR`: write chosen architectures as YAML configs with their metrics, and
optionally as standalone ONNX / torch.export files with their trained weights."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "export", help="export the Pareto front or the top K trials as YAML configs (and ONNX, .pt2)",
        description="Write one YAML config per chosen trial (architecture, arch_id, metrics, "
                    "cost, weights path). Rebuild any of them with `hybrid-nas build CONFIG`. "
                    "With --format onnx and/or pt2, also write the model with its trained weights "
                    "beside each config as a file that runs without hybrid-nas, checked against "
                    "the PyTorch model at export.",
        epilog="Exit status 1 when some standalone file could not be written (each reason is "
               "printed; the others are written), 2 on a bad request.")
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
    parser.add_argument("--format", dest="formats", action="append", metavar="FMT",
                        help="yaml (always written), onnx (an ONNX graph: needs "
                             "`pip install 'hybrid-nas[export]'`), pt2 (a torch.export program); "
                             "repeat or comma-separate: --format onnx,pt2")
    parser.add_argument("--out", type=Path, default=None, metavar="DIR",
                        help="output folder (default: RUN_DIR/exported/pareto or RUN_DIR/exported/topK-METRIC; "
                             "an earlier export there is replaced)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from results.export import export_architectures, read_config

    paths = export_architectures(args.run_dir, out_dir=args.out, pareto=args.pareto, top=args.top,
                                 by=args.by, minimize=args.minimize, formats=args.formats)
    failures = 0
    for path in paths:
        print(path)
        config = read_config(path)
        for fmt, artifact in config.artifacts.items():
            print(f"  {fmt:<4} {artifact['file']}  (max abs logit difference against PyTorch: "
                  f"{artifact['max_abs_diff']:.1e})")
        for fmt, reason in config.artifact_errors.items():
            failures += 1
            print(f"hybrid-nas export: error: {path.name}: {fmt} not written: {reason}", file=sys.stderr)
    print(f"exported {len(paths)} architecture(s); rebuild one with: hybrid-nas build {paths[0]}")
    if failures:
        print(f"hybrid-nas export: {failures} standalone file(s) not written (reasons above)",
              file=sys.stderr)
    return 1 if failures else 0
