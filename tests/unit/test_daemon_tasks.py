"""The daemon's background tasks (notifier, stale deletes, rescans): none may die silently;
and its teardown closes everything, whatever fails on the way."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from vaultdrop import daemon as daemon_module
from vaultdrop import wiring
from vaultdrop.config import Settings, settings_from_dict
from vaultdrop.daemon import Daemon, lock_state_dir
from vaultdrop.journal import JournalStore, JournalUnwritable
from vaultdrop.runner.pipeline import Pipeline


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


async def test_a_close_that_fails_still_closes_the_journal_and_releases_the_lock(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Teardown is one exit stack: the pipeline's close raising skips none of the others."""
    stopping = daemon(tmp_path)
    closed: list[str] = []

    def open_journal(settings: Settings) -> JournalStore:
        journal = wiring.open_journal(settings)
        close = journal.close
        monkeypatch.setattr(journal, "close", lambda: (closed.append("journal"), close())[1])
        return journal

    async def broken_aclose(self: Pipeline) -> None:
        raise RuntimeError("the pipeline's pools would not close")

    async def online(settings: Settings) -> list[str]:
        return []

    monkeypatch.setattr(daemon_module, "open_journal", open_journal)
    monkeypatch.setattr(daemon_module, "check_online", online)
    monkeypatch.setattr(Pipeline, "aclose", broken_aclose)
    monkeypatch.setattr(logging.getLogger("vaultdrop"), "handlers", [])  # run() attaches its status recorder
    stopping.request_stop()  # drains at once: no job runs
    with pytest.raises(RuntimeError, match="would not close"):
        await stopping.run()
    assert closed == ["journal"]
    lock_state_dir(tmp_path / "state").close()  # free again: the lock was released
