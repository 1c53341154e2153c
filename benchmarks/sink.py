"""A vault that is never the bottleneck: new key, upload POST, progress and delete, with
the upload body read into one reused buffer and thrown away.

The sandbox stores and hashes every byte (≈ 440 MB/s here), so against it a benchmark
measures the sandbox. This speaks just enough of API.md for the daemon and curl to run a
whole job (no signature check, no storage), one thread per connection doing blocking
`recv_into`, so the body costs one kernel copy per byte and no Python per byte.
`python benchmarks/sink.py --ready-file F` writes its URL to F once it listens.
"""

from __future__ import annotations

import argparse
import itertools
import re
import signal
import socketserver
import sys
import threading
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from vaultdrop.sandbox.vaultxml import deleted_document, progress_document, upload_key_document  # noqa: E402

RECEIVE_BUFFER = 4 * 1024 * 1024
MAX_HEAD = 64 * 1024
BOUNDARY = re.compile(rb"boundary=\"?([^\";\r\n]+)")
UNKNOWN_KEY = b"<error>\n  <code>unknown_key</code>\n  <message>no such key</message>\n</error>\n"


class Vault:
    """Keys and the file size each upload carried; nothing else is kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self.sizes: dict[str, int | None] = {}

    def new_key(self) -> str:
        with self._lock:
            key = f"sink-{next(self._numbers)}"
            self.sizes[key] = None
        return key


class Connection(socketserver.BaseRequestHandler):
    server: Server

    def setup(self) -> None:
        self.buffer = bytearray(RECEIVE_BUFFER)
        self.view = memoryview(self.buffer)
        self.pending = b""

    def handle(self) -> None:
        while (head := self._read_head()) is not None:
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if line)}
            url = urlsplit(target)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            if headers.get("expect", "").lower() == "100-continue":
                self.request.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            status, body = self._route(method, url.path, query, headers)
            self.request.sendall(b"HTTP/1.1 %d X\r\nContent-Type: application/xml\r\nContent-Length: %d\r\n\r\n%s"
                                 % (status, len(body), body))
            if headers.get("connection", "").lower() == "close":
                return

    def _route(self, method: str, path: str, query: dict[str, str], headers: dict[str, str]) -> tuple[int, bytes]:
        vault = self.server.vault
        if method == "POST" and path == "/upload/new/file":
            size = self._discard_body(int(headers["content-length"]), headers.get("content-type", ""))
            key = query.get("upload_key", "")
            if key not in vault.sizes:
                return 404, UNKNOWN_KEY
            vault.sizes[key] = size
            return 200, upload_key_document(key).encode()
        if path == "/upload/new_upload_key.xml":
            return 200, upload_key_document(vault.new_key()).encode()
        if path == "/upload/progress.xml":
            key = query.get("upload_key", "")
            if key not in vault.sizes:
                return 404, UNKNOWN_KEY
            size = vault.sizes[key]
            return 200, progress_document(key if size is not None else None, size or 0, size or 0).encode()
        if path.startswith("/video/delete/"):
            return 200, deleted_document(path.rsplit("/", 1)[1].removesuffix(".xml")).encode()
        return 404, UNKNOWN_KEY

    def _read_head(self) -> bytes | None:
        data = self.pending
        while b"\r\n\r\n" not in data:
            if len(data) > MAX_HEAD:
                return None
            chunk = self.request.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, self.pending = data.split(b"\r\n\r\n", 1)
        return head

    def _discard_body(self, length: int, content_type: str) -> int:
        """Read `length` body bytes, keeping only the part's headers; return the file's size."""
        start = self.pending[:length]
        while b"\r\n\r\n" not in start and len(start) < min(length, MAX_HEAD):
            start += self.request.recv(min(65536, length - len(start)))
        self.pending = b""
        remaining = length - len(start)
        while remaining:
            got = self.request.recv_into(self.view[:min(RECEIVE_BUFFER, remaining)])
            if not got:
                raise ConnectionError("client went away mid-body")
            remaining -= got
        match = BOUNDARY.search(content_type.encode("latin-1"))
        epilogue = len(b"\r\n--" + match.group(1) + b"--\r\n") if match else 0
        return length - (start.index(b"\r\n\r\n") + 4) - epilogue


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int) -> None:
        super().__init__(("127.0.0.1", port), Connection)
        self.vault = Vault()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--ready-file", type=Path, required=True)
    args = parser.parse_args()
    server = Server(args.port)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    args.ready_file.write_text(f"http://127.0.0.1:{server.server_address[1]}")
    server.serve_forever()


if __name__ == "__main__":
    main()
