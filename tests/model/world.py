"""The exploration's whole contact surface with vaultdrop: settings, journal, pipeline, the
daemon's scheduler, a crash and a restart. When main changes `build_pipeline`, `Pipeline`
or the journal's interface, this module is the one place to adapt.

The journal is SQLite in the example's state_dir, or a PostgreSQL database (`PgDatabase`)
emptied before each example: the same promises hold on both backends.

Jobs run as the daemon runs them: `scheduler.Scheduler` picks and claims them
(`concurrency` slots plus the small-file lane) and each runs as a task on the world's loop,
beside stale video deletes and admissions; tasks interleave at every await (the fake
services yield inside each request). Every run is reproducible all the same: file work
(hashing, post-actions, the journal's fsync) runs inline at the instant its task asks for
it, and a streamed upload's sending thread takes turns with the loop (`Turns`).

A crash is kill -9: after a journal commit (CrashingJournal), while a request is in
flight (fakes: "crash_after"), or inside a post-action (PostActionHooks). From that
instant the daemon does nothing more: its journal and transport refuse every call, its
other tasks are dropped where they stand, and a new daemon starts from the journal alone.
"""

from __future__ import annotations

import asyncio
import contextvars
import errno
import functools
import itertools
import os
import random
import shutil
import sys
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg

from vaultdrop import postaction, vault
from vaultdrop.admission import admit
from vaultdrop.completeness import Version, version_of
from vaultdrop.config import FolderSettings, Settings, settings_from_dict
from vaultdrop.errors import LocalFileError
from vaultdrop.journal import Journal
from vaultdrop.model import TERMINAL, Job, JobState
from vaultdrop.pipeline import Pipeline
from vaultdrop.scheduler import Scheduler
from vaultdrop.watch import regular_file_stat, scan
from vaultdrop.wiring import build_pipeline, max_delay, open_journal

from .fakes import (API_KEY, API_SECRET, CDN, CONTROL_URL, PASSWORD, USER, VAULT_URL, Crash, FakeClock, NotDurable,
                    Runaway, Services)

RUNAWAY_REQUESTS = 400  # one job run never needs this many requests
BACKOFF_MAX = 60.0
STATUS_POLL = 30.0

HOST_ID = "explorer"  # the same after a crash, as a restarted host's default id is

# Where a post-action can be killed (PostActionHooks): right after its file was claimed
# (renamed to its private name: between the two renames of an archive), halfway through a
# cross-device copy, once the copy is on disk, once the copy took its name (the source not
# yet removed), and once the file is at its destination (the journal not yet told).
POST_ACTION_CRASHES = ("claimed", "copying", "copied", "copy_named", "placed")
STREAM_CHUNK = 64  # bytes per chunk of a streamed upload when a world streams small files
TURN_TIMEOUT = 30.0  # real seconds a sending thread may take to finish or wait for the loop

# Who commits or sends (actor()): each job's task, the stale deletes, intake (admissions),
# a task the pipeline started itself (an outage probe, by its name), or the world (a rule's
# settle, the operator). A request must find this actor's own commits on disk; another
# task's commit may still wait for its fsync (group commit).
ACTOR: contextvars.ContextVar[str] = contextvars.ContextVar("actor", default="world")
OWNER: contextvars.ContextVar[object] = contextvars.ContextVar("owner", default=None)  # the actor's task
SENDING: contextvars.ContextVar[bool] = contextvars.ContextVar("sending", default=False)  # a streamed send's


