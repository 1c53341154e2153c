"""Run the real `vaultdrop run` CLI as a subprocess against a real sandbox.

Real inotify, real SQLite, real loopback HTTP: the daemon is exactly what an operator
runs, driven with files and signals.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vaultdrop.errors import ConfigError
from vaultdrop.job import Job, JobState
from vaultdrop.journal import Journal
from vaultdrop.journal.postgres import PgJournal
from vaultdrop.sandbox.launcher import SandboxProcess


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")


def read_until(process: subprocess.Popen[str], text: str) -> list[str]:
    """Lines of a process's text stdout, up to and including the first containing `text`."""
    assert process.stdout is not None
    lines: list[str] = []
    while not lines or text not in lines[-1]:
        line = process.stdout.readline()
        assert line, f"exited before {text!r}:\n{''.join(lines)}"
        lines.append(line)
    return lines


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {toml_value(v)}' for k, v in value.items()) + "}"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _table(header: str, values: dict[str, Any]) -> str:
    return f"\n[{header}]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())


class DaemonRunner:
    """A config file plus start/stop/kill of `vaultdrop run` over it."""

    def __init__(self, tmp_path: Path, sandbox: SandboxProcess) -> None:
        self.base = tmp_path
        self.sandbox = sandbox
        self.drop = tmp_path / "drop"
        self.archive = tmp_path / "archive"
        self.failed = tmp_path / "failed"
        self.state = tmp_path / "state"
        for folder in (self.drop, self.archive, self.failed):
            folder.mkdir(exist_ok=True)
        self.config_path = tmp_path / "vaultdrop.toml"
        self.daemon: dict[str, Any] = {"state_dir": str(self.state), "concurrency": 2, "drain_timeout": 10,
                                       "rescan_interval": 0}
        self.vault: dict[str, Any] = {"base_url": sandbox.url, "user": sandbox.user,
                                      "password": sandbox.password, "poll_interval": 0.1, "timeout": 10,
                                      "max_attempts": 5, "backoff_base": 0.1, "backoff_max": 0.5,
                                      "confirm_timeout": 10}
        self.folder: dict[str, Any] = {"path": str(self.drop), "settle": 0.5, "after_upload": "archive",
                                       "archive_dir": str(self.archive), "failed_dir": str(self.failed)}
        self.s3: dict[str, Any] | None = None
        self.journal: dict[str, Any] | None = None  # [journal]: a PostgreSQL url, host_id, lease
        self.scaleengine: dict[str, Any] | None = None
        self.tables: dict[str, dict[str, Any]] = {}  # more top-level tables: [metrics], [notify]
        self.run_args: list[str] = []  # more `vaultdrop run` options
        self.command_prefix: list[str] = []  # e.g. setpriv, to run without root's permission override
        self.process: subprocess.Popen[bytes] | None = None
        self.lines: list[str] = []
        self.exit_status: int | None = None

    def write_config(self) -> Path:
        text = _table("daemon", self.daemon).lstrip("\n") + (_table("journal", self.journal) if self.journal else "")
        text += _table("vault", self.vault)
        if self.scaleengine is not None:
            text += _table("scaleengine", self.scaleengine)
        text += _table("[folders]", self.folder)
        if self.s3 is not None:
            text += _table("folders.s3", self.s3)
        for name, table in self.tables.items():
            text += _table(name, table)
        self.config_path.write_text(text)
        self.config_path.chmod(0o600)  # it holds the vault password, as an operator's would
        return self.config_path

    def start(self, wait_ready: bool = True) -> None:
        self.write_config()
        self.lines = []
        self.process = subprocess.Popen(
            [*self.command_prefix, sys.executable, "-m", "vaultdrop.cli", "run", "--config", str(self.config_path),
             *self.run_args],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            env={k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "JOURNAL_STREAM")},
        )
        threading.Thread(target=self._pump, args=(self.process,), daemon=True).start()
        if wait_ready:
            wait_for(lambda: self.saw("ready:") or self.process.poll() is not None, what="daemon ready")
            assert self.process.poll() is None, self.output()

    def _pump(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        for raw in process.stdout:
            self.lines.append(raw.decode("utf-8", "replace"))

    def saw(self, text: str) -> bool:
        return any(text in line for line in list(self.lines))

    def output(self) -> str:
        return "".join(self.lines)

    def wait_exit(self, timeout: float = 30) -> int:
        assert self.process is not None
        self.exit_status = self.process.wait(timeout)
        time.sleep(0.05)
        return self.exit_status

    def stop(self) -> int:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        return self.wait_exit()

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait()

    # -- what the operator would check -------------------------------------------------

    def jobs(self) -> list[Job]:
        if self.journal is not None:
            with self.shared_journal() as shared:
                return shared.jobs(limit=100_000)
        path = self.state / "vaultdrop.db"
        if not path.exists():
            return []
        try:
            journal = Journal(path, readonly=True)
        except ConfigError:  # the daemon has created the file but not its tables yet
            return []
        try:
            return journal.jobs(limit=100_000)
        finally:
            journal.close()

    @contextmanager
    def shared_journal(self) -> Iterator[PgJournal]:
        """The PostgreSQL journal the daemons share, opened like `vaultdrop status` would."""
        assert self.journal is not None
        journal = PgJournal(self.journal["url"], Path(self.journal["password_file"]).read_text().strip())
        try:
            yield journal
        finally:
            journal.close()

    def job_states(self) -> dict[str, JobState]:
        return {job.relpath: job.state for job in self.jobs()}

    def wait_state(self, relpath: str, state: JobState, timeout: float = 30) -> Job:
        def reached() -> Job | None:
            return next((j for j in self.jobs() if j.relpath == relpath and j.state is state), None)

        return wait_for(reached, timeout, interval=0.1, what=f"{relpath} {state}\n{self.output()}")

    def uploads_of(self, name: str) -> list[dict[str, Any]]:
        return [v for v in self.sandbox.videos() if v["filename"] == name]
