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

from vaultdrop.clients import upload_body
from vaultdrop.config import FolderSettings, Settings, settings_from_dict
from vaultdrop.errors import LocalFileError
from vaultdrop.intake.admission import admit
from vaultdrop.intake.watch import regular_file_stat, scan
from vaultdrop.job import TERMINAL, FileVersion, Job, JobState
from vaultdrop.journal import Journal, LeaseLost
from vaultdrop.runner.pipeline import Pipeline, max_delay
from vaultdrop.runner.scheduler import Scheduler
from vaultdrop.stages import postaction
from vaultdrop.wiring import build_pipeline, open_journal

from .fakes import (API_KEY, API_SECRET, CDN, CONTROL_URL, PASSWORD, USER, VAULT_URL, Crash, FakeClock, NotDurable,
                    Runaway, Services)

RUNAWAY_REQUESTS = 400  # one job run never needs this many requests
BACKOFF_MAX = 60.0
STATUS_POLL = 30.0

HOST_ID = "explorer"  # the same after a crash, as a restarted host's default id is
SECOND_HOST_ID = "explorer-b"  # the second host on a shared PostgreSQL journal
LEASE = 30.0  # [journal] lease: a live host renews its running jobs' leases every LEASE / 3

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
# The host (daemon) a task belongs to; None for the world's own moves (a rule, the operator).
HOST: contextvars.ContextVar[Any] = contextvars.ContextVar("host", default=None)


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


