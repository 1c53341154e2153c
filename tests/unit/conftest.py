from collections.abc import Iterator
from pathlib import Path

import pytest

from vaultdrop.journal import Journal


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def journal(tmp_path: Path, clock: Clock) -> Iterator[Journal]:
    journal = Journal(tmp_path / "vaultdrop.db", clock=clock)
    yield journal
    journal.close()
