"""The SesameVault XML documents, shaped like the vendor's seed page.

Built from escaped text rather than an XML library: the documents are tiny and fixed,
and writing them out keeps the indentation and blank lines the seed shows, which
client parsers must accept.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from aiohttp import web

XML_TYPE = "application/xml"


class VaultError(Exception):
    """A vault call that ends in the API.md error table: HTTP `status`, body code `code`."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message


def xml_response(document: str, status: int = 200) -> web.Response:
    return web.Response(text=document, status=status, content_type=XML_TYPE, charset="utf-8")


def error_response(status: int, code: str, message: str) -> web.Response:
    return xml_response(
        f"<error>\n  <code>{escape(code)}</code>\n  <message>{escape(message)}</message>\n</error>\n",
        status,
    )


def upload_key_document(key: str) -> str:
    return f"  <results>\n    <upload_key>{escape(key)}</upload_key>\n  </results>\n"


def progress_document(video_id: str | None, received: int, size: int) -> str:
    video = f"    <video_id>{escape(video_id)}</video_id>\n    \n" if video_id is not None else ""
    return (
        f"  <results>\n{video}    <status>\n      <received>{received}</received>\n"
        f"      <size>{size}</size>\n    </status>\n  </results>\n"
    )


def deleted_document(video_id: str) -> str:
    return f"  <video>\n    <id>{escape(video_id)}</id>\n    <deleted>true</deleted>\n  </video>\n"
