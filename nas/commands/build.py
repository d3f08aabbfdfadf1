"""`hybrid-nas build` (placeholder until its owner lands it)."""


def register(subparsers) -> None:
    subparsers.add_parser("build", help="not yet available")
