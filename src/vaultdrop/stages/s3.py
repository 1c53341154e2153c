"""The optional S3 stages: queue the stored video to a bucket, then follow that request.

Crash safety: `s3_status = "requesting"` is committed before aws.upload is sent. A job
resumed in that state first looks for its request in aws.status and adopts it, so a
request whose id was never committed is still not queued twice; a committed request id
is followed, never sent again (also after `jobs retry`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import PurePosixPath
from typing import Any

import httpx

from ..clients.control import ControlClient, NoAnswer
from ..config import FolderSettings, Settings
from ..errors import JobFailed, ProtocolError, RetryLater
from ..job import Job, JobState, Transition
from ..journal import JournalStore
from ..names import sidecar_name

STATUS_PAGE = 100
MAX_STATUS_PAGES = 50
NOT_FOUND_GRACE = 120.0  # a fresh request may take a moment to be listed
REQUESTING = "requesting"


class S3Queue:
    def __init__(self, settings: Settings, journal: JournalStore, clock: Callable[[], float] = time.time,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        assert settings.scaleengine is not None
        se = settings.scaleengine
        self.client = ControlClient(se.api_url, se.api_key, se.api_secret.get_secret_value(), se.cdn,
                                    timeout=se.timeout, clock=clock, transport=transport)
        self._settings = settings
        self._journal = journal
        self._clock = clock
        self._storage: str | None = None
        self._intents: set[int] = set()  # jobs whose REQUESTING this process just committed

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _storage_name(self) -> str:
        """files.getstorage, once per configuration (a reload builds a new S3Queue)."""
        if self._storage is None:
            self._storage = await self.client.get_storage()
        return self._storage

    async def request_fields(self, job: Job, folder: FolderSettings) -> dict[str, Any]:
        s3 = folder.s3
        assert s3 is not None and job.video_id is not None
        relpath = PurePosixPath(job.relpath)
        # A skipped twin's video was stored under the file name of the job that uploaded it.
        uploader = job if job.upload_key else next(
            (j for j in self._journal.by_video(job.video_id) if j.upload_key), job)
        names = {
            "relative_path": job.relpath, "filename": PurePosixPath(uploader.relpath).name, "stem": relpath.stem,
            "ext": relpath.suffix.lstrip("."), "video_id": job.video_id, "sha256": job.sha256 or "",
            "date": time.strftime("%Y-%m-%d", time.gmtime(job.created_at)),
            "storage": await self._storage_name(), "user": self._settings.vault.user,
        }
        return {
            "path": s3.source.format(**names), "destination_path": s3.destination.format(**names),
            "metadata": {**s3.metadata, **self._sidecar(job)}, "acl": s3.acl, "bucket": s3.bucket,
            "callback": s3.callback,
        }

    @staticmethod
    def _sidecar(job: Job) -> dict[str, str]:
        """FILE.json beside FILE: a JSON object merged over the folder's metadata."""
        path = job.path.with_name(sidecar_name(job.path.name))
        if not path.exists():
            return {}
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise JobFailed(f"metadata sidecar {path.name} is unreadable: {exc}") from None
        if not isinstance(data, dict):
            raise JobFailed(f"metadata sidecar {path.name} is not a JSON object")
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items()}

    async def queue(self, job: Job, folder: FolderSettings) -> Transition:
        """Commit the intent, then send; an intent found from before is looked up first."""
        if job.s3_request_id is not None:
            return self._waiting(job.s3_request_id, "followed again")
        fields = await self.request_fields(job, folder)
        if job.s3_status != REQUESTING:
            self._intents.add(job.id)
            return Transition(None, "asking for an S3 copy", {"s3_status": REQUESTING, "s3_since": self._clock()},
                              quiet=True)
        if job.id not in self._intents:  # an earlier aws.upload's outcome is unknown: look before sending
            found = await self._find(lambda r: _same_request(r, fields))
            if found is not None:
                return self._waiting(found["id"], "adopted")
            since = self._since(job)
            if self._clock() - since < NOT_FOUND_GRACE:
                reason = "waiting: an earlier aws.upload may still appear in aws.status; not sending it twice"
                return Transition(None, reason, {"s3_since": since, "last_error": reason,
                                                 "not_before": self._clock() + self._poll_interval}, quiet=True)
        self._intents.discard(job.id)
        try:
            request_id = await self.client.aws_upload(**fields)
        except (NoAnswer, ProtocolError):
            raise  # outcome unknown: stay REQUESTING, so the next try looks before it sends
        except RetryLater as exc:  # the server answered: nothing was queued
            return Transition(None, str(exc), {"s3_status": None}, retry=exc)
        except JobFailed as exc:
            raise JobFailed(str(exc), {"s3_status": None}) from None
        return self._waiting(request_id, "queued")

    def _waiting(self, request_id: int, how: str) -> Transition:
        return Transition(JobState.S3_WAITING, f"S3 request {request_id} {how}", {
            "s3_request_id": request_id, "s3_status": "queued", "s3_since": self._clock(), "attempts": 0})

    @property
    def _poll_interval(self) -> float:
        assert self._settings.scaleengine is not None
        return self._settings.scaleengine.status_poll_interval

    async def follow(self, job: Job) -> Transition:
        """One look at the request; the runner comes back after status_poll_interval."""
        assert self._settings.scaleengine is not None
        record = await self._find(lambda r: _request_id(r) == job.s3_request_id)
        since = self._since(job)
        waited = self._clock() - since
        if record is None:
            if waited > NOT_FOUND_GRACE:
                raise JobFailed(f"S3 request {job.s3_request_id} never appeared in aws.status")
            status = job.s3_status or "queued"
        else:
            status = str(record.get("status"))
        if status == "complete":
            return Transition(JobState.FINISHING, f"S3 request {job.s3_request_id} complete",
                              {"s3_status": status, "attempts": 0})
        if status == "failed":
            message = str((record or {}).get("message", ""))[:200]
            # Recorded as failed: `jobs retry` then sends a new request instead of following this one.
            raise JobFailed(f"S3 request {job.s3_request_id} failed: {message}", {"s3_status": status})
        if waited > self._settings.scaleengine.status_timeout:
            raise JobFailed(f"S3 request {job.s3_request_id} still {status} after {waited:.0f} s")
        return Transition(None, f"S3 request {job.s3_request_id} {status}", {
            "s3_status": status, "s3_since": since, "not_before": self._clock() + self._poll_interval}, quiet=True)

    def _since(self, job: Job) -> float:
        """When the S3 wait began; a clock stepped back before it restarts the count, so
        the timeout still comes (late), instead of after the step plus the timeout."""
        return min(job.s3_since or job.updated_at, self._clock())

    async def _find(self, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any] | None:
        """Page through aws.status (newest first) until a record matches or the list ends.

        Bounded: a server that ignores `offset` (the same page again) or lists without
        end is refused rather than followed forever.
        """
        seen: set[int | None] = set()
        for page_number in range(MAX_STATUS_PAGES):
            page = await self.client.aws_status(STATUS_PAGE, page_number * STATUS_PAGE)
            found = next((r for r in page if _request_id(r) is not None and match(r)), None)
            if found is not None or len(page) < STATUS_PAGE:
                return found
            ids = {_request_id(r) for r in page}
            if ids & seen:
                raise ProtocolError("aws.status repeats records across pages (offset ignored?)")
            seen |= ids
        raise ProtocolError(f"aws.status still listing after {MAX_STATUS_PAGES * STATUS_PAGE} records")


def _request_id(record: dict[str, Any]) -> int | None:
    """A record's id when it is a real request id (not a bool, string or float)."""
    value = record.get("id")
    return value if type(value) is int and value > 0 else None


def _same_request(record: dict[str, Any], fields: dict[str, Any]) -> bool:
    return all(record.get(k) == fields[k] for k in ("path", "destination_path", "bucket"))

