"""Wiring in one place: which journal, clients and stages a configuration gets.

The daemon, the one-shot `vaultdrop upload` and the tests build the same object graph
here; tests pass a fake clock and an httpx MockTransport, production passes nothing.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from .clients.outage import Outages, Probe
from .clients.throttle import Throttle
from .clients.vault import VaultClient
from .config import FolderSettings, LocalSettings, Settings
from .errors import ConfigError
from .events import Fanout, JobEvents
from .job import Job
from .journal import Journal, JournalStore, journal_was_used, mark_used
from .journal.committer import Committer
from .netfs import refuse_network_state_dir
from .notify import notify_states
from .retry import Policy
from .runner.pipeline import SCALEENGINE, VAULT, Pipeline
from .runner.stale import StaleVideos
from .stages.finish import PostActions
from .stages.upload import Readiness, VaultStages

PROBE_KEY = "vaultdrop-probe"  # any answer to progress.xml for it, 404 included, proves the vault is there

Clock = Callable[[], float]


def open_journal(settings: LocalSettings, *, clock: Clock = time.time, reader: bool = False) -> JournalStore:
    """The configured journal, writing the notifications a whole config wants (the CLI's
    LocalSettings have no [notify]: its commands end no job): PostgreSQL when [journal]
    url is set, else SQLite in state_dir.

    The first start marks state_dir with the journal's id (journal.mark_used); from then
    on a missing, empty or other journal is refused, never set up in its place. A
    `reader` (status, the metrics scrape) neither sets up a schema nor marks."""
    config = settings.journal
    state_dir = settings.daemon.state_dir
    used = journal_was_used(state_dir)
    journal: JournalStore
    if config.url is None:
        if reader:
            return Journal(settings.daemon.journal_path, readonly=True, used=used)
        refuse_network_state_dir(state_dir)
        journal = Journal(settings.daemon.journal_path, clock=clock, host_id=config.host_id, lease=config.lease,
                          group_commit=True, used=used)
    else:
        from .journal.postgres import PgJournal

        password = config.password.get_secret_value() if config.password is not None else None
        journal = PgJournal(config.url, password, clock=clock, host_id=config.host_id, lease=config.lease,
                            used=used, readonly=reader)
    if used is None and not reader:
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
            mark_used(state_dir, journal.journal_id, journal.location, clock())
        except OSError as exc:
            journal.close()
            raise ConfigError(f"cannot use the state directory {state_dir}: {exc}") from None
    if isinstance(settings, Settings):
        journal.notify_states = notify_states(settings.notify)
    return journal


def open_reader(settings: Settings) -> JournalStore:
    """A second journal for another thread (the metrics scrape): read-only SQLite, or a
    PostgreSQL journal with its own pool."""
    return open_journal(settings, reader=True)


def build_pipeline(
    settings: Settings,
    journal: JournalStore,
    folder_for: Callable[[Job], FolderSettings | None],
    *,
    clock: Clock = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    transport: httpx.AsyncBaseTransport | None = None,
    upload_transport: httpx.BaseTransport | None = None,
    on_back: Callable[[str], None] = lambda service: None,
    on_displaced: Callable[[Path], None] = lambda path: None,
    events: JobEvents | None = None,
    readiness: Readiness | None = None,
    rng: random.Random | None = None,
) -> Pipeline:
    """A pipeline with its own connection pools (a reload builds a new one).

    `on_back(service)` runs once jobs waiting on that service's outage are due again
    (the daemon wakes its scheduler there). `events` hears what happens to jobs and
    whether the vault answers. `readiness` is intake's word on whether a changed file is
    complete again (intake/completeness.py); without a watcher the caller vouches for its files.
    A test's `transport` answers the requests sent from the loop, its `upload_transport`
    the upload bodies streamed from a sending thread (VaultClient); its `rng` makes the
    retry jitter repeatable.
    """
    events = events or Fanout()
    vault = VaultClient.from_settings(settings.vault, clock=clock, transport=transport,
                                      upload_transport=upload_transport)
    limit = settings.daemon.bandwidth_limit
    committer = Committer(journal, events)
    policy = Policy(settings.vault.max_attempts, settings.vault.backoff_base, settings.vault.backoff_max)
    stages = VaultStages(committer, vault, settings, clock=clock, sleep=sleep,
                         throttle=Throttle(limit) if limit else None, events=events, readiness=readiness)
    post = PostActions(journal, stages.readiness, policy, clock=clock, on_displaced=on_displaced)
    probes: dict[str, tuple[str, Probe]] = {VAULT: (settings.vault.base_url, lambda: vault.progress(PROBE_KEY))}
    s3 = None
    if settings.scaleengine is not None:
        from .stages.s3 import S3Queue

        s3 = S3Queue(settings, journal, clock=clock, transport=transport)
        probes[SCALEENGINE] = (settings.scaleengine.api_url, s3.client.get_storage)

    def back(service: str) -> None:
        journal.wake(service)
        on_back(service)

    def verdict(service: str, up: bool) -> None:
        if service == VAULT:
            events.vault_reachable(up)

    outages = Outages(probes, back, clock, verdict)
    stale = StaleVideos(journal, vault, policy, vault_down=lambda: outages.is_down(VAULT), clock=clock)
    return Pipeline(committer, stages, post, stale, policy, folder_for, outages, s3=s3, clock=clock, events=events,
                    rng=rng)
