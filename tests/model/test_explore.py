"""Issue 11's state machine, explored on both journal backends: a bounded run here, a long
one with `make explore`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from .machine import DropFolder, SharedDropFolder
from .world import PgDatabase, World

# The same sequences every run, so `make test` stays deterministic: about 20 s on each
# backend, a smoke run that must still reach uploads, deletes, S3 copies, crashes and (on
# PostgreSQL) a job taken over by the other host (Reached below). PostgreSQL is slower per
# step (a round trip per journal call, a fresh schema per example, two hosts), so it gets
# fewer examples. `make explore` is the search: new sequences each time, longer ones,
# about 40 minutes on this 2-core machine.
# Each example runs the daemon's scheduler (scheduler.Scheduler, 1-3 slots and the
# small-file lane) with its jobs as concurrent tasks, streams the larger files through the
# vault client's sending thread, and may kill the daemon mid-request or mid-post-action;
# the runs stay reproducible (world.py: inline file work, sending threads taking turns).
_COMMON = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
BOUNDED = {"sqlite": settings(_COMMON, max_examples=400, stateful_step_count=40, derandomize=True),
           "postgresql": settings(_COMMON, max_examples=60, stateful_step_count=40, derandomize=True)}
LONG = {"sqlite": settings(_COMMON, max_examples=2000, stateful_step_count=80),
        "postgresql": settings(_COMMON, max_examples=600, stateful_step_count=80)}
# PostgreSQL explores two hosts sharing the journal and the folder (issue 21: claims,
# leases, a host paused past its lease, fenced writes); SQLite one host, as before.
MACHINES = {"sqlite": DropFolder, "postgresql": SharedDropFolder}


@dataclass
class Reached:
    """What a run got to, summed over its examples. Its invariants can only fail where the
    run goes: a budget too small, or rules whose preconditions stopped holding, would pass
    quietly without this."""

    examples: int = 0
    stored: int = 0  # versions the vault stored
    deleted: int = 0  # stored versions deleted again (stale or abandoned copies)
    s3_requests: int = 0
    crashes: int = 0
    adoptions: int = 0  # a job claimed by the other host (PostgreSQL's two hosts)
    fenced: int = 0  # a host's job task stopped by losing its lease

    def count(self, world: World) -> None:
        self.examples += 1
        self.stored += len(world.services.stored)
        self.deleted += sum(1 for video in world.services.stored if video.deleted)
        self.s3_requests += len(world.services.s3_requests)
        self.crashes += world.crashes
        if world.fencing is not None:
            self.adoptions += world.fencing.adoptions
            self.fenced += world.fencing.fenced

    def machine(self, kind: type[DropFolder], database: PgDatabase | None) -> Callable[[], DropFolder]:
        """A factory of `kind` machines that count their world as they tear it down."""
        reached = self

        class Counted(kind):  # type: ignore[misc,valid-type]
            def teardown(self) -> None:
                try:
                    super().teardown()
                finally:
                    if self.world is not None:
                        reached.count(self.world)

        return lambda: Counted(database)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> tuple[str, PgDatabase | None]:
    """The journal backend's name and, for PostgreSQL, the database it explores in."""
    if request.param == "sqlite":
        return "sqlite", None
    url, password_file = request.getfixturevalue("pg_database")
    return "postgresql", PgDatabase(url, Path(password_file).read_text().strip())


def explore(backend: tuple[str, PgDatabase | None], budgets: dict[str, settings]) -> Reached:
    name, database = backend
    reached = Reached()
    run_state_machine_as_test(reached.machine(MACHINES[name], database), settings=budgets[name])
    print(f"{name}: {reached}")
    return reached


def test_drop_folder_bounded_exploration(backend: tuple[str, PgDatabase | None]) -> None:
    reached = explore(backend, BOUNDED)
    assert reached.examples >= BOUNDED[backend[0]].max_examples
    assert reached.stored and reached.deleted and reached.s3_requests and reached.crashes, (
        f"the bounded run no longer reaches every kind of event (a larger budget?): {reached}")
    if backend[0] == "postgresql":
        assert reached.adoptions, f"the second host never took a job over: {reached}"


@pytest.mark.explore
@pytest.mark.timeout(3600)  # about 40 minutes; the suite's 300 s would cut it short
def test_drop_folder_long_exploration(backend: tuple[str, PgDatabase | None]) -> None:
    reached = explore(backend, LONG)
    assert reached.examples >= LONG[backend[0]].max_examples
