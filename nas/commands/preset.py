"""`hybrid-nas preset` (placeholder until its owner lands it)."""


def register(subparsers) -> None:
    subparsers.add_parser("preset", help="not yet available")
