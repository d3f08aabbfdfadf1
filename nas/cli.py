"""`hybrid-nas`: one command line, one subcommand per verb."""

from __future__ import annotations

import argparse
import signal
import sys

from nas.commands import build, export, preset, report, search, show, study

COMMANDS = (search, study, report, show, export, build, preset)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hybrid-nas",
        description="Layout search for hybrid convolution/attention image models.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:
        print("interrupted", file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    except BrokenPipeError:  # `hybrid-nas show RUN | head`
        sys.stderr.close()
        return 0
    except (ValueError, FileNotFoundError) as exc:  # our errors say what and where
        print(f"hybrid-nas {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # an unwritable --out, a missing folder, a refused connection
        where = f" {exc.filename}" if exc.filename else ""
        print(f"hybrid-nas {args.command}: error:{where} {exc.strerror or exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
