"""`hybrid-nas preset NAME`: print a named architecture's canonical YAML with its size."""

from __future__ import annotations

import argparse

from search_spaces.presets import PRESET_NAMES, get_preset


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "preset", help="print a named architecture (CoAtNet, DeiT, ConViT, layout study) as YAML",
        description="Print a preset's canonical YAML (load it with Architecture.load) preceded by "
                    "its parameters and FLOPs (fvcore multiply-adds) as YAML comments.")
    parser.add_argument("name", nargs="?", help=f"one of: {', '.join(PRESET_NAMES)}")
    parser.add_argument("--list", action="store_true", help="list the preset names and exit")
    parser.add_argument("--resolution", type=int, default=224, help="input side in pixels (224)")
    parser.add_argument("--classes", type=int, default=1000, help="number of classes (1000)")
    parser.add_argument("--in-channels", type=int, default=3, help="input channels (3)")
    parser.add_argument("--no-cost", action="store_true", help="skip counting params/FLOPs")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.list:
        print("\n".join(PRESET_NAMES))
        return 0
    if not args.name:
        raise ValueError("name a preset (or pass --list); known: " + ", ".join(PRESET_NAMES))
    arch = get_preset(args.name, resolution=args.resolution, num_classes=args.classes,
                      in_channels=args.in_channels)
    print(f"# {args.name}: layout {arch.layout}, arch_id {arch.arch_id}")
    if not args.no_cost:
        from evaluators.cost import count_cost  # torch + fvcore: only when asked

        cost = count_cost(arch)
        print(f"# {arch.resolution}x{arch.resolution}: {cost} (params {cost.params:,}, "
              f"FLOPs {cost.flops:,} multiply-adds)")
    print(arch.to_yaml(), end="")
    return 0
