"""vaultdrop's benchmarks (issue 8): `make bench`, or `python benchmarks/run.py [--quick]`.

Prints one table with the machine's core count and the versions used, and writes every
figure plus the raw per-round data to benchmarks/results/latest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from importlib.metadata import version
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cases import CASES, QUICK, Figure, Outcome, Scale  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def machine() -> dict[str, Any]:
    cpu_model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("model name")), platform.processor())
    curl = subprocess.run(["curl", "--version"], capture_output=True, text=True, check=True).stdout.split()[1]
    return {
        "cores": os.cpu_count(),
        "cpu": cpu_model,
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "versions": {name: version(name) for name in ("vaultdrop", "httpx", "h11", "aiohttp", "watchdog")}
        | {"sqlite": sqlite3.sqlite_version, "curl": curl},
    }


def table(info: dict[str, Any], figures: list[Figure], mode: str) -> str:
    versions = ", ".join(f"{k} {v}" for k, v in info["versions"].items())
    lines = [f"vaultdrop benchmarks ({mode}) on {info['cores']} cores ({info['cpu']}), {info['memory_gib']} GiB,"
             f" Linux {info['kernel']}, Python {info['python']}", versions, "",
             "| case | figure | value | unit | target | met |", "|---|---|---|---|---|---|"]
    for f in figures:
        met = {True: "yes", False: "**no**", None: ""}[f.met]
        value = f"{f.value:,.3g}" if abs(f.value) < 100 else f"{f.value:,.0f}"
        lines.append(f"| {f.case} | {f.name} | {value} | {f.unit} | {f.target} | {met} |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every case")
    parser.add_argument("--only", nargs="+", choices=sorted(CASES), help="run only these cases")
    parser.add_argument("--workdir", type=Path, help="where to create the files (default: a temp dir)")
    parser.add_argument("--output", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args()
    scale = QUICK if args.quick else Scale()
    mode = "quick" if args.quick else "full"
    info = machine()
    results: dict[str, Any] = {"mode": mode, "machine": info, "started": time.time(), "cases": {}}
    figures: list[Figure] = []
    failed = False
    workdir = Path(tempfile.mkdtemp(prefix="vaultdrop-bench-", dir=args.workdir))
    try:
        for name in args.only or list(CASES):
            print(f"== {name} ...", flush=True)
            base = workdir / name
            base.mkdir()
            started = time.monotonic()
            try:
                outcome: Outcome = CASES[name](base, scale)
            except Exception:  # noqa: BLE001 - one broken case must not hide the others' figures
                failed = True
                results["cases"][name] = {"error": traceback.format_exc()}
                print(traceback.format_exc(), flush=True)
                continue
            finally:
                shutil.rmtree(base, ignore_errors=True)
            results["cases"][name] = outcome.as_json() | {"seconds": time.monotonic() - started}
            figures += outcome.figures
            for figure in outcome.figures:
                print(f"   {figure.name}: {figure.value:,.4g} {figure.unit}", flush=True)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1))
    print()
    print(table(info, figures, mode))
    print(f"\nwritten to {args.output}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
