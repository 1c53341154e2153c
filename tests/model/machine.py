"""The drop folder's life as a Hypothesis state machine, checked against issue 11's promise.

Every file version written here has unique bytes, so the vault holding one sha256 twice is
always a duplicate upload, and a version that leaves the drop folder is accounted for only
by the vault (archive, delete) or by a failed job (failed_dir). A writer may hold a file
open across steps (the world's intake knows): what it wrote until it closes is a partial
version, which the vault must never hold as a job's video.

Every move is on: each failure the exploration found is fixed and has its explicit
scenario in test_exactly_once_regressions.py.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import event
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from vaultdrop.job import TERMINAL, JobState
from vaultdrop.stages import postaction

from .fakes import FAULTS
from .world import LEASE, POST_ACTION_CRASHES, PgDatabase, World

# Files above this many bytes go up through the vault client's streamed body (its
# sending thread), the others in one piece from the loop: versions here are 16 to a few
# hundred bytes, so both paths run.
STREAM_ABOVE = 128

NAMES = ("a.mp4", "b.mp4")
names = st.sampled_from(NAMES)
HOURLY_REQUESTS_PER_JOB = 200  # generous: confirm polling, S3 polling and retries of one job


def has_files(self: DropFolder) -> bool:
    return bool(self.files)


def has_jobs(self: DropFolder) -> bool:
    return self.world is not None and bool(self.w.all_jobs())


@dataclass
class Version:
    content: bytes
    identity: tuple[int, int, int]  # size, mtime_ns, inode when written


@dataclass
class Writer:
    """A writer holding a drop folder file open (a recorder, a slow copy)."""

    fd: int
    inode: int


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def _work_file(path: Path) -> bool:
    """A post-action's hidden work file (a cross-device copy being staged, perhaps partial
    after a crash): not archived or failed yet; the job's next attempt replaces it."""
    return path.name.startswith(postaction.PRIVATE_PREFIX)


