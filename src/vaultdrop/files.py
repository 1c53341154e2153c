"""Local file facts: a file's sha256, and whether a path still holds a job's exact content.

Inode, size and mtime tell a changed file almost always; `cp -p` over a file keeps all
three. Its change time (ctime) cannot be set from user space, so when it moved since the
upload read the file, the bytes are compared by sha256 before anything trusts the file.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import signal
import threading
from pathlib import Path

from .errors import LocalFileError
from .job import Job, StatLike
from .netfs import filesystem_type, is_network


def fsync_path(path: str | Path) -> None:
    """Blocking: flush a file's (or a folder's) data and metadata to the disk."""
    handle = os.open(path, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def sha256_of(path: Path) -> str:
    """Blocking: run in a worker thread. A file that cannot be read is a LocalFileError."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as handle:
            while chunk := handle.read(1024 * 1024):
                digest.update(chunk)
    except OSError as exc:
        raise LocalFileError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def stat_or_none(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def holds(job: Job, path: Path, info: os.stat_result | StatLike) -> bool:
    """Whether `path` (stat `info`) is the content the job uploaded. Blocking when it hashes.

    When the change time moved and no sha256 says what was sent (a POST whose answer was
    lost), the file cannot be vouched for: it counts as changed, and is sent again."""
    if same_version(job, info):
        return True
    return job.is_file(info) and job.sha256 is not None and sha256_of(path) == job.sha256


def same_version(job: Job, info: os.stat_result | StatLike) -> bool:
    """Whether `info` is the version the job last saw: its inode, size and mtime, and its
    change time where the job recorded one (only that moves when `cp -p` writes over it)."""
    return job.is_file(info) and (job.ctime_ns is None or getattr(info, "st_ctime_ns", None) == job.ctime_ns)


def open_for_writing(path: Path) -> bool | None:
    """Blocking (a few microseconds): whether any process has the file open for writing,
    by the kernel's own count: a read lease is refused (EAGAIN) exactly then, and released
    at once. None where the kernel will not say: another user's file without CAP_LEASE
    (the systemd unit grants it), no such file, or a network file system, where EAGAIN
    only means the server granted no delegation (NFSv4) or oplock (SMB)."""
    ignore_lease_breaks()
    try:
        handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not _leases_tell(os.fstat(handle).st_dev, path):
            return None
        fcntl.fcntl(handle, fcntl.F_SETLEASE, fcntl.F_RDLCK)
    except OSError as exc:
        return True if exc.errno == errno.EAGAIN else None
    else:
        fcntl.fcntl(handle, fcntl.F_SETLEASE, fcntl.F_UNLCK)
        return False
    finally:
        os.close(handle)


_local_devices: dict[int, bool] = {}  # st_dev -> whether a refused lease means a writer


def _leases_tell(device: int, path: Path) -> bool:
    if device not in _local_devices:
        _local_devices[device] = not is_network(filesystem_type(path))
    return _local_devices[device]


def ignore_lease_breaks() -> None:
    """A writer that opens the file during the microseconds the lease is held makes the
    kernel send SIGIO, whose default action ends the process: ignore it (nothing else here
    uses SIGIO). Dispositions are set from the main thread only, so the CLI calls this
    first, before any worker thread may probe."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGIO) == signal.SIG_DFL:
        signal.signal(signal.SIGIO, signal.SIG_IGN)


CAP_LEASE = 28  # linux/capability.h


def has_lease_capability() -> bool:
    """Whether this process may take a lease on any user's file (CAP_LEASE, which root and
    the systemd unit have); without it only on its own files."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) >> CAP_LEASE & 1)
    except (OSError, ValueError, IndexError):
        pass
    return False
