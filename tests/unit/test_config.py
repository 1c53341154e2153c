"""Configuration loading against real files: TOML, env overrides, secrets, every error path."""

from __future__ import annotations

import logging
import re
import textwrap
from pathlib import Path

import pytest

from vaultdrop.config import (
    DEFAULT_CONFIG_PATH,
    DaemonSettings,
    FolderSettings,
    MetricsSettings,
    NotifySettings,
    S3Settings,
    ScaleEngineSettings,
    VaultSettings,
    load_config,
    settings_from_dict,
)
from vaultdrop.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "config.example.toml"
SECRET = "hunter2-Sup3rS3cret"
ENV = {"VAULTDROP_VAULT__PASSWORD": SECRET}


@pytest.fixture
def drop(tmp_path: Path) -> Path:
    path = tmp_path / "drop"
    path.mkdir()
    return path


def write(tmp_path: Path, body: str, name: str = "vaultdrop.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def minimal(drop: Path, vault: str = 'password = "x"', folder: str = "", extra: str = "") -> str:
    return f'[vault]\nuser = "bob"\n{vault}\n\n[[folders]]\npath = "{drop}"\n{folder}\n{extra}\n'


def config_error(path: Path, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ or {})
    return str(info.value)


# --- the example ---------------------------------------------------------------------------


def example_in(tmp_path: Path) -> str:
    (tmp_path / "drop").mkdir()
    return EXAMPLE.read_text(encoding="utf-8").replace("/srv/vaultdrop", str(tmp_path))


def test_example_loads(tmp_path: Path) -> None:
    settings = load_config(write(tmp_path, example_in(tmp_path)), ENV)

    assert settings.source == str(tmp_path / "vaultdrop.toml")
    assert settings.daemon == DaemonSettings()
    assert settings.vault.user == "ingest"
    assert settings.vault.confirm_timeout == 600.0
    [folder] = settings.folders
    assert folder.path == tmp_path / "drop"
    assert folder.after_upload == "archive"
    assert folder.archive_dir == tmp_path / "archive"
    assert folder.s3 is None
    assert settings.scaleengine is None


def test_example_commented_sections_load_once_uncommented(tmp_path: Path) -> None:
    text = example_in(tmp_path)
    head, marker, tail = text.partition("# [[folders]]")
    tail = re.sub(r"^# (\[|\w+ = )", r"\1", marker + tail, flags=re.MULTILINE)
    (tmp_path / "drop-s3").mkdir()

    settings = load_config(
        write(tmp_path, head + tail), ENV | {"VAULTDROP_SCALEENGINE__API_SECRET": "se-" + SECRET}
    )

    s3 = settings.folders[1].s3
    assert s3 is not None and s3.bucket == "my-bucket" and s3.metadata == {"origin": "vaultdrop"}
    assert settings.scaleengine is not None and settings.scaleengine.cdn == 158
    assert settings.scaleengine.status_timeout == 3600.0
    assert settings.metrics.listen == "127.0.0.1:9464"
    assert settings.notify.events == {"done", "failed"} and settings.notify.secret is None


@pytest.mark.parametrize(
    "model", [DaemonSettings, VaultSettings, FolderSettings, S3Settings, ScaleEngineSettings, MetricsSettings,
              NotifySettings]
)
def test_example_documents_every_key(model: type) -> None:
    text = EXAMPLE.read_text(encoding="utf-8")
    for name in model.model_fields:
        pattern = rf"^(# )*({name} = |\[[\w.]*\b{name}\]$)"
        assert re.search(pattern, text, re.MULTILINE), f"{model.__name__}.{name} undocumented"


def test_default_path() -> None:
    assert DEFAULT_CONFIG_PATH == Path("/etc/vaultdrop/vaultdrop.toml")


# --- environment overrides -----------------------------------------------------------------


def test_env_overrides_toml_with_nested_keys(tmp_path: Path, drop: Path) -> None:
    path = write(tmp_path, minimal(drop, extra="[daemon]\nconcurrency = 3"))
    settings = load_config(
        path,
        {"VAULTDROP_VAULT__USER": "alice", "VAULTDROP_DAEMON__CONCURRENCY": "4", "VAULTDROP_DAEMON__DRAIN_TIMEOUT": "2m"},
    )
    assert settings.vault.user == "alice"
    assert settings.daemon.concurrency == 4
    assert settings.daemon.drain_timeout == 120.0
    assert settings.vault.password.get_secret_value() == "x"


def test_env_unknown_nested_key_is_an_error(tmp_path: Path, drop: Path) -> None:
    path = write(tmp_path, minimal(drop))
    assert "daemon.colour: unknown key" in config_error(path, {"VAULTDROP_DAEMON__COLOUR": "red"})


def test_settings_from_dict_validates_and_applies_env(drop: Path) -> None:
    data = {"vault": {"user": "bob"}, "folders": [{"path": str(drop)}]}
    settings = settings_from_dict(data, environ=ENV | {"VAULTDROP_DAEMON__LOG_LEVEL": "debug"})
    assert settings.source == "<built-in>"
    assert settings.daemon.log_level == "debug"
    assert settings.secrets() == [SECRET]

    with pytest.raises(ConfigError, match=r"^sandbox: folders\[0\]\.recursive: "):
        settings_from_dict(
            {**data, "folders": [{"path": str(drop), "recursive": "maybe"}]}, source="sandbox", environ=ENV
        )


def test_defaults_and_journal_path(tmp_path: Path, drop: Path) -> None:
    settings = load_config(write(tmp_path, minimal(drop)), {})
    assert settings.daemon.journal_path == Path("/var/lib/vaultdrop/vaultdrop.db")
    assert settings.vault.base_url == "http://www.sesamevault.com"
    assert settings.daemon.small_file_size == 64 * 1024 * 1024
    assert settings.folders[0].include == ["*"]


# --- durations and sizes -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("30", 30.0), ("2.5", 2.5), ('"500ms"', 0.5), ('"5s"', 5.0), ('"10m"', 600.0), ('"2h"', 7200.0),
     ('"1d"', 86400.0), ('"1.5m"', 90.0), ('"45"', 45.0), ("0", 0.0)],
)
def test_durations(tmp_path: Path, drop: Path, raw: str, seconds: float) -> None:
    settings = load_config(write(tmp_path, minimal(drop, folder=f"settle = {raw}")), {})
    assert settings.folders[0].settle == seconds
    assert isinstance(settings.folders[0].settle, float)