class DropFolder(RuleBasedStateMachine):
    """Rules are the world's events; invariants are issue 11's four promises."""

    SECOND_HOST = False  # SharedDropFolder: a second host on the same PostgreSQL journal and folder

    def __init__(self, database: PgDatabase | None = None) -> None:
        super().__init__()
        self.database = database  # the PostgreSQL journal's, else SQLite
        self.world: World | None = None
        self.files: dict[str, bytes] = {}  # what the drop folder holds, by our own account
        self.links: dict[str, str] = {}  # symlink name -> target name
        self.versions: dict[str, Version] = {}  # sha256 -> every version ever written (partial ones too)
        self.complete: set[str] = set()  # sha256 of every version a writer left complete (closed)
        self.writers: dict[str, Writer] = {}  # name -> the writer holding it open
        self.archived: dict[Path, bytes] = {}  # archive files seen: never changed or lost
        self.forgotten: set[str] = set()  # sha256 of forgotten jobs: a second upload was asked for
        self.forgotten_failures: set[tuple[int, int, int]] = set()  # identities of forgotten failed jobs
        self.written = 0

    @initialize(after_upload=st.sampled_from(["archive", "delete"]), s3=st.booleans(),
                dedupe=st.sampled_from(["identity", "sha256"]), concurrency=st.integers(1, 3),
                small_file_size=st.sampled_from([64, 160]), cross_device=st.booleans())
    def start(self, after_upload: str, s3: bool, dedupe: str, concurrency: int, small_file_size: int,
              cross_device: bool) -> None:
        """The daemon's scheduler with `concurrency` slots and a small-file lane that takes
        some versions and not others; the archive and failed_dir perhaps on another device."""
        self.world = World(Path(tempfile.mkdtemp(prefix="vaultdrop-explore-")), after_upload=after_upload,
                           s3=s3, dedupe=dedupe, database=self.database, concurrency=concurrency,
                           small_file_size=small_file_size, stream_above=STREAM_ABOVE, post_action_faults=True,
                           cross_device=cross_device, second_host=self.SECOND_HOST)

    def teardown(self) -> None:
        """Every run ends quiesced, so each one is held to promise (2) at least once."""
        if self.world is None:
            return
        try:
            if has_jobs(self):
                self.quiesce()
        finally:
            for writer in self.writers.values():
                os.close(writer.fd)
            self.writers.clear()
            self.world.close()

    @property
    def w(self) -> World:
        assert self.world is not None
        return self.world

    # -- the files -------------------------------------------------------------------

    def _content(self, size: int) -> bytes:
        self.written += 1
        stamp = f"version {self.written:06d}|".encode()
        return (stamp * (size // len(stamp) + 1))[:max(size, len(stamp))]

    def _put(self, name: str, content: bytes, *, settled: bool, mtime_ns: int | None = None,
             complete: bool = True) -> None:
        """Record the version (every write gets its own mtime unless told to keep one), and
        let the settler see it at once when `settled`. Not `complete`: a writer still holds
        the file open mid-write."""
        path = self.w.drop / name
        stamp = mtime_ns if mtime_ns is not None else 1_700_000_000_000_000_000 + self.written * 1_000_000_000
        os.utime(path, ns=(stamp, stamp))
        info = path.stat()
        self.files[name] = content
        for other in self.files:  # a hard link is the same file: it changed too
            if other != name and (self.w.drop / other).is_file() and os.path.samefile(self.w.drop / other, path):
                self.files[other] = content
        self.versions[sha(content)] = Version(content, (info.st_size, info.st_mtime_ns, info.st_ino))
        if complete:
            self.complete.add(sha(content))
        if settled:
            self.w.settle(name)

    def _linked_outside(self, name: str) -> bool:
        """Whether an archived hard link shares this file: writing into it would change the
        archive by the operator's hand, not vaultdrop's."""
        path = self.w.drop / name
        names = sum(1 for other in self.files if os.path.samefile(self.w.drop / other, path))
        return path.stat().st_nlink > names

    def _held(self, name: str) -> bool:
        """Whether a writer holds this file open (under this name or a hard link's): only
        that writer changes its bytes until it closes."""
        if name in self.writers:
            return True
        path = self.w.drop / name
        return path.is_file() and path.stat().st_ino in {writer.inode for writer in self.writers.values()}

    def _free(self, name: str) -> bool:
        return not os.path.lexists(self.w.drop / name)

    @precondition(lambda self: len(self.files) + len(self.links) < len(NAMES))
    @rule(name=names, size=st.integers(16, 300), settled=st.booleans())
    def write_new_file(self, name: str, size: int, settled: bool) -> None:
        if self._free(name):
            content = self._content(size)
            (self.w.drop / name).write_bytes(content)
            self._put(name, content, settled=settled)

    @precondition(has_files)
    @rule(name=names, size=st.integers(16, 100), settled=st.booleans())
    def append(self, name: str, size: int, settled: bool) -> None:
        """Opened, appended to and closed in one go (after its settle or not): a new version."""
        if name in self.files and not self._held(name) and not self._linked_outside(name):
            content = self.files[name] + self._content(size)
            with (self.w.drop / name).open("ab") as handle:
                handle.write(content[len(self.files[name]):])
            self._put(name, content, settled=settled)

    @precondition(has_files)
    @rule(name=names, size=st.integers(16, 300), settled=st.booleans())
    def replace_by_rename(self, name: str, size: int, settled: bool) -> None:
        """A re-export: written beside, renamed over (new inode)."""
        if name in self.files and name not in self.writers:
            content = self._content(size)
            temporary = self.w.drop / f".{name}.part"
            temporary.write_bytes(content)
            os.rename(temporary, self.w.drop / name)
            self._put(name, content, settled=settled)

    @precondition(has_files)
    @rule(name=names, settled=st.booleans())
    def copy_over_keeping_identity(self, name: str, settled: bool) -> None:
        """`cp -p` over the file: same inode, size and mtime, different bytes."""
        if name in self.files and not self._held(name) and not self._linked_outside(name):
            path = self.w.drop / name
            before = path.stat()
            content = self._content(len(self.files[name]))[: len(self.files[name])]
            with path.open("r+b") as handle:
                handle.write(content)
            self._put(name, content, mtime_ns=before.st_mtime_ns, settled=settled)

    @precondition(has_files)
    @rule(name=names, size=st.integers(16, 300), same_size=st.booleans(), keep_mtime=st.booleans(),
          settled=st.booleans())
    def rewrite_in_place(self, name: str, size: int, same_size: bool, keep_mtime: bool, settled: bool) -> None:
        """Opened with O_TRUNC, written and closed: same path and inode, new bytes (the same
        size or not); `keep_mtime` as `cp -p` does afterwards."""
        if name in self.files and not self._held(name) and not self._linked_outside(name):
            path = self.w.drop / name
            before = path.stat()
            length = len(self.files[name]) if same_size else size
            content = self._content(length)[:length]
            fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, content)
            finally:
                os.close(fd)
            self._put(name, content, mtime_ns=before.st_mtime_ns if keep_mtime else None, settled=settled)

    # -- a writer holding a file open -------------------------------------------------------

    @rule(name=names, size=st.integers(16, 200), append=st.booleans())
    def writer_opens(self, name: str, size: int, append: bool) -> None:
        """A writer opens the file and writes part of it, keeping it open: a new file, or
        an existing (perhaps queued or uploaded) one truncated and rewritten, or appended to."""
        path = self.w.drop / name
        if name in self.links or self._held(name):
            return
        if name in self.files:
            if self._linked_outside(name):
                return
            base = self.files[name] if append else b""
        elif self._free(name) and len(self.files) + len(self.links) < len(NAMES):
            base = b""
        else:
            return
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC), 0o644)
        self.writers[name] = Writer(fd, os.fstat(fd).st_ino)
        self.w.writer_opened(name)
        chunk = self._content(size)
        os.write(fd, chunk)
        self._put(name, base + chunk, settled=False, complete=False)

    @precondition(lambda self: bool(self.writers))
    @rule(name=names, size=st.integers(16, 200))
    def writer_writes_more(self, name: str, size: int) -> None:
        if name in self.writers:
            writer = self._writer_in_place(name)
            chunk = self._content(size)
            os.write(writer.fd, chunk)
            self._put(name, self.files[name] + chunk, settled=False, complete=False)

    @precondition(lambda self: bool(self.writers))
    @rule(name=names, settled=st.booleans())
    def writer_closes(self, name: str, settled: bool) -> None:
        """The last write is done: what the file holds now is a complete version."""
        if name in self.writers:
            self._close_writer(name)
            if settled:
                self.w.settle(name)

    def _writer_in_place(self, name: str) -> Writer:
        """The writer's file must still be at its name: nothing moves a file open for writing."""
        writer = self.writers[name]
        info = os.stat(self.w.drop / name) if os.path.lexists(self.w.drop / name) else None
        assert info is not None and info.st_ino == writer.inode, (
            f"{name} was moved away while a writer held it open")
        return writer

    def _close_writer(self, name: str) -> None:
        writer = self._writer_in_place(name)
        os.close(writer.fd)
        del self.writers[name]
        self.w.writer_closed(name)
        self.complete.add(sha(self.files[name]))

    @precondition(has_files)
    @rule(source=names, destination=names)
    def rename(self, source: str, destination: str) -> None:
        if source in self.files and source not in self.writers and self._free(destination):
            os.rename(self.w.drop / source, self.w.drop / destination)
            self.files[destination] = self.files.pop(source)

    @precondition(has_files)
    @rule(source=names, destination=names, symbolic=st.booleans())
    def link(self, source: str, destination: str, symbolic: bool) -> None:
        if source in self.files and self._free(destination):
            if symbolic:
                os.symlink(source, self.w.drop / destination)
                self.links[destination] = source
            else:
                os.link(self.w.drop / source, self.w.drop / destination)
                self.files[destination] = self.files[source]

    @precondition(lambda self: bool(self.files or self.links))
    @rule(name=names)
    def delete(self, name: str) -> None:
        if os.path.lexists(self.w.drop / name) and name not in self.writers:
            (self.w.drop / name).unlink()
            self.files.pop(name, None)
            self.links.pop(name, None)

    # -- the daemon and its operator -----------------------------------------------------

    @rule(name=names)
    def settle(self, name: str) -> None:
        self.w.settle(name)

    @precondition(has_jobs)
    @rule(jobs=st.integers(1, 3), faults=st.lists(st.sampled_from(FAULTS), max_size=3))
    def run_due_jobs(self, jobs: int, faults: list[str]) -> None:
        """The scheduler's next round, the services answering with `faults` (in order)."""
        for fault in faults:
            self.w.services.apply(fault)
        self.w.run_due(jobs)

    @precondition(lambda self: self.world is not None and bool(self.w.failed_jobs()))
    @rule(pick=st.integers(0, 5))
    def operator_retries_failed_job(self, pick: int) -> None:
        failed = self.w.failed_jobs()
        self.w.operator("retry", failed[pick % len(failed)].id)

    @precondition(has_jobs)
    @rule(pick=st.integers(0, 5))
    def operator_forgets_finished_job(self, pick: int) -> None:
        finished = [job for job in self.w.all_jobs() if job.state in TERMINAL]
        if finished:
            job = finished[pick % len(finished)]
            if job.sha256:  # the operator asked for this content to be uploaded again if it shows up
                self.forgotten.add(job.sha256)
            if job.state is JobState.FAILED:  # its file stays in failed_dir, now the operator's
                self.forgotten_failures.add((job.size, job.mtime_ns, job.inode))
            self.w.operator("forget", job.id)

    @rule(configured=st.booleans())
    def reload(self, configured: bool) -> None:
        self.w.reload(drop_configured=configured)

    @rule(commits=st.integers(1, 6))
    def crash_after_commits(self, commits: int) -> None:
        self.w.arm_crash(commits)

    @precondition(has_jobs)
    @rule(call=st.sampled_from(["upload", "aws.upload", "delete"]))
    def crash_mid_request(self, call: str) -> None:
        """kill -9 while the next such request is in flight: the service carries it out
        (stores the upload, queues the S3 copy, deletes the video), the daemon never reads
        the answer."""
        self.w.services.script(call, "crash_after")

    @precondition(has_jobs)
    @rule(point=st.sampled_from(POST_ACTION_CRASHES))
    def crash_in_post_action(self, point: str) -> None:
        """kill -9 inside the next post-action that gets there: between its two renames,
        mid-way through a cross-device copy, or before the journal hears it is done."""
        self.w.arm_post_crash(point)

    # -- the services --------------------------------------------------------------------

    # -- time ------------------------------------------------------------------------------

    @rule(seconds=st.sampled_from([1.0, 5.0, 30.0, 130.0, 700.0]))
    def clock_forward(self, seconds: float) -> None:
        self.w.clock.advance(seconds)

    @rule()
    def clock_back_an_hour(self) -> None:
        self.w.clock.advance(-3600.0)

    @precondition(has_jobs)
    @rule()
    def quiesce(self) -> None:
        """Writers done, faults cleared, time advanced: every final version must now be
        accounted for."""
        for name in list(self.writers):
            self._close_writer(name)
        finals = dict(self.files)
        self.w.quiesce()
        self._account_for_drop_folder()
        active = [job for job in self.w.active_jobs() if job.folder == str(self.w.drop)]
        assert not active, f"jobs neither ended nor waiting: {active}"
        failed = self.w.failed_jobs()
        keys = self.w.services.keys
        for job in failed:
            held = keys.get(job.upload_key or "")
            stored = held is not None and held.video_id is not None and any(
                s.video_id == held.video_id for s in self.w.services.live())
            assert job.video_id is not None or not stored, (
                f"job {job.id} failed ({job.last_error}) although the vault holds its upload {job.upload_key}")
        for name, content in finals.items():
            stored = self.w.services.live_count(sha(content))
            if stored == 1 or (stored > 1 and sha(content) in self.forgotten):
                continue
            assert stored == 0, f"{name}: stored {stored} times"
            assert self._in_failed_dir(content) and any(j.last_error for j in failed if j.relpath == name), (
                f"{name} ({len(content)} bytes) settled but neither in the vault nor failed with a reason")

    # -- the promises ----------------------------------------------------------------------

    @invariant()
    def no_duplicates(self) -> None:
        """(1) No version stored twice; at most one live aws.upload per video and destination."""
        if self.world is None:
            return
        services = self.w.services
        assert not services.protocol_errors, services.protocol_errors
        counts: dict[str, int] = {}
        for stored in services.live():
            counts[stored.sha256] = counts.get(stored.sha256, 0) + 1
        twice = {digest[:12]: n for digest, n in counts.items() if n > 1 and digest not in self.forgotten}
        assert not twice, f"vault holds a version more than once: {twice}"
        requests: dict[tuple[str, str, str], int] = {}
        for request in services.s3_requests:
            # a request aws.status lists only after the 120 s grace may be sent again: the
            # trade-off README.md documents (waiting for ever would strand the job)
            if request.outcome not in ("failed", "listed_late"):
                key = (request.path, request.destination_path, request.bucket)
                requests[key] = requests.get(key, 0) + 1
        assert all(n == 1 for n in requests.values()), f"aws.upload sent twice: {requests}"

    @invariant()
    def no_partial_version_confirmed(self) -> None:
        """Complete means complete: a job's video in the vault is always a version a writer
        closed, never the bytes of a file while it was open mid-write."""
        if self.world is None:
            return
        stored = {s.video_id: s for s in self.w.services.stored}
        for job in self.w.all_jobs():
            video = stored.get(job.video_id) if job.video_id else None
            assert video is None or video.sha256 in self.complete, (
                f"job {job.id} ({job.relpath}, {job.state.value}) holds video {job.video_id} of {video.size} bytes: "
                "a partial version, written while the file was open")

    @invariant()
    def nothing_lost_or_misplaced(self) -> None:
        """(3) What leaves the drop folder is the exact content the vault or a failed job holds."""
        if self.world is None:
            return
        self._account_for_drop_folder()
        for path in sorted((self.w.root / "archive").rglob("*")):
            if path.is_symlink() or not path.is_file() or _work_file(path):
                continue
            content = path.read_bytes()
            assert self.w.services.live_count(sha(content)) >= 1, f"archived {path.name} but never uploaded it"
            assert self.archived.setdefault(path, content) == content, f"archive {path.name} overwritten"
        for path, content in self.archived.items():
            assert path.is_file() and path.read_bytes() == content, f"archived {path.name} lost or changed"
        failed = self.w.failed_jobs()
        for path in self._failed_dir_files():
            version = self.versions.get(sha(path.read_bytes()))
            assert version is not None, f"{path.name} in failed_dir is no version we wrote"
            judged = version.identity in self.forgotten_failures or any(
                (j.size, j.mtime_ns, j.inode) == version.identity and j.sha256 in (None, sha(version.content))
                for j in failed)
            assert judged, f"{path.name} moved to failed_dir but no failed job judged that content"

    @invariant()
    def every_job_ends_or_waits_for_a_reason(self) -> None:
        """(4) A waiting job says why and is due within the policy's longest delay; requests
        per simulated hour stay bounded."""
        if self.world is None:
            return
        jobs = self.w.all_jobs()
        due = self.w.due_within(self.w.max_wait)
        for job in jobs:
            if job.state in TERMINAL or job.folder not in self.w.folders:
                continue
            assert job.id in due, f"job {job.id} rests {job.not_before - self.w.clock():.0f} s"
            assert job.attempts == 0 or job.last_error, f"job {job.id} retries without a reason"
        for job in jobs:
            assert "unexpected error" not in (job.last_error or ""), f"job {job.id}: {job.last_error}"
            assert job.state is not JobState.S3_WAITING or job.s3_request_id, f"job {job.id} follows no request"
        horizon = self.w.clock.elapsed - 3600
        recent = sum(1 for at, _ in self.w.services.requests if at >= horizon)
        assert recent <= HOURLY_REQUESTS_PER_JOB * max(1, len(jobs)), f"{recent} requests in the last hour"

    # -- helpers ---------------------------------------------------------------------------

    def _failed_dir_files(self) -> list[Path]:
        return [p for p in sorted((self.w.root / "failed").rglob("*"))
                if p.is_file() and not p.is_symlink() and not p.name.endswith(".error.json") and not _work_file(p)]

    def _in_failed_dir(self, content: bytes) -> bool:
        return any(p.read_bytes() == content for p in self._failed_dir_files())

    def _account_for_drop_folder(self) -> None:
        """Whatever the pipeline took from the drop folder must be in the vault or failed_dir."""
        for name, content in list(self.files.items()):
            path = self.w.drop / name
            if path.is_file() and not path.is_symlink():
                assert path.read_bytes() == content, f"{name} changed under us"
                continue
            assert not os.path.lexists(path), f"{name} replaced by something else"
            assert self.w.services.live_count(sha(content)) >= 1 or self._in_failed_dir(content), (
                f"{name} ({len(content)} bytes) removed but neither uploaded nor in failed_dir: lost")
            del self.files[name]
        for name in list(self.links):
            if not os.path.lexists(self.w.drop / name):
                del self.links[name]
        for path in self.w.drop.iterdir():  # `jobs retry` brings a failed file back from failed_dir
            if (path.name not in self.files and path.name not in self.links and path.is_file()
                    and not _work_file(path)):
                content = path.read_bytes()
                assert sha(content) in self.versions, f"{path.name} appeared with bytes we never wrote"
                self.files[path.name] = content


