"""Configuration: one TOML file, `VAULTDROP_…` environment overrides, secrets kept out of both.

Every problem becomes one `ConfigError` naming the file and the dotted key, so an
operator can fix the whole file in one pass. Secrets are `SecretStr` end to end and are
never copied into an error message (pydantic's own messages would echo the input).
"""

from __future__ import annotations

import logging
import os
import re
import socket
import stat
import string
import tomllib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, NoReturn, TypeVar, get_args
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
    TomlConfigSettingsSource,
)
from pydantic_settings.sources.utils import parse_env_vars

from .errors import ConfigError

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "DEFAULT_TEMP_SUFFIXES",
    "DaemonSettings",
    "Duration",
    "FolderSettings",
    "MetricsSettings",
    "NotifySettings",
    "JournalSettings",
    "LocalSettings",
    "S3Settings",
    "ScaleEngineSettings",
    "Settings",
    "Size",
    "VaultSettings",
    "load_config",
    "load_local_config",
    "settings_from_dict",
]

DEFAULT_CONFIG_PATH = Path("/etc/vaultdrop/vaultdrop.toml")
BUILT_IN = "<built-in>"
# Names transfer tools give a file while writing it (rclone and aspera `.partial`, rclone's
# `.XXXXXXXX.partial`, aspera `.aspx`, FileZilla `.filepart`, browsers, Windows); rsync's
# `.name.XXXXXX` and every other dot-prefixed name are ignored anyway.
DEFAULT_TEMP_SUFFIXES = (".part", ".partial", ".aspx", ".tmp", ".crdownload", ".filepart")
TEMPLATE_NAMES = frozenset(
    {"relative_path", "filename", "stem", "ext", "video_id", "sha256", "date", "storage", "user"}
)

logger = logging.getLogger("vaultdrop.config")


@dataclass(frozen=True)
class _Origin:
    """What one load reads; settings sources and the secret resolver are classmethods, so
    they get it from a context variable rather than from arguments."""

    toml_file: Path | None
    environ: Mapping[str, str]


_ORIGIN: ContextVar[_Origin] = ContextVar("vaultdrop_config_origin")


def _origin() -> _Origin:
    return _ORIGIN.get(_Origin(None, os.environ))


def _invalid(kind: str, reason: str) -> PydanticCustomError:
    """pydantic only substitutes `{name}` placeholders, so the message is formatted here."""
    return PydanticCustomError(kind, "{reason}", {"reason": reason})


def _fail(problems: list[tuple[tuple[str | int, ...], str]]) -> NoReturn:
    """Raise errors at chosen keys: pydantic prefixes the location of a ValidationError
    raised inside a validator, so a cross-field check can point at the exact key."""
    raise ValidationError.from_exception_data(
        "Settings",
        [
            {"type": _invalid("vaultdrop", reason), "loc": loc, "input": None}
            for loc, reason in problems
        ],
    )


# --- reusable value types ----------------------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h|d)?")
_SECONDS_PER_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _parse_duration(value: Any) -> Any:
    """Numbers pass through (as seconds) so TOML `30` and env `"30"` mean the same."""
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match is None:
            raise _invalid(
                "duration", f"invalid duration {value!r}: use seconds, or a number followed by ms, s, m, h or d"
            )
        return float(match[1]) * _SECONDS_PER_UNIT[match[2] or "s"]
    if isinstance(value, bool):
        raise _invalid("duration", "invalid duration: expected seconds, not a boolean")
    return value


_BYTE_SIZE = TypeAdapter(ByteSize)


def _parse_size(value: Any) -> int:
    """pydantic's ByteSize does the unit parsing; this only gives it a clearer message."""
    if isinstance(value, bool):
        raise _invalid("size", "invalid size: expected bytes, not a boolean")
    try:
        return int(_BYTE_SIZE.validate_python(value))
    except ValidationError:
        raise _invalid(
            "size", f"invalid size {value!r}: use bytes, or a number with a unit such as KiB, MiB, GiB, MB or GB"
        ) from None


def _postgres_url(value: str) -> str:
    if urlsplit(value).scheme not in ("postgresql", "postgres"):
        raise _invalid("url", "must be a postgresql:// URL (leave it out for the SQLite journal in state_dir)")
    return value


def _http_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _invalid("url", f"must be an http:// or https:// URL, not {value!r}")
    return value


