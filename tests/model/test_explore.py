"""Issue 11's state machine, explored: a bounded run here, a long one with `make explore`."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings

from .machine import DropFolder

BOUNDED = settings(max_examples=60, stateful_step_count=40, deadline=None,
                   suppress_health_check=[HealthCheck.too_slow])
LONG = settings(max_examples=3000, stateful_step_count=80, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])

TestDropFolderBounded = DropFolder.TestCase
TestDropFolderBounded.settings = BOUNDED


@pytest.mark.explore
def test_drop_folder_long_exploration() -> None:
    from hypothesis.stateful import run_state_machine_as_test

    run_state_machine_as_test(DropFolder, settings=LONG)
