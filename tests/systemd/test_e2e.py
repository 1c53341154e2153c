"""vaultdrop as an operator runs it: the deploy/ files installed into a real systemd."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vaultdrop.job import JobState
from vaultdrop.logs import MESSAGE_IDS
from vaultdrop.sandbox.launcher import SandboxProcess

from ..integration.harness import DaemonRunner, wait_for
from ..integration.test_daemon import write
from .container import BootedSystem, require_namespaces, shared_paths
from .journald import require_root_and

UNIT_STARTED = "39f53479d3a045ac8e11786248231fbf"  # systemd's own "Started <unit>" MESSAGE_ID


@pytest.fixture
def system(tmp_path: Path) -> Iterator[BootedSystem]:
    require_root_and("/lib/systemd/systemd", "systemctl", "journalctl", "unshare", "nsenter", "/usr/sbin/pivot_root")
    require_namespaces()
    booted = BootedSystem(tmp_path / "system", shared_paths(), writable={"/var/lib/vaultdrop": tmp_path / "state"})
    yield booted
    if booted.unshare.poll() is None:
        print(booted.run("journalctl", "--no-pager", "-n", "300", check=False).stdout)
    booted.kill()


def install(system: BootedSystem, sandbox: SandboxProcess, state: Path) -> DaemonRunner:
    """deploy/install.sh inside the system, the test's venv as /opt/vaultdrop, a config
    pointing at the sandbox with the password as a credential file."""
    root = system.root
    repo = shared_paths()[0]
    (root / "opt/vaultdrop").symlink_to(Path(sys.prefix).resolve())
    system.run(str(repo / "deploy/install.sh"), "--no-venv")
    password = root / "etc/vaultdrop/vault-password"
    password.write_text(sandbox.password + "\n")
    password.chmod(0o600)
    dropin = ["[Service]", "WatchdogSec=5s", "RestartSec=1s", "Environment=VAULTDROP_TEST_HANG_ON_SIGUSR2=1",
              *reach_the_checkout()]
    (root / "etc/systemd/system/vaultdrop.service.d").mkdir(parents=True)
    (root / "etc/systemd/system/vaultdrop.service.d/test.conf").write_text("\n".join(dropin) + "\n")
    system.run("systemctl", "daemon-reload")

    runner = DaemonRunner(root / "srv/vaultdrop", sandbox)
    runner.state = state
    runner.config_path = root / "etc/vaultdrop/vaultdrop.toml"
    runner.daemon.update(state_dir="/var/lib/vaultdrop", concurrency=1, small_file_size=0,
                         bandwidth_limit=500_000, drain_timeout=30)
    del runner.vault["password"]
    runner.folder.update(path="/srv/vaultdrop/drop", archive_dir="/srv/vaultdrop/archive",
                         failed_dir="/srv/vaultdrop/failed")
    write_service_config(system, runner)
    return runner


def write_service_config(system: BootedSystem, runner: DaemonRunner) -> None:
    """As an operator installs it, root:vaultdrop 0640: the service reads it as vaultdrop."""
    runner.write_config()
    system.run("chown", "root:vaultdrop", "/etc/vaultdrop/vaultdrop.toml")
    system.run("chmod", "0640", "/etc/vaultdrop/vaultdrop.toml")


def reach_the_checkout() -> list[str]:
    """Service settings that let another user run this checkout's code: the clone and its
    venv may live where a unit hides things (/root, a private /tmp), and the code under
    test may be a PYTHONPATH away from the venv's own (a worktree)."""
    settings = ["BindReadOnlyPaths=" + " ".join(map(str, shared_paths()))]
    if any(p.is_relative_to(home) for p in shared_paths() for home in (Path("/home"), Path("/root"))):
        settings.append("ProtectHome=tmpfs")
    if os.environ.get("PYTHONPATH"):
        settings.append(f"Environment=PYTHONPATH={os.environ['PYTHONPATH']}")
    return settings