def listen_parts(value: str) -> tuple[str, int]:
    """"host:port" or "[v6]:port" split for bind(); raises ValueError on anything else."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected host:port, such as 127.0.0.1:9464, not {value!r}")
    return host.removeprefix("[").removesuffix("]"), int(port)


def _listen_address(value: str) -> str:
    if value:
        try:
            listen_parts(value)
        except ValueError as exc:
            raise _invalid("listen", str(exc)) from None
    return value


def _resolved(path: Path) -> Path:
    """Absolute and symlink-free, so nesting checks compare what the kernel will see."""
    return path.resolve()


def _not_a_file(path: Path) -> Path:
    """A folder that does not exist yet (a mount that comes up after the daemon) is
    watched once it does (intake/folders.py); one that can never be a folder is refused."""
    if path.exists() and not path.is_dir():
        raise _invalid("path", f"not a directory: {path}")
    return path


def _template(value: str) -> str:
    """Catch template typos at startup rather than at the first upload."""
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
    except ValueError as exc:
        raise _invalid("template", f"malformed template: {exc}") from None
    unknown = [name or "{}" for name in names if name not in TEMPLATE_NAMES]
    if unknown:
        raise _invalid(
            "template",
            f"unknown template name {', '.join(map(repr, unknown))}; allowed: {', '.join(sorted(TEMPLATE_NAMES))}"
            " (double literal braces: {{ }})",
        )
    return value


Duration = Annotated[float, BeforeValidator(_parse_duration), Field(ge=0, allow_inf_nan=False)]
"""Seconds as a float; accepts a number or "500ms", "5s", "10m", "2h", "1d"."""

Size = Annotated[int, BeforeValidator(_parse_size)]
"""Bytes as an int; accepts an int or "512KiB", "20MiB", "1GiB", "10MB", "1.5GB"."""

WebUrl = Annotated[str, AfterValidator(_http_url)]
ListenAddress = Annotated[str, AfterValidator(_listen_address)]
PostgresUrl = Annotated[str, AfterValidator(_postgres_url)]
ResolvedPath = Annotated[Path, AfterValidator(_resolved)]
Template = Annotated[str, AfterValidator(_template)]


# --- secrets -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    """Marks a secret field: it may also come from `<field>_file` or this systemd credential."""

    name: str


def _read_secret(path: Path) -> str:
    """The file's content minus the trailing newline every editor adds."""
    secret = path.read_text(encoding="utf-8").rstrip("\r\n")
    if path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        logger.warning("secret file %s is readable by group or others; chmod 600 it", path)
    return secret


def _warn_if_inline_secrets_are_readable(path: Path, tables: Mapping[str, Any]) -> None:
    """A secret written in the config file is as exposed as a loose secret file: the same warning."""
    if not path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        return
    written = [(table, key) for table, key in _credential_keys()
               if isinstance(tables.get(table), dict) and key in tables[table]]
    if written:
        logger.warning("config file %s holds %s and is readable by group or others; chmod 600 it", path,
                       ", ".join(".".join(key) for key in written))


def _credential_keys() -> Iterator[tuple[str, str]]:
    """(table, key) of every secret the settings declare (a `Credential` marker)."""
    for table, field in Settings.model_fields.items():
        for model in (field.annotation, *get_args(field.annotation)):
            if isinstance(model, type) and issubclass(model, _Section):
                yield from ((table, name) for name, inner in model.model_fields.items()
                            if any(isinstance(marker, Credential) for marker in inner.metadata))


def _resolve_secret(data: dict[str, Any], name: str, credential: str, required: bool) -> None:
    """Fill `data[name]`: plain key > `<name>_file` > `$CREDENTIALS_DIRECTORY/<credential>`
    (an optional secret found nowhere stays unset)."""
    file_key = f"{name}_file"
    secret_file = data.pop(file_key, None)
    if data.get(name) is not None:
        return
    if secret_file is not None:
        if not isinstance(secret_file, str | os.PathLike):
            _fail([((file_key,), "must be a path")])
        key, path = file_key, Path(secret_file)
    else:
        directory = _origin().environ.get("CREDENTIALS_DIRECTORY")
        credential_path = Path(directory, credential) if directory else None
        if credential_path is None or not credential_path.exists():
            if not required:
                return
            _fail([((name,), f"missing: set {name}, {file_key}, or the systemd credential {credential}")])
        key, path = name, credential_path
    try:
        data[name] = _read_secret(path)
    except (OSError, UnicodeDecodeError) as exc:
        reason = (exc.strerror or str(exc)) if isinstance(exc, OSError) else "not UTF-8 text"
        _fail([((key,), f"cannot read secret file {path}: {reason}")])


