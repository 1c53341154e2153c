"""A real systemd booted as PID 1 of new PID, mount and cgroup namespaces.

Its root is an overlay over the host's / whose writable layer is a directory of the
test: sysusers, tmpfiles, the installed unit and every file the service writes land
there, and the host's /tmp, /etc and /var are never touched. /sys and /proc/sys
are read-only and `container=` is set, so systemd skips what only a real machine may do
(udev, sysctl, module loading, clock). The test drives it with `nsenter -t PID -m -p`
and reaches its files through /proc/PID/root. SQLite resolves that magic link to the
host's /, so a folder whose database the test reads is a host folder bind-mounted into
the system (`writable`). Reading it from the overlay's writable layer instead would
bypass the overlay's file locks: a reader that believes itself alone resets the `-shm`
file the service has mapped, and the service dies of SIGBUS.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from ..integration.harness import wait_for

CGROUP = Path("/sys/fs/cgroup")

# Runs as PID 1 of the new namespaces, then execs systemd. $1: the workdir; then the
# host paths to share read-only. $WRITABLE: lines of "inside-path host-path".
BOOT = r"""
set -eu
W=$1; shift
mkdir -p $W/upper $W/work $W/root
R=$W/root
mount -t overlay overlay -o lowerdir=/,upperdir=$W/upper,workdir=$W/work $R
mount -t tmpfs -o mode=755 dev $R/dev
for node in null zero full random urandom tty; do touch $R/dev/$node; mount --bind /dev/$node $R/dev/$node; done
mkdir $R/dev/pts $R/dev/shm
mount -t devpts -o newinstance,ptmxmode=0666 devpts $R/dev/pts
ln -s pts/ptmx $R/dev/ptmx
mount -t proc proc $R/proc
mount --bind $R/proc/sys $R/proc/sys && mount -o remount,bind,ro $R/proc/sys
mount --bind /sys $R/sys && mount -o remount,bind,ro $R/sys
mount -t tmpfs -o mode=755 cgroup $R/sys/fs/cgroup
if [ -n "$CGROUP_V1" ]; then
    mkdir $R/sys/fs/cgroup/systemd $R/sys/fs/cgroup/unified
    mount -t cgroup -o none,name=systemd cgroup $R/sys/fs/cgroup/systemd
    mount -t cgroup2 cgroup2 $R/sys/fs/cgroup/unified
else
    umount $R/sys/fs/cgroup && mount -t cgroup2 cgroup2 $R/sys/fs/cgroup
