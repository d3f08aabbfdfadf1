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
        config, weights = fetch_exported(args.config, Path(tmp),
                                         args.weights is None and not args.no_weights)
        return _build(config, args, weights)


def fetch_exported(uri: str, folder: Path, with_weights: bool) -> tuple[Path, str | None]:
    """Copy an exported config at a URI into `folder`, with the weights file it names (relative
    to it, or a URI) beside it and the copy's `weights` pointing there; returns the local config
    and the weights' URI (None when not asked for or not recorded)."""
    import yaml

    from results.storage import is_uri, join, open_storage, split

    parent, name = split(uri)
    config = folder / name
    open_storage(parent).download(name, config)
    try:
        data = yaml.safe_load(config.read_text())
    except yaml.YAMLError:
        return config, None  # build names the file and the error
    recorded = data.get("weights") if isinstance(data, dict) else None
    if not with_weights or not isinstance(recorded, str) or \
            (not is_uri(recorded) and Path(recorded).is_absolute()):
        return config, None
    source = recorded if is_uri(recorded) else str(join(parent, recorded))
    weights_parent, weights_name = split(source)
    open_storage(weights_parent).download(weights_name, folder / "weights" / weights_name)
    config.write_text(yaml.safe_dump({**data, "weights": f"weights/{weights_name}"},
                                     sort_keys=False))
    return config, source


def _build(config_path: Path, args: argparse.Namespace, weights_shown: str | None = None) -> int:
    import torch

    from results.export import build_with_info, parameter_count

    model, config, weights = build_with_info(config_path, weights=args.weights,
                                             load_weights=not args.no_weights)
    arch = config.architecture
    print(f"arch_id {arch.arch_id}  layout {arch.layout}  params {parameter_count(model):,}  "
          f"input (B, {arch.in_channels}, {arch.resolution}, {arch.resolution}) -> "
          f"(B, {arch.num_classes})")
    print(f"weights: {weights_shown or weights or 'none (freshly initialised)'}")
    if args.save is not None:
        torch.save(model.state_dict(), args.save)
        print(f"state_dict saved to {args.save}")
    return 0
