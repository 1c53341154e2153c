"""Shared fixtures: a real sandbox server process per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from vaultdrop.sandbox.launcher import SandboxProcess, spawn_sandbox


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxProcess]:
    """A sandbox on a free loopback port, default credentials, rooted in tmp_path/sandbox."""
    with spawn_sandbox(tmp_path / "sandbox") as process:
        yield process
