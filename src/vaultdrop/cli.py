"""Command line: `vaultdrop run | sandbox | status | jobs | upload | delete | check-config`."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaultdrop", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    from .sandbox.cli import add_sandbox_arguments

    add_sandbox_arguments(sub.add_parser("sandbox", help="serve the local SesameVault + ScaleEngine sandbox"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "sandbox":
        from .sandbox.cli import run_sandbox

        return run_sandbox(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
