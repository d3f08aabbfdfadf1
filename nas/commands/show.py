"""`hybrid-nas show` (placeholder until its owner lands it)."""


def register(subparsers) -> None:
    subparsers.add_parser("show", help="not yet available")
