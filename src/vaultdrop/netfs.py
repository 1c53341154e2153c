"""Which filesystem a path lives on, to keep the SQLite journal off network filesystems.

SQLite's WAL needs shared memory and working POSIX locks between processes: NFS, SMB/CIFS
and FUSE filesystems give neither reliably, and a journal there corrupts silently. The
kernel's own mount table (/proc/self/mountinfo) names each mount's type; statvfs does not.
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import ConfigError

MOUNTINFO = Path("/proc/self/mountinfo")
NETWORK_TYPES = frozenset({"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "afs",
                           "ocfs2", "gfs2", "lustre", "virtiofs"})


def _unescape(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    return field.encode("utf-8", "surrogateescape").decode("unicode_escape").encode("latin-1").decode("utf-8", "surrogateescape")


def filesystem_type(path: Path, mountinfo: str | None = None) -> str | None:
    """The type of the mount holding `path` (its longest mount point prefix), or None."""
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError:
            return None
    best, kind = "", None
    target = os.path.realpath(path)
    for line in mountinfo.splitlines():
        fields, _, tail = line.partition(" - ")
        parts = fields.split()
        if len(parts) < 5 or not tail:
            continue
        point = _unescape(parts[4])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, tail.split()[0]
    return kind


def is_network(kind: str | None) -> bool:
    return kind is not None and (kind in NETWORK_TYPES or kind == "fuse" or kind.startswith(("fuse.", "fuseblk")))


def refuse_network_state_dir(state_dir: Path, mountinfo: str | None = None) -> None:
    """A ConfigError when the SQLite journal would sit on a network or FUSE filesystem."""
    kind = filesystem_type(state_dir, mountinfo)  # one not made yet is judged where it will be
    if is_network(kind):
        raise ConfigError(
            f"state_dir {state_dir} is on a {kind} filesystem: the SQLite journal needs a local disk "
            "(WAL and locks do not work over the network). Put state_dir on a local disk, or share "
            'the journal between hosts with PostgreSQL: [journal] url = "postgresql://…"'
        )
