"""Command line: `vaultdrop run | sandbox | status | jobs | upload | delete | check-config`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from . import logs, postaction
from .config import DEFAULT_CONFIG_PATH, FolderSettings, Settings, load_config, settings_from_dict
from .errors import ConfigError, VaultdropError
from .journal import Journal, JournalStore, JournalUnavailable
from .model import TERMINAL, FileIdentity, Job, JobState

DEMO_DIR = Path("vaultdrop-demo")
TEMPFAIL_EXIT_STATUS = 75  # EX_TEMPFAIL


def demo_settings(base: Path, url: str, environ: dict[str, str] | None = None) -> Settings:
    """The embedded default: a local drop folder, a local journal, the sandbox's credentials."""
    from .sandbox.launcher import DEFAULT_PASSWORD, DEFAULT_USER

    base = base.resolve()
    for name in ("drop", "archive", "failed", "state"):
        (base / name).mkdir(parents=True, exist_ok=True)
    return settings_from_dict({
        "daemon": {"state_dir": str(base / "state"), "concurrency": 2, "drain_timeout": 30, "rescan_interval": 60},
        "vault": {"base_url": url, "user": DEFAULT_USER, "password": DEFAULT_PASSWORD, "poll_interval": 0.2,
                  "max_attempts": 5},
        "folders": [{"path": str(base / "drop"), "settle": 2, "after_upload": "archive",
                     "archive_dir": str(base / "archive"), "failed_dir": str(base / "failed")}],
    }, source="the built-in sandbox demo", environ=environ)


def _open_journal(args: argparse.Namespace, readonly: bool = True) -> JournalStore:
    """The journal the daemon uses; --state-dir needs no config (and so no secrets) at all."""
    if args.state_dir is not None:
        return _sqlite(args.state_dir / "vaultdrop.db", readonly)
    if args.sandbox:
        return _sqlite(args.demo_dir.resolve() / "state" / "vaultdrop.db", readonly)
    settings = load_config(args.config)
    if settings.journal.url is None:
        return _sqlite(settings.daemon.journal_path, readonly)
    from .wiring import open_journal

    return open_journal(settings)


# -- run -------------------------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from .daemon import Daemon

    # --metrics-addr is validated (and kept across reloads) like [metrics] listen itself.
    environ = dict(os.environ)
    if args.metrics_addr is not None:
        environ["VAULTDROP_METRICS__LISTEN"] = args.metrics_addr
    sandbox = None
    if args.sandbox:
        from .sandbox.launcher import spawn_sandbox

        sandbox = spawn_sandbox(args.demo_dir.resolve() / "sandbox", port=args.port)
        settings = demo_settings(args.demo_dir, sandbox.url, environ)
        print(
            f"vaultdrop demo: sandbox vault at {sandbox.url}\n"
            f"  drop files into   {settings.folders[0].path}\n"
            f"  uploaded videos:  {sandbox.root}/storage\n"
            f"  archived files:   {settings.folders[0].archive_dir}\n"
            f"  watch progress:   .venv/bin/vaultdrop status --sandbox\n"
            f"  stop with Ctrl-C (in-flight uploads drain first)",
            flush=True,
        )
        reload_settings = None
    else:
        settings = load_config(args.config, environ)
        def reload_settings() -> Settings:
            return load_config(args.config, environ)
    logs.setup(settings.daemon.log_level, settings.secrets())
    try:
        return asyncio.run(Daemon(settings, reload_settings).run())
    finally:
        if sandbox is not None:
            sandbox.stop()


# -- status and jobs --------------------------------------------------------------------


def _sqlite(path: Path, readonly: bool) -> Journal:
    if not path.exists():
        raise ConfigError(f"no journal at {path} yet: has the daemon run?")
    return Journal(path, readonly=readonly)


def _job_dict(job: Job) -> dict[str, Any]:
    values = asdict(job)
    values["state"] = job.state.value
    return values


def cmd_status(args: argparse.Namespace) -> int:
    journal = _open_journal(args)
    counts = journal.counts()
    active = [j for s in (JobState.UPLOADING, JobState.CONFIRMING, JobState.S3_QUEUEING, JobState.S3_WAITING)
              for j in journal.jobs(s, limit=1000)]
    if args.json:
        print(json.dumps({"counts": {s.value: n for s, n in counts.items()},
                          "in_flight": [_job_dict(j) for j in active]}, indent=2))
        return 0
    print("  ".join(f"{state.value} {count}" for state, count in counts.items() if count) or "no jobs yet")
    for job in active:
        percent = 100 * job.bytes_sent / job.size if job.size else 100
        extra = f" s3 request {job.s3_request_id} {job.s3_status or ''}" if job.s3_request_id else ""
        print(f"  #{job.id} {job.state.value:<11} {percent:5.1f}%  {job.relpath}{extra}{_holder(job)}")
    return 0