@pytest.mark.parametrize(
    ("raw", "size"),
    [("1000", 1000), ('"512KiB"', 512 * 1024), ('"20MiB"', 20 * 1024**2), ('"1GiB"', 1024**3),
     ('"10MB"', 10_000_000), ('"1.5GB"', 1_500_000_000), ('"4096"', 4096)],
)
def test_sizes(tmp_path: Path, drop: Path, raw: str, size: int) -> None:
    settings = load_config(write(tmp_path, minimal(drop, extra=f"[daemon]\nbandwidth_limit = {raw}")), {})
    assert settings.daemon.bandwidth_limit == size
    assert type(settings.daemon.bandwidth_limit) is int


@pytest.mark.parametrize(
    ("daemon", "key"),
    [('drain_timeout = "5 parsecs"', "daemon.drain_timeout"), ('drain_timeout = "-5s"', "daemon.drain_timeout"),
     ("drain_timeout = -1", "daemon.drain_timeout"), ("drain_timeout = true", "daemon.drain_timeout"),
     ('small_file_size = "12 parsecs"', "daemon.small_file_size"), ("small_file_size = -1", "daemon.small_file_size"),
     ('bandwidth_limit = "fast"', "daemon.bandwidth_limit")],
)
def test_bad_durations_and_sizes(tmp_path: Path, drop: Path, daemon: str, key: str) -> None:
    path = write(tmp_path, minimal(drop, extra=f"[daemon]\n{daemon}"))
    message = config_error(path)
    assert f"{path}: {key}: " in message


