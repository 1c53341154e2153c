"""A throwaway PostgreSQL 15 cluster from Debian's packages, for tests.

initdb in a temporary directory, run as an unprivileged user (PostgreSQL refuses root),
listening on a free loopback port with password (scram) authentication, so the journal's
password handling is exercised for real. Nothing here touches Debian's own `main` cluster.
With `tls`, it accepts TCP connections only over TLS, with a certificate for 127.0.0.1
signed by a throwaway CA (openssl), whose certificate is `ca_file`.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "vaultdrop"
UNPRIVILEGED = "nobody"
PR_SET_PDEATHSIG = 1


def available() -> bool:
    return (BIN / "initdb").exists()


def _as_unprivileged() -> dict[str, Any]:
    """Popen arguments that drop root (PostgreSQL refuses to run as root); nothing otherwise."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam(UNPRIVILEGED)
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _die_with_parent() -> None:
    """A test run killed from outside (a timeout, Ctrl-C twice) must not leave a server
    behind: the kernel sends the postmaster SIGINT (fast shutdown) when we die. Runs after
    the uid change, which would clear it."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Cluster:
    root: Path
    port: int
    password: str
    ca_file: Path | None = None  # with tls: the CA that signed the server's certificate
    _server: subprocess.Popen[bytes] | None = None

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str = "postgres") -> str:
        """Without the password: the journal reads it from password_file, like production."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def url_with_password(self, database: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def _command(self, *argv: str) -> list[str]:
        return [str(BIN / argv[0]), *argv[1:]]

    def _run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(self._command(*argv), check=True, capture_output=True, text=True, timeout=60,
                              **_as_unprivileged())

    def start(self) -> None:
        """The postmaster as our own child (not pg_ctl's daemon), so stop() reaps it."""
        log = open(self.root / "log", "ab")  # noqa: SIM115 - the child keeps it
        self._server = subprocess.Popen(
            self._command("postgres", "-D", str(self.data), "-p", str(self.port), "-k", str(self.root),
                          "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=200",
                          *(("-c", "ssl=on", "-c", f"ssl_cert_file={self.root / 'server.crt'}",
                             "-c", f"ssl_key_file={self.root / 'server.key'}") if self.ca_file else ())),
            stdout=log, stderr=log, start_new_session=True, preexec_fn=_die_with_parent, **_as_unprivileged(),
        )
        log.close()
        deadline = time.monotonic() + 30
        while self._run_status("pg_isready", "-h", str(self.root), "-p", str(self.port)) != 0:
            if self._server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start: {(self.root / 'log').read_text()[-2000:]}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): sessions are cut, committed work is kept."""
        assert self._server is not None, "not started"
        self._server.send_signal(signal.SIGINT)
        self._server.wait(timeout=30)

    def _run_status(self, *argv: str) -> int:
        return subprocess.run(self._command(*argv), capture_output=True, timeout=60, **_as_unprivileged()).returncode

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None

    def processes(self) -> list[psutil.Process]:
        """The postmaster and its backends, for the leak check."""
        if self._server is None or not self.running:
            return []
        server = psutil.Process(self._server.pid)
        return [server, *server.children(recursive=True)]

    def sql(self, statement: str) -> None:
        self._run("psql", "-h", str(self.root), "-p", str(self.port), "-U", SUPERUSER, "-d", "postgres",
                  "-v", "ON_ERROR_STOP=1", "-c", statement)

    @contextmanager
    def database(self, name: str) -> Iterator[str]:
        """A fresh database; its URL (without password) while it exists."""
        self.sql(f'CREATE DATABASE "{name}"')
        try:
            yield self.url(name)
        finally:
            self.sql(f'DROP DATABASE "{name}" WITH (FORCE)')


def _make_certificates(root: Path) -> Path:
    """A CA and the server's key and certificate for 127.0.0.1 (as libpq's verify-full
    checks it: an IP subjectAltName); the CA certificate's path."""
    def openssl(*argv: str) -> None:
        subprocess.run(["openssl", *argv], cwd=root, check=True, capture_output=True, timeout=60)

    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=vaultdrop test CA")
    openssl("req", "-new", *curve, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (root / "san.cnf").write_text("subjectAltName = IP:127.0.0.1\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "2", "-extfile", "san.cnf")
    (root / "server.key").chmod(0o600)  # PostgreSQL refuses a key others may read
    return root / "ca.crt"


@contextmanager
def running_cluster(tls: bool = False) -> Iterator[Cluster]:
    """initdb + start; stop and remove on exit, and fail loudly if the server outlived stop."""
    root = Path(tempfile.mkdtemp(prefix="vaultdrop-pg-"))
    cluster = Cluster(root, free_port(), secrets.token_hex(12), _make_certificates(root) if tls else None)
    pwfile = root / "pw"
    pwfile.write_text(cluster.password)
    if os.geteuid() == 0:
        user = pwd.getpwnam(UNPRIVILEGED)
        for path in (root, pwfile, *(root / name for name in ("server.key", "server.crt") if tls)):
            os.chown(path, user.pw_uid, user.pw_gid)
    try:
        cluster._run("initdb", "-D", str(cluster.data), "-U", SUPERUSER, f"--pwfile={pwfile}", "-E", "UTF8",
                     "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync")
        if tls:  # TCP only over TLS: a connection that succeeds was encrypted
            hba = cluster.data / "pg_hba.conf"
            hba.write_text("".join(f"hostssl{line[4:]}" if line.startswith("host ") else line
                                   for line in hba.read_text().splitlines(keepends=True)))
        cluster.start()
        try:
            yield cluster
        finally:
            processes = cluster.processes()
            if cluster.running:
                cluster.stop()
            leaked = [p.pid for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
            if leaked:
                raise RuntimeError(f"PostgreSQL processes {leaked} outlived the cluster")
    finally:
        shutil.rmtree(root, ignore_errors=True)
