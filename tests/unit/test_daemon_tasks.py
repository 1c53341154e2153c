"""The daemon's background tasks (notifier, stale deletes, rescans): none may die silently."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from vaultdrop.config import settings_from_dict
from vaultdrop.daemon import Daemon
from vaultdrop.journal import JournalUnwritable


def daemon(tmp_path: Path) -> Daemon:
    (tmp_path / "drop").mkdir()
    return Daemon(settings_from_dict({"daemon": {"state_dir": str(tmp_path / "state")},
                                      "vault": {"user": "u", "password": "p"},
                                      "folders": [{"path": str(tmp_path / "drop")}]}, environ={}))


async def test_an_unwritable_journal_met_by_a_background_task_stops_the_daemon(tmp_path: Path) -> None:
    stopped = daemon(tmp_path)

    async def notifier() -> None:
        raise JournalUnwritable("the journal x could not be flushed to disk: [Errno 5] Input/output error")

    stopped._spawn(notifier())
    await asyncio.sleep(0.01)
    assert stopped._stopping and stopped._fatal is not None and stopped._fatal.exit_status == 75


async def test_a_background_task_that_crashes_says_so(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    running = daemon(tmp_path)

    async def rescan() -> None:
        raise ValueError("boom")

    monkeypatch.setattr(logging.getLogger("vaultdrop"), "propagate", True)  # undo an earlier logs.setup()
    with caplog.at_level(logging.ERROR, logger="vaultdrop"):
        running._spawn(rescan())
        await asyncio.sleep(0.01)
    assert not running._stopping
    assert any("rescan stopped: ValueError('boom')" in r.getMessage() for r in caplog.records)
