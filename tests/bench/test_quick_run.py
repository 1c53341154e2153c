"""`benchmarks/run.py --quick` end to end: every case runs against the real daemon and
sandbox, and the checks a user relies on hold (nothing lost, nothing uploaded twice)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

RUN = Path(__file__).resolve().parents[2] / "benchmarks" / "run.py"


def test_quick_benchmark_prints_every_case_and_loses_nothing(tmp_path: Path) -> None:
    output = tmp_path / "latest.json"
    result = subprocess.run([sys.executable, str(RUN), "--quick", "--workdir", str(tmp_path), "--output", str(output)],
                            capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    report = json.loads(output.read_text())
    assert set(report["cases"]) == {"throughput", "memory", "latency", "small_files", "startup"}
    assert report["machine"]["cores"] >= 1 and report["machine"]["versions"]["curl"]
    figures = {f["name"]: f for case in report["cases"].values() for f in case["figures"]}
    assert figures["all journalled and done, each stored once"]["met"] is True
    assert figures["nothing uploaded again"]["met"] is True
    assert "| throughput | ratio vaultdrop/max(curl, sha256)" in result.stdout
    assert "| throughput | sink ceiling: curl MB/s to it" in result.stdout
    assert list(tmp_path.iterdir()) == [output]  # the run removed the files it made
