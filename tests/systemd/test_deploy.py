"""The deploy/ files as shipped: hardening score and message catalog."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from vaultdrop.logs import MESSAGE_IDS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SECURITY_TARGET = 1.5


def require(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} is not installed (make test installs the Debian package systemd)")


def test_unit_exposure_is_at_most_the_target() -> None:
    require("systemd-analyze")
    out = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                          str(DEPLOY / "vaultdrop.service")], capture_output=True, text=True).stdout
    score = float(re.search(r"Overall exposure level for vaultdrop\.service: ([\d.]+)", out)[1])
    print(f"systemd-analyze security: {score}")
    assert score <= SECURITY_TARGET, out


def test_catalog_explains_every_message_id(tmp_path: Path) -> None:
    """`journalctl --update-catalog` accepts the file and knows exactly logs.MESSAGE_IDS."""
    require("journalctl")
    catalog_dir = tmp_path / "usr/lib/systemd/catalog"
    catalog_dir.mkdir(parents=True)
    shutil.copy(DEPLOY / "vaultdrop.catalog", catalog_dir)
    subprocess.run(["journalctl", f"--root={tmp_path}", "--update-catalog"], check=True, capture_output=True)
    listed = subprocess.run(["journalctl", f"--root={tmp_path}", "--list-catalog"], check=True,
                            capture_output=True, text=True).stdout
    assert {line.split()[0] for line in listed.splitlines()} == set(MESSAGE_IDS.values())


def test_metrics_drop_in_keeps_the_exposure_and_restricts_addresses(tmp_path: Path) -> None:
    """The unit plus the documented IPAddressAllow= drop-in (a second [Service] section
    reads exactly like a drop-in) scores no worse than the unit alone."""
    require("systemd-analyze")
    unit = tmp_path / "vaultdrop.service"
    unit.write_text((DEPLOY / "vaultdrop.service").read_text() + (DEPLOY / "vaultdrop-metrics.conf").read_text())
    out = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                         capture_output=True, text=True).stdout
    score = float(re.search(r"Overall exposure level for vaultdrop\.service: ([\d.]+)", out)[1])
    assert score <= SECURITY_TARGET, out
    assert "does not define an IP address allow list" not in out, out


def test_onfailure_example_unit_verifies(tmp_path: Path) -> None:
    require("systemd-analyze")
    shutil.copy(DEPLOY / "vaultdrop-onfailure@.service", tmp_path)
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "vaultdrop-onfailure@vaultdrop.service.service")],
                            capture_output=True, text=True)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_alert_rules_pass_promtool_check_and_their_tests() -> None:
    require("promtool")
    rules = DEPLOY / "prometheus"
    check = subprocess.run(["promtool", "check", "rules", "vaultdrop-alerts.yml"], cwd=rules,
                           capture_output=True, text=True)
    assert check.returncode == 0 and "SUCCESS: 8 rules found" in check.stdout, check.stdout + check.stderr
    tested = subprocess.run(["promtool", "test", "rules", "vaultdrop-alerts.test.yml"], cwd=rules,
                            capture_output=True, text=True)
    assert tested.returncode == 0 and "SUCCESS" in tested.stdout, tested.stdout + tested.stderr


def test_alert_rules_use_only_metrics_the_daemon_exports(tmp_path: Path) -> None:
    """A renamed metric must not leave a rule silently watching nothing."""
    from prometheus_client import CollectorRegistry

    from vaultdrop.journal import Journal
    from vaultdrop.metrics import JournalCollector, MetricsRecorder

    registry = CollectorRegistry()
    MetricsRecorder(registry).watching("/drop")
    journal = Journal(tmp_path / "vaultdrop.db")
    registry.register(JournalCollector(journal))
    families = list(registry.collect())
    journal.close()
    exported = {f.name for f in families} | {sample.name for f in families for sample in f.samples}
    used = set(re.findall(r"\b(vaultdrop_[a-z_]+)", (DEPLOY / "prometheus" / "vaultdrop-alerts.yml").read_text()))
    assert used and used <= exported, used - exported


def test_postgresql_drop_in_waits_for_the_shared_mounts(tmp_path: Path) -> None:
    """The several-hosts drop-in parses with the unit, and systemd mounts every shared
    path the service writes (ReadWritePaths=) before it starts vaultdrop."""
    require("systemd-analyze")
    dropin = (DEPLOY / "vaultdrop-postgresql.conf").read_text()
    unit = tmp_path / "vaultdrop.service"
    unit.write_text((DEPLOY / "vaultdrop.service").read_text() + dropin)
    out = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                         capture_output=True, text=True).stdout
    assert float(re.search(r"Overall exposure level for vaultdrop\.service: ([\d.]+)", out)[1]) <= SECURITY_TARGET
    setting = {key: value.split() for key, _, value in
               (line.partition("=") for line in dropin.splitlines() if "=" in line and not line.startswith("#"))}
    assert setting["RequiresMountsFor"] and set(setting["ReadWritePaths"]) <= set(setting["RequiresMountsFor"])