def actor() -> str:
    """The actor running now: a streamed upload's request (answered in a task of its own)
    is its job's; any other task inherits its creator's context, so it is itself."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    if task is None or task is OWNER.get() or SENDING.get():
        return ACTOR.get()
    return task.get_name()

# The journal's writing methods: a crash can strike right after any of them commits.
JOURNAL_WRITES = frozenset({"enqueue", "follow", "wake", "transition", "update", "discard_video", "stale_deleted",
                            "stale_retry", "retry", "forget"})


@dataclass(frozen=True)
class PgDatabase:
    """A PostgreSQL database the exploration owns: each example starts it empty."""

    url: str  # without the password, as [journal] url
    password: str

    def empty(self) -> None:
        """Drop every table (the journal migrates again when it opens): no job, no id
        sequence left from the previous example."""
        with psycopg.connect(self.url, password=self.password, autocommit=True) as db:
            db.execute("DROP SCHEMA public CASCADE")
            db.execute("CREATE SCHEMA public")


class InlineExecutor(ThreadPoolExecutor):
    """Runs each call at once, on the loop's thread: the daemon's file work (hashing,
    post-actions, the journal's fsync) happens at the instant its task asks for it, and
    tasks interleave only at awaits, the same way every run."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        future.set_running_or_notify_cancel()
        try:
            result = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - a Crash too: the awaiting task gets it
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future


class _Send:
    """One call on a sending thread, as Turns follows it."""

    def __init__(self) -> None:
        self.thread: int | None = None

    def waits_for_loop(self) -> bool:
        """Whether its thread waits for the loop to answer its request (vault._OnLoop:
        the test transport's answer is computed on the loop)."""
        frame = sys._current_frames().get(self.thread) if self.thread is not None else None
        callee = None
        while frame is not None:
            if (frame.f_code.co_name == "handle_request" and frame.f_code.co_filename == vault.__file__
                    and callee is not None and callee.f_code.co_name == "result"):
                answer = callee.f_locals.get("self")
                return isinstance(answer, Future) and not answer.done()
            callee, frame = frame, frame.f_back
        return False


class Turns:
    """The vault client's sending threads (a streamed upload) take turns with the loop:
    after each loop callback, the loop waits until every send in flight is done or waits
    for the loop. What a thread does between two callbacks then lands at one point of the
    loop's order, the same in every run."""

    def __init__(self) -> None:
        self._sends: set[_Send] = set()
        self._lock = threading.Lock()
        self.streamed = 0  # sends started (how often the exploration took the streaming path)

    def busy(self) -> bool:
        return bool(self._sends)

    def wrap(self, executor: ThreadPoolExecutor) -> ThreadPoolExecutor:
        turns = self

        class TakingTurns(ThreadPoolExecutor):
            def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
                outer: Future[Any] = Future()
                context = contextvars.copy_context()  # its requests belong to the task that sends
                send = _Send()
                with turns._lock:
                    turns._sends.add(send)
                    turns.streamed += 1

                def work() -> None:
                    send.thread = threading.get_ident()
                    try:
                        if outer.set_running_or_notify_cancel():
                            try:
                                context.run(SENDING.set, True)
                                result = context.run(fn, *args, **kwargs)
                            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                                outer.set_exception(exc)
                            else:
                                outer.set_result(result)
                    finally:  # after the callbacks: the loop hears of the result before it goes on
                        with turns._lock:
                            turns._sends.discard(send)

                executor.submit(work)
                return outer

            def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
                executor.shutdown(wait=wait, cancel_futures=cancel_futures)

        return TakingTurns(1)

    def settle(self) -> None:
        if not self._sends:
            return
        deadline = time.monotonic() + TURN_TIMEOUT
        while True:
            with self._lock:
                sends = list(self._sends)
            if all(send.waits_for_loop() for send in sends):
                return
            if time.monotonic() > deadline:
                raise AssertionError("a sending thread neither ended nor waited for the loop")
            time.sleep(0.0001)


class FakeTimeLoop(asyncio.SelectorEventLoop):
    """An event loop on the fake clock: a background `asyncio.sleep` (the outage probe)
    ends when simulated time passes, never by wall time, so runs stay reproducible. Its
    default executor runs file work inline, and sending threads take turns with it."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self._fake_clock = clock
        self.turns = Turns()
        self.set_default_executor(InlineExecutor(1))

    def time(self) -> float:
        return self._fake_clock()

    def call_soon(self, callback: Callable[..., Any], *args: Any,
                  context: contextvars.Context | None = None) -> asyncio.Handle:
        return super().call_soon(functools.partial(self._then_turns, callback), *args, context=context)

    def _then_turns(self, callback: Callable[..., Any], *args: Any) -> None:
        try:
            callback(*args)
        finally:
            self.turns.settle()


class FakeIntake:
    """Intake (completeness.py) as the exploration plays it, the runner's Readiness: who
    holds which drop folder file open for writing, and the version (size, mtime, inode,
    change time) each path had when the world last settled it.

    Who writes is the kernel's answer, as completeness.py asks it (files.open_for_writing:
    a read lease, taken through a symlink too, is refused while any writer holds the inode,
    under whatever name, and across a daemon restart)."""

    def __init__(self, drop: Path, folder: Callable[[], FolderSettings | None]) -> None:
        self.drop = drop
        self._folder = folder
        self.writers: dict[str, int] = {}  # relpath a writer opened (and wrote to) -> its inode
        self.settled: dict[str, Version] = {}
        self.touched: list[str] = []  # said "settling": its settle timer runs (World.run_due fires it)

    def open_for_writing(self, relpath: str) -> bool:
        try:
            info = os.stat(self.drop / relpath)  # through a symlink, as the kernel's lease is taken
        except OSError:
            return False
        return info.st_ino in self.writers.values()

    def _relpath(self, path: Path) -> str | None:
        return path.relative_to(self.drop).as_posix() if path.is_relative_to(self.drop) else None

    def waiting_reason(self, path: Path) -> str | None:
        relpath, folder = self._relpath(path), self._folder()
        if relpath is None or folder is None:
            return None
        if self.open_for_writing(relpath):
            return "open for writing"
        info = regular_file_stat(folder, relpath)
        if info is None or self.settled.get(relpath) == version_of(info):
            return None
        if relpath not in self.touched:
            self.touched.append(relpath)
        return "settling"

    def writing(self, path: Path) -> bool:
        relpath = self._relpath(path)
        return relpath is not None and self.open_for_writing(relpath)

    def forget_settled(self) -> None:
        """A restart: the versions found complete lived in memory (the rescan settles anew)."""
        self.settled.clear()
        self.touched.clear()


class CrashingJournal:
    """The real journal, made to die right after its Nth commit from when it is armed.
    Once its daemon died (`die`, any crash point), every call raises Crash: no task of a
    dead daemon reads, commits or waits for the disk any more."""

    def __init__(self, inner: Journal) -> None:
        self.inner = inner
        self.countdown: int | None = None
        self.dead: str | None = None  # how its daemon died
        self.latest: dict[str, int] = {}  # actor -> its latest commit's number (group commit)

    def die(self, why: str) -> None:
        if self.dead is None:
            self.dead = why

    def not_on_disk(self, actor: str) -> bool:
        """Whether a commit of `actor` still waits for its fsync."""
        return self.latest.get(actor, 0) > getattr(self.inner, "_synced", 0)

    def _refuse(self, name: str) -> Crash:
        return Crash(f"the daemon died ({self.dead}) before journal.{name}")

    def __getattr__(self, name: str) -> Any:
        if self.dead is not None:
            raise self._refuse(name)
        attribute = getattr(self.inner, name)
        if name == "durable":
            async def durable() -> None:
                await attribute()
                if self.dead is not None:  # died while this task waited for the disk
                    raise self._refuse("durable")

            return durable
        if name not in JOURNAL_WRITES:
            return attribute

        def write(*args: Any, **kwargs: Any) -> Any:
            result = attribute(*args, **kwargs)
            self.latest[actor()] = getattr(self.inner, "_commits", 0)
            if self.countdown is not None:
                self.countdown -= 1
                if self.countdown <= 0:
                    self.countdown = None
                    self.die(f"right after journal.{name}")
                    raise Crash(f"crash right after journal.{name}")
            return result

        return write


class PostActionHooks:
    """Crash points inside postaction.py, and an archive and failed_dir on another device
    than the drop folder (a rename there fails with EXDEV, so the file is copied). Set on
    postaction's module globals for one world's life; only one world may hold them."""

    installed = False
    PATCHED = ("holds", "fsync_path", "_rename_noreplace", "shutil")

    def __init__(self, drop: Path, die: Callable[[str], None], cross_device: bool) -> None:
        self.drop = drop
        self.die = die
        self.cross_device = cross_device
        self.armed: str | None = None  # the POST_ACTION_CRASHES point where the daemon dies next
        self.saved: dict[str, Any] = {}

    def install(self) -> None:
        assert not PostActionHooks.installed, "another world holds postaction's hooks"
        PostActionHooks.installed = True
        self.saved = {name: getattr(postaction, name) for name in self.PATCHED}
        hooks = self

        class Shutil:
            def __getattr__(self, name: str) -> Any:
                return getattr(shutil, name)

            def copy2(self, source: Any, target: Any, *, follow_symlinks: bool = True) -> Any:
                if hooks.armed == "copying":  # half of it written, then the process is gone
                    Path(target).write_bytes(Path(source).read_bytes()[: os.path.getsize(source) // 2])
                    hooks.hit("copying")
                return shutil.copy2(source, target, follow_symlinks=follow_symlinks)

        postaction.holds = self._holds  # type: ignore[attr-defined]
        postaction.fsync_path = self._fsync_path  # type: ignore[attr-defined]
        postaction._rename_noreplace = self._rename_noreplace  # type: ignore[attr-defined]
        postaction.shutil = Shutil()  # type: ignore[attr-defined]

    def remove(self) -> None:
        if self.saved:
            for name, value in self.saved.items():
                setattr(postaction, name, value)
            self.saved = {}
            PostActionHooks.installed = False

    def hit(self, point: str) -> None:
        if self.armed == point:
            self.armed = None
            self.die(f"post-action killed: {point}")
            raise Crash(f"crash inside a post-action: {point}")

    def _holds(self, job: Job, path: Path, info: os.stat_result) -> bool:
        result = self.saved["holds"](job, path, info)  # the file is at its private name by now
        self.hit("claimed")
        return bool(result)

    def _fsync_path(self, path: Path) -> None:
        self.saved["fsync_path"](path)
        if Path(path).name.startswith(f"{postaction.PRIVATE_PREFIX}copy-"):
            self.hit("copied")
        elif Path(path).is_dir():  # _place: the file is at its destination
            self.hit("placed")

    def _device(self, path: Path) -> str:
        return "drop" if Path(path).is_relative_to(self.drop) else "elsewhere"

    def _rename_noreplace(self, source: Path, target: Path) -> None:
        if self.cross_device and self._device(source) != self._device(target):
            raise OSError(errno.EXDEV, os.strerror(errno.EXDEV), str(source), None, str(target))
        self.saved["_rename_noreplace"](source, target)
        if Path(source).name.startswith(f"{postaction.PRIVATE_PREFIX}copy-"):
            self.hit("copy_named")


def make_settings(root: Path, *, after_upload: str, s3: bool, dedupe: str, database: PgDatabase | None = None,
                  drop_configured: bool = True, concurrency: int = 1, small_file_size: int = 0) -> Settings:
    """Two folders: `drop` (explored) and `other` (idle, so a reload can remove `drop`);
    the journal in `database`, else SQLite in state_dir."""
    drop: dict[str, Any] = {"path": str(root / "drop"), "settle": 1, "after_upload": after_upload,
                            "archive_dir": str(root / "archive"), "failed_dir": str(root / "failed")}
    if s3:
        drop["s3"] = {"bucket": "bucket"}
    data: dict[str, Any] = {
        "daemon": {"state_dir": str(root / "state"), "dedupe": dedupe, "concurrency": concurrency,
                   "small_file_size": small_file_size},
        "vault": {"base_url": VAULT_URL, "user": USER, "password": PASSWORD, "poll_interval": 2, "timeout": 30,
                  "max_attempts": 4, "confirm_timeout": 20, "backoff_base": 1, "backoff_max": BACKOFF_MAX},
        "folders": ([drop] if drop_configured else []) + [{"path": str(root / "other")}],
    }
    data["journal"] = {"host_id": HOST_ID}
    if database is not None:
        data["journal"].update(url=database.url, password=database.password)
    if s3:
        data["scaleengine"] = {"api_url": CONTROL_URL, "api_key": API_KEY, "api_secret": API_SECRET, "cdn": CDN,
                               "status_poll_interval": STATUS_POLL, "status_timeout": 600}
    return settings_from_dict(data, source="exploration", environ={})


class World:
    """A daemon without watchers: settle, schedule, crash and restart by hand.

    By default one job at a time and no small-file lane (concurrency=1, small_file_size=0),
    as the regression tests expect; the exploration chooses more. `stream_above`: files
    larger than this go up through the vault client's streamed body (its sending thread),
    in chunks of STREAM_CHUNK bytes. `post_action_faults`: crash points inside post-actions
    (arm_post_crash), with `cross_device` the archive and failed_dir on another device."""

    def __init__(self, root: Path, *, after_upload: str, s3: bool, dedupe: str,
                 database: PgDatabase | None = None, concurrency: int = 1, small_file_size: int = 0,
                 stream_above: int | None = None, post_action_faults: bool = False,
                 cross_device: bool = False) -> None:
        if database is not None:
            database.empty()
        for name in ("drop", "other", "archive", "failed", "state"):
            (root / name).mkdir(parents=True, exist_ok=True)
        self.root = root
        self.drop = root / "drop"
        self.options: dict[str, Any] = {"after_upload": after_upload, "s3": s3, "dedupe": dedupe,
                                       "database": database, "concurrency": concurrency,
                                       "small_file_size": small_file_size}
        self.clock = FakeClock()
        self.services = Services(self.clock)
        self.services.crash_hook = self._die
        self.loop = FakeTimeLoop(self.clock)
        self.drop_configured = True
        self.crashes = 0
        self.intake = FakeIntake(self.drop, lambda: self.folders.get(str(self.drop)))
        self._tasks: dict[asyncio.Task[Any], tuple[int, int | None]] = {}  # task -> (start order, job id)
        self._order = itertools.count()
        self._vault_constants: dict[str, int] = {}
        if stream_above is not None:
            self._vault_constants = {"SMALL_BODY": vault.SMALL_BODY, "CHUNK_SIZE": vault.CHUNK_SIZE}
            vault.SMALL_BODY, vault.CHUNK_SIZE = stream_above, STREAM_CHUNK  # type: ignore[misc]
        self.post_hooks = PostActionHooks(self.drop, self._die, cross_device)
        if post_action_faults:
            self.post_hooks.install()
        self._start()

    # -- life cycle ----------------------------------------------------------------

    def _start(self) -> None:
        self.settings = make_settings(self.root, drop_configured=self.drop_configured, **self.options)
        inner = open_journal(self.settings, clock=self.clock)
        if isinstance(getattr(inner, "_syncer", None), ThreadPoolExecutor):  # SQLite's fsync thread: inline
            inner._syncer.shutdown()  # type: ignore[attr-defined]
            inner._syncer = InlineExecutor(1)  # type: ignore[attr-defined]
        self.journal = CrashingJournal(inner)  # type: ignore[arg-type]
        self.scheduler = Scheduler(self.journal, clock=self.clock)  # type: ignore[arg-type]
        self._admitting = asyncio.Lock()  # one admission at a time, as daemon._admit
        self.displaced: list[Path] = []  # paths a post-action found other content at (Completeness.look_again)
        self._build()

    def _build(self) -> None:
        self.folders: dict[str, FolderSettings] = {str(f.path): f for f in self.settings.folders}
        self.pipeline: Pipeline = build_pipeline(
            self.settings, self.journal, self._folder_for,  # type: ignore[arg-type]
            clock=self.clock, sleep=self.clock.sleep,
            transport=self.services.transport(functools.partial(self._on_disk_first, self.journal)),
            on_displaced=self.displaced.append, readiness=self.intake,
        )
        self.pipeline._rng = random.Random(0)  # deterministic jitter: build_pipeline takes no rng (yet)
        client = self.pipeline.stages.vault
        client._senders = self.loop.turns.wrap(client._senders)  # type: ignore[attr-defined]
        self.max_wait = max_delay(self.settings) + 1.0  # no job may rest longer than this from now

    @staticmethod
    def _on_disk_first(journal: CrashingJournal, request: httpx.Request) -> None:
        """No request leaves while a commit it depends on is only in the page cache: after
        a power cut the journal must still know of everything the vault or the control API
        was told. Each task waits for its own commits (other tasks' may still wait for
        their fsync: group commit). A dead daemon sends nothing."""
        if journal.dead is not None:
            raise Crash(f"the daemon died ({journal.dead}) before {request.method} {request.url.path}")
        sender = actor()
        if journal.not_on_disk(sender):
            raise NotDurable(f"{request.method} {request.url.path} sent by {sender} with its journal commit(s) "
                             f"not yet on disk ({journal.unsynced} unsynced)")

    def _die(self, why: str) -> None:
        """kill -9, now: the daemon's journal and transport refuse every further call."""
        self.journal.die(why)

    def _horizon(self) -> float:
        return self.clock() + max_delay(self.settings)

    def _folder_for(self, job: Job) -> FolderSettings | None:
        return self.folders.get(job.folder)

    def reload(self, *, drop_configured: bool) -> None:
        """SIGHUP: new settings, a new pipeline, the same journal."""
        self.drop_configured = drop_configured
        self._do(self.pipeline.aclose())
        self.settings = make_settings(self.root, drop_configured=drop_configured, **self.options)
        self._build()
        if drop_configured:
            self.rescan()

    def crash(self) -> None:
        """Drop every in-memory object (a PostgreSQL journal's pooled connections too)
        and start again from what the journal committed alone."""
        self.crashes += 1
        self._die("crash")
        self._stop()
        self.intake.forget_settled()
        self._start()
        self.rescan()

    def _stop(self) -> None:
        """The dead daemon's remains: its client pools closed, a sending thread let run
        out (its request meets the dead transport), its journal connection closed."""
        try:
            self.loop.run_until_complete(self.pipeline.aclose())
            self.loop.run_until_complete(self._threads_ended())
        except Crash:
            pass
        self.journal.inner.close()

    async def _threads_ended(self) -> None:
        for _ in range(10_000):
            if not self.loop.turns.busy():
                return
            await asyncio.sleep(0)
        raise AssertionError("a sending thread never ended")

    def close(self) -> None:
        try:
            self._stop()
            self.loop.close()
        finally:
            self.post_hooks.remove()
            for name, value in self._vault_constants.items():
                setattr(vault, name, value)
            self._vault_constants = {}
            shutil.rmtree(self.root, ignore_errors=True)

    def arm_crash(self, after_commits: int) -> None:
        self.journal.countdown = after_commits

    def arm_post_crash(self, point: str) -> None:
        """The next post-action that reaches `point` (POST_ACTION_CRASHES) dies there."""
        assert PostActionHooks.installed and point in POST_ACTION_CRASHES
        self.post_hooks.armed = point

    def _do(self, coroutine: Any) -> Any:
        """Run one coroutine on this world's loop; a Crash restarts the world."""
        try:
            return self.loop.run_until_complete(coroutine)
        except Crash:
            self.crash()
            return None
        except NotDurable as exc:
            raise AssertionError(str(exc)) from None

    # -- the daemon's moves ----------------------------------------------------------

    def settle(self, relpath: str) -> Job | None:
        """Intake's verdict on one path that stopped changing: never while a writer holds it
        open; else the version is complete, remembered, and admitted (daemon._on_settled)."""
        return self._do(self._settle(relpath))

    async def _settle(self, relpath: str) -> Job | None:
        folder = self.folders.get(str(self.drop))
        if folder is None or self.intake.open_for_writing(relpath):
            return None
        info = regular_file_stat(folder, relpath)
        if info is None:
            return None
        self.intake.settled[relpath] = version_of(info)
        if relpath in self.intake.touched:
            self.intake.touched.remove(relpath)
        if info.st_size == 0:
            return None
        left: list[Path] = []  # paths a followed job left: intake settles them again (Completeness.look_again)
        async with self._admitting:
            try:
                job = await admit(self.pipeline.committer, folder, relpath, info, look_again=left.append)
            except FileNotFoundError:  # gone since it settled (a job's post-action took it): as daemon._admit
                return None
        for path in left:
            if path.is_relative_to(self.drop):
                await self._settle(path.relative_to(self.drop).as_posix())
        return job

    async def _settle_all(self, relpaths: list[str]) -> None:
        for relpath in relpaths:
            await self._settle(relpath)

    def writer_opened(self, relpath: str) -> None:
        """A writer opened the path and writes to it (held open until writer_closed)."""
        self.intake.writers[relpath] = os.stat(self.drop / relpath).st_ino

    def writer_closed(self, relpath: str) -> None:
        """The writer closed it: settling decides from now on."""
        self.intake.writers.pop(relpath, None)

    def rescan(self) -> None:
        """What a start-up or reload scan settles: every file in the drop folder the
        daemon's scan finds (watch.scan: not a hidden or temporary name, such as a
        post-action's `.vaultdrop-ID-NAME` left by a crash)."""
        folder = self.folders.get(str(self.drop))
        if folder is None:
            return
        for relpath, _ in sorted(scan(folder)):
            self.settle(relpath)

    def run_due(self, limit: int) -> int:
        """One round of the daemon's scheduler (daemon._schedule): up to `limit` jobs,
        started through scheduler.Scheduler (`concurrency` slots and the small-file lane)
        as tasks, beside the stale video deletes and the settle timers that fired, until
        every task has ended or waits. Returns how many jobs it started."""
        return self._do(self._round(limit)) or 0

    def _spawn(self, name: str, coroutine: Coroutine[Any, Any, Any], job_id: int | None = None) -> None:
        async def acting() -> Any:
            ACTOR.set(name)
            OWNER.set(asyncio.current_task())
            return await coroutine

        task = self.loop.create_task(acting(), name=name)
        self._tasks[task] = (next(self._order), job_id)

    async def _round(self, limit: int) -> int:
        started = 0
        services = self.services
        services.start_run(RUNAWAY_REQUESTS)  # the stale deletes', plus as many per job started

        def start(job: Job) -> None:
            assert services.runaway_limit is not None
            services.runaway_limit += RUNAWAY_REQUESTS
            self._spawn(f"job-{job.id}", self.pipeline.run(job), job.id)

        self._spawn("stale", self.pipeline.delete_stale_videos())  # the daemon does this every few seconds
        touched = list(self.intake.touched)  # their settle timers fired (each open one restarts)
        if touched:
            self._spawn("intake", self._settle_all(touched))
        try:
            while True:
                if started < limit:
                    daemon = self.settings.daemon
                    started += len(self.scheduler.start_due(
                        start, concurrency=daemon.concurrency, small_file_size=daemon.small_file_size,
                        folders=self.folders, horizon=self._horizon(), budget=limit - started))
                if not self._tasks:
                    return started
                done, _ = await asyncio.wait(list(self._tasks), return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done, key=lambda t: self._tasks[t][0]):
                    self._ended(task)
        except BaseException:
            await self._drop_tasks()
            raise
        finally:
            services.runaway_limit = None

    def _ended(self, task: asyncio.Task[Any]) -> None:
        """A task is over (daemon._job_ended): its slot is free; a failure surfaces here."""
        _, job_id = self._tasks.pop(task)
        if job_id is not None:
            self.scheduler.ended(job_id)
        error = None if task.cancelled() else task.exception()
        if isinstance(error, Runaway):
            raise AssertionError(f"job {job_id} spins: {error}") from None
        if error is not None:
            raise error
        if self.displaced:  # the daemon settles such a path again at once
            paths, self.displaced[:] = list(self.displaced), []
            self._spawn("intake", self._settle_all([p.relative_to(self.drop).as_posix() for p in paths]))

    async def _drop_tasks(self) -> None:
        """The daemon died (or the exploration failed): its other tasks stop where they
        stand (each would meet the dead journal or transport at its next step anyway)."""
        tasks = list(self._tasks)
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def quiesce(self, max_rounds: int = 300) -> None:
        """Faults cleared, folder back, a rescan, then the scheduler until nothing is due."""
        self.services.clear_faults()
        self.journal.countdown = None  # a post-action crash point stays armed: it strikes once
        if not self.drop_configured:
            self.reload(drop_configured=True)
        self.rescan()
        for _ in range(max_rounds):
            self.run_due(50)
            due = self.journal.next_due(set(), self.folders, self._horizon())
            if due is None:
                return
            self.clock.advance(max(0.0, due - self.clock()) + 1.0)
        raise AssertionError(f"jobs still due after {max_rounds} scheduler rounds: {self.active_jobs()}")

    # -- what the invariants read ----------------------------------------------------------

    def due_within(self, seconds: float) -> set[int]:
        """Ids of the jobs the scheduler would start if `seconds` passed now."""
        jobs = self.journal.runnable(self.clock() + seconds, set(), 100_000, self.folders, self._horizon())
        return {job.id for job in jobs}

    def all_jobs(self) -> list[Job]:
        return self.journal.jobs(limit=100_000)

    def active_jobs(self) -> list[Job]:
        return [job for job in self.all_jobs() if job.state not in TERMINAL]

    def failed_jobs(self) -> list[Job]:
        return self.journal.jobs(JobState.FAILED, limit=100_000)

    def operator(self, command: str, job_id: int) -> None:
        """`vaultdrop jobs retry|forget ID` as cli.py does it: through the same committer
        (a failed job's file is brought back from failed_dir before its retry)."""
        try:
            getattr(self.pipeline.committer, command)(job_id)
        except LocalFileError:  # retry refused: a new file took the failed one's path
            pass
        except Crash:
            self.crash()
