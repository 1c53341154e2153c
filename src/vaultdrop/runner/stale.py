"""Discarded vault copies: the journal's stale_videos outbox, emptied on its own schedule.

A job that finds the vault's copy is not its file (a change during upload, an abandoned
key) records the video in the same commit that starts it over (Transition.discard). Its
delete is done here, apart from the job: a delete that keeps failing never holds up an
upload. The runner tries once right after such a commit; the daemon every few seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..clients.vault import VaultClient
from ..errors import RetryLater
from ..journal import JournalStore
from ..logs import job_fields, log
from ..retry import Policy

BATCH = 10


class StaleVideos:
    def __init__(self, journal: JournalStore, vault: VaultClient, policy: Policy, *,
                 vault_down: Callable[[], bool], clock: Callable[[], float]) -> None:
        self._journal = journal
        self._vault = vault
        self._policy = policy
        self._vault_down = vault_down
        self._clock = clock

    async def delete_due(self) -> None:
        """Delete the videos whose time has come, each on its own backoff; none while the
        vault is down (its probe says when it is back)."""
        if self._vault_down():
            return
        journal = self._journal
        for video_id, attempts in journal.stale_videos(self._clock(), BATCH):
            await journal.durable()  # the commits before this delete (a retry time, a discard) first
            owner = journal.owner_of(video_id)
            if owner is not None:  # recorded stale, then confirmed by a job: never delete its video
                journal.stale_deleted(video_id)
                log(logging.WARNING, f"stale video {video_id} kept: job {owner.id} ({owner.relpath}) accounts "
                    "for it", video_id=video_id, **job_fields(owner))
                continue
            try:
                found = await self._vault.delete(video_id)
            except RetryLater as exc:
                delay = min(self._policy.backoff_max, self._policy.backoff_base * 2 ** attempts)
                journal.stale_retry(video_id, self._clock() + delay, str(exc))
                log(logging.WARNING, f"could not delete stale video {video_id} (try {attempts + 1}): {exc}; "
                    f"trying again in {delay:.1f} s", video_id=video_id)
                continue
            journal.stale_deleted(video_id)
            log(logging.INFO, f"stale video {video_id} " + ("deleted" if found else "was already gone"),
                video_id=video_id)
