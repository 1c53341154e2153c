"""In-memory SesameVault and ScaleEngine control API behind one httpx MockTransport.

Strict like the real services (signatures checked with vaultdrop's own signing module,
key rules of API.md section 1, aws.status paging of section 2), with faults scripted per
call, and a record of what the vault stored and what was queued to S3: the exploration's
invariants are judged from that record, never from the daemon's own account.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import httpx

from vaultdrop.clients.signing import control_signature, vault_signature

VAULT_URL = "http://vault.test"
CONTROL_URL = "http://control.test/stable/"
USER, PASSWORD = "bob", "secret"
API_KEY, API_SECRET, CDN = "key", "control-secret", 7
STORAGE = "sestore3"

# Vault faults, by call. "500_after"/"timeout_after" store the upload before failing;
# "crash_after" (here and below) carries out the call, then the daemon dies before it
# reads the answer (kill -9 while the request is in flight, after its bytes left).
UPLOAD_FAULTS = ("500_before", "500_after", "503", "409", "refused", "drop_mid_body", "timeout_after",
                 "crash_after")
PROGRESS_FAULTS = ("404_unknown_key", "500", "503", "refused", "timeout")
# "used": the key of the newest completed upload is handed out again (a caching proxy).
KEY_FAULTS = ("500", "503", "refused", "used")
DELETE_FAULTS = ("500", "deleted_false", "crash_after")
# Control API faults, by command: a vendor code, an HTTP error, or the call's effect taking
# place while its answer is lost ("timeout_after").
CONTROL_FAULTS = ("1000", "0004", "500", "refused", "timeout_after", "crash_after")
# How a queued S3 request ends: complete after a while, failed, stuck in `uploading`, or
# listed in aws.status only after NOT_FOUND_GRACE has passed.
S3_OUTCOMES = ("complete", "failed", "stuck", "listed_late")
# Every scriptable fault as "call:fault", the vocabulary of the exploration's run rule.
FAULTS: tuple[str, ...] = (
    *(f"upload:{f}" for f in UPLOAD_FAULTS), *(f"progress:{f}" for f in PROGRESS_FAULTS),
    *(f"new_upload_key:{f}" for f in KEY_FAULTS), *(f"delete:{f}" for f in DELETE_FAULTS),
    *(f"{c}:{f}" for c in ("aws.upload", "aws.status", "files.getstorage") for f in CONTROL_FAULTS),
    *(f"s3:{o}" for o in S3_OUTCOMES), "video_id:late_3", "video_id:late_15",
)
S3_STEP = 40.0  # simulated seconds per status: queued -> uploading -> complete
S3_LATE = 200.0


class FakeClock:
    """Time that moves only when told; `sleep` advances it instead of waiting."""

    def __init__(self, start: float = 1_750_000_000.0) -> None:
        self.now = start
        self.elapsed = 0.0  # forward time only: the measure for "requests per hour"
        self.on_advance: Callable[[], None] | None = None  # what keeps up with time (the hosts' heartbeats)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.elapsed += max(0.0, seconds)
        if self.on_advance is not None:
            self.on_advance()

    async def sleep(self, seconds: float) -> None:
        self.advance(max(0.0, seconds))


class Crash(BaseException):
    """The daemon process died here (BaseException: nothing in it may catch it). Raised
    right after a journal commit (world.CrashingJournal), at a crash point in a post-action
    (world.PostActionHooks), or by a service that carried out a call whose answer the
    daemon never reads ("crash_after")."""


class Runaway(BaseException):
    """Too many requests in one job run: the pipeline spins. BaseException so that no
    `except Exception` in the pipeline can swallow it."""


class NotDurable(BaseException):
    """A request sent while the journal held commits not yet on disk (BaseException, as
    Runaway)."""


@dataclass
class Stored:
    video_id: str
    sha256: str
    size: int
    deleted: bool = False


@dataclass
class Key:
    received: int = 0
    size: int = 0
    video_id: str | None = None
    polls_until_visible: int = 0


@dataclass
class S3Request:
    id: int
    path: str
    destination_path: str
    bucket: str
    created: float  # FakeClock.elapsed
    outcome: str

    def record(self, now: float) -> dict[str, Any] | None:
        """What aws.status lists for it now (None: not listed yet)."""
        age = now - self.created
        if self.outcome == "listed_late" and age < S3_LATE:
            return None
        if age < S3_STEP:
            status = "queued"
        elif age < 2 * S3_STEP or self.outcome == "stuck":
            status = "uploading"
        else:
            status = "failed" if self.outcome == "failed" else "complete"
        return {"id": self.id, "status": status, "path": self.path, "destination_path": self.destination_path,
                "bucket": self.bucket, "message": "no such file" if status == "failed" else ""}


@dataclass
class Services:
    """Both fakes' state; survives a simulated daemon crash (it is the remote side)."""

    clock: FakeClock
    keys: dict[str, Key] = field(default_factory=dict)
    stored: list[Stored] = field(default_factory=list)
    s3_requests: list[S3Request] = field(default_factory=list)
    faults: dict[str, deque[str]] = field(default_factory=dict)
    late_video_id: int = 0  # progress polls before the next completed upload shows its video_id
    s3_outcome: str = "complete"  # how the next queued S3 request ends
    requests: list[tuple[float, str]] = field(default_factory=list)  # (clock.elapsed, call)
    protocol_errors: list[str] = field(default_factory=list)
    runaway_limit: int | None = None
    # called at a "crash_after" fault before Crash is raised: the world marks its daemon
    # dead at once, so no other task of it acts after this instant
    crash_hook: Callable[[str], None] | None = None
    _run_requests: int = 0

    # -- scripting -------------------------------------------------------------------

    def script(self, call: str, *faults: str) -> None:
        """Answer the next calls of `call` with these faults, in order (then normally)."""
        self.faults.setdefault(call, deque()).extend(faults)

    def apply(self, fault: str) -> None:
        """One entry of FAULTS: the next call answers with it (or the next upload's video_id
        shows late, or the next S3 request ends so)."""
        call, what = fault.split(":")
        if call == "s3":
            self.s3_outcome = what
        elif call == "video_id":
            self.late_video_id = int(what.removeprefix("late_"))
        else:
            self.script(call, what)

    def clear_faults(self) -> None:
        self.faults.clear()
        self.late_video_id = 0
        self.s3_outcome = "complete"

    def _fault(self, call: str) -> str | None:
        queue = self.faults.get(call)
        return queue.popleft() if queue else None

    def start_run(self, limit: int) -> None:
        self.runaway_limit, self._run_requests = limit, 0

    def _crash(self, what: str) -> Crash:
        """The daemon dies now, after the service did `what` and before it answered."""
        if self.crash_hook is not None:
            self.crash_hook(what)
        return Crash(f"crash mid-request: {what}, the answer never read")

    # -- what the invariants read ----------------------------------------------------

    def live(self) -> list[Stored]:
        return [s for s in self.stored if not s.deleted]

    def live_count(self, sha256: str) -> int:
        return sum(1 for s in self.live() if s.sha256 == sha256)

    # -- the transport -----------------------------------------------------------------

    def transport(self, before: Callable[[httpx.Request], None]) -> httpx.MockTransport:
        """`before` sees each request first, and may refuse it by raising."""
        async def handle(request: httpx.Request) -> httpx.Response:
            before(request)
            await asyncio.sleep(0)  # on the wire: the daemon's other tasks run meanwhile
            return await self._handle(request)

        return httpx.MockTransport(handle)

    async def _handle(self, request: httpx.Request) -> httpx.Response:
        call = f"{request.method} {request.url.host}{request.url.path}"
        self.requests.append((self.clock.elapsed, call))
        self._run_requests += 1
        if self.runaway_limit is not None and self._run_requests > self.runaway_limit:
            raise Runaway(f"more than {self.runaway_limit} requests in one job run (last: {call})")
        if request.url.host == "vault.test":
            return await self._vault(request)
        return await self._control(request)

    # -- vault (API.md section 1) ------------------------------------------------------

    async def _vault(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/upload/new/file":
            return await self._upload(request)
        await request.aread()
        if not self._signed(request.headers.get("Authorization", ""), request.headers.get("x-sesame-date", ""),
                            path):
            return _xml_error(403, "bad_signature", "signature does not match")
        if path == "/upload/new_upload_key.xml":
            fault = self._fault("new_upload_key")
            used = [name for name, key in self.keys.items() if key.video_id is not None]
            if fault == "used" and used:
                return _xml(f"<results><upload_key>{used[-1]}</upload_key></results>")
            if fault and fault != "used":
                return _vault_fault(fault, request)
            key = f"k{len(self.keys) + 1}"
            self.keys[key] = Key()
            return _xml(f"<results><upload_key>{key}</upload_key></results>")
        if path == "/upload/progress.xml":
            return self._progress(request)
        if path.startswith("/video/delete/") and path.endswith(".xml"):
            return self._delete(request, path[len("/video/delete/"):-len(".xml")])
        return _xml_error(404, "not_found", f"no route {path}")

    def _signed(self, signature: str, timestamp: str, path: str) -> bool:
        try:
            skew = abs(float(timestamp) - self.clock())
        except ValueError:
            skew = float("inf")
        good = hmac.compare_digest(signature, vault_signature(USER, PASSWORD, timestamp, path))
        if not good or skew > 900:
            self.protocol_errors.append(f"{path}: bad signature or time ({signature!r}, {timestamp!r})")
        return good and skew <= 900

    async def _upload(self, request: httpx.Request) -> httpx.Response:
        params = request.url.params
        key = self.keys.get(params.get("upload_key", ""))
        fault = self._fault("upload")
        if fault in ("refused", "503"):
            return _vault_fault(fault, request)
        if not self._signed(params.get("_sig", ""), params.get("_date", ""), "/upload/new/file"):
            await request.aread()
            return _xml_error(403, "bad_signature", "signature does not match")
        if key is None:
            await request.aread()
            return _xml_error(404, "unknown_key", "no such upload key")
        if key.video_id is not None:
            await request.aread()
            return _xml_error(409, "key_used", "this key's upload is complete")
        if fault == "drop_mid_body":
            async for _ in request.stream:  # the preamble arrives, then the connection breaks
                break
            key.received = key.size = 0
            raise httpx.WriteError("connection reset by peer", request=request)
        body = await request.aread()
        await asyncio.sleep(0)  # the bytes arrived; the vault takes its time to store them
        content = _multipart_file(request.headers.get("Content-Type", ""), body)
        if content is None:
            return _xml_error(400, "invalid_request", "no upload_file part")
        if fault in ("409", "500_before"):
            return _vault_fault(fault, request)
        key_name = params["upload_key"]
        key.received = key.size = len(content)
        key.video_id = key_name
        key.polls_until_visible = self.late_video_id
        self.stored.append(Stored(key_name, hashlib.sha256(content).hexdigest(), len(content)))
        if fault == "crash_after":
            raise self._crash(f"upload on {key_name} stored")
        await asyncio.sleep(0)  # stored; the answer is still on its way
        if fault is not None:
            return _vault_fault(fault, request)
        return _xml(f"<results><upload_key>{key_name}</upload_key></results>")

    def _progress(self, request: httpx.Request) -> httpx.Response:
        fault = self._fault("progress")
        if fault:
            return _vault_fault(fault, request)
        key = self.keys.get(request.url.params.get("upload_key", ""))
        if key is None:
            return _xml_error(404, "unknown_key", "no such upload key")
        video = ""
        if key.video_id is not None:
            if key.polls_until_visible > 0:
                key.polls_until_visible -= 1
            else:
                video = f"<video_id>{key.video_id}</video_id>"
        return _xml(f"<results>{video}<status><received>{key.received}</received>"
                    f"<size>{key.size}</size></status></results>")

    def _delete(self, request: httpx.Request, video_id: str) -> httpx.Response:
        fault = self._fault("delete")
        if fault == "500":
            return _vault_fault(fault, request)
        found = next((s for s in self.live() if s.video_id == video_id), None)
        if found is None:
            return _xml_error(404, "not_found", "no such video")
        if fault == "deleted_false":
            return _xml(f"<video><id>{video_id}</id><deleted>false</deleted></video>")
        found.deleted = True
        if fault == "crash_after":
            raise self._crash(f"video {video_id} deleted")
        return _xml(f"<video><id>{video_id}</id><deleted>true</deleted></video>")

    # -- control API (API.md section 2) --------------------------------------------------

    async def _control(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        text = parse_qs(body.decode("ascii")).get("json", [""])[0]
        try:
            req = json.loads(text)
        except ValueError:
            return _envelope("failure", 0, "0006", "json is not a valid request")
        if not self._control_signed(req):
            return _envelope("failure", 0, "0003", "signature check failed")
        command = req.get("command")
        fault = self._fault(command)
        if fault in ("refused", "500"):
            return _vault_fault(fault, request)
        if fault in ("1000", "0004"):
            return _envelope("failure", 0, fault, "scripted failure")
        if command == "files.getstorage":
            data: Any = {"storage": STORAGE}
        elif command == "aws.upload":
            data = self._aws_upload(req)
        elif command == "aws.status":
            # the copy's progress follows the platform's time, which no local clock step moves
            records = [r for r in (q.record(self.clock.elapsed) for q in reversed(self.s3_requests)) if r]
            offset, limit = int(req.get("offset", 0)), int(req.get("limit", 25))
            data = records[offset:offset + limit]
        else:
            return _envelope("failure", 0, "0000", f"unknown command {command!r}")
        if fault == "timeout_after":
            raise httpx.ReadTimeout("timed out waiting for the answer", request=request)
        if fault == "crash_after":
            raise self._crash(f"{command} carried out")
        return _envelope("success", data)

    def _control_signed(self, req: Any) -> bool:
        ok = (isinstance(req, dict) and req.get("api_key") == API_KEY and req.get("cdn") == CDN
              and isinstance(req.get("timestamp"), int) and abs(req["timestamp"] - self.clock()) <= 300
              and hmac.compare_digest(str(req.get("signature", "")), control_signature(API_SECRET, req)))
        if not ok:
            self.protocol_errors.append(f"control request refused: {req!r}")
        return ok

    def _aws_upload(self, req: dict[str, Any]) -> int:
        request = S3Request(len(self.s3_requests) + 1, req["path"], req["destination_path"], req["bucket"],
                            self.clock.elapsed, self.s3_outcome)
        self.s3_requests.append(request)
        return request.id


def _multipart_file(content_type: str, body: bytes) -> bytes | None:
    """The upload_file part's bytes (the client sends exactly one part)."""
    marker = "boundary="
    if marker not in content_type:
        return None
    boundary = content_type.split(marker, 1)[1].encode()
    head, sep, rest = body.partition(b"\r\n\r\n")
    closing = b"\r\n--" + boundary + b"--\r\n"
    if not sep or b'name="upload_file"' not in head or not rest.endswith(closing):
        return None
    return rest[: -len(closing)]


def _answer(status: int, body: bytes, content_type: str) -> httpx.Response:
    """A streamed body: the clients read raw and bounded, which a pre-read body refuses."""
    return httpx.Response(status, stream=httpx.ByteStream(body), headers={"Content-Type": content_type})


def _xml(text: str, status: int = 200) -> httpx.Response:
    return _answer(status, text.encode(), "application/xml")


def _xml_error(status: int, code: str, message: str) -> httpx.Response:
    return _xml(f"<error><code>{code}</code><message>{message}</message></error>", status)


def _vault_fault(fault: str, request: httpx.Request) -> httpx.Response:
    if fault == "refused":
        raise httpx.ConnectError("connection refused", request=request)
    if fault in ("timeout", "timeout_after"):
        raise httpx.ReadTimeout("timed out", request=request)
    if fault == "404_unknown_key":
        return _xml_error(404, "unknown_key", "no such upload key")
    if fault == "409":
        return _xml_error(409, "key_used", "this key's upload is complete")
    status = 503 if fault == "503" else 500
    return _xml_error(status, "server_error", "scripted failure")


def _envelope(status: str, data: Any, code: str | None = None, message: str = "") -> httpx.Response:
    body: dict[str, Any] = {"message": message, "status": status, "handle_time": 0.01, "data": data}
    if code is not None:
        body["code"] = code
    return _answer(200, json.dumps(body).encode(), "application/json")