def _holder(job: Job) -> str:
    """Which host works on the job (a shared PostgreSQL journal has several)."""
    return f"  [on {job.owner}]" if job.owner and job.state not in TERMINAL else ""


def cmd_jobs(args: argparse.Namespace) -> int:
    if args.action == "list":
        jobs = _open_journal(args).jobs(JobState(args.state) if args.state else None, args.limit)
        if args.json:
            print(json.dumps([_job_dict(j) for j in jobs], indent=2))
        for job in [] if args.json else jobs:
            error = f"  ({job.last_error})" if job.last_error and job.state is not JobState.DONE else ""
            print(f"#{job.id:<6} {job.state.value:<11} {job.size:>14,}  {job.relpath}{error}{_holder(job)}")
        return 0
    if args.id is None:
        raise ConfigError(f"jobs {args.action} needs a job id")
    if args.action == "show":
        journal = _open_journal(args)
        shown = journal.get(args.id)
        if shown is None:
            print(f"no job {args.id}", file=sys.stderr)
            return 1
        print(json.dumps({**_job_dict(shown), "history": journal.history(shown.id)}, indent=2))
        return 0
    journal = _open_journal(args, readonly=False)
    try:
        if args.action == "retry":
            failed = journal.get(args.id)
            if failed is not None and failed.state is JobState.FAILED:
                restored = postaction.restore(failed)  # first, so the job never runs without its file
                if restored:
                    print(restored)
            journal.retry(args.id)
            print(f"job {args.id} queued again")
        else:
            journal.forget(args.id)
            print(f"job {args.id} forgotten")
    except (KeyError, VaultdropError) as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


# -- one-shot upload and delete ---------------------------------------------------------


async def _upload_files(settings: Settings, files: list[Path]) -> int:
    from .wiring import build_pipeline

    journal = Journal(settings.daemon.state_dir / "oneshot.db")
    folders: dict[str, FolderSettings] = {}
    pipeline = build_pipeline(settings, journal, lambda job: folders.get(job.folder))
    failures = 0
    try:
        for path in files:
            path = path.resolve()
            info = path.stat()
            folder = folders.setdefault(str(path.parent), FolderSettings(path=path.parent, settle=0))
            job = journal.enqueue(FileIdentity.of(str(folder.path), path.name, info))
            if job is None:
                print(f"{path}: already uploaded by an earlier `vaultdrop upload`", file=sys.stderr)
                continue
            bar = asyncio.create_task(_progress_bar(journal, job.id)) if sys.stderr.isatty() else None
            while job.state not in (JobState.DONE, JobState.FAILED, JobState.SKIPPED):
                job = await pipeline.run(job)
                if job.state not in (JobState.DONE, JobState.FAILED, JobState.SKIPPED):
                    await asyncio.sleep(max(0.0, job.not_before - time.time()))
            if bar is not None:
                bar.cancel()
            failures += job.state is JobState.FAILED
            print(f"{path}: {job.state.value}" + (f" video {job.video_id}" if job.video_id else
                                                  f" ({job.last_error})"))
    finally:
        await pipeline.aclose()
        journal.close()
    return 1 if failures else 0


async def _progress_bar(journal: JournalStore, job_id: int) -> None:
    started = time.monotonic()
    while True:
        job = journal.get(job_id)
        if job is not None and job.size:
            fraction = job.bytes_sent / job.size
            rate = job.bytes_sent / max(time.monotonic() - started, 1e-3) / 1e6
            filled = int(30 * fraction)
            print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {fraction:6.1%} {rate:7.1f} MB/s {job.relpath}",
                  end="", file=sys.stderr, flush=True)
        await asyncio.sleep(0.5)


