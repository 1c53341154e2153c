"""The daemon's life cycle, on one asyncio loop: intake → journal → runner.

What runs lives elsewhere: intake/folders.py watches, settles and admits files;
runner/loop.py runs the claimed jobs as tasks and keeps their leases. This module takes
the lock, opens the journal, answers signals, tells systemd, reloads, drains, and closes
everything through one exit stack. Signal handlers only set flags and wake the
scheduler. The systemd watchdog is pinged from a loop task, so a ping proves the loop is
alive. Stopping drains: no new uploads start, in-flight ones get `drain_timeout`, the
rest stay resumable in the journal.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from . import logs
from .config import Settings
from .errors import Busy, ConfigError, RetryLater
from .events import Fanout, Observer
from .intake.folders import WatchedFolders
from .job import ACTIVE, STARTED, Job, JobState
from .journal import JournalStore, JournalUnavailable
from .journal.committer import Committer
from .logs import job_fields, log
from .metrics import MetricsServer
from .notify import NotificationSender, notify_states
from .preflight import check_online
from .runner.loop import JobLoop
from .runner.pipeline import SCALEENGINE, VAULT, Pipeline
from .runstate import RunStateRecorder
from .service import Notifier
from .wiring import build_pipeline, open_journal, open_reader

STATUS_INTERVAL = 5.0
RESUMING_LINES = 20  # jobs named one by one at a start; a few thousand S3 requests followed are not
UPLOADING = (JobState.UPLOADING, JobState.CONFIRMING)
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
        raise Busy(f"another vaultdrop is already running on {state_dir}") from None
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


class Throughput(Observer):
    """Files and bytes done, and bytes sent, since the last stats line: the events say so
    as it happens (the journal keeps no running totals)."""

    def __init__(self) -> None:
        self.files = self.bytes_done = self.bytes_sent = 0

    def changed(self, job: Job, previous: JobState | None, detail: str) -> None:
        if job.state is JobState.DONE and previous is not JobState.DONE:
            self.files += 1
            self.bytes_done += job.size

    def uploaded(self, job: Job, nbytes: int) -> None:
        self.bytes_sent += nbytes

    def line(self, journal: JournalStore, seconds: float, now: float) -> None:
        """Log the stats of the last `seconds`, and start counting anew."""
        pending = [group for group in journal.summary() if group.state in ACTIVE]
        queued = sum(group.count for group in pending)
        uploading = sum(group.count for group in pending if group.state in UPLOADING)
        oldest = now - min((group.oldest_created_at for group in pending), default=now)
        rate = self.bytes_sent / seconds if seconds > 0 else 0.0
        log(logging.INFO, f"stats: {self.files} file(s) done ({logs.human_size(self.bytes_done)}) in the last "
            f"{_span(seconds)}, sent {logs.human_size(rate)}/s; queue {queued} ({uploading} uploading)"
            + (f", oldest pending {_span(oldest)}" if queued else ""),
            files_done=self.files, bytes_done=self.bytes_done, bytes_sent=self.bytes_sent, rate_bps=int(rate),
            queue=queued, uploading=uploading, oldest_pending_s=int(oldest))
        self.files = self.bytes_done = self.bytes_sent = 0


def _span(seconds: float) -> str:
    """A duration as a person says it: 45 s, 15 min, 2.5 h."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


@dataclass(frozen=True)
class _Run:
    """What one run opened once it held the lock, handed to the steps that use it."""

    journal: JournalStore
    run_state: RunStateRecorder
    metrics: MetricsServer | None
    sender: NotificationSender
    events: Fanout
    throughput: Throughput
    intake: WatchedFolders
    jobs: JobLoop