def as_group_member(system: BootedSystem, *args: str) -> str:
    """`vaultdrop ARGS` from the PATH as a member of the vaultdrop group: neither root nor
    the service's user, and no credential; its output."""
    properties = [f"--property={setting}" for setting in reach_the_checkout()]
    result = system.run("systemd-run", "--wait", "--pipe", "--quiet", "--uid=nobody", "--gid=nogroup",
                        "--property=SupplementaryGroups=vaultdrop", *properties, "vaultdrop", *args, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def unit_journal(system: BootedSystem, *matches: str) -> list[dict[str, Any]]:
    """`journalctl -u vaultdrop`: the service's lines and systemd's lines about it."""
    return system.journal("-u", "vaultdrop", *matches)


def test_lifecycle_under_systemd(system: BootedSystem, sandbox: SandboxProcess, tmp_path: Path) -> None:
    runner = install(system, sandbox, tmp_path / "state")
    root = system.root
    completion = root / "usr/share/bash-completion/completions/vaultdrop"  # where bash and man look
    assert "complete -o filenames -F _vaultdrop vaultdrop" in completion.read_text()
    assert (root / "usr/local/share/man/man1/vaultdrop.1.gz").stat().st_size > 0

    # start: `systemctl start` returns once vaultdrop said READY=1, with its STATUS=
    system.run("systemctl", "start", "vaultdrop")
    unit = system.show("vaultdrop", "ActiveState", "MainPID", "StatusText", "User")
    assert unit["ActiveState"] == "active" and unit["User"] == "vaultdrop"
    assert unit["StatusText"] == "0 uploading, 0 queued, 0 done, 0 failed"
    ids = [e.get("MESSAGE_ID") for e in unit_journal(system)]
    assert ids.index(MESSAGE_IDS["daemon_ready"]) < ids.index(UNIT_STARTED), "active only after READY"

    # a dropped file reaches the sandbox vault and is archived
    digest = write(runner.drop / "first.mov", 200_000)
    first = runner.wait_state("first.mov", JobState.DONE)
    assert [v["sha256"] for v in runner.uploads_of("first.mov")] == [digest]
    assert (runner.archive / "first.mov").exists()

    # a member of the vaultdrop group reads the live journal (its -shm is the service's)
    assert as_group_member(system, "status").startswith("daemon: running since")
    assert "first.mov" in as_group_member(system, "jobs")

    # reload: a new folder is watched by the same process
    drop2 = root / "srv/vaultdrop/drop2"
    drop2.mkdir()
    user = next(line.split(":") for line in (root / "etc/passwd").read_text().splitlines()
                if line.startswith("vaultdrop:"))
    os.chown(drop2, int(user[2]), int(user[3]))
    with runner.config_path.open("a") as config:
        config.write('\n[[folders]]\npath = "/srv/vaultdrop/drop2"\nsettle = 0.5\n')
    system.run("systemctl", "reload", "vaultdrop")
    digest2 = write(drop2 / "second.mov", 50_000)
    runner.wait_state("second.mov", JobState.DONE)
    assert [v["sha256"] for v in runner.uploads_of("second.mov")] == [digest2]
    assert system.show("vaultdrop", "MainPID")["MainPID"] == unit["MainPID"], "reloaded, not restarted"
    assert unit_journal(system, f"MESSAGE_ID={MESSAGE_IDS['config_reloaded']}")

    # a hung event loop stops the watchdog pings: systemd kills and restarts vaultdrop
    system.run("systemctl", "kill", "--kill-who=main", "--signal=SIGUSR2", "vaultdrop")
    restarted = wait_for(lambda: (lambda u: u["NRestarts"] == "1" and u["ActiveState"] == "active" and u)(
        system.show("vaultdrop", "NRestarts", "ActiveState", "MainPID")), timeout=60, interval=0.5,
        what="watchdog restart")
    assert restarted["MainPID"] != unit["MainPID"]
    assert any("Watchdog timeout" in e["MESSAGE"] for e in unit_journal(system))

    # stop drains: the running upload finishes, the queued file waits in the journal
    big = write(runner.drop / "big.mov", 4_000_000)  # 8 s at bandwidth_limit
    runner.wait_state("big.mov", JobState.UPLOADING)
    write(runner.drop / "later.mov", 10_000)
    runner.wait_state("later.mov", JobState.QUEUED)
    system.run("systemctl", "stop", "vaultdrop")
    stopped = system.show("vaultdrop", "ActiveState", "Result")
    assert stopped == {"ActiveState": "inactive", "Result": "success"}
    # ... and the journal of a stopped service, whose last close removed the -shm file that
    # such a reader cannot create (before this test reads it as root, which makes one again)
    assert not (tmp_path / "state/vaultdrop.db-shm").exists()
    assert "daemon: not running" in as_group_member(system, "status")
    assert "later.mov" in as_group_member(system, "jobs", "--state", "queued")
    assert json.loads(as_group_member(system, "jobs", "show", str(first.id), "--json"))["video_id"] == first.video_id
    assert runner.job_states() == {"first.mov": JobState.DONE, "second.mov": JobState.DONE,
                                   "big.mov": JobState.DONE, "later.mov": JobState.QUEUED}
    assert [v["sha256"] for v in runner.uploads_of("big.mov")] == [big] and runner.uploads_of("later.mov") == []
    assert any(e["MESSAGE"].startswith("stopping: waiting up to 30 s") for e in unit_journal(system))

    # the operator's view: structured fields, and `journalctl -x` explains key events
    lines = unit_journal(system, f"JOB_ID={first.id}")
    assert [e["STAGE"] for e in lines] == ["queued", "uploading", "confirming", "finishing", "done"]
    assert all(e["SYSLOG_IDENTIFIER"] == "vaultdrop" and e["FILE"] == "first.mov" for e in lines)
    assert lines[-1]["VIDEO_ID"] == first.video_id and lines[-1]["MESSAGE_ID"] == MESSAGE_IDS["job_done"]
    explained = system.run("journalctl", "-u", "vaultdrop", "-x", "--no-pager",
                           f"MESSAGE_ID={MESSAGE_IDS['job_done']}", f"JOB_ID={first.id}").stdout
    assert f"The file first.mov from /srv/vaultdrop/drop is in the vault as video {first.video_id}" in explained

    # a configuration error: exit 78, and no restart loop
    runner.vault["max_attempts"] = 0
    write_service_config(system, runner)
    restarts = system.show("vaultdrop", "NRestarts")["NRestarts"]
    assert system.run("systemctl", "start", "vaultdrop", check=False).returncode != 0
    failed = {"ActiveState": "failed", "ExecMainStatus": "78", "NRestarts": restarts}
    assert system.show("vaultdrop", *failed) == failed
    time.sleep(3)  # RestartSec=1s: a restart loop would have begun by now
    assert system.show("vaultdrop", *failed) == failed

    system.poweroff()
