"""`hybrid-nas build CONFIG`: rebuild an exported (or any) architecture config as a model."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "build", help="rebuild the model of an exported config (with its trained weights)",
        description="Build the model an architecture config describes and load its trained "
                    "weights (given with --weights, or recorded in the config). Prints the "
                    "arch_id, layout and parameter count.")
    parser.add_argument("config", type=Path, metavar="CONFIG", help="an exported YAML config")
    parser.add_argument("--weights", type=Path, default=None, metavar="W",
                        help="a state_dict .pt to load (default: the one recorded in CONFIG)")
    parser.add_argument("--no-weights", action="store_true",
                        help="build freshly initialised, ignoring recorded weights")
    parser.add_argument("--save", type=Path, default=None, metavar="FILE",
                        help="also save the built model's state_dict to FILE")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from results.export import build_with_info, parameter_count

    model, config, weights = build_with_info(args.config, weights=args.weights,
                                             load_weights=not args.no_weights)
    arch = config.architecture
    print(f"arch_id {arch.arch_id}  layout {arch.layout}  params {parameter_count(model):,}  "
          f"input (B, {arch.in_channels}, {arch.resolution}, {arch.resolution}) -> "
          f"(B, {arch.num_classes})")
    print(f"weights: {weights if weights is not None else 'none (freshly initialised)'}")
    if args.save is not None:
        torch.save(model.state_dict(), args.save)
        print(f"state_dict saved to {args.save}")
    return 0