fi
mount -t tmpfs -o mode=755 run $R/run
mount -t tmpfs -o mode=1777 tmp $R/tmp
# After /tmp and /run are fresh: a shared path may live below them (a clone in /tmp).
for path in "$@"; do mkdir -p "$R$path"; mount --bind "$path" "$R$path"; mount -o remount,bind,ro "$R$path"; done
echo "$WRITABLE" | while read -r inside host; do [ -z "$host" ] || { mkdir -p "$R$inside"; mount --bind "$host" "$R$inside"; }; done
# The one unit that would act on the host's kernel from here.
ln -sf /dev/null $R/etc/systemd/system/systemd-modules-load.service
mkdir -p $R/.oldroot
cd $R
pivot_root . .oldroot
umount -l /.oldroot
# What systemd does itself when booted by the kernel, not in a container: services'
# mounts (credentials) reach the rest of the system through shared propagation.
mount --make-rshared /
exec env -i container=vaultdrop-test /lib/systemd/systemd --unit=basic.target
"""


class BootedSystem:
    """systemd as PID 1 in its own namespaces; `.run()` executes inside it."""

    def __init__(self, workdir: Path, shared: list[Path], writable: dict[str, Path] | None = None) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        for host in (writable or {}).values():
            host.mkdir(parents=True, exist_ok=True)
        self.console = workdir.with_name("console.log")
        self._cgroups = self._make_cgroups(f"vaultdrop-test-{uuid.uuid4().hex[:8]}")
        enter_cgroups = "".join(f"echo $$ > {c}/cgroup.procs; " for c in self._cgroups)
        v1 = "1" if (CGROUP / "systemd").is_dir() and (CGROUP / "unified").is_dir() else ""
        with self.console.open("wb") as console:
            self.unshare = subprocess.Popen(
                ["sh", "-c", f'{enter_cgroups}exec unshare --pid --fork --mount --mount-proc --cgroup '
                             f'--propagation private sh -c "$0" boot "$@"', BOOT, str(workdir), *map(str, shared)],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CGROUP_V1": v1,
                     "WRITABLE": "\n".join(f"{inside} {host}" for inside, host in (writable or {}).items())},
            )
        self.pid = wait_for(self._init_pid, timeout=30, what="systemd as PID 1 of the namespace")
        if self.pid < 0:
            self._remove_cgroups()
            raise AssertionError(f"booting failed:\n{self.console.read_text(errors='replace')}")
        self.root = Path(f"/proc/{self.pid}/root")
        wait_for(lambda: self.run("systemctl", "is-system-running", check=False).stdout.strip()
                 in ("running", "degraded"), timeout=60, interval=0.2, what="boot finished")

    @staticmethod
    def _make_cgroups(name: str) -> list[Path]:
        """A fresh cgroup to become the namespace's root, so systemd's slices stay in it."""
        parents = [CGROUP / "systemd", CGROUP / "unified"] if (CGROUP / "systemd").is_dir() else [CGROUP]
        made = [parent / name for parent in parents if (parent / "cgroup.procs").exists()]
        for path in made:
            path.mkdir()
        return made

    def _remove_cgroups(self) -> None:
        for top in [c for c in self._cgroups if c.exists()]:
            for path in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                path.rmdir()
            top.rmdir()

    def _init_pid(self) -> int:
        """Host PID of the namespace's PID 1 once it is systemd (-1: setting up failed)."""
        if self.unshare.poll() is not None:
            return -1
        try:
            children = Path(f"/proc/{self.unshare.pid}/task/{self.unshare.pid}/children").read_text().split()
            if children and os.readlink(f"/proc/{children[0]}/exe").endswith("/systemd"):
                return int(children[0])
        except OSError:
            pass
        return 0

    def run(self, *command: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-p", *command],
                                capture_output=True, text=True, timeout=timeout)
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(command)} exited {result.returncode}:\n{result.stdout}{result.stderr}")
        return result

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *matches: str) -> list[dict[str, Any]]:
        out = self.run("journalctl", "-o", "json", "--no-pager", *matches).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def poweroff(self) -> int:
        self.run("systemctl", "poweroff", check=False)
        status = self.unshare.wait(60)
        self._remove_cgroups()
        return status

    def kill(self) -> None:
        """After a failure: killing PID 1 ends every process of the namespace."""
        if self.unshare.poll() is None:
            os.kill(self.pid, 9)
            self.unshare.wait(30)
        self._remove_cgroups()


def require_namespaces() -> None:
    """Skip, naming the reason, where this machine forbids booting systemd in namespaces."""
    if "overlay" not in Path("/proc/filesystems").read_text():
        pytest.skip("the kernel has no overlay filesystem")
    probe = subprocess.run(["unshare", "--pid", "--fork", "--mount", "--cgroup", "true"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare --pid --mount --cgroup is not allowed here: {probe.stderr.strip()}")


def shared_paths() -> list[Path]:
    """The checkout, the venv and a Python built outside /usr (pyenv), bound read-only into
    the system: ExecStart runs from them."""
    found: list[Path] = []
    for path in (Path(__file__).resolve().parents[2], Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve()):
        if not path.is_relative_to("/usr") and not any(path.is_relative_to(p) for p in found):
            found.append(path)
    return found
