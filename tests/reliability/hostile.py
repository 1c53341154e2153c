"""The hostile-input corpus and two loopback servers, shared by the fast tests and the campaign.

`Tripwire` is a loopback port that must never be contacted: hostile documents point their
external entities and includes at it. `RawServer` is a deliberately bad HTTP peer for what
the sandbox's admin API cannot carry (bodies over its 1 MiB request limit, endless bodies).
"""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

SECRET_MARKER = "TOP-SECRET-LOCAL-FILE-CONTENT"


@dataclass(frozen=True)
class Hostile:
    name: str
    body: str
    content_type: str = "application/xml"


class Tripwire:
    """A listening socket that records every connection attempt (and answers none)."""

    def __init__(self) -> None:
        self._socket = socket.create_server(("127.0.0.1", 0))
        self.port = self._socket.getsockname()[1]
        self.contacts = 0
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            self.contacts += 1
            self._handle(connection)

    def _handle(self, connection: socket.socket) -> None:
        connection.close()

    def close(self) -> None:
        self._closed = True
        self._socket.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: tuple[type[BaseException] | None, BaseException | None, TracebackType | None]) -> None:
        self.close()


class RawServer(Tripwire):
    """Answers every request with `head` then `chunk` repeated `repeat` times (0 = forever)."""

    def __init__(self, head: bytes, chunk: bytes, repeat: int) -> None:
        self._response = (head, chunk, repeat)
        self.sent = 0
        super().__init__()

    def _handle(self, connection: socket.socket) -> None:
        threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        head, chunk, repeat = self._response
        try:
            connection.recv(65536)
            connection.sendall(head)
            count = 0
            while repeat == 0 or count < repeat:
                connection.sendall(chunk)
                self.sent += len(chunk)
                count += 1
        except OSError:
            pass  # the client hung up: exactly what it should do
        finally:
            connection.close()


def http_head(content_type: str, length: int | None) -> bytes:
    size = f"Content-Length: {length}\r\n" if length is not None else "Connection: close\r\n"
    return f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\n{size}\r\n".encode()


def xml_corpus(secret_file: Path, port: int) -> list[Hostile]:
    """Server documents a vault client must refuse (for new_upload_key.xml / progress.xml)."""
    url = f"http://127.0.0.1:{port}"
    laughs = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    return [
        Hostile("xxe file URL", f'<?xml version="1.0"?><!DOCTYPE results [<!ENTITY x SYSTEM '
                f'"file://{secret_file}">]><results><upload_key>&x;</upload_key></results>'),
        Hostile("xxe http URL", f'<?xml version="1.0"?><!DOCTYPE results [<!ENTITY x SYSTEM "{url}/entity">]>'
                "<results><upload_key>&x;</upload_key></results>"),
        Hostile("external DTD", f'<!DOCTYPE results SYSTEM "{url}/dtd"><results><upload_key>k</upload_key>'
                "</results>"),
        Hostile("parameter entity", f'<!DOCTYPE results [<!ENTITY % p SYSTEM "{url}/p"> %p;]>'
                "<results><upload_key>k</upload_key></results>"),
        Hostile("lower-case doctype", f'<!doctype results [<!entity x system "file://{secret_file}">]>'
                "<results><upload_key>&x;</upload_key></results>"),
        Hostile("xinclude", '<results xmlns:xi="http://www.w3.org/2001/XInclude">'
                f'<xi:include href="file://{secret_file}" parse="text"/></results>'),
        Hostile("xinclude http", '<results xmlns:xi="http://www.w3.org/2001/XInclude">'
                f'<xi:include href="{url}/inc" parse="text"/></results>'),
        Hostile("billion laughs", f'<?xml version="1.0"?><!DOCTYPE results [<!ENTITY l0 "lol">{laughs}]>'
                "<results><upload_key>&l9;</upload_key></results>"),
        Hostile("deep nesting", "<results>" + "<a>" * 5000 + "</a>" * 5000 + "</results>"),
        Hostile("huge document", "<results><upload_key>" + "k" * 200_000 + "</upload_key></results>"),
        Hostile("wrong root", "<html><body><upload_key>k</upload_key></body></html>"),
        Hostile("missing element", "<results><status>ok</status></results>"),
        Hostile("empty element", "<results><upload_key>   </upload_key></results>"),
        Hostile("not XML", "Service temporarily unavailable", "text/plain"),
        Hostile("empty body", ""),
        Hostile("JSON instead of XML", '{"upload_key": "k"}', "application/json"),
        Hostile("truncated XML", "<results><upload_key>k</upload"),
        Hostile("processing instruction", '<?xml-stylesheet href="' + url + '/x.xsl"?><results></results>'),
    ]


def progress_corpus() -> list[Hostile]:
    """progress.xml documents that must not be taken as a confirmation."""
    return [
        Hostile("non-numeric progress", "<results><video_id>v</video_id><status><received>all</received>"
                "<size>1</size></status></results>"),
        Hostile("progress without status", "<results><video_id>v</video_id></results>"),
        Hostile("progress wrong root", "<progress><video_id>v</video_id></progress>"),
    ]


def json_corpus() -> list[tuple[str, Hostile]]:
    """(control command, answer) pairs a control client must refuse."""
    def j(name: str, body: str) -> Hostile:
        return Hostile(name, body, "application/json")

    return [
        ("aws.upload", j("request id is a string", '{"status": "success", "message": "", "data": "17"}')),
        ("aws.upload", j("request id is a bool", '{"status": "success", "message": "", "data": true}')),
        ("aws.upload", j("request id is negative", '{"status": "success", "message": "", "data": -4}')),
        ("aws.upload", j("request id is a float", '{"status": "success", "message": "", "data": 1.5}')),
        ("aws.upload", j("status missing", '{"message": "", "data": 17}')),
        ("aws.upload", j("not an object", '[17]')),
        ("aws.upload", j("deeply nested", '{"status": "success", "data": ' + "[" * 100_000 + "]" * 100_000 + "}")),
        ("aws.upload", j("huge number", '{"status": "success", "data": ' + "9" * 100_000 + "}")),
        ("aws.upload", j("not JSON", "<html>502 Bad Gateway</html>")),
        ("aws.upload", j("invalid UTF-8 escape", '{"status": "success", "data": "\\udc80"}')),
        ("aws.status", j("records not a list", '{"status": "success", "data": {"id": 1}}')),
        ("aws.status", j("records not objects", '{"status": "success", "data": [1, "two"]}')),
        ("files.getstorage", j("storage not a string", '{"status": "success", "data": {"storage": 3}}')),
        ("files.getstorage", j("storage escapes", '{"status": "success", "data": {"storage": "../../etc"}}')),
        ("files.getstorage", j("storage missing", '{"status": "success", "data": []}')),
    ]
