"""The reliability tests drive the same real daemon as the integration tests; a campaign run
ends with its table of figures."""

from __future__ import annotations

import time

import pytest

from ..integration.conftest import runner  # noqa: F401 - the shared DaemonRunner fixture
from .checks import TALLY

_STARTED = time.monotonic()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TALLY.files or TALLY.kills:
        terminalreporter.section("reliability campaign")
        for line in TALLY.table(time.monotonic() - _STARTED):
            terminalreporter.write_line(line)
