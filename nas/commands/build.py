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
    parser.add_argument("config", metavar="CONFIG",
                        help="an exported YAML config: a file or a URI (s3://..., gs://...)")
    parser.add_argument("--weights", type=Path, default=None, metavar="W",
                        help="a state_dict .pt to load (default: the one recorded in CONFIG)")
    parser.add_argument("--no-weights", action="store_true",
                        help="build freshly initialised, ignoring recorded weights")
    parser.add_argument("--save", type=Path, default=None, metavar="FILE",
                        help="also save the built model's state_dict to FILE")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import tempfile

    from results.storage import is_uri

    if not is_uri(args.config):
        return _build(Path(args.config), args)
    with tempfile.TemporaryDirectory(prefix="hybrid-nas-build-") as tmp:
        config, weights = fetch_exported(args.config, Path(tmp), args.weights is None
                                         and not args.no_weights)
        if weights is not None:
            args.weights = weights
        return _build(config, args)


def fetch_exported(uri: str, folder: Path, with_weights: bool) -> tuple[Path, Path | None]:
    """Copy an exported config at a URI, and the weights file it names (relative to it), into
    `folder`; returns both local paths (weights None when not asked for or not recorded)."""
    import yaml

    from results.storage import join, open_storage, split

    parent, name = split(uri)
    config = folder / name
    open_storage(parent).download(name, config)
    data = yaml.safe_load(config.read_text())
    recorded = data.get("weights") if isinstance(data, dict) else None
    if not with_weights or not isinstance(recorded, str):
        return config, None
    weights_parent, weights_name = split(join(parent, recorded))
    weights = folder / weights_name
    open_storage(weights_parent).download(weights_name, weights)
    return config, weights


def _build(config_path: Path, args: argparse.Namespace) -> int:
    import torch

    from results.export import build_with_info, parameter_count

    model, config, weights = build_with_info(config_path, weights=args.weights,
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
