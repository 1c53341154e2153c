"""Shared fixtures: a real sandbox server process per test; a throwaway PostgreSQL cluster."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import pgcluster
from tests.pgcluster import Cluster
from vaultdrop.sandbox.launcher import SandboxProcess, spawn_sandbox


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[SandboxProcess]:
    """A sandbox on a free loopback port, default credentials, rooted in tmp_path/sandbox."""
    with spawn_sandbox(tmp_path / "sandbox") as process:
        yield process


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    """One PostgreSQL cluster for the whole session, started only if a test asks for it."""
    if not pgcluster.available():
        pytest.skip("PostgreSQL 15 is not installed (make test installs it)")
    with pgcluster.running_cluster() as cluster:
        yield cluster


@pytest.fixture
def pg_database(pg_cluster: Cluster, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A fresh database dropped after the test: (url without password, password file)."""
    password_file = tmp_path / "journal-password"
    password_file.write_text(pg_cluster.password + "\n")
    password_file.chmod(0o600)
    with pg_cluster.database(f"t_{uuid.uuid4().hex}") as url:
        yield url, password_file
