"""Issue 11's state machine, explored: a bounded run here, a long one with `make explore`."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis.stateful import run_state_machine_as_test

from .machine import DropFolder

# About a minute, and the same sequences every run, so `make test` stays deterministic;
# `make explore` draws new ones each time (about 40 minutes on this 2-core machine).
BOUNDED = settings(max_examples=800, stateful_step_count=40, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=2000, stateful_step_count=80, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])


def test_drop_folder_bounded_exploration() -> None:
    run_state_machine_as_test(DropFolder, settings=BOUNDED)


@pytest.mark.explore
def test_drop_folder_long_exploration() -> None:
    run_state_machine_as_test(DropFolder, settings=LONG)
