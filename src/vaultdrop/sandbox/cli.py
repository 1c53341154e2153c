"""`vaultdrop sandbox` / `python -m vaultdrop.sandbox`: run the sandbox server from flags."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from collections.abc import Callable
from pathlib import Path

from .faults import Fault, FaultBook, parse_fault
from .settings import SandboxSettings


def _fault(text: str) -> Fault:
    try:
        return parse_fault(json.loads(text))
    except ValueError as exc:  # bad JSON, or a fault that cannot fire
        raise argparse.ArgumentTypeError(f"bad --fault {text!r}: {exc}") from None


def _non_negative(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    def convert(text: str) -> int | float:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"{text} must be >= 0")
        return value

    convert.__name__ = kind.__name__
    return convert


def add_sandbox_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = SandboxSettings(root=Path("sandbox-data"))
    add = parser.add_argument
    add("--host", default=defaults.host, help="address to listen on (default %(default)s)")
    add("--port", type=int, default=defaults.port, help="port; 0 picks a free one (default %(default)s)")
    add("--root", type=Path, default=Path("./sandbox-data"), help="data directory (default ./sandbox-data)")
    add("--user", default=defaults.user, help="vault user name")
    add("--password", default=defaults.password, help="vault password")
    add("--api-key", default=defaults.api_key, help="control API key")
    add("--api-secret", default=defaults.api_secret, help="control API secret")
    add("--cdn", type=int, default=defaults.cdn, help="control API CDN id (default %(default)s)")
    add("--storage", default=defaults.storage, help="storage prefix files.getstorage returns (default %(default)s)")
    add("--max-size", type=_non_negative(int), default=0, help="largest accepted file in bytes; 0 = unlimited")
    add("--s3-step", type=_non_negative(float), default=defaults.s3_step,
        help="seconds between queued -> uploading -> complete (default %(default)s)")
    add("--fault", type=_fault, action="append", default=[], metavar="JSON",
        help="fault active from the start, as the /_sandbox/faults JSON (repeatable)")
    add("--ready-file", type=Path, help="write the base URL here once listening")


def run_sandbox(args: argparse.Namespace) -> int:
    level = logging.ERROR if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s sandbox %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the callback outcome is logged by s3.py
    settings = SandboxSettings(
        root=args.root, host=args.host, port=args.port, user=args.user, password=args.password,
        api_key=args.api_key, api_secret=args.api_secret, cdn=args.cdn, storage=args.storage,
        max_size=args.max_size, s3_step=args.s3_step,
    )
    faults = FaultBook()
    for fault in args.fault:
        faults.add(fault)
    from .server import serve  # aiohttp.web only when serving: other commands start faster

    asyncio.run(serve(settings, faults, args.ready_file))
    return 0
