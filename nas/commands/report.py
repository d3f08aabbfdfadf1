"""`hybrid-nas report` (placeholder until its owner lands it)."""


def register(subparsers) -> None:
    subparsers.add_parser("report", help="not yet available")
