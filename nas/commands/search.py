"""`hybrid-nas search` (placeholder until its owner lands it)."""


def register(subparsers) -> None:
    subparsers.add_parser("search", help="not yet available")
