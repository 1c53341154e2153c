"""Issue 11's state machine, explored on both journal backends: a bounded run here, a long
one with `make explore`."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from .machine import DropFolder, SharedDropFolder
from .world import PgDatabase

# About a minute on SQLite, and the same sequences every run, so `make test` stays
# deterministic; PostgreSQL is slower per step (a round trip per journal call, a fresh
# schema per example, two hosts), so it gets fewer examples for about the same time.
# `make explore` draws new ones each time (about 40 minutes on this 2-core machine).
# Each example runs the daemon's scheduler (scheduler.Scheduler, 1-3 slots and the
# small-file lane) with its jobs as concurrent tasks, streams the larger files through the
# vault client's sending thread, and may kill the daemon mid-request or mid-post-action;
# the runs stay reproducible (world.py: inline file work, sending threads taking turns).
_COMMON = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
BOUNDED = {"sqlite": settings(_COMMON, max_examples=1100, stateful_step_count=40, derandomize=True),
           "postgresql": settings(_COMMON, max_examples=170, stateful_step_count=40, derandomize=True)}
LONG = {"sqlite": settings(_COMMON, max_examples=2000, stateful_step_count=80),
        "postgresql": settings(_COMMON, max_examples=600, stateful_step_count=80)}
# PostgreSQL explores two hosts sharing the journal and the folder (issue 21: claims,
# leases, a host paused past its lease, fenced writes); SQLite one host, as before.
MACHINES = {"sqlite": DropFolder, "postgresql": SharedDropFolder}


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> tuple[str, PgDatabase | None]:
    """The journal backend's name and, for PostgreSQL, the database it explores in."""
    if request.param == "sqlite":
        return "sqlite", None
    url, password_file = request.getfixturevalue("pg_database")
    return "postgresql", PgDatabase(url, Path(password_file).read_text().strip())


def test_drop_folder_bounded_exploration(backend: tuple[str, PgDatabase | None]) -> None:
    name, database = backend
    run_state_machine_as_test(functools.partial(MACHINES[name], database), settings=BOUNDED[name])


@pytest.mark.explore
@pytest.mark.timeout(3600)  # about 40 minutes; the suite's 300 s would cut it short
def test_drop_folder_long_exploration(backend: tuple[str, PgDatabase | None]) -> None:
    name, database = backend
    run_state_machine_as_test(functools.partial(MACHINES[name], database), settings=LONG[name])