HOSTS = st.sampled_from([0, 1])
# How often the shared runs got there (read when tuning the exploration): examples with an
# adoption, with a write or a hold fenced off by LeaseLost, with a pause.
SHARED_STATS: dict[str, int] = {"examples": 0, "adopted": 0, "fenced": 0, "paused": 0}
PAUSE_POINTS = st.sampled_from([None, "claim", "request", "commit"])


class SharedDropFolder(DropFolder):
    """Issue 21: two hosts on one PostgreSQL journal and one drop folder (README "Several
    hosts"). The first host is DropFolder's daemon; the second runs its own scheduler
    rounds (alone, or together with the first: their tasks interleave on the one loop),
    settles files through its own intake, and either host may be paused (SIGSTOP, at once
    or at its nth claim, request or commit) while time passes beyond its lease, resumed
    with its in-flight tasks holding stale Job objects, or killed.

    On top of DropFolder's promises: no job task commits unless its host process made the
    latest claim of that job, at the epoch it writes with (a fenced host never writes after
    another adopted the job), and no post-action (archive, delete, failed_dir) starts in a
    host that does not hold the job."""

    SECOND_HOST = True

    def teardown(self) -> None:
        if self.world is not None:
            fencing = self.w.fencing
            assert fencing is not None
            event(f"adoptions: {min(fencing.adoptions, 3)}")
            event(f"fenced by LeaseLost: {min(fencing.fenced, 3)}")
            SHARED_STATS["examples"] += 1
            SHARED_STATS["adopted"] += fencing.adoptions > 0
            SHARED_STATS["fenced"] += fencing.fenced > 0
            SHARED_STATS["paused"] += fencing.pauses > 0
        super().teardown()

    def _any_paused(self) -> bool:
        return any(h.paused for h in self.w.hosts)

    @rule(seconds=st.sampled_from([1.0, 5.0, 30.0, 130.0, 700.0]))
    def clock_forward(self, seconds: float) -> None:
        """While a host is stopped only the stop's own time passes (host_stopped_past_its_lease):
        a request it signed before the stop would be refused as too old (900 s), a model artefact."""
        if not self._any_paused():
            self.w.clock.advance(seconds)

    @rule()
    def clock_back_an_hour(self) -> None:
        if not self._any_paused():
            self.w.clock.advance(-3600.0)

    def _other_paused(self, which: int) -> bool:
        return self.w.hosts[1 - which].paused

    @rule(name=names)
    def second_host_settles(self, name: str) -> None:
        """The second host's intake (its own view of the shared folder) settles the path."""
        self.w.settle(name, self.w.hosts[1])

    @precondition(has_jobs)
    @rule(jobs=st.integers(1, 3), faults=st.lists(st.sampled_from(FAULTS), max_size=3), together=st.booleans())
    def second_host_runs_due_jobs(self, jobs: int, faults: list[str], together: bool) -> None:
        """The second host's scheduler round; `together`: both hosts' rounds at once."""
        for fault in faults:
            self.w.services.apply(fault)
        self.w.run_due(jobs, self.w.hosts[1], together=together)

    @rule(which=HOSTS, at=PAUSE_POINTS, nth=st.integers(1, 3))
    def pause_host(self, which: int, at: str | None, nth: int) -> None:
        """SIGSTOP now, or at the host's nth claim, request or commit from now on (mid-round:
        its tasks stop where they stand). One host at a time."""
        if not self._other_paused(which) and self.w.hosts[1 - which].pause_at is None:
            self.w.pause(self.w.hosts[which], at, nth)

    @precondition(lambda self: self.world is not None and any(h.paused or h.pause_at for h in self.w.hosts))
    @rule(which=HOSTS, heartbeat_first=st.booleans())
    def resume_host(self, which: int, heartbeat_first: bool) -> None:
        """SIGCONT: its tasks go on with the Job objects they held; its heartbeat renews
        (and stops the jobs another host adopted) before or after their next step."""
        self.w.resume(self.w.hosts[which], heartbeat_first)

    @precondition(has_jobs)
    @rule(which=HOSTS, at=PAUSE_POINTS, nth=st.integers(1, 3), seconds=st.sampled_from([LEASE + 1, 5 * LEASE]),
          resume=st.booleans(), heartbeat_first=st.booleans())
    def host_stopped_past_its_lease(self, which: int, at: str | None, nth: int, seconds: float, resume: bool,
                                    heartbeat_first: bool) -> None:
        """The whole story at once: both hosts run, one stops (at once, or at its nth claim,
        request or commit: mid-job), time passes beyond its lease while the other renews
        its own, the other's round adopts what the stopped one held, and perhaps the
        stopped one resumes, its tasks holding stale Job objects."""
        if any(h.paused or h.pause_at for h in self.w.hosts):
            return
        host, other = self.w.hosts[which], self.w.hosts[1 - which]
        self.w.pause(host, at, nth)
        self.w.run_due(3, host, together=True)
        self.w.clock.advance(seconds)
        self.w.run_due(3, other)
        if resume:
            self.w.resume(host, heartbeat_first)

    @rule(which=HOSTS)
    def kill_host(self, which: int) -> None:
        """kill -9 of one host (paused or not), and its restart from the journal."""
        self.w.crash(self.w.hosts[which])

    @rule(commits=st.integers(1, 6))
    def crash_second_host_after_commits(self, commits: int) -> None:
        self.w.arm_crash(commits, self.w.hosts[1])

    @invariant()
    def fenced_hosts_neither_write_nor_touch_files(self) -> None:
        if self.world is None:
            return
        fencing = self.w.fencing
        assert fencing is not None
        assert not fencing.violations, fencing.violations
