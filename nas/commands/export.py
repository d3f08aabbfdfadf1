"""`hybrid-nas export` (placeholder until its owner lands it)."""


def register(subparsers) -> None:
    subparsers.add_parser("export", help="not yet available")