class Daemon:
    """One daemon process on one journal; everything a run opens lives in its `_Run`."""

    def __init__(self, settings: Settings, reload_settings: Callable[[], Settings] | None = None) -> None:
        self.settings = settings
        self._reload_settings = reload_settings
        self._notifier = Notifier()
        self._wake = asyncio.Event()  # the scheduler's sleep: signals, admissions and ended jobs set it
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
        async with contextlib.AsyncExitStack() as stack:
            await self._serve(self._open(stack))
        if self._fatal is not None:
            log(logging.CRITICAL, f"stopping: {self._fatal}")
            return self._fatal.exit_status
        log(logging.INFO, "stopped: unfinished work stays resumable in the journal")
        return 0

    def _open(self, stack: contextlib.AsyncExitStack) -> _Run:
        """Take the lock, open the journal, build intake and the runner. Each close goes on
        `stack` as soon as its object exists, and the stack runs every one of them in
        reverse even when one raises: the journal is closed and the lock released whatever
        else failed."""
        loop = asyncio.get_running_loop()
        settings = self.settings
        stack.callback(lock_state_dir(settings.daemon.state_dir).close)
        run_state = RunStateRecorder(settings.daemon.state_dir, settings.journal.host_id)
        logs.attach(run_state, settings.secrets())
        journal = open_journal(settings)
        stack.callback(journal.close)
        metrics = MetricsServer(settings.metrics.listen, open_reader(settings),
                                watched=lambda: [str(folder.path) for folder in self.settings.folders]
                                ) if settings.metrics.listen else None
        if metrics is not None:
            stack.callback(metrics.close)
        sender = NotificationSender(journal, lambda: self.settings.notify,
                                    on_outcome=metrics.recorder.notification if metrics else lambda outcome: None)
        stack.push_async_callback(sender.aclose)
        throughput = Throughput()
        events = Fanout(sender, run_state, throughput, *([metrics.recorder] if metrics else []))
        intake = WatchedFolders(Committer(journal, events), spawn=self._spawn, wake=self._wake.set,
                                on_watching=metrics.recorder.watching if metrics else lambda folder: None)
        jobs = JobLoop(journal, self._build_pipeline(settings, journal, intake, events),
                       settings=lambda: self.settings, folders=intake.folders, wake=self._wake,
                       on_fatal=self._stop_fatally)
        stack.push_async_callback(jobs.aclose)
        stack.callback(intake.close)  # first: no file event starts an admission while the rest closes
        stack.push_async_callback(self._cancel_background)
        handlers = {signal.SIGTERM: self.request_stop, signal.SIGINT: self.request_stop,
                    signal.SIGHUP: self.request_reload}
        if os.environ.get(HANG_HOOK_ENV) == "1":
            handlers[signal.SIGUSR2] = _hang_forever
        for signum, handler in handlers.items():
            loop.add_signal_handler(signum, handler)
            stack.callback(loop.remove_signal_handler, signum)
        return _Run(journal, run_state, metrics, sender, events, throughput, intake, jobs)

    async def _serve(self, run: _Run) -> None:
        """READY=1 once the folders are watched; schedule until stopped; then drain."""
        for service in (VAULT, SCALEENGINE):  # a restart is a good moment to look again
            run.journal.wake(service)
        await self._preflight()
        run.intake.apply(self.settings)
        log(logging.INFO, f"ready: watching {len(run.intake.folders)} folder(s), journal "
            f"{run.journal.location}", event="daemon_ready")
        run.run_state.phase("running")
        self._notifier.ready(self._status_line(run.journal))
        self._say_resuming(run)
        self._spawn(self._pinger(run))
        self._spawn(run.intake.rescan_periodically())
        self._spawn(run.jobs.delete_stale_videos())
        self._spawn(run.intake.keep_watching())
        self._spawn(run.sender.run())
        self._spawn(self._stats(run))
        if run.metrics is not None:
            log(logging.INFO, f"metrics at http://{run.metrics.address}/metrics")
        self._spawn(run.jobs.heartbeat())
        while not self._stopping:
            if self._reload_requested:
                self._reload_requested = False
                await self._reload(run)
            await run.jobs.turn()
        await self._drain(run)
        run.run_state.phase("stopped")

    def _say_resuming(self, run: _Run) -> None:
        """A drain (or a crash) leaves jobs part way, resumable in the journal: say which
        this start picks up, rather than nothing until their next state change."""
        now = time.time()
        try:
            left = [job for state in STARTED for job in run.journal.jobs(state, RESUMING_LINES + 1)
                    if job.folder in run.intake.folders
                    and (job.owner in (None, self.settings.journal.host_id) or job.lease_expiry < now)]
        except JournalUnavailable:  # the scheduler waits for it, and says so
            return
        for job in left[:RESUMING_LINES]:
            sent = f", {100 * job.bytes_sent / job.size:.0f}% sent" if job.state is JobState.UPLOADING and job.size \
                else ""
            log(logging.INFO, f"resuming: {job.relpath} ({job.state.value}{sent})", **job_fields(job))
        if len(left) > RESUMING_LINES:
            log(logging.INFO, "resuming more jobs left part way (`vaultdrop status` lists them)")

    def _build_pipeline(self, settings: Settings, journal: JournalStore, intake: WatchedFolders,
                        events: Fanout) -> Pipeline:
        return build_pipeline(settings, journal, intake.folder_for, on_back=lambda service: self._wake.set(),
                              on_displaced=intake.completeness.look_again, events=events,
                              readiness=intake.completeness)

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

    async def _cancel_background(self) -> None:
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)

    # -- reload, status, drain -----------------------------------------------------

    async def _reload(self, run: _Run) -> None:
        if self._reload_settings is None:
            return
        self._notifier.reloading()
        try:
            new = self._reload_settings()
        except ConfigError as exc:
            log(logging.ERROR, f"reload refused, keeping the running configuration: {exc}")
            self._notifier.ready(self._status_line(run.journal))
            return
        old_pipeline = run.jobs.pipeline
        self.settings = new
        logs.setup(new.daemon.log_level, new.secrets())
        run.journal.notify_states = notify_states(new.notify)
        run.jobs.pipeline = self._build_pipeline(new, run.journal, run.intake, run.events)
        self._spawn(self._close_when_idle(old_pipeline, run.jobs.tasks()))
        run.intake.apply(new)
        self._notifier.ready(self._status_line(run.journal))
        log(logging.INFO, f"configuration reloaded: {len(new.folders)} folder(s)", event="config_reloaded")

    @staticmethod
    async def _close_when_idle(pipeline: Pipeline, tasks: list[asyncio.Task[Job]]) -> None:
        """In-flight uploads keep the old connection pool until they end."""
        await asyncio.gather(*tasks, return_exceptions=True)
        await pipeline.aclose()

    @staticmethod
    def _status_line(journal: JournalStore) -> str:
        try:
            counts = journal.counts()
        except JournalUnavailable:
            return "journal unreachable: waiting for it"
        uploading = sum(counts[s] for s in UPLOADING)
        return (f"{uploading} uploading, {counts[JobState.QUEUED]:,} queued, {counts[JobState.DONE]:,} done, "
                f"{counts[JobState.FAILED]:,} failed")

    async def _pinger(self, run: _Run) -> None:
        """Watchdog and STATUS= from the loop itself: a hung loop stops the pings."""
        interval = self._notifier.watchdog_interval or STATUS_INTERVAL
        while True:
            self._notifier.watchdog()
            self._notifier.status(self._status_line(run.journal))
            waiting = dict(run.intake.completeness.waiting())
            missing = run.intake.missing
            run.run_state.tick(waiting)
            run.run_state.missing_folders(missing)
            if run.metrics is not None:
                run.metrics.recorder.files_waiting(waiting)
                run.metrics.recorder.folders_missing(run.intake.folders, missing)
            await asyncio.sleep(min(interval, STATUS_INTERVAL))

    async def _stats(self, run: _Run) -> None:
        """A stats line every `stats_interval` (0: none), read anew each time: a reload changes it."""
        loop = asyncio.get_running_loop()
        since = loop.time()
        while True:
            interval = self.settings.daemon.stats_interval
            await asyncio.sleep(interval if interval > 0 else STATUS_INTERVAL)
            if interval > 0:
                try:
                    run.throughput.line(run.journal, loop.time() - since, time.time())
                except JournalUnavailable as exc:
                    log(logging.WARNING, f"no stats line: {exc}", event="journal_outage")
                    continue
            since = loop.time()

    async def _drain(self, run: _Run) -> None:
        tasks = run.jobs.tasks()
        deadline = self.settings.daemon.drain_timeout
        run.run_state.phase("draining", drain_deadline=time.time() + deadline)
        self._notifier.stopping(f"draining {len(tasks)} upload(s)")
        if not tasks:
            return
        log(logging.INFO, f"stopping: waiting up to {deadline:g} s for {len(tasks)} job(s)")
        _, pending = await asyncio.wait(tasks, timeout=deadline)
        if pending:
            log(logging.WARNING, f"drain timeout: {len(pending)} job(s) left resumable in the journal",
                event="drain_timeout")
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
