"""`make run`, i.e. `vaultdrop run --sandbox`, as a terminal user meets it: Ctrl-C drains
as the banner promises, and a busy port is one line with the fix."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import httpx

from vaultdrop.errors import ConfigError
from vaultdrop.job import JobState
from vaultdrop.journal import Journal

from .harness import read_until, wait_for
from .test_daemon import write

SCRIPT = Path(sys.executable).with_name("vaultdrop")


def demo_jobs(demo: Path) -> list[JobState]:
    path = demo / "state" / "vaultdrop.db"
    if not path.exists():
        return []
    try:
        journal = Journal(path, readonly=True)
    except ConfigError:  # created, tables not yet: the daemon is starting
        return []
    try:
        return [job.state for job in journal.jobs()]
    finally:
        journal.close()


def test_ctrl_c_in_the_terminal_drains_before_the_sandbox_stops(tmp_path: Path) -> None:
    demo = tmp_path / "demo"
    # A terminal's Ctrl-C signals the whole foreground process group: so does this test.
    run = subprocess.Popen([str(SCRIPT), "run", "--sandbox", "--port", "0", "--demo-dir", str(demo)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        url = wait_for(lambda: (demo / "sandbox" / "ready-url").exists() and (demo / "sandbox" / "ready-url")
                       .read_text().strip(), what="demo sandbox")
        httpx.post(f"{url}/_sandbox/faults", json={"endpoint": "upload", "action": "late_video_id", "seconds": 3})
        write(demo / "drop" / "draining.mov", 10_000)
        wait_for(lambda: JobState.CONFIRMING in demo_jobs(demo), what="upload sent, video id pending")
        os.killpg(run.pid, signal.SIGINT)
        output, _ = run.communicate(timeout=60)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 0, output
    assert demo_jobs(demo) == [JobState.DONE], output
    assert "done: draining.mov" in output and "Traceback" not in output


def test_a_busy_port_is_one_line_with_the_fix(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([str(SCRIPT), "run", "--sandbox", "--port", str(port), "--demo-dir",
                                 str(tmp_path / "demo")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and f"port {port} is in use" in result.stderr and "make run PORT=" in result.stderr
    assert len(result.stderr.splitlines()) == 1, result.stderr


def test_the_banner_carries_the_flags_its_hints_need(tmp_path: Path) -> None:
    demo = tmp_path / "elsewhere"
    run = subprocess.Popen([str(SCRIPT), "run", "--sandbox", "--port", "0", "--demo-dir", str(demo)],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        banner = "".join(read_until(run, "ready:"))
        upload_hint = banner.split("upload a file:")[1].split("\n")[0].split()
        write(tmp_path / "one.mov", 20_000)
        upload = subprocess.run([str(SCRIPT), *upload_hint[1:-1], str(tmp_path / "one.mov")],
                                capture_output=True, text=True, timeout=60)
        url = (demo / "sandbox" / "ready-url").read_text().strip()
        stored = httpx.get(f"{url}/_sandbox/videos").json()
    finally:
        run.send_signal(signal.SIGINT)
        run.communicate(timeout=60)
    assert f"vaultdrop status --sandbox --demo-dir {demo}" in banner
    assert upload.returncode == 0 and [v["filename"] for v in stored] == ["one.mov"], "into the demo's own sandbox"
    hint = banner.split("watch progress:")[1].split("\n")[0].strip().split()
    status = subprocess.run([str(SCRIPT), *hint[1:]], capture_output=True, text=True, timeout=60)
    assert status.returncode == 0 and "jobs:" in status.stdout, status


def test_a_failed_demo_run_leaves_no_sandbox_behind(tmp_path: Path) -> None:
    """A bad flag (refused before anything starts) or VAULTDROP_… variable (refused once
    the sandbox runs): the sandbox stops too, and the next `make run` finds the port free."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    for flags, env, status in ((["--metrics-addr", "nowhere"], {}, 2), ([], {"VAULTDROP_VAULT__TIMEOUT": "soon"}, 78)):
        result = subprocess.run([str(SCRIPT), "run", "--sandbox", "--port", str(port), "--demo-dir",
                                 str(tmp_path / "demo"), *flags], capture_output=True, text=True, timeout=60,
                                env={**os.environ, **env})
        assert result.returncode == status and "Traceback" not in result.stderr, result.stderr
        with socket.socket() as again:
            again.bind(("127.0.0.1", port))  # EADDRINUSE if the sandbox were still listening
