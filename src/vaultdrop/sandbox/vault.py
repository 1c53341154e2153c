"""The SesameVault HTTP endpoints: new key, streamed upload, progress, delete.

The upload is read part by part and chunk by chunk straight to a temp file, so memory
stays flat for any file size and progress.xml sees `received` grow while bytes arrive.
"""

from __future__ import annotations

import hashlib
import re

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.http_exceptions import BadHttpMessage

from .requestctx import fault_of, note
from .settings import SandboxSettings
from .vaultauth import check_vault_signature
from .vaultstore import Attempt, Superseded, VaultStore, safe_filename
from .vaultxml import VaultError, deleted_document, progress_document, upload_key_document, xml_response

CHUNK = 256 * 1024
UPLOAD_PATH = "/upload/new/file"
FILE_FIELD = "upload_file"
# In a part's Content-Disposition: a control character, or a byte that is not UTF-8
# (aiohttp keeps one as a surrogate escape).
_BAD_IN_DISPOSITION = re.compile("[\x00-\x1f\x7f\udc80-\udcff]")


class ConnectionDropped(Exception):
    """The sandbox cut the connection on purpose (drop_after fault); no response goes out."""


class VaultApi:
    def __init__(self, settings: SandboxSettings, store: VaultStore) -> None:
        self._settings = settings
        self._store = store

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/upload/new_upload_key.xml", self.new_key, name="new_key"),
            web.post(UPLOAD_PATH, self.upload, name="upload"),
            web.get("/upload/progress.xml", self.progress, name="progress"),
            web.get("/video/delete/{video_id}.xml", self.delete, name="delete"),
        ]

    def _check_headers(self, request: web.Request) -> None:
        headers = request.headers
        check_vault_signature(self._settings, headers.get("Authorization"), headers.get("x-sesame-date"), request.path)

    async def new_key(self, request: web.Request) -> web.Response:
        self._check_headers(request)
        reused = self._store.newest_completed_key() if fault_of(request, "used_key") else None
        key = reused or self._store.issue_key()
        note(request, upload_key=key)
        return xml_response(upload_key_document(key))

    async def progress(self, request: web.Request) -> web.Response:
        self._check_headers(request)
        key = request.query.get("upload_key")
        if not key:
            raise VaultError(400, "invalid_request", "upload_key missing")
        return xml_response(progress_document(*self._store.progress(key)))

    async def delete(self, request: web.Request) -> web.Response:
        self._check_headers(request)
        video_id = request.match_info["video_id"]
        self._store.delete(video_id)
        return xml_response(deleted_document(video_id))

    async def upload(self, request: web.Request) -> web.Response:
        query = request.query
        check_vault_signature(self._settings, query.get("_sig"), query.get("_date"), UPLOAD_PATH)
        key = query.get("upload_key")
        if not key:
            raise VaultError(400, "invalid_request", "upload_key missing")
        attempt = self._store.begin(key, request.transport, request.content, request.content_length or 0)
        try:
            drop = fault_of(request, "drop_after")
            if drop is not None:
                await self._read_then_drop(request, drop.bytes)
            filename, size, sha256 = await self._receive(request, attempt)
            late = fault_of(request, "late_video_id")
            self._store.complete(attempt, filename, size, sha256, late.seconds if late else 0.0)
        except ConnectionError:
            self._store.abandon(attempt)
            if self._store.replaced(attempt):  # our connection was cut by a newer POST
                raise Superseded(key) from None
            raise
        except BaseException:
            self._store.abandon(attempt)
            raise
        return xml_response(upload_key_document(key))

    async def _read_then_drop(self, request: web.Request, limit: int) -> None:
        done = 0
        while done < limit and (chunk := await request.content.read(min(CHUNK, limit - done))):
            done += len(chunk)
        if request.transport is not None:
            request.transport.abort()  # a real reset: no response, no FIN handshake
        raise ConnectionDropped(f"dropped after reading {done} bytes")

    async def _receive(self, request: web.Request, attempt: Attempt) -> tuple[str, int, str]:
        """Stream the `upload_file` part to the attempt's temp file; drain any other parts."""
        if not request.content_type.startswith("multipart/"):
            raise VaultError(400, "invalid_request", "multipart/form-data expected")
        try:
            reader = await request.multipart()
        except (ValueError, KeyError, AssertionError) as exc:
            raise VaultError(400, "invalid_request", f"bad multipart body: {exc}") from None
        stored: tuple[str, int, str] | None = None
        try:
            while (part := await reader.next()) is not None:
                if stored is None and isinstance(part, BodyPartReader) and part.name == FILE_FIELD:
                    stored = await self._store_part(attempt, part)
                else:
                    await part.release()
        except (ValueError, BadHttpMessage) as exc:  # aiohttp's words for a malformed multipart stream
            raise VaultError(400, "invalid_request", f"bad multipart body: {exc}") from None
        if stored is None:
            raise VaultError(400, "invalid_request", f"no {FILE_FIELD} part")
        return stored

    async def _store_part(self, attempt: Attempt, part: BodyPartReader) -> tuple[str, int, str]:
        if _BAD_IN_DISPOSITION.search(part.headers.get(hdrs.CONTENT_DISPOSITION, "")):
            # A strict server's answer: a raw name that is not text is refused, not guessed at.
            raise VaultError(400, "invalid_request", "file name with control characters or bytes that are not UTF-8")
        max_size = self._settings.max_size
        digest = hashlib.sha256()
        size = 0
        with self._store.temp_path(attempt).open("wb") as out:
            while chunk := await part.read_chunk(CHUNK):
                size += len(chunk)
                if max_size and size > max_size:
                    raise VaultError(413, "too_large", f"file over the {max_size} byte limit")
                digest.update(chunk)
                out.write(chunk)
        return safe_filename(part.filename), size, digest.hexdigest()
