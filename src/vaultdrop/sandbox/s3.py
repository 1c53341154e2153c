"""The S3 side of `aws.upload`: a queue that copies stored videos into a fake bucket tree.

Each request walks queued -> uploading -> complete (or failed) by itself, `s3_step`
seconds apart, like the vendor's background transfer, and ends with the optional
callback POST. Objects land in ROOT/s3/<bucket>/<destination_path> with the metadata
and ACL beside them, so tests can check exactly what "S3" received.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

from .settings import SandboxSettings
from .snapshot import load_json, save_json

log = logging.getLogger(__name__)

CALLBACK_TIMEOUT_SECONDS = 5.0
COPY_CHUNK = 1024 * 1024
PENDING = ("queued", "uploading")


@dataclass
class TransferRequest:
    id: int
    status: str
    path: str
    destination_path: str
    bucket: str
    message: str
    metadata: Any
    acl: str
    callback: str

    def record(self) -> dict[str, Any]:
        """The aws.status record (and the callback body)."""
        return {k: getattr(self, k) for k in ("id", "status", "path", "destination_path", "bucket", "message")}


def _inside(base: Path, relative: str) -> Path | None:
    """`base/relative` if it stays strictly below `base` (no absolute paths, no `..` escape)."""
    if not relative or relative.startswith("/") or "\x00" in relative:
        return None
    root = base.resolve()
    candidate = (root / relative).resolve()
    return candidate if candidate != root and candidate.is_relative_to(root) else None


def _copy_with_digest(source: Path, target: Path) -> tuple[int, str]:
    """Copy via a temp file and rename, so a half-copied object is never visible."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.part")
    digest, size = hashlib.sha256(), 0
    with source.open("rb") as src, tmp.open("wb") as dst:
        while chunk := src.read(COPY_CHUNK):
            digest.update(chunk)
            dst.write(chunk)
            size += len(chunk)
    os.replace(tmp, target)
    return size, digest.hexdigest()


class S3Queue:
    def __init__(self, settings: SandboxSettings) -> None:
        self._settings = settings
        self._s3_root = settings.root / "s3"
        self._state_path = settings.root / "s3-state.json"
        state = load_json(self._state_path, {"requests": [], "objects": []})
        self._requests = [TransferRequest(**r) for r in state["requests"]]
        self._objects: dict[tuple[str, str], dict[str, Any]] = {
            (o["bucket"], o["destination_path"]): o for o in state["objects"]
        }
        self._tasks: set[asyncio.Task[None]] = set()
        self._http: httpx.AsyncClient | None = None

    def _save(self) -> None:
        save_json(self._state_path, {
            "requests": [asdict(r) for r in self._requests],
            "objects": list(self._objects.values()),
        })

    def start(self) -> None:
        """Resume transfers a previous run left pending (they start over from queued)."""
        self._http = httpx.AsyncClient(timeout=CALLBACK_TIMEOUT_SECONDS)
        for request in self._requests:
            if request.status in PENDING:
                request.status = "queued"
                self._spawn(request)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.aclose()

    def submit(self, *, path: str, destination_path: str, bucket: str, metadata: Any, acl: str, callback: str) -> int:
        request = TransferRequest(
            id=len(self._requests) + 1, status="queued", path=path, destination_path=destination_path,
            bucket=bucket, message="queued", metadata=metadata, acl=acl, callback=callback,
        )
        self._requests.append(request)
        self._save()
        self._spawn(request)
        return request.id

    def status(self, limit: int, offset: int) -> list[dict[str, Any]]:
        newest_first = reversed(self._requests)
        return [r.record() for r in list(newest_first)[offset:offset + limit]]

    def objects(self) -> list[dict[str, Any]]:
        return list(self._objects.values())

    def _spawn(self, request: TransferRequest) -> None:
        task = asyncio.get_running_loop().create_task(self._run(request))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _set(self, request: TransferRequest, status: str, message: str) -> None:
        request.status, request.message = status, message
        self._save()

    async def _run(self, request: TransferRequest) -> None:
        step = self._settings.s3_step
        await asyncio.sleep(step)
        source = _inside(self._settings.storage_root, request.path)
        bucket_ok = request.bucket not in ("", ".", "..") and "/" not in request.bucket
        target = _inside(self._s3_root / request.bucket, request.destination_path) if bucket_ok else None
        if source is None or not source.is_file():
            self._set(request, "failed", f"path not found: {request.path}")
        elif target is None:
            self._set(request, "failed", "bucket or destination_path not usable")
        else:
            self._set(request, "uploading", "uploading")
            started = time.monotonic()
            try:
                size, sha256 = await asyncio.to_thread(_copy_with_digest, source, target)
            except OSError as exc:
                self._set(request, "failed", f"copy failed: {exc.strerror or exc}")
            else:
                sidecar = target.with_name(target.name + ".metadata.json")
                sidecar.write_text(json.dumps({"metadata": request.metadata, "acl": request.acl}, ensure_ascii=False))
                await asyncio.sleep(max(0.0, step - (time.monotonic() - started)))
                self._objects[(request.bucket, request.destination_path)] = {
                    "bucket": request.bucket, "destination_path": request.destination_path, "size": size,
                    "sha256": sha256, "metadata": request.metadata, "acl": request.acl,
                }
                self._set(request, "complete", "uploaded to S3")
        if request.callback:
            await self._notify(request)

    async def _notify(self, request: TransferRequest) -> None:
        """Best-effort callback POST of the finished record; the outcome is only logged."""
        assert self._http is not None
        url = request.callback if "://" in request.callback else "http://" + request.callback
        try:
            response = await self._http.post(url, json=request.record())
            log.info("callback for request %d to %s: HTTP %d", request.id, url, response.status_code)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            log.warning("callback for request %d to %s failed: %s", request.id, url, exc)