# --- invalid configurations -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("vault", "folder", "extra", "key", "text"),
    [
        ('password = "x"\ncolour = "red"', "", "", "vault.colour", "unknown key"),
        ('password = "x"', "colour = 1", "", "folders[0].colour", "unknown key"),
        ('password = "x"', '[folders.s3]\nbucket = "b"\ncolour = 1', "[scaleengine]\napi_key = 'k'\napi_secret = 's'\ncdn = 1",
         "folders[0].s3.colour", "unknown key"),
        ('password = "x"', "", "[daemon]\nconcurrency = 'many'", "daemon.concurrency", "integer"),
        ('password = "x"', "", "[daemon]\nconcurrency = 65", "daemon.concurrency", "64"),
        ('password = "x"', 'include = "*.mp4"', "", "folders[0].include", "list"),
        ('password = "x"', 'watcher = "fanotify"', "", "folders[0].watcher", "inotify"),
        ('password = "x"\nbase_url = "ftp://vault"', "", "", "vault.base_url", "http"),
        ('password = "x"', 'after_upload = "archive"', "", "folders[0].archive_dir", "required"),
        ('password = "x"', '[folders.s3]\nbucket = "b"', "", "folders[0].s3", "[scaleengine]"),
        ('password = "x"', '[folders.s3]\nbucket = "b"\nsource = "{video_id}/{nope}"', "", "folders[0].s3.source", "'nope'"),
        ('password = "x"', '[folders.s3]\nbucket = "b"\ndestination = "{0}"', "", "folders[0].s3.destination", "unknown"),
        ('password = "x"', '[folders.s3]\nbucket = "b"\ndestination = "{stem"', "", "folders[0].s3.destination", "malformed"),
        ('password = "x"', "[folders.s3]\nacl = 'private'", "", "folders[0].s3.bucket", "missing required key"),
        ('password = "x"', "", "[scaleengine]\napi_key = 'k'\napi_secret = 's'", "scaleengine.cdn", "missing required key"),
    ],
)
def test_invalid_config(tmp_path: Path, drop: Path, vault: str, folder: str, extra: str, key: str, text: str) -> None:
    path = write(tmp_path, minimal(drop, vault=vault, folder=folder, extra=extra))
    message = config_error(path)
    line = next((line for line in message.splitlines() if line.startswith(f"{path}: {key}: ")), None)
    assert line is not None, message
    assert text in line


def test_unknown_top_level_key(tmp_path: Path, drop: Path) -> None:
    path = write(tmp_path, "colour = 1\n" + minimal(drop))
    assert f"{path}: colour: unknown key" in config_error(path)


def test_missing_required_key(tmp_path: Path, drop: Path) -> None:
    path = write(tmp_path, f'[vault]\npassword = "x"\n[[folders]]\npath = "{drop}"\n')
    assert f"{path}: vault.user: missing required key" in config_error(path)
    path = write(tmp_path, '[vault]\nuser = "bob"\npassword = "x"\n')
    assert f"{path}: folders: missing required key" in config_error(path)


def test_all_problems_are_reported_one_per_line(tmp_path: Path, drop: Path) -> None:
    path = write(tmp_path, minimal(drop, vault='password = "x"\ncolour = 1', extra="[daemon]\nconcurrency = 0"))
    lines = config_error(path).splitlines()
    assert len(lines) == 2 and all(line.startswith(f"{path}: ") for line in lines)


def test_missing_folder_is_valid_but_not_a_directory_is_not(tmp_path: Path) -> None:
    """A folder not there yet is a late mount (the daemon watches it once it exists)."""
    missing = tmp_path / "nowhere"
    assert load_config(write(tmp_path, minimal(missing))).folders[0].path == missing

    a_file = tmp_path / "file"
    a_file.write_text("")
    path = write(tmp_path, minimal(a_file))
    assert f"{path}: folders[0].path: not a directory: {a_file}" in config_error(path)


