"""The only way vaultdrop parses XML: a hardened lxml parser for untrusted server bodies.

lxml's "safe" options still accept a DOCTYPE and silently leave entities empty, so any
document carrying a DOCTYPE or an entity declaration is refused outright.
"""

from __future__ import annotations

import re

from lxml import etree

from ..errors import ProtocolError

MAX_XML_BYTES = 64 * 1024
_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_PARSER = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_comments=True,
    remove_pis=True,
)


def parse_xml(body: bytes, root_tag: str) -> etree._Element:
    """Parse a small server document whose root must be `root_tag`, or raise ProtocolError."""
    if len(body) > MAX_XML_BYTES:
        raise ProtocolError(f"XML body of {len(body)} bytes refused (limit {MAX_XML_BYTES})")
    if _DOCTYPE.search(body):
        raise ProtocolError("XML with a DOCTYPE or entity declaration refused")
    try:
        root = etree.fromstring(body, _PARSER)
    except (etree.XMLSyntaxError, ValueError) as exc:
        raise ProtocolError(f"malformed XML refused: {exc}") from None
    if root is None or root.getroottree().docinfo.doctype:
        raise ProtocolError("XML with a DOCTYPE refused")
    if root.tag != root_tag:
        raise ProtocolError(f"XML root <{root.tag}> refused, expected <{root_tag}>")
    return root


def child_text(element: etree._Element, path: str) -> str | None:
    """Text of the first element at `path` (stripped), None if absent."""
    found = element.find(path)
    if found is None or found.text is None:
        return None
    return found.text.strip()
