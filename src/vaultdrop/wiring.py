"""Wiring in one place: which journal, clients and stages a configuration gets.

The daemon, the one-shot `vaultdrop upload` and the tests build the same object graph
here; tests pass a fake clock and an httpx MockTransport, production passes nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import httpx

from .config import FolderSettings, Settings
from .journal import Journal
from .model import Job
from .pipeline import Pipeline
from .throttle import Throttle
from .vault import VaultClient

Clock = Callable[[], float]


def open_journal(settings: Settings, *, clock: Clock = time.time) -> Journal:
    """The configured journal (SQLite in state_dir)."""
    return Journal(settings.daemon.journal_path, clock=clock)


def build_pipeline(
    settings: Settings,
    journal: Journal,
    folder_for: Callable[[Job], FolderSettings | None],
    *,
    clock: Clock = time.time,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Pipeline:
    """A pipeline with its own connection pools (a reload builds a new one)."""
    vault = VaultClient.from_settings(settings.vault, clock=clock, transport=transport)
    limit = settings.daemon.bandwidth_limit
    s3 = None
    if settings.scaleengine is not None:
        from .s3 import S3Queue

        s3 = S3Queue(settings, journal, clock=clock, transport=transport)
    return Pipeline(journal, vault, settings, folder_for, throttle=Throttle(limit) if limit else None, s3=s3,
                    clock=clock, sleep=sleep)