def cmd_upload(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    logs.setup(settings.daemon.log_level, settings.secrets())
    return asyncio.run(_upload_files(settings, args.files))


def cmd_delete(args: argparse.Namespace) -> int:
    from .vault import VaultClient

    settings = load_config(args.config)

    async def delete() -> bool:
        client = VaultClient.from_settings(settings.vault)
        try:
            return await client.delete(args.video_id)
        finally:
            await client.aclose()

    if asyncio.run(delete()):
        print(f"video {args.video_id} deleted")
        return 0
    print(f"video {args.video_id} not found", file=sys.stderr)
    return 1


def cmd_journal_copy(args: argparse.Namespace) -> int:
    """Move a single host's SQLite journal to PostgreSQL, so it can grow to several hosts
    without uploading anything again. The daemon must be stopped (its lock is taken)."""
    from .daemon import lock_state_dir
    from .journal_pg import PgJournal, without_password

    state_dir = args.state_dir or load_config(args.config).daemon.state_dir
    lock = lock_state_dir(state_dir)
    try:
        source = _sqlite(state_dir / "vaultdrop.db", readonly=True)
        tables = source.dump()
        source.close()
        password = _read_password(args.password_file) if args.password_file else None
        target = PgJournal(args.to, password)
        try:
            target.load(tables)
        finally:
            target.close()
    finally:
        lock.close()
    print(f"copied {len(tables['jobs'])} job(s), {len(tables['history'])} history line(s) and "
          f"{len(tables['stale_videos'])} pending video delete(s) to {without_password(args.to)}; now set "
          "[journal] url on every host (the SQLite journal is left as it was)")
    return 0


def _read_password(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"cannot read the password file {path}: {exc.strerror}") from None


def cmd_check_config(args: argparse.Namespace) -> int:
    settings = load_config(args.config)
    print(f"{args.config}: OK ({len(settings.folders)} folder(s), vault {settings.vault.base_url})")
    return 0


# -- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vaultdrop", description="Folders in, videos in the vault, exactly once.")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(name: str, help: str, demo: bool = False, journal: bool = False) -> argparse.ArgumentParser:
        command = sub.add_parser(name, help=help)
        command.add_argument("--config", type=Path,
                             default=Path(os.environ.get("VAULTDROP_CONFIG", DEFAULT_CONFIG_PATH)),
                             help="TOML configuration (default %(default)s, or $VAULTDROP_CONFIG)")
        if demo:
            command.add_argument("--sandbox", action="store_true", help="use the built-in sandbox demo setup")
            command.add_argument("--demo-dir", type=Path, default=DEMO_DIR,
                                 help="where the demo keeps its folders (default ./%(default)s)")
        if journal:
            command.add_argument("--state-dir", type=Path,
                                 help="read the journal in this directory without loading the config")
        return command

    run = with_config("run", "run the daemon", demo=True)
    run.add_argument("--port", type=int, default=8765, help="sandbox port with --sandbox (0 = any free)")
    run.add_argument("--metrics-addr", metavar="HOST:PORT",
                     help="serve Prometheus metrics at http://HOST:PORT/metrics (overrides [metrics] listen)")
    run.set_defaults(func=cmd_run)

    from .sandbox.cli import add_sandbox_arguments, run_sandbox

    sandbox = sub.add_parser("sandbox", help="serve the local SesameVault + ScaleEngine sandbox")
    add_sandbox_arguments(sandbox)
    sandbox.set_defaults(func=run_sandbox)

    status = with_config("status", "job counts and uploads in flight", demo=True, journal=True)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_status)

    jobs = with_config("jobs", "list, show, retry or forget jobs", demo=True, journal=True)
    jobs.add_argument("action", choices=["list", "show", "retry", "forget"], nargs="?", default="list")
    jobs.add_argument("id", type=int, nargs="?")
    jobs.add_argument("--state", choices=[s.value for s in JobState])
    jobs.add_argument("--limit", type=int, default=50)
    jobs.add_argument("--json", action="store_true")
    jobs.set_defaults(func=cmd_jobs)

    upload = with_config("upload", "upload files once, now, with a progress bar")
    upload.add_argument("files", type=Path, nargs="+")
    upload.set_defaults(func=cmd_upload)

    delete = with_config("delete", "delete a video from the vault")
    delete.add_argument("video_id")
    delete.set_defaults(func=cmd_delete)

    journal = sub.add_parser("journal", help="manage the journal")
    journal_sub = journal.add_subparsers(dest="journal_command", required=True)
    copy = journal_sub.add_parser("copy", help="copy the SQLite journal into a new PostgreSQL journal")
    copy.add_argument("--to", required=True, metavar="postgresql://…", help="the new (empty) PostgreSQL database")
    copy.add_argument("--password-file", type=Path, help="its password (else libpq's: ~/.pgpass, PGPASSWORD)")
    copy.add_argument("--config", type=Path, default=Path(os.environ.get("VAULTDROP_CONFIG", DEFAULT_CONFIG_PATH)),
                      help="whose state_dir holds the SQLite journal (default %(default)s)")
    copy.add_argument("--state-dir", type=Path, help="the SQLite journal's directory, without loading the config")
    copy.set_defaults(func=cmd_journal_copy)

    check = with_config("check-config", "validate the configuration and exit")
    check.set_defaults(func=cmd_check_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        logging.getLogger("vaultdrop").debug("configuration error", exc_info=True)
        print(f"vaultdrop: configuration error: {exc}", file=sys.stderr)
        return exc.exit_status
    except JournalUnavailable as exc:  # the PostgreSQL journal is down: try again later
        print(f"vaultdrop: {exc}", file=sys.stderr)
        return TEMPFAIL_EXIT_STATUS
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