class _Section(BaseModel):
    """Strict table: a typo is an error, never a silently ignored key."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _resolve_secrets(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, field in cls.model_fields.items():
            for marker in field.metadata:
                if isinstance(marker, Credential):
                    _resolve_secret(data, name, marker.name, field.is_required())
        return data


# --- the models ----------------------------------------------------------------------------


class DaemonSettings(_Section):
    state_dir: ResolvedPath = Path("/var/lib/vaultdrop")
    concurrency: int = Field(2, ge=1, le=64)
    bandwidth_limit: Size = 0
    drain_timeout: Duration = 60.0
    rescan_interval: Duration = 300.0
    dedupe: Literal["identity", "sha256"] = "identity"
    small_file_size: Size = 64 * 1024 * 1024
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    stats_interval: Duration = 900.0  # a stats line every 15 min; 0: none

    @property
    def journal_path(self) -> Path:
        return self.state_dir / "vaultdrop.db"


def default_host_id() -> str:
    """The hostname plus the start of the machine id: two hosts never collide, even when
    cloned images share a hostname."""
    try:
        machine = Path("/etc/machine-id").read_text().strip()[:12]
    except OSError:
        machine = ""
    return f"{socket.gethostname()}-{machine}" if machine else socket.gethostname()


class JournalSettings(_Section):
    """Where the jobs live: SQLite in state_dir (one host), or PostgreSQL (several hosts)."""

    url: PostgresUrl | None = None
    # Optional: libpq may also use peer authentication or ~/.pgpass.
    password: Annotated[SecretStr | None, Credential("journal-password"), Field(min_length=1)] = None
    host_id: str = Field(default_factory=default_host_id, min_length=1)
    lease: Duration = Field(30.0, gt=0)


class VaultSettings(_Section):
    base_url: WebUrl = "http://www.sesamevault.com"
    user: str = Field(min_length=1)
    password: Annotated[SecretStr, Credential("vault-password"), Field(min_length=1)]
    poll_interval: Duration = Field(1.0, gt=0)
    timeout: Duration = Field(60.0, gt=0)
    max_attempts: int = Field(10, ge=1)
    confirm_timeout: Duration = Field(600.0, gt=0)
    backoff_base: Duration = Field(2.0, gt=0)
    backoff_max: Duration = Field(600.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        """Request paths start with "/"; a doubled slash would change the signed path."""
        return value.rstrip("/")

    @model_validator(mode="after")
    def _backoff_bounds(self) -> VaultSettings:
        if self.backoff_max < self.backoff_base:
            _fail([(("backoff_max",), f"must be at least backoff_base ({self.backoff_base:g}s)")])
        return self


class S3Settings(_Section):
    bucket: str = Field(min_length=1)
    acl: Literal["private", "public-read"] = "private"
    source: Template = "{storage}/{user}/{video_id}/{filename}"
    destination: Template = "{relative_path}"
    metadata: dict[str, str] = {}
    callback: str = ""


class FolderSettings(_Section):
    path: Annotated[ResolvedPath, AfterValidator(_not_a_file)]
    include: list[str] = ["*"]
    exclude: list[str] = []
    case_sensitive_globs: bool = False
    temp_suffixes: list[str] = list(DEFAULT_TEMP_SUFFIXES)
    recursive: bool = True
    settle: Duration = 5.0
    # "auto": a recognised container (MP4/MOV, MXF, WAV) must also say it is whole, and a
    # file closed after writing whose container is whole needs no settle time. "settle":
    # the settle time (and open-for-writing) alone.
    complete: Literal["auto", "settle"] = "auto"
    # How long a file may stay open for writing (then: one warning) or unchanged with an
    # incomplete container (then: its job fails with the reason) before someone is told.
    incomplete_timeout: Duration = Field(3600.0, gt=0)
    ready_marker: str = ""
    watcher: Literal["inotify", "polling"] = "inotify"
    poll_interval: Duration = Field(2.0, gt=0)
    after_upload: Literal["keep", "delete", "archive"] = "keep"
    archive_dir: ResolvedPath | None = None
    failed_dir: ResolvedPath | None = None
    s3: S3Settings | None = None

    @field_validator("temp_suffixes")
    @classmethod
    def _suffixes_are_suffixes(cls, value: list[str]) -> list[str]:
        """Compared case-insensitively: `CLIP.MOV.PART` is as unfinished as `clip.mov.part`."""
        if any(not suffix or "/" in suffix for suffix in value):
            raise _invalid("suffix", "each entry must be a non-empty file-name suffix such as .part, without '/'")
        return [suffix.lower() for suffix in value]

    @field_validator("ready_marker")
    @classmethod
    def _marker_is_a_suffix(cls, value: str) -> str:
        if "/" in value:
            raise _invalid("marker", "must be a file-name suffix such as .done, without '/'")
        return value

    @model_validator(mode="after")
    def _archive_needs_a_place(self) -> FolderSettings:
        if self.after_upload == "archive" and self.archive_dir is None:
            _fail([(("archive_dir",), 'required when after_upload = "archive"')])
        return self


class ScaleEngineSettings(_Section):
    api_url: WebUrl = "https://api.scaleengine.net/stable/"
    api_key: str = Field(min_length=1)
    api_secret: Annotated[SecretStr, Credential("scaleengine-secret"), Field(min_length=1)]
    cdn: int = Field(gt=0)
    status_poll_interval: Duration = Field(5.0, gt=0)
    status_timeout: Duration = Field(3600.0, gt=0)
    timeout: Duration = Field(60.0, gt=0)


class MetricsSettings(_Section):
    listen: ListenAddress = ""  # "127.0.0.1:9464" serves /metrics there; empty: no metrics


class NotifySettings(_Section):
    """A JSON POST per finished job, from a durable outbox in the journal."""

    on_failed: WebUrl | None = None
    on_done: WebUrl | None = None
    secret: Annotated[SecretStr | None, Credential("notify-secret"), Field(min_length=1)] = None
    timeout: Duration = Field(10.0, gt=0)
    max_attempts: int = Field(10, ge=1)
    backoff_base: Duration = Field(5.0, gt=0)
    backoff_max: Duration = Field(600.0, gt=0)

    def url_for(self, event: str) -> str | None:
        """Where a `done` or `failed` event goes (None: that event is not wanted)."""
        return {"done": self.on_done, "failed": self.on_failed}.get(event)

    @property
    def events(self) -> frozenset[str]:
        return frozenset(event for event in ("done", "failed") if self.url_for(event))


class _EnvironSource(EnvSettingsSource):
    """The env source reads os.environ; this one reads the mapping the caller passed."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        """The hook pydantic-settings' own dotenv source overrides; same parsing as os.environ."""
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class LocalSettings(BaseSettings):
    """What reading the journal needs (`status`, `jobs`, `journal copy`): state_dir and
    [journal]. The other tables are left unread, so their secrets, which the unit keeps
    as systemd credentials, are not asked for by a command that never talks to the vault."""

    model_config = SettingsConfigDict(env_prefix="VAULTDROP_", env_nested_delimiter="__", extra="ignore")

    daemon: DaemonSettings = Field(default_factory=DaemonSettings)
    journal: JournalSettings = Field(default_factory=JournalSettings)

    _source: str = PrivateAttr(BUILT_IN)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Environment first, then the in-memory dict or the TOML file; no dotenv, no
        secrets_dir (secrets have their own resolution, see `Credential`)."""
        origin = _origin()
        sources: list[PydanticBaseSettingsSource] = [_EnvironSource(settings_cls, origin.environ), init_settings]
        if origin.toml_file is not None:
            toml = TomlConfigSettingsSource(settings_cls, toml_file=origin.toml_file)
            _warn_if_inline_secrets_are_readable(origin.toml_file, toml.toml_data)
            sources.append(toml)
        return tuple(sources)

    @property
    def source(self) -> str:
        """The config file path, or "<built-in>": for messages."""
        return self._source


class Settings(LocalSettings):
    """The whole configuration, every table validated (a typo is an error)."""

    model_config = SettingsConfigDict(extra="forbid")

    vault: VaultSettings
    folders: list[FolderSettings] = Field(min_length=1)
    scaleengine: ScaleEngineSettings | None = None
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    notify: NotifySettings = Field(default_factory=NotifySettings)

    def secrets(self) -> list[str]:
        """Plain secret values, for the log-redaction safety net."""
        found = [self.vault.password]
        if self.scaleengine is not None:
            found.append(self.scaleengine.api_secret)
        if self.notify.secret is not None:
            found.append(self.notify.secret)
        if self.journal.password is not None:
            found.append(self.journal.password)
        return [secret.get_secret_value() for secret in found]

    @model_validator(mode="after")
    def _folders_do_not_overlap(self) -> Settings:
        """Watching an archive (or another watched folder) would upload files twice."""
        problems: list[tuple[tuple[str | int, ...], str]] = []
        watched = [folder.path for folder in self.folders]
        for i, folder in enumerate(self.folders):
            for j in range(i):
                if folder.path.is_relative_to(watched[j]) or watched[j].is_relative_to(folder.path):
                    problems.append((("folders", i, "path"), f"overlaps folders[{j}].path {watched[j]}"))
            for key in ("archive_dir", "failed_dir"):
                target: Path | None = getattr(folder, key)
                inside = next((w for w in watched if target is not None and target.is_relative_to(w)), None)
                if inside is not None:
                    problems.append((("folders", i, key), f"must not be inside the watched folder {inside}"))
            if folder.s3 is not None and self.scaleengine is None:
                problems.append((("folders", i, "s3"), "needs a [scaleengine] section"))
        inside = next((w for w in watched if self.daemon.state_dir.is_relative_to(w)), None)
        if inside is not None:
            problems.append((("daemon", "state_dir"), f"must not be inside the watched folder {inside}"))
        if problems:
            _fail(problems)
        return self


# --- loading -----------------------------------------------------------------------------

_MESSAGES = {"extra_forbidden": "unknown key", "missing": "missing required key"}


def _dotted(loc: tuple[str | int, ...]) -> str:
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).lstrip(".")


def _env_variable(loc: tuple[str | int, ...], environ: Mapping[str, str]) -> str | None:
    """The `VAULTDROP_…` variable that set this key (or a table holding it), if one did."""
    names = {name.upper(): name for name in environ}
    for length in range(len(loc), 0, -1):
        if all(isinstance(part, str) for part in loc[:length]):
            wanted = "VAULTDROP_" + "__".join(str(part) for part in loc[:length]).upper()
            if wanted in names:
                return names[wanted]
    return None


def _config_error(exc: ValidationError, source: str, environ: Mapping[str, str]) -> ConfigError:
    """One line per problem, built from loc and msg only: `input` may hold a secret. A key
    set by the environment names its variable: the file does not hold the mistake."""
    lines = []
    for error in exc.errors(include_url=False, include_input=False, include_context=False):
        key = _dotted(error["loc"])
        message = _MESSAGES.get(error["type"], error["msg"])
        variable = _env_variable(error["loc"], environ)
        where = f"environment variable {variable}" if variable else source
        lines.append(f"{where}: {key}: {message}" if key else f"{where}: {message}")
    return ConfigError("\n".join(lines))


AnySettings = TypeVar("AnySettings", bound=LocalSettings)


def _build(origin: _Origin, source: str, data: dict[str, Any], model: type[AnySettings]) -> AnySettings:
    token = _ORIGIN.set(origin)
    try:
        settings = model(**data)
    except ValidationError as exc:
        raise _config_error(exc, source, origin.environ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: TOML syntax error: {exc}") from None
    except UnicodeDecodeError as exc:  # TOML is UTF-8 by definition; say where it is not
        line = exc.object[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{source}: line {line}: not UTF-8 text (save the file as UTF-8)") from None
    except SettingsError as exc:
        raise ConfigError(f"{source}: environment override: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror or exc}") from None
    finally:
        _ORIGIN.reset(token)
    settings._source = source
    return settings


def load_config(path: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file at `path`, overridden by `VAULTDROP_…` variables from `environ`."""
    return _load(path, environ, Settings)


def load_local_config(path: Path, environ: Mapping[str, str] | None = None) -> LocalSettings:
    """Only [daemon] and [journal] of the file at `path`: for the commands that read the journal."""
    return _load(path, environ, LocalSettings)


def _load(path: Path, environ: Mapping[str, str] | None, model: type[AnySettings]) -> AnySettings:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found" if not path.exists() else f"{path}: not a file")
    return _build(_Origin(path, os.environ if environ is None else environ), str(path), {}, model)


def settings_from_dict(
    data: dict[str, Any], *, source: str = BUILT_IN, environ: Mapping[str, str] | None = None
) -> Settings:
    """Validate an in-memory config exactly like a file (`vaultdrop run --sandbox`)."""
    return _build(_Origin(None, os.environ if environ is None else environ), source, data, Settings)
