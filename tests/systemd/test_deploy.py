"""The deploy/ files as shipped: hardening score and message catalog."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vaultdrop.logs import MESSAGE_IDS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SECURITY_TARGET = 1.5


def require(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (make test installs the Debian package systemd)")


def test_unit_exposure_is_at_most_the_target() -> None:
    require("systemd-analyze")
    out = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                          str(DEPLOY / "vaultdrop.service")], capture_output=True, text=True).stdout
    score = float(re.search(r"Overall exposure level for vaultdrop\.service: ([\d.]+)", out)[1])
    print(f"systemd-analyze security: {score}")
    assert score <= SECURITY_TARGET, out


def test_catalog_explains_every_message_id(tmp_path: Path) -> None:
    """`journalctl --update-catalog` accepts the file and knows exactly logs.MESSAGE_IDS."""
    require("journalctl")
    catalog_dir = tmp_path / "usr/lib/systemd/catalog"
    catalog_dir.mkdir(parents=True)
    shutil.copy(DEPLOY / "vaultdrop.catalog", catalog_dir)
    subprocess.run(["journalctl", f"--root={tmp_path}", "--update-catalog"], check=True, capture_output=True)
    listed = subprocess.run(["journalctl", f"--root={tmp_path}", "--list-catalog"], check=True,
                            capture_output=True, text=True).stdout
    assert {line.split()[0] for line in listed.splitlines()} == set(MESSAGE_IDS.values())