class OnLoop(httpx.BaseTransport):
    """The vault client's sending thread hands each request to the services' async
    transport on the world's loop and waits there for the answer, as it would for a
    socket's."""

    def __init__(self, transport: httpx.AsyncBaseTransport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        content = request.read()

        async def send() -> httpx.Response:
            forwarded = httpx.Request(request.method, request.url, headers=request.headers, content=content)
            response = await self._transport.handle_async_request(forwarded)
            return httpx.Response(response.status_code, headers=response.headers,
                                  stream=httpx.ByteStream(await response.aread()))

        return asyncio.run_coroutine_threadsafe(send(), self._loop).result()


class _Send:
    """One call on a sending thread, as Turns follows it."""

    def __init__(self) -> None:
        self.thread: int | None = None

    def waits_for_loop(self) -> bool:
        """Whether its thread waits for the loop to answer its request (OnLoop: the
        services' answer is computed on the loop)."""
        frame = sys._current_frames().get(self.thread) if self.thread is not None else None
        callee = None
        while frame is not None:
            if (frame.f_code is OnLoop.handle_request.__code__
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
        if context is None:
            context = contextvars.copy_context()  # as Handle does: its host is known when it runs
        return super().call_soon(functools.partial(self._then_turns, callback, context), *args, context=context)

    def _then_turns(self, callback: Callable[..., Any], context: contextvars.Context, *args: Any) -> None:
        host = context.get(HOST)
        if host is not None and host.paused:  # SIGSTOP: its tasks take no step until it resumes
            host.frozen.append((callback, args, context))
            return
        try:
            callback(*args)
        finally:
            self.turns.settle()

    def thaw(self, frozen: list[tuple[Callable[..., Any], tuple[Any, ...], contextvars.Context]]) -> None:
        """SIGCONT: a resumed host's steps run again, in the order they were due."""
        for callback, args, context in frozen:
            self.call_soon(callback, *args, context=context)


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
        self.settled: dict[str, FileVersion] = {}
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
        if info is None or self.settled.get(relpath) == FileVersion.of(info):
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

    def __init__(self, inner: Journal, fencing: Any = None) -> None:
        self.inner = inner
        self.countdown: int | None = None
        self.dead: str | None = None  # how its daemon died
        self.latest: dict[str, int] = {}  # actor -> its latest commit's number (group commit)
        self.fencing = fencing  # several hosts: told of each claim and each job task's write

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
        if name == "claim" and self.fencing is not None:
            def claim(job: Job) -> Job | None:
                claimed = attribute(job)
                if claimed is not None:
                    self.fencing.claimed(self, claimed)
                return claimed

            return claim
        if name == "durable":
            async def durable() -> None:
                await attribute()
                if self.dead is not None:  # died while this task waited for the disk
                    raise self._refuse("durable")

            return durable
        if name not in JOURNAL_WRITES:
            return attribute

        def write(*args: Any, **kwargs: Any) -> Any:
            job = args[0] if args and isinstance(args[0], Job) else None
            claimed = self.inner._claims.get(job.id) if job is not None else None  # type: ignore[attr-defined]
            result = attribute(*args, **kwargs)
            if job is not None and self.fencing is not None:
                self.fencing.wrote(self, name, job, claimed)
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
                  drop_configured: bool = True, concurrency: int = 1, small_file_size: int = 0,
                  host_id: str = HOST_ID, state: str = "state") -> Settings:
    """Two folders: `drop` (explored) and `other` (idle, so a reload can remove `drop`);
    the journal in `database`, else SQLite in state_dir."""
    drop: dict[str, Any] = {"path": str(root / "drop"), "settle": 1, "after_upload": after_upload,
                            "archive_dir": str(root / "archive"), "failed_dir": str(root / "failed")}
    if s3:
        drop["s3"] = {"bucket": "bucket"}
    data: dict[str, Any] = {
        "daemon": {"state_dir": str(root / state), "dedupe": dedupe, "concurrency": concurrency,
                   "small_file_size": small_file_size},
        "vault": {"base_url": VAULT_URL, "user": USER, "password": PASSWORD, "poll_interval": 2, "timeout": 30,
                  "max_attempts": 4, "confirm_timeout": 20, "backoff_base": 1, "backoff_max": BACKOFF_MAX},
        "folders": ([drop] if drop_configured else []) + [{"path": str(root / "other")}],
    }
    data["journal"] = {"host_id": host_id, "lease": LEASE}
    if database is not None:
        data["journal"].update(url=database.url, password=database.password)
    if s3:
        data["scaleengine"] = {"api_url": CONTROL_URL, "api_key": API_KEY, "api_secret": API_SECRET, "cdn": CDN,
                               "status_poll_interval": STATUS_POLL, "status_timeout": 600}
    return settings_from_dict(data, source="exploration", environ={})


class Host:
    """One daemon of the world: its settings, journal connection, scheduler, pipeline and
    intake memory, and the tasks it runs on the world's loop. A second host (PostgreSQL
    only) shares the drop folder, the services, the clock, the loop and the database, with
    its own host_id and state_dir. `paused`: SIGSTOP (the loop holds its steps in `frozen`
    and its leases are not renewed) until resumed."""

    def __init__(self, name: str, state: str, intake: FakeIntake) -> None:
        self.name = name
        self.state = state  # its state_dir's name under the world's root
        self.intake = intake
        self.drop_configured = True
        self.tasks: dict[asyncio.Task[Any], tuple[int, int | None]] = {}  # task -> (start order, job id)
        self.paused = False
        self.frozen: list[tuple[Callable[..., Any], tuple[Any, ...], contextvars.Context]] = []
        self.renewed = 0.0  # when its heartbeat last renewed its leases
        self.incarnation = 0  # bumped at each restart: a claim is this process's, not its host id's
        self.pause_at: tuple[str, int] | None = None  # ("claim"|"request"|"commit", n): SIGSTOP there
        self.on_pause: Callable[[], None] = lambda: None
        # set by World._start
        self.settings: Settings
        self.journal: CrashingJournal
        self.scheduler: Scheduler
        self.pipeline: Pipeline
        self.folders: dict[str, FolderSettings] = {}
        self.displaced: list[Path] = []
        self.max_wait = 0.0

    @property
    def dead(self) -> bool:
        return self.journal.dead is not None

    @property
    def live(self) -> bool:
        return not self.dead and not self.paused

    def count(self, point: str) -> None:
        """A pause armed at the nth `point` strikes now: the host stops after this step."""
        if self.pause_at is not None and self.pause_at[0] == point:
            left = self.pause_at[1] - 1
            self.pause_at = (point, left) if left > 0 else None
            if left <= 0:
                self.paused = True
                self.on_pause()

    def __repr__(self) -> str:
        return f"Host({self.name})"


class Fencing:
    """What several hosts did to each job, checked as it happens: every write a job's task
    makes must carry the lease epoch of the latest claim, made by this same host process
    (no write by a host fenced off after another adopted the job), and every post-action
    (finish, fail) must run in a host that holds the job (owner and epoch)."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.latest: dict[int, tuple[str, int, int]] = {}  # job id -> (host, incarnation, epoch) of its latest claim
        self.violations: list[str] = []
        self.fenced = 0  # LeaseLost met by a job task (the fence held)
        self.adoptions = 0
        self.pauses = 0

    def _host(self, journal: CrashingJournal) -> Host:
        return next(h for h in self.world.hosts if h.journal is journal)

    def claimed(self, journal: CrashingJournal, job: Job) -> None:
        host = self._host(journal)
        previous = self.latest.get(job.id)
        if previous is not None and previous[0] != host.name:
            self.adoptions += 1
        self.latest[job.id] = (host.name, host.incarnation, job.lease_epoch)
        host.count("claim")

    def wrote(self, journal: CrashingJournal, method: str, job: Job, claimed: int | None) -> None:
        host = self._host(journal)
        host.count("commit")
        if not actor().split(":")[-1].startswith("job-"):
            return  # intake (follow) and the operator write without a claim
        latest = self.latest.get(job.id)
        if claimed is None or latest != (host.name, host.incarnation, claimed):
            self.violations.append(
                f"{host.name} ({actor()}) committed journal.{method} on job {job.id} at lease epoch {claimed}, "
                f"while the latest claim is {latest}")

    def touching(self, what: str, job: Job) -> None:
        """A post-action on the job's file starts in the current host's task."""
        host = HOST.get()
        if host is None or host.dead:
            return
        row = host.journal.inner.get(job.id)
        claimed = host.journal.inner._claims.get(job.id)  # type: ignore[attr-defined]
        latest = self.latest.get(job.id)
        if row is None or row.owner != host.name or row.lease_epoch != claimed or latest != (
                host.name, host.incarnation, claimed):
            self.violations.append(
                f"{host.name} ({actor()}) began postaction.{what} on job {job.id} ({job.relpath}) without holding it: "
                f"journal owner {row and row.owner}, epoch {row and row.lease_epoch}, ours {claimed}, "
                f"latest claim {latest}")


class World:
    """A daemon without watchers: settle, schedule, crash and restart by hand.

    By default one job at a time and no small-file lane (concurrency=1, small_file_size=0),
    as the regression tests expect; the exploration chooses more. `stream_above`: files
    larger than this go up through the vault client's streamed body (its sending thread),
    in chunks of STREAM_CHUNK bytes. `post_action_faults`: crash points inside post-actions
    (arm_post_crash), with `cross_device` the archive and failed_dir on another device.
    `second_host` (PostgreSQL only): a second daemon on the same folder and database
    (`hosts[1]`), with leases renewed every LEASE / 3 of fake time while it lives.

    The attributes of the first host (journal, pipeline, scheduler, settings, folders,
    intake) read as the world's own: the regression tests drive one host."""

    def __init__(self, root: Path, *, after_upload: str, s3: bool, dedupe: str,
                 database: PgDatabase | None = None, concurrency: int = 1, small_file_size: int = 0,
                 stream_above: int | None = None, post_action_faults: bool = False,
                 cross_device: bool = False, second_host: bool = False) -> None:
        assert not second_host or database is not None, "several hosts share a PostgreSQL journal only"
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
        self.crashes = 0
        self.fencing = Fencing(self) if second_host else None
        first = Host(HOST_ID, "state", FakeIntake(self.drop, lambda: self.hosts[0].folders.get(str(self.drop))))
        self.hosts: list[Host] = [first]
        if second_host:
            (root / "state-b").mkdir(parents=True, exist_ok=True)
            intake = FakeIntake(self.drop, lambda: self.hosts[1].folders.get(str(self.drop)))
            intake.writers = first.intake.writers  # who writes is the kernel's (the shared folder's) answer
            self.hosts.append(Host(SECOND_HOST_ID, "state-b", intake))
            self.clock.on_advance = self._heartbeats
        self._wakeup: asyncio.Future[None] | None = None  # the round's wait ends when a host pauses
        for host in self.hosts:
            host.on_pause = self._paused
        self._order = itertools.count()
        self._vault_constants: dict[str, int] = {}
        if stream_above is not None:
            self._vault_constants = {"SMALL_BODY": upload_body.SMALL_BODY, "CHUNK_SIZE": upload_body.CHUNK_SIZE}
            upload_body.SMALL_BODY, upload_body.CHUNK_SIZE = stream_above, STREAM_CHUNK  # type: ignore[misc]
        self.post_hooks = PostActionHooks(self.drop, self._die, cross_device)
        if post_action_faults:
            self.post_hooks.install()
        self._saved_postactions: dict[str, Any] = {}
        if self.fencing is not None:
            self._watch_postactions()
        for host in self.hosts:
            self._start(host)

    # -- the first host's parts, as the world's own ------------------------------------

    @property
    def host(self) -> Host:
        return self.hosts[0]

    @property
    def journal(self) -> CrashingJournal:
        return self.host.journal

    @property
    def pipeline(self) -> Pipeline:
        return self.host.pipeline

    @property
    def scheduler(self) -> Scheduler:
        return self.host.scheduler

    @property
    def settings(self) -> Settings:
        return self.host.settings

    @property
    def folders(self) -> dict[str, FolderSettings]:
        return self.host.folders

    @property
    def intake(self) -> FakeIntake:
        return self.host.intake

    @property
    def max_wait(self) -> float:
        return self.host.max_wait

    @property
    def drop_configured(self) -> bool:
        return self.host.drop_configured

    # -- life cycle ----------------------------------------------------------------

    def _start(self, host: Host) -> None:
        host.settings = make_settings(self.root, drop_configured=host.drop_configured, host_id=host.name,
                                      state=host.state, **self.options)
        inner = open_journal(host.settings, clock=self.clock)
        if isinstance(getattr(inner, "_syncer", None), ThreadPoolExecutor):  # SQLite's fsync thread: inline
            inner._syncer.shutdown()  # type: ignore[attr-defined]
            inner._syncer = InlineExecutor(1)  # type: ignore[attr-defined]
        host.journal = CrashingJournal(inner, self.fencing)  # type: ignore[arg-type]
        host.scheduler = Scheduler(host.journal, clock=self.clock)  # type: ignore[arg-type]
        host.admitting = asyncio.Lock()  # type: ignore[attr-defined]  # one admission at a time (WatchedFolders._admit)
        host.displaced = []  # paths a post-action found other content at (Completeness.look_again)
        host.renewed = self.clock()
        self._build(host)

    def _build(self, host: Host) -> None:
        host.folders = {str(f.path): f for f in host.settings.folders}
        transport = self.services.transport(functools.partial(self._on_disk_first, host))
        host.pipeline = build_pipeline(
            host.settings, host.journal, functools.partial(self._folder_for, host),  # type: ignore[arg-type]
            clock=self.clock, sleep=self.clock.sleep,
            transport=transport, upload_transport=OnLoop(transport, self.loop),
            on_displaced=host.displaced.append, readiness=host.intake, rng=random.Random(0),
        )
        client = host.pipeline.stages.vault
        client._senders = self.loop.turns.wrap(client._senders)  # type: ignore[attr-defined]
        host.max_wait = max_delay(host.settings) + 1.0  # no job may rest longer than this from now

    @staticmethod
    def _on_disk_first(host: Host, request: httpx.Request) -> None:
        """No request leaves while a commit it depends on is only in the page cache: after
        a power cut the journal must still know of everything the vault or the control API
        was told. Each task waits for its own commits (other tasks' may still wait for
        their fsync: group commit). A dead daemon sends nothing."""
        journal = host.journal
        if journal.dead is not None:
            raise Crash(f"the daemon died ({journal.dead}) before {request.method} {request.url.path}")
        sender = actor()
        if journal.not_on_disk(sender):
            raise NotDurable(f"{request.method} {request.url.path} sent by {sender} with its journal commit(s) "
                             f"not yet on disk ({journal.unsynced} unsynced)")
        host.count("request")  # a pause armed here: the request waits, unsent, until the host resumes

    def _current(self) -> Host:
        """The host whose task runs now (the first one for the world's own moves)."""
        return HOST.get() or self.hosts[0]

    def _die(self, why: str) -> None:
        """kill -9, now: the daemon's journal and transport refuse every further call."""
        self._current().journal.die(why)

    def _horizon(self, host: Host | None = None) -> float:
        return self.clock() + max_delay((host or self.host).settings)

    @staticmethod
    def _folder_for(host: Host, job: Job) -> FolderSettings | None:
        return host.folders.get(job.folder)

    def _paused(self) -> None:
        if self.fencing is not None:
            self.fencing.pauses += 1
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    def _heartbeats(self) -> None:
        """Each live host renews its running jobs' leases every LEASE / 3 (JobLoop.heartbeat),
        and stops at once a job another host adopted. A paused or dead host renews nothing."""
        now = self.clock()
        for host in self.hosts:
            if host.live and abs(now - host.renewed) >= LEASE / 3:
                self._renew(host)

    def _renew(self, host: Host) -> None:
        host.renewed = self.clock()
        running = set(host.scheduler.running)
        if not running:
            return
        lost = host.journal.inner.renew(running)
        for task, (_, job_id) in list(host.tasks.items()):
            if job_id in lost:
                task.cancel()

    def reload(self, *, drop_configured: bool) -> None:
        """SIGHUP to the first host: new settings, a new pipeline, the same journal."""
        host = self.host
        if host.paused:  # a stopped process handles the signal once it resumes: not modelled
            return
        host.drop_configured = drop_configured
        self._do(host.pipeline.aclose())
        host.settings = make_settings(self.root, drop_configured=drop_configured, host_id=host.name,
                                      state=host.state, **self.options)
        self._build(host)
        if drop_configured:
            self.rescan()

    def crash(self, host: Host | None = None) -> None:
        """Drop every in-memory object of the host (a PostgreSQL journal's pooled
        connections too) and start it again from what the journal committed alone."""
        host = host or self.host
        self.crashes += 1
        host.journal.die("crash")
        self._stop(host)
        host.intake.forget_settled()
        host.incarnation += 1
        host.pause_at = None
        self._start(host)
        self.rescan(host)

    def _stop(self, host: Host) -> None:
        """The dead daemon's remains: its tasks dropped (a paused one's too), its client
        pools closed, a sending thread let run out (its request meets the dead
        transport), its journal connection closed."""
        self._thaw(host)
        try:
            if host.tasks:
                self.loop.run_until_complete(self._drop_tasks(host))
            self.loop.run_until_complete(host.pipeline.aclose())
            self.loop.run_until_complete(self._threads_ended(strict=not any(h.paused for h in self.hosts)))
        except Crash:
            pass
        host.journal.inner.close()

    def _thaw(self, host: Host) -> None:
        host.paused = False
        frozen, host.frozen = host.frozen, []
        self.loop.thaw(frozen)

    async def _threads_ended(self, strict: bool = True) -> None:
        for _ in range(10_000):
            if not self.loop.turns.busy():
                return
            await asyncio.sleep(0)
        if strict:  # else a paused host's send may still wait for its answer
            raise AssertionError("a sending thread never ended")

    def close(self) -> None:
        try:
            for host in self.hosts:
                host.journal.die("closed")
                host.paused = False
            for host in self.hosts:
                self._stop(host)
            self.loop.close()
        finally:
            self.post_hooks.remove()
            for name, value in self._saved_postactions.items():
                setattr(postaction, name, value)
            self._saved_postactions = {}
            for name, value in self._vault_constants.items():
                setattr(upload_body, name, value)
            self._vault_constants = {}
            shutil.rmtree(self.root, ignore_errors=True)

    def _watch_postactions(self) -> None:
        """finish and fail as the pipeline calls them: the fencing hears of each first."""
        fencing = self.fencing
        assert fencing is not None
        for name in ("finish", "fail"):
            original = getattr(postaction, name)
            self._saved_postactions[name] = original

            def watched(folder: FolderSettings, job: Job, *args: Any, _name: str = name,
                        _original: Any = original) -> Any:
                fencing.touching(_name, job)
                return _original(folder, job, *args)

            setattr(postaction, name, watched)

    def arm_crash(self, after_commits: int, host: Host | None = None) -> None:
        (host or self.host).journal.countdown = after_commits

    def arm_post_crash(self, point: str) -> None:
        """The next post-action that reaches `point` (POST_ACTION_CRASHES) dies there."""
        assert PostActionHooks.installed and point in POST_ACTION_CRASHES
        self.post_hooks.armed = point

    def _do(self, coroutine: Any, host: Host | None = None) -> Any:
        """Run one coroutine on this world's loop (in `host`'s name); a Crash restarts
        every host that died."""
        async def hosted() -> Any:
            HOST.set(host)
            return await coroutine

        try:
            return self.loop.run_until_complete(hosted() if host is not None else coroutine)
        except Crash:
            self._restart_dead()
            return None
        except NotDurable as exc:
            raise AssertionError(str(exc)) from None

    def _restart_dead(self) -> None:
        for host in self.hosts:
            if host.dead:
                self.crash(host)

    # -- several hosts -------------------------------------------------------------------

    def pause(self, host: Host, at: str | None = None, nth: int = 1) -> None:
        """SIGSTOP `host`: now (`at` None), or at its nth claim, request or commit from now
        on. Its leases are no longer renewed; its tasks take no step."""
        if at is None:
            host.paused = True
            self._paused()
        else:
            host.pause_at = (at, nth)

    def resume(self, host: Host, heartbeat_first: bool) -> None:
        """SIGCONT: the host goes on where it stood, with the Job objects it held. Its
        heartbeat renews (and stops the jobs another host adopted) before its tasks'
        next step, or after them (the usual race after a long stop)."""
        host.pause_at = None
        if not host.paused:
            return
        host.paused = False
        if heartbeat_first:
            self._renew(host)
        self._thaw(host)
        if not host.dead:
            self._do(self._round([host], 0, heartbeat=heartbeat_first))

    # -- the daemon's moves ----------------------------------------------------------

    def settle(self, relpath: str, host: Host | None = None) -> Job | None:
        """Intake's verdict on one path that stopped changing: never while a writer holds it
        open; else the version is complete, remembered, and admitted (WatchedFolders._on_settled)."""
        host = host or self.host
        if host.paused or host.dead:
            return None
        return self._do(self._settle(host, relpath), host)

    async def _settle(self, host: Host, relpath: str) -> Job | None:
        folder = host.folders.get(str(self.drop))
        if folder is None or host.intake.open_for_writing(relpath):
            return None
        info = regular_file_stat(folder, relpath)
        if info is None:
            return None
        host.intake.settled[relpath] = FileVersion.of(info)
        if relpath in host.intake.touched:
            host.intake.touched.remove(relpath)
        if info.st_size == 0:
            return None
        left: list[Path] = []  # paths a followed job left: intake settles them again (Completeness.look_again)
        async with host.admitting:  # type: ignore[attr-defined]
            try:
                job = await admit(host.pipeline.committer, folder, relpath, info, look_again=left.append)
            except FileNotFoundError:  # gone since it settled (a job's post-action took it): as WatchedFolders._admit
                return None
        for path in left:
            if path.is_relative_to(self.drop):
                await self._settle(host, path.relative_to(self.drop).as_posix())
        return job

    async def _settle_all(self, host: Host, relpaths: list[str]) -> None:
        for relpath in relpaths:
            await self._settle(host, relpath)

    def writer_opened(self, relpath: str) -> None:
        """A writer opened the path and writes to it (held open until writer_closed)."""
        self.intake.writers[relpath] = os.stat(self.drop / relpath).st_ino

    def writer_closed(self, relpath: str) -> None:
        """The writer closed it: settling decides from now on."""
        self.intake.writers.pop(relpath, None)

    def rescan(self, host: Host | None = None) -> None:
        """What a start-up or reload scan settles: every file in the drop folder the
        daemon's scan finds (watch.scan: not a hidden or temporary name, such as a
        post-action's `.vaultdrop-ID-NAME` left by a crash)."""
        host = host or self.host
        folder = host.folders.get(str(self.drop))
        if folder is None:
            return
        for relpath, _ in sorted(scan(folder)):
            self.settle(relpath, host)

    def run_due(self, limit: int, host: Host | None = None, *, together: bool = False) -> int:
        """One round of the daemon's scheduler (JobLoop.turn): up to `limit` jobs,
        started through scheduler.Scheduler (`concurrency` slots and the small-file lane)
        as tasks, beside the stale video deletes and the settle timers that fired, until
        every task has ended or waits. `together`: every live host's round at once, their
        tasks interleaving on the one loop. Returns how many jobs it started."""
        host = host or self.host
        hosts = [h for h in self.hosts if h.live] if together else [host]
        hosts = [h for h in hosts if h.live]
        if not hosts:
            return 0
        return self._do(self._round(hosts, limit)) or 0

    def _spawn(self, host: Host, name: str, coroutine: Coroutine[Any, Any, Any], job_id: int | None = None) -> None:
        async def acting() -> Any:
            ACTOR.set(name)
            OWNER.set(asyncio.current_task())
            HOST.set(host)
            return await coroutine

        if host is not self.hosts[0]:
            name = f"{host.name}:{name}"
        task = self.loop.create_task(acting(), name=name)
        host.tasks[task] = (next(self._order), job_id)

    def _live_tasks(self) -> list[asyncio.Task[Any]]:
        return [task for h in self.hosts if not h.paused for task in h.tasks]

    async def _round(self, hosts: list[Host], limit: int, heartbeat: bool = True) -> int:
        started = {h.name: 0 for h in hosts}
        services = self.services
        services.start_run(RUNAWAY_REQUESTS * (1 + len(self._live_tasks())))  # the stale deletes', plus per job

        def start(host: Host, job: Job) -> None:
            assert services.runaway_limit is not None
            services.runaway_limit += RUNAWAY_REQUESTS
            self._spawn(host, f"job-{job.id}", host.pipeline.run(job), job.id)

        for host in hosts:
            if heartbeat and self.fencing is not None:
                self._renew(host)  # the heartbeat keeps up with time passed since the last round
            self._spawn(host, "stale", host.pipeline.stale.delete_due())  # the daemon does this every few seconds
            touched = list(host.intake.touched)  # their settle timers fired (each open one restarts)
            if touched:
                self._spawn(host, "intake", self._settle_all(host, touched))
        try:
            while True:
                for host in hosts:
                    if started[host.name] < limit and host.live:
                        daemon = host.settings.daemon
                        started[host.name] += len(host.scheduler.start_due(
                            functools.partial(start, host), concurrency=daemon.concurrency,
                            small_file_size=daemon.small_file_size, folders=host.folders,
                            horizon=self._horizon(host), budget=limit - started[host.name]))
                tasks = self._live_tasks()
                if not tasks:
                    break
                self._wakeup = self.loop.create_future()
                done, _ = await asyncio.wait([*tasks, self._wakeup], return_when=asyncio.FIRST_COMPLETED)
                for task in sorted(done - {self._wakeup}, key=self._start_order):
                    self._ended(task)
        except BaseException:
            for host in self.hosts:
                await self._drop_tasks(host)
            raise
        finally:
            services.runaway_limit = None
            self._wakeup = None
        if any(h.dead for h in self.hosts):
            raise Crash("a host died during the round")
        return sum(started.values())

    def _owner(self, task: asyncio.Task[Any]) -> Host:
        return next(h for h in self.hosts if task in h.tasks)

    def _start_order(self, task: asyncio.Task[Any]) -> int:
        return self._owner(task).tasks[task][0]

    def _ended(self, task: asyncio.Task[Any]) -> None:
        """A task is over (JobLoop._ended): its slot is free; a failure surfaces here.
        A host that died drops its other tasks; the others go on (restarted after the round)."""
        host = self._owner(task)
        _, job_id = host.tasks.pop(task)
        if job_id is not None:
            host.scheduler.ended(job_id)
        error = None if task.cancelled() else task.exception()
        if isinstance(error, Runaway):
            raise AssertionError(f"job {job_id} spins: {error}") from None
        if isinstance(error, LeaseLost) and self.fencing is not None:
            self.fencing.fenced += 1  # another host adopted it: this one stops here (JobLoop._ended)
            error = None
        if isinstance(error, Crash) and host.dead and len(self.hosts) > 1:
            for other in list(host.tasks):  # dropped where they stand; the next await would meet the dead journal
                other.cancel()
            return
        if error is not None:
            raise error
        if host.displaced and not host.dead:  # the daemon settles such a path again at once
            paths, host.displaced[:] = list(host.displaced), []
            self._spawn(host, "intake", self._settle_all(host, [p.relative_to(self.drop).as_posix() for p in paths]))

    async def _drop_tasks(self, host: Host) -> None:
        """The daemon died (or the exploration failed): its tasks stop where they
        stand (each would meet the dead journal or transport at its next step anyway)."""
        if host.paused:
            self._thaw(host)
        tasks = dict(host.tasks)
        host.tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for _, job_id in tasks.values():
            if job_id is not None:
                host.scheduler.ended(job_id)

    def quiesce(self, max_rounds: int = 300) -> None:
        """Faults cleared, folder back, every host resumed, a rescan, then the scheduler
        until nothing is due."""
        self.services.clear_faults()
        for host in self.hosts:
            host.journal.countdown = None  # a post-action crash point stays armed: it strikes once
            host.pause_at = None
            if host.paused:
                self.resume(host, heartbeat_first=False)
        if not self.drop_configured:
            self.reload(drop_configured=True)
        for host in self.hosts:
            self.rescan(host)
        for _ in range(max_rounds):
            self.run_due(50, together=len(self.hosts) > 1)
            due = min((d for d in (h.journal.next_due(set(), h.folders, self._horizon(h)) for h in self.hosts)
                       if d is not None), default=None)
            if due is None:
                return
            self.clock.advance(max(0.0, due - self.clock()) + 1.0)
        raise AssertionError(f"jobs still due after {max_rounds} scheduler rounds: {self.active_jobs()}")

    # -- what the invariants read ----------------------------------------------------------

    def due_within(self, seconds: float) -> set[int]:
        """Ids of the jobs the scheduler would start if `seconds` passed now."""
        due: set[int] = set()
        for host in self.hosts:  # a job another host holds is due there (or here once its lease ran out)
            jobs = host.journal.runnable(self.clock() + seconds, set(), 100_000, self.folders, self._horizon())
            due |= {job.id for job in jobs}
        return due

    def all_jobs(self) -> list[Job]:
        return self.journal.jobs(limit=100_000)

    def active_jobs(self) -> list[Job]:
        return [job for job in self.all_jobs() if job.state not in TERMINAL]

    def failed_jobs(self) -> list[Job]:
        return self.journal.jobs(JobState.FAILED, limit=100_000)

    def operator(self, command: str, job_id: int) -> None:
        """`vaultdrop jobs retry|forget ID` as cli.py does it: through the same committer
        (a failed job's file is brought back from failed_dir before its retry)."""
        committer: Any = self.pipeline.committer
        own = self.fencing is not None  # the CLI's own process and connection: no daemon's claims in it
        if own:
            from vaultdrop.journal.committer import Committer

            committer = Committer(open_journal(self.settings, clock=self.clock))
        try:
            if command == "retry":
                committer.retry(job_id, bring_back=postaction.restore)
            else:
                committer.forget(job_id)
        except LocalFileError:  # retry refused: a new file took the failed one's path
            pass
        except Crash:
            self._restart_dead()
        finally:
            if own:
                committer.journal.close()
