"""A real systemd-journald in a private mount namespace (its own tmpfs on /run), and a
journal stream to give a process the stderr a systemd service gets."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ..integration.harness import wait_for

JOURNALD = Path("/lib/systemd/systemd-journald")


def require_root_and(*tools: str) -> None:
    """Skip, naming the reason, where this machine cannot run systemd for real."""
    if os.geteuid() != 0:
        pytest.skip("needs root: systemd-journald and systemd as PID 1 only run as root")
    missing = [tool for tool in tools if not (Path(tool).exists() or shutil.which(tool))]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (make test installs the Debian package systemd)")


def journal_json(directory: Path, *matches: str) -> list[dict[str, Any]]:
    """`journalctl -o json` over a journal directory: what an operator's filters return."""
    out = subprocess.run(["journalctl", "--directory", str(directory), "-o", "json", "--no-pager", *matches],
                         capture_output=True, text=True, check=True).stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


class Journald:
    """systemd-journald serving /run/systemd/journal/* inside its own mount namespace."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             f"mount -t tmpfs -o mode=755 journald-run /run && exec {JOURNALD}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        self.root = Path(f"/proc/{self.process.pid}/root")
        ready = wait_for(lambda: self.process.poll() is not None or (self.root / "run/systemd/journal/socket").exists(),
                         what="systemd-journald up")
        if self.process.poll() is not None:
            assert self.process.stderr is not None
            pytest.skip(f"cannot run systemd-journald in a mount namespace here: {self.process.stderr.read()!r}")
        assert ready

    @property
    def directory(self) -> Path:
        return self.root / "run/log/journal"

    def enter(self) -> list[str]:
        """Prefix that runs a command in journald's namespace (where its sockets are)."""
        return ["nsenter", "-t", str(self.process.pid), "-m"]

    def stream(self, identifier: str) -> tuple[socket.socket, str]:
        """A stdout stream connection, as systemd gives a service, and its JOURNAL_STREAM."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self.root / "run/systemd/journal/stdout"))
        # identifier, unit, priority, level prefix, forward to syslog, kmsg, console
        sock.sendall(f"{identifier}\n\n6\n1\n0\n0\n0\n".encode())
        sock.shutdown(socket.SHUT_RD)
        info = os.fstat(sock.fileno())
        return sock, f"{info.st_dev}:{info.st_ino}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)
