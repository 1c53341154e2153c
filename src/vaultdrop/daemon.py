"""The daemon: one asyncio loop wiring watch → completeness → journal → pipeline → post-action.

Signal handlers only set flags and wake the scheduler. The systemd watchdog is pinged
from a loop task, so a ping proves the loop is alive. Stopping drains: no new uploads
start, in-flight ones get `drain_timeout`, the rest stay resumable in the journal.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import IO, Any

from . import logs
from .config import Settings
from .errors import ConfigError, RetryLater
from .events import Fanout
from .intake.folders import WatchedFolders
from .job import Job, JobState
from .journal.committer import Committer
from .journal.sqlite import JournalUnavailable
from .logs import log
from .metrics import MetricsServer
from .notify import NotificationSender, notify_states
from .preflight import check_online
from .runner.loop import JobLoop
from .runner.pipeline import SCALEENGINE, VAULT, Pipeline
from .runstate import RunStateRecorder
from .service import Notifier
from .wiring import build_pipeline, open_journal, open_reader

STATUS_INTERVAL = 5.0
# Test hook: with this set to 1, SIGUSR2 blocks the event loop for good, so a test can
# prove that systemd's watchdog kills and restarts a hung daemon. Never set it in production.
HANG_HOOK_ENV = "VAULTDROP_TEST_HANG_ON_SIGUSR2"


def _hang_forever() -> None:
    log(logging.WARNING, "SIGUSR2: blocking the event loop (test hook)")
    while True:
        time.sleep(3600)


def lock_state_dir(state_dir: Path) -> IO[str]:
    """One daemon per journal: a second one would upload the same files twice."""
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        handle = (state_dir / "vaultdrop.lock").open("w")
    except OSError as exc:  # read-only or full disk, wrong owner: say so instead of a traceback
        raise ConfigError(f"cannot use the state directory {state_dir}: {exc.strerror}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise ConfigError(f"another vaultdrop is already running on {state_dir}") from None
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


class Daemon:
    def __init__(self, settings: Settings, reload_settings: Callable[[], Settings] | None = None) -> None:
        self.settings = settings
        self._reload_settings = reload_settings
        self._notifier = Notifier()
        self._wake = asyncio.Event()
        self._stopping = False
        self._reload_requested = False
        self._fatal: ConfigError | None = None
        self._background: set[asyncio.Task[None]] = set()

    # -- signals: flags only -------------------------------------------------------

    def request_stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def _stop_fatally(self, error: ConfigError) -> None:
        """Stop with the error's exit status (78 for the config, 75 for the journal's disk)."""
        self._fatal = error
        self.request_stop()

    def request_reload(self) -> None:
        self._reload_requested = True
        self._wake.set()

    # -- life cycle ----------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        lock = lock_state_dir(self.settings.daemon.state_dir)
        self._run_state = RunStateRecorder(self.settings.daemon.state_dir)
        logs.attach(self._run_state, self.settings.secrets())
        self.journal = open_journal(self.settings)
        self._metrics = MetricsServer(self.settings.metrics.listen, open_reader(self.settings)) \
            if self.settings.metrics.listen else None
        self._sender = NotificationSender(self.journal, lambda: self.settings.notify)
        self.events = Fanout(self._sender, *([self._metrics.recorder] if self._metrics else []))
        self._intake = WatchedFolders(Committer(self.journal, self.events), spawn=self._spawn, wake=self._wake.set,
                                      on_watching=self._metrics.recorder.watching if self._metrics
                                      else lambda folder: None)
        handlers = {signal.SIGTERM: self.request_stop, signal.SIGINT: self.request_stop,
                    signal.SIGHUP: self.request_reload}
        if os.environ.get(HANG_HOOK_ENV) == "1":
            handlers[signal.SIGUSR2] = _hang_forever
        for signum, handler in handlers.items():
            loop.add_signal_handler(signum, handler)
        self._jobs = JobLoop(self.journal, self._build_pipeline(self.settings), settings=lambda: self.settings,
                             folders=self._intake.folders, wake=self._wake, on_fatal=self._stop_fatally)
        for service in (VAULT, SCALEENGINE):  # a restart is a good moment to look again
            self.journal.wake(service)
        try:
            await self._preflight()
            self._intake.apply(self.settings)
            log(logging.INFO, f"ready: watching {len(self._intake.folders)} folder(s), journal "
                f"{self.journal.location}", event="daemon_ready")
            self._notifier.ready(self._status_line())
            self._spawn(self._pinger())
            self._spawn(self._intake.rescan_periodically())
            self._spawn(self._jobs.delete_stale_videos())
            self._spawn(self._intake.keep_watching())
            self._spawn(self._sender.run())
            if self._metrics is not None:
                log(logging.INFO, f"metrics at http://{self._metrics.address}/metrics")
            self._spawn(self._jobs.heartbeat())
            await self._schedule()
            await self._drain()
        finally:
            for signum in handlers:
                loop.remove_signal_handler(signum)
            for task in self._background:
                task.cancel()
            await asyncio.gather(*self._background, return_exceptions=True)
            self._intake.close()
            await self._jobs.aclose()
            await self._sender.aclose()
            if self._metrics is not None:
                self._metrics.close()
            self.journal.close()
            lock.close()
        if self._fatal is not None:
            log(logging.CRITICAL, f"stopping: {self._fatal}")
            return self._fatal.exit_status
        log(logging.INFO, "stopped: unfinished work stays resumable in the journal")
        return 0

    def _build_pipeline(self, settings: Settings) -> Pipeline:
        return build_pipeline(settings, self.journal, self._intake.folder_for,
                              on_back=lambda service: self._wake.set(),
                              on_displaced=self._intake.completeness.look_again, events=self.events,
                              readiness=self._intake.completeness)

    async def _preflight(self) -> None:
        """Rejected credentials stop the daemon before READY=1 (exit 78), not at the first
        file hours later; a service that is down only warns: files wait in the journal."""
        try:
            for line in await check_online(self.settings):
                log(logging.INFO, line)
        except RetryLater as exc:
            log(logging.WARNING, f"start-up check failed, files wait in the journal: {exc}")

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background_ended)

    def _background_ended(self, task: asyncio.Task[None]) -> None:
        """A journal that cannot be written or flushed stops the daemon from any task
        (the notifier, stale deletes, an admission), as it does from a job: none may die
        silently."""
        self._background.discard(task)
        error = None if task.cancelled() else task.exception()
        if isinstance(error, ConfigError):
            self._stop_fatally(error)
        elif error is not None:
            log(logging.ERROR, f"{task.get_coro().__qualname__} stopped: {error!r}; this is a bug, please report it")

    # -- scheduling: runner/loop.py's turns until stopped ---------------------------

    async def _schedule(self) -> None:
        while not self._stopping:
            if self._reload_requested:
                self._reload_requested = False
                await self._reload()
            await self._jobs.turn()

    # -- reload, status, drain -----------------------------------------------------

    async def _reload(self) -> None:
        if self._reload_settings is None:
            return
        self._notifier.reloading()
        try:
            new = self._reload_settings()
        except ConfigError as exc:
            log(logging.ERROR, f"reload refused, keeping the running configuration: {exc}")
            self._notifier.ready(self._status_line())
            return
        old_pipeline = self._jobs.pipeline
        self.settings = new
        logs.setup(new.daemon.log_level, new.secrets())
        self.journal.notify_states = notify_states(new.notify)
        self._jobs.pipeline = self._build_pipeline(new)
        self._spawn(self._close_when_idle(old_pipeline, self._jobs.tasks()))
        self._intake.apply(new)
        self._notifier.ready(self._status_line())
        log(logging.INFO, f"configuration reloaded: {len(new.folders)} folder(s)", event="config_reloaded")

    @staticmethod
    async def _close_when_idle(pipeline: Pipeline, tasks: list[asyncio.Task[Job]]) -> None:
        """In-flight uploads keep the old connection pool until they end."""
        await asyncio.gather(*tasks, return_exceptions=True)
        await pipeline.aclose()

    def _status_line(self) -> str:
        try:
            counts = self.journal.counts()
        except JournalUnavailable:
            return "journal unreachable: waiting for it"
        uploading = sum(counts[s] for s in (JobState.UPLOADING, JobState.CONFIRMING))
        return (f"{uploading} uploading, {counts[JobState.QUEUED]:,} queued, {counts[JobState.DONE]:,} done, "
                f"{counts[JobState.FAILED]:,} failed")

    async def _pinger(self) -> None:
        """Watchdog and STATUS= from the loop itself: a hung loop stops the pings."""
        interval = self._notifier.watchdog_interval or STATUS_INTERVAL
        while True:
            self._notifier.watchdog()
            self._notifier.status(self._status_line())
            waiting = dict(self._intake.completeness.waiting())
            self._run_state.waiting(waiting)
            if self._metrics is not None:
                self._metrics.recorder.files_waiting(waiting)
            await asyncio.sleep(min(interval, STATUS_INTERVAL))

    async def _drain(self) -> None:
        tasks = self._jobs.tasks()
        self._notifier.stopping(f"draining {len(tasks)} upload(s)")
        if not tasks:
            return
        deadline = self.settings.daemon.drain_timeout
        log(logging.INFO, f"stopping: waiting up to {deadline:g} s for {len(tasks)} job(s)")
        _, pending = await asyncio.wait(tasks, timeout=deadline)
        if pending:
            log(logging.WARNING, f"drain timeout: {len(pending)} job(s) left resumable in the journal",
                event="drain_timeout")
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
