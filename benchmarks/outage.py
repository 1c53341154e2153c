"""Outage recovery (issue 12): `make bench-outage`, or `python benchmarks/outage.py [SECONDS ...]`.

Files queue while the vault is down; the sandbox comes back on the same port. Prints, per
outage length, how long after the vault answered again the last file was done (target
15 s), and how many outage warnings the daemon logged (one per outage, not one per file
per retry). Default lengths: 30 s and 600 s, with the shipped backoff settings.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tools import daemon_runner, sandbox_at, wait_done, write_random_file  # noqa: E402
from vaultdrop.sandbox.launcher import spawn_sandbox  # noqa: E402

FILES = 6


def one_outage(base: Path, seconds: float) -> tuple[float, int]:
    """(seconds from the vault's return to the last file done, outage warnings logged)."""
    with sandbox_at(base) as sandbox:
        runner = daemon_runner(base / "daemon", sandbox, concurrency=2, settle=0.5)
        runner.vault.update(backoff_base=2, backoff_max=600)  # the shipped defaults
        port = urlsplit(sandbox.url).port
        runner.start()
        try:
            sandbox.stop()
            for number in range(FILES):
                write_random_file(runner.drop / f"o{number}.mov", 1_000_000, seed=number)
            time.sleep(seconds)
            with spawn_sandbox(sandbox.root, port=port) as back:
                runner.sandbox = back
                returned = time.monotonic()
                wait_done(runner, FILES, timeout=seconds + 120)
                recovery = time.monotonic() - returned
            warnings = sum("is not answering" in line for line in runner.lines)
        finally:
            runner.stop()
    return recovery, warnings


def main(lengths: list[float]) -> None:
    print(f"{'outage':>8}  {'last file done after return':>28}  {'outage warnings':>15}")
    for seconds in lengths:
        with tempfile.TemporaryDirectory(prefix="vaultdrop-outage-") as tmp:
            recovery, warnings = one_outage(Path(tmp), seconds)
        print(f"{seconds:>7.0f}s  {recovery:>27.1f}s  {warnings:>15}", flush=True)


if __name__ == "__main__":
    main([float(a) for a in sys.argv[1:]] or [30.0, 600.0])