def test_archive_and_failed_dirs_must_be_outside_every_watched_folder(tmp_path: Path, drop: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    body = minimal(
        drop,
        folder=f'after_upload = "archive"\narchive_dir = "{drop}/archive"\n\n'
        f'[[folders]]\npath = "{other}"\nfailed_dir = "{drop}/sub/../failed"',
    )
    path = write(tmp_path, body)
    message = config_error(path)
    assert f"{path}: folders[0].archive_dir: must not be inside the watched folder {drop}" in message
    assert f"{path}: folders[1].failed_dir: must not be inside the watched folder {drop}" in message


def test_folders_must_not_overlap(tmp_path: Path, drop: Path) -> None:
    (drop / "sub").mkdir()
    path = write(tmp_path, minimal(drop, folder=f'\n[[folders]]\npath = "{drop}/sub"\n\n[[folders]]\npath = "{drop}/"'))
    message = config_error(path)
    assert f"{path}: folders[1].path: overlaps folders[0].path {drop}" in message
    assert f"{path}: folders[2].path: overlaps folders[0].path {drop}" in message


def test_state_dir_must_be_outside_watched_folders(tmp_path: Path, drop: Path) -> None:
    path = write(tmp_path, minimal(drop, extra=f'[daemon]\nstate_dir = "{drop}/.state"'))
    assert f"{path}: daemon.state_dir: must not be inside the watched folder {drop}" in config_error(path)


def test_toml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[vault]\nuser = "bob"\npassword "x"\n')
    message = config_error(path)
    assert message.startswith(f"{path}: TOML syntax error") and "line 3" in message


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.toml"
    assert config_error(path) == f"{path}: config file not found"


# --- secrets --------------------------------------------------------------------------------


def secret_file(tmp_path: Path, content: str, name: str = "pw", mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    path.chmod(mode)
    return path


def credentials(tmp_path: Path, **secrets: str) -> dict[str, str]:
    directory = tmp_path / "credentials"
    directory.mkdir()
    for name, value in secrets.items():
        secret_file(directory, value, name.replace("_", "-"), 0o400)
    return {"CREDENTIALS_DIRECTORY": str(directory)}


def test_secret_from_file_strips_trailing_newline(tmp_path: Path, drop: Path) -> None:
    pw = secret_file(tmp_path, SECRET + "\n")
    settings = load_config(write(tmp_path, minimal(drop, vault=f'password_file = "{pw}"')), {})
    assert settings.vault.password.get_secret_value() == SECRET
    assert not hasattr(settings.vault, "password_file")


def test_secret_file_from_env(tmp_path: Path, drop: Path) -> None:
    pw = secret_file(tmp_path, SECRET)
    settings = load_config(write(tmp_path, minimal(drop, vault="")), {"VAULTDROP_VAULT__PASSWORD_FILE": str(pw)})
    assert settings.vault.password.get_secret_value() == SECRET


def test_secrets_from_systemd_credentials(tmp_path: Path, drop: Path) -> None:
    environ = credentials(tmp_path, vault_password=SECRET, scaleengine_secret="se-" + SECRET)
    body = minimal(drop, vault="", extra="[scaleengine]\napi_key = 'k'\ncdn = 7")
    settings = load_config(write(tmp_path, body), environ)
    assert settings.vault.password.get_secret_value() == SECRET
    assert settings.scaleengine is not None
    assert settings.scaleengine.api_secret.get_secret_value() == "se-" + SECRET
    assert settings.secrets() == [SECRET, "se-" + SECRET]


@pytest.mark.parametrize(
    ("plain", "file", "expected"), [(True, True, "plain"), (False, True, "file"), (False, False, "credential")]
)
def test_secret_precedence(tmp_path: Path, drop: Path, plain: bool, file: bool, expected: str) -> None:
    environ = credentials(tmp_path, vault_password="credential")
    lines = []
    if plain:
        lines.append('password = "plain"')
    if file:
        lines.append(f'password_file = "{secret_file(tmp_path, "file")}"')
    settings = load_config(write(tmp_path, minimal(drop, vault="\n".join(lines))), environ)
    assert settings.vault.password.get_secret_value() == expected


def test_missing_secret_names_the_key(tmp_path: Path, drop: Path) -> None:
    path = write(tmp_path, minimal(drop, vault=""))
    message = config_error(path, {"CREDENTIALS_DIRECTORY": str(tmp_path)})
    assert f"{path}: vault.password: missing" in message
    assert "password_file" in message and "vault-password" in message


def test_unreadable_secret_file(tmp_path: Path, drop: Path) -> None:
    for target in (tmp_path / "absent", tmp_path):
        path = write(tmp_path, minimal(drop, vault=f'password_file = "{target}"'))
        assert f"{path}: vault.password_file: cannot read secret file {target}" in config_error(path)


def test_world_readable_secret_file_warns_without_the_secret(
    tmp_path: Path, drop: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pw = secret_file(tmp_path, SECRET, mode=0o644)
    with caplog.at_level(logging.WARNING, logger="vaultdrop.config"):
        load_config(write(tmp_path, minimal(drop, vault=f'password_file = "{pw}"')), {})
    [record] = [r for r in caplog.records if r.name == "vaultdrop.config"]
    assert record.levelno == logging.WARNING
    assert str(pw) in record.getMessage() and SECRET not in record.getMessage()


def test_private_secret_file_does_not_warn(tmp_path: Path, drop: Path, caplog: pytest.LogCaptureFixture) -> None:
    pw = secret_file(tmp_path, SECRET, mode=0o600)
    with caplog.at_level(logging.WARNING, logger="vaultdrop.config"):
        load_config(write(tmp_path, minimal(drop, vault=f'password_file = "{pw}"')), {})
    assert not caplog.records


def test_secret_never_shown(tmp_path: Path, drop: Path) -> None:
    settings = load_config(write(tmp_path, minimal(drop, vault=f'password = "{SECRET}"')), {})
    for text in (repr(settings), str(settings), repr(settings.vault), settings.model_dump_json()):
        assert SECRET not in text


@pytest.mark.parametrize(
    "vault",
    [
        f'password = ["{SECRET}"]',
        f'password = "{SECRET}"\ncolour = 1\nmax_attempts = 0',
        f'password = "{SECRET}"\nuser = ""',
        f'password = "{SECRET}"\npassword_file = 3',
    ],
)
def test_secret_never_in_error_messages(tmp_path: Path, drop: Path, vault: str) -> None:
    path = write(tmp_path, minimal(drop, vault=vault, extra="[daemon]\nconcurrency = 0"))
    message = config_error(path, {"VAULTDROP_SCALEENGINE__API_SECRET": SECRET})
    assert SECRET not in message
    assert f"{path}: " in message


def test_notify_secret_comes_from_the_credential_and_joins_the_redaction_list(tmp_path: Path, drop: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "notify-secret").write_text("hook-" + SECRET + "\n")
    (credentials / "notify-secret").chmod(0o600)
    config = write(tmp_path, minimal(drop, extra='[notify]\non_failed = "https://hooks.example.com/x"\n'))
    settings = load_config(config, {"CREDENTIALS_DIRECTORY": str(credentials)})
    assert settings.notify.secret is not None and "hook-" + SECRET in settings.secrets()
    assert load_config(config, {}).notify.secret is None, "the secret is optional"


def test_metrics_listen_must_be_host_and_port(tmp_path: Path, drop: Path) -> None:
    message = config_error(write(tmp_path, minimal(drop, extra='[metrics]\nlisten = "9464"\n')))
    assert "metrics.listen" in message and "host:port" in message
