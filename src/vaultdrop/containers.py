"""Is this media file completely written? A cheap answer from container headers alone.

Settling by time cannot tell a finished file from a stalled recording; most containers can:
a muxer patches a size field, writes an index (MP4 moov, mfra) or a footer and random index
pack (MXF) only when it finishes. Only headers and the tail are read, never the media, so a
check costs a few small preads whatever the file's size, and never more than _MAX_READS.
Hostile bytes, or a file that shrinks while it is judged, never raise: only OSError from
reading escapes. "complete" is said only when certain (the daemon admits on it at once),
"incomplete" only when the file is certainly unfinished (the daemon fails the job on it in
the end); everything in between is "unknown", left to the settle timer.
"""

from __future__ import annotations

import os
import struct
from itertools import pairwise
from pathlib import Path
from typing import Literal, NamedTuple


class Verdict(NamedTuple):
    state: Literal["complete", "incomplete", "unknown"]
    format: str | None  # "MP4", "MOV", "MXF", "WAV", "RF64", ... None when not recognised
    reason: str  # for logs and job errors; "" when complete or not recognised


UNRECOGNISED = Verdict("unknown", None, "")

# One pread fetches a block, so box headers and small indexes near each other cost one call.
_BLOCK = 4096
# Bounds on the walks, so that a hostile or huge file cannot make one check slow.
_MAX_BOXES = 100_000
_MAX_CHILDREN = 1_024
_MAX_TAIL_BOXES = 1_024
_MAX_CHUNKS = 10_000
_MAX_KLVS = 100_000
_MAX_RIP_BYTES = 1 << 20
_MAX_PACK_CHECKS = 64
# Preads one check may do (of _BLOCK bytes each, or a RIP): beyond it the answer is "unknown".
# Only a walk over many scattered boxes needs that many: a fragmented MP4 without an mfra.
_MAX_READS = 2_000


class _TooManyReads(Exception):
    """Raised by _Reader past _MAX_READS preads; judge_open answers "unknown"."""


def judge(path: Path) -> Verdict:
    """Judge the file at `path`; blocking, so run it off the event loop."""
    # O_NONBLOCK: a FIFO dropped into a watched folder must not hang the open.
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        return judge_open(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def judge_open(fd: int, size: int) -> Verdict:
    """Judge the first `size` bytes of the open file `fd` (nothing beyond is read).

    Only OSError escapes: any other exception (a bug, or a file that shrank under the reads)
    and a check that would need more than _MAX_READS preads are "unknown".
    """
    reader = _Reader(fd, size)
    try:
        head = reader.read(0, 16)
        if head[:4] in _RIFF_MAGICS:
            return _judge_riff(reader)
        if _mxf_key(head) in _HEADER_KEYS:
            return _judge_mxf(reader)
        return _judge_bmff(reader, head)
    except OSError:
        raise
    except _TooManyReads:
        why = f"not judged within {_MAX_READS} reads"
        return UNRECOGNISED if reader.fmt is None else _unknown(reader.fmt, why)
    except Exception as exc:  # a bug, or bytes changing under the reads: never a failed job
        why = f"could not judge the headers ({type(exc).__name__}: {exc})"
        return UNRECOGNISED if reader.fmt is None else _unknown(reader.fmt, why)


class _Reader:
    """Preads of the first `size` bytes through one cached block, at most _MAX_READS of them."""

    __slots__ = ("fd", "size", "fmt", "reads", "_base", "_block")

    def __init__(self, fd: int, size: int) -> None:
        self.fd = fd
        self.size = size
        self.fmt: str | None = None  # set by a judge once it knows the format
        self.reads = 0
        self._base = 0
        self._block = b""

    def read(self, offset: int, length: int) -> bytes:
        """Up to `length` bytes at `offset`: fewer at the end of the file or if it shrank."""
        length = min(length, self.size - offset)
        if offset < 0 or length <= 0:
            return b""
        start = offset - self._base
        if start >= 0 and start + length <= len(self._block):
            return self._block[start : start + length]
        self.reads += 1
        if self.reads > _MAX_READS:
            raise _TooManyReads
        # Near the end, start the block earlier: tails are read backwards (mfro, then mfra).
        base = max(0, min(offset, self.size - _BLOCK))
        self._block = os.pread(self.fd, max(_BLOCK, length + offset - base), base)
        self._base = base
        return self._block[offset - base : offset - base + length]


def _complete(fmt: str) -> Verdict:
    return Verdict("complete", fmt, "")


def _incomplete(fmt: str, why: str) -> Verdict:
    return Verdict("incomplete", fmt, f"incomplete {fmt}: {why}")


def _unknown(fmt: str, why: str) -> Verdict:
    return Verdict("unknown", fmt, f"{fmt}: {why}")


def _name(code: bytes) -> str:
    """A four-character code fit for a log line, whatever its bytes."""
    return "".join(chr(c) if 32 <= c < 127 else "?" for c in code)


# ---------------------------------------------------------------- ISO BMFF: MP4, MOV, M4A, 3GP

_TOP_LEVEL = frozenset(
    {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"styp", b"uuid", b"sidx",
     b"moof", b"meta", b"junk", b"PICT"}
)  # fmt: skip


def _box(reader: _Reader, offset: int) -> tuple[bytes, int, int] | None:
    """(type, header length, size) of the box at `offset`; None if its header is cut off.

    Size 0 ("to the end of the file") is returned as 0; a size below the header length
    means the box is malformed, and the caller decides what that means.
    """
    head = reader.read(offset, 16)
    if len(head) < 8:
        return None
    size, kind = struct.unpack_from(">I4s", head)
    if size != 1:
        return kind, 8, size
    if len(head) < 16:
        return None
    return kind, 16, struct.unpack_from(">Q", head, 8)[0]


def _judge_bmff(reader: _Reader, head: bytes) -> Verdict:
    """Top-level boxes must tile the file, with the index the layout needs at its place.

    A recording muxer starts mdat with size 0 and patches it at the end, so "boxes tile the
    file" holds for every prefix of a recording: completeness needs the index. Without
    mvex, the moov (and an mdat) must be there; fragmented files end with an mfra only.
    Fewer than 8 bytes after the last whole box are a box header cut off, or junk after a
    finished file: "incomplete" only if the boxes before them are themselves unfinished.
    """
    if len(head) < 8:
        return UNRECOGNISED
    first_size, first = struct.unpack_from(">I4s", head)
    if first not in _TOP_LEVEL or 1 < first_size < 8:
        return UNRECOGNISED
    if first == b"ftyp" and not 16 <= first_size <= 4096:
        return UNRECOGNISED
    fmt = reader.fmt = "MOV" if first != b"ftyp" or head[8:12] == b"qt  " else "MP4"
    size = reader.size
    offset = count = mdats = 0
    moov = fragmented = other_index = False
    last, last_at = b"", 0
    while offset < size:
        count += 1
        if count > _MAX_BOXES:
            return _unknown(fmt, f"more than {_MAX_BOXES} top-level boxes")
        box = _box(reader, offset)
        if box is None:
            cut_off = _incomplete(fmt, f"box header cut off at offset {offset}")
            if size - offset >= 8:  # a 64-bit size cut off, or the file shrank: not junk
                return cut_off
            ending = _bmff_ending(fmt, fragmented, moov, mdats, other_index, last, last_at, reader)
            if ending.state == "incomplete":
                return cut_off
            return _unknown(
                fmt, f"{size - offset} bytes after the last box: a box header cut off, or junk"
            )
        kind, header, box_size = box
        if box_size == 0:
            # Size 0 is "to the end of the file": legal for a last box, but a recording
            # muxer leaves its mdat so until it patches it and writes the moov after it.
            if kind == b"mdat" and not moov:
                return _incomplete(fmt, "mdat size not written yet (0)")
            return _unknown(fmt, f"box '{_name(kind)}' runs to the end of the file (size 0)")
        if box_size < header:
            return _unknown(fmt, f"malformed box size {box_size} at offset {offset}")
        end = offset + box_size
        if end > size:
            return _incomplete(
                fmt,
                f"box '{_name(kind)}' runs past the end of the file "
                f"(declared {box_size} bytes, {size - offset} present)",
            )
        if kind == b"moov":
            moov = True
            if _has_child(reader, offset + header, end, b"mvex"):
                fragmented = True
                mfra = _mfra_start(reader)
                if mfra is not None and _tail_tiles(reader, mfra, end):
                    return _complete(fmt)
        elif kind == b"mdat":
            mdats += 1
        elif kind in (b"moof", b"meta"):
            other_index = True
        last, last_at = kind, offset
        offset = end
    return _bmff_ending(fmt, fragmented, moov, mdats, other_index, last, last_at, reader)


def _bmff_ending(
    fmt: str,
    fragmented: bool,
    moov: bool,
    mdats: int,
    other_index: bool,
    last: bytes,
    last_at: int,
    reader: _Reader,
) -> Verdict:
    """The verdict on top-level boxes that tile the file up to its end (or up to a few
    trailing bytes): whether the index the layout needs is there."""
    if fragmented:
        if last == b"mfra" and _mfra_start(reader) == last_at:
            return _complete(fmt)
        if last == b"moof":
            return _incomplete(fmt, f"fragment at offset {last_at} has no mdat yet")
        return _unknown(fmt, "fragmented, no mfra: cannot tell whether more fragments follow")
    if not moov:
        if other_index:  # a media segment (moof) or an image (meta): no moov by design
            return _unknown(fmt, "no moov box")
        return _incomplete(fmt, "no moov box")
    if not mdats:  # a reference movie has none; a faststart file cut after its moov neither
        return _unknown(fmt, "moov but no mdat box")
    return _complete(fmt)


def _has_child(reader: _Reader, start: int, stop: int, want: bytes) -> bool:
    """Whether the box body [start, stop) holds a child box of type `want`."""
    for _ in range(_MAX_CHILDREN):
        box = _box(reader, start) if start < stop else None
        if box is None:
            return False
        kind, header, size = box
        if kind == want:
            return True
        if size < header:  # size 0 (to the end of the parent) or malformed: no more children
            return False
        start += size
    return False


def _mfra_start(reader: _Reader) -> int | None:
    """Offset of the mfra that the mfro in the last 16 bytes points at, if there is one."""
    tail = reader.read(reader.size - 16, 16)
    if len(tail) < 16:
        return None
    box_size, kind, _version, mfra_size = struct.unpack(">I4sII", tail)
    start = reader.size - mfra_size
    if box_size != 16 or kind != b"mfro" or mfra_size < 24 or start < 0:
        return None
    return start if _box(reader, start) == (b"mfra", 8, mfra_size) else None


def _tail_tiles(reader: _Reader, mfra: int, moov_end: int) -> bool:
    """Whether the boxes from the last fragment the mfra lists end exactly at the mfra.

    Saves walking every fragment of a long recording: the mfra is written last, so only
    the stretch between the last listed moof and it needs checking.
    """
    last_moof = max(_last_moofs(reader, mfra), default=-1)
    if not moov_end <= last_moof < mfra:
        return False
    box = _box(reader, last_moof)
    if box is None or box[0] != b"moof":
        return False
    offset = last_moof
    for _ in range(_MAX_TAIL_BOXES):
        box = _box(reader, offset)
        if box is None or box[2] < box[1] or offset + box[2] > mfra:
            return False
        offset += box[2]
        if offset == mfra:
            return True
    return False


def _last_moofs(reader: _Reader, mfra: int) -> list[int]:
    """The moof offset of the last entry of each tfra in the mfra (empty if malformed)."""
    found: list[int] = []
    offset = mfra + 8
    stop = reader.size - 16  # the mfro
    while offset < stop and len(found) < _MAX_CHILDREN:
        box = _box(reader, offset)
        if box is None or box[1] != 8 or box[2] < 8 or offset + box[2] > stop:
            return []
        kind, _, size = box
        if kind == b"tfra":
            body = reader.read(offset + 8, 16)
            if len(body) < 16:
                return []
            version, sizes, entries = body[0], body[11], struct.unpack_from(">I", body, 12)[0]
            width = (16 if version == 1 else 8) + (sizes >> 4 & 3) + (sizes >> 2 & 3) + (sizes & 3) + 3
            if entries == 0 or 24 + entries * width != size:
                return []
            entry = reader.read(offset + 24 + (entries - 1) * width, width)
            if len(entry) < width:
                return []
            found.append(int.from_bytes(entry[8:16] if version == 1 else entry[4:8], "big"))
        offset += size
    return found


# ---------------------------------------------------------------- RIFF: WAV, AVI, RF64, BW64

_RIFF_MAGICS = frozenset({b"RIFF", b"RF64", b"BW64"})
_RIFF_FORMATS = {b"WAVE": "WAV", b"AVI ": "AVI"}
# Sizes a writer puts in the header before it knows them (ffmpeg: 0xFFFFFFFF in RIFF and data
# chunks, zeros in ds64). One that cannot seek back (a pipe) leaves them so for good.
_PLACEHOLDERS = frozenset({0, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF})
# The data chunk sizes that other writers put there for a stream of unknown length: arecord's
# 2 GiB cap and its 0x7fffff00, and sox's MS_UNSPEC 0x7ffff000 rounded down to whole blocks.
_STREAM_DATA_SIZES = frozenset({0x80000000, 0x7FFFFF00})
_SOX_UNSPEC = 0x7FFFF000
_STREAMED = "sizes not written (a streamed file)"


def _judge_riff(reader: _Reader) -> Verdict:
    """The RIFF size (RF64/BW64: the ds64 one) must say where the file ends, chunks tiling it.

    Writers leave the sizes at a placeholder until they finish, and one writing to a pipe
    leaves them so for good (such files play): placeholders are "unknown", and only a real
    size larger than the file is "incomplete". OpenDML AVI continues with 'RIFF' 'AVIX'
    chunks after the first one; other bytes after the RIFF chunk are unknown.
    """
    head = reader.read(0, 12)
    if len(head) < 12 or not all(32 <= c < 127 for c in head[8:12]):
        return UNRECOGNISED
    magic, riff_size, form = struct.unpack("<4sI4s", head)
    fmt = reader.fmt = _RIFF_FORMATS.get(form, "RIFF") if magic == b"RIFF" else magic.decode()
    data_size = None
    if magic != b"RIFF":
        ds64 = reader.read(12, 24)
        if len(ds64) < 24:
            return _incomplete(fmt, "ds64 chunk cut off")
        kind, ds64_size, riff_size, data_size = struct.unpack("<4sIQQ", ds64)
        if kind != b"ds64" or ds64_size < 28:
            return _unknown(fmt, "no ds64 chunk")
        if riff_size in _PLACEHOLDERS:
            return _unknown(fmt, f"{_STREAMED}: ds64 RIFF size {riff_size:#x}")
    size = reader.size
    offset = chunks = 0
    while offset < size:
        if offset:
            head = reader.read(offset, 12)
            if form != b"AVI " or len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"AVIX":
                return _unknown(fmt, f"{size - offset} bytes after the end of the RIFF chunk")
            riff_size = struct.unpack_from("<I", head, 4)[0]
        where = f" at offset {offset}" if offset else ""
        if riff_size in _PLACEHOLDERS:
            return _unknown(fmt, f"{_STREAMED}: RIFF size{where} {riff_size:#x}")
        end = offset + 8 + riff_size
        if end > size:
            streamed = not offset and form == b"WAVE"
            placeholder = _streamed_data(reader, end, data_size) if streamed else None
            if placeholder is not None:
                return _unknown(fmt, f"{_STREAMED}: data size {placeholder:#x}")
            return _incomplete(
                fmt,
                f"RIFF chunk{where} runs past the end of the file "
                f"(declared {riff_size} bytes, {size - offset - 8} present)",
            )
        inner = offset + 12
        while inner < end:
            chunks += 1
            head = reader.read(inner, 8)
            if chunks > _MAX_CHUNKS or len(head) < 8:
                return _unknown(fmt, f"malformed chunks in the RIFF chunk at offset {offset}")
            kind, chunk_size = struct.unpack("<4sI", head)
            if kind == b"data" and chunk_size == 0xFFFFFFFF and data_size is not None:
                chunk_size = data_size
            if inner + 8 + chunk_size > end:
                return _unknown(fmt, f"chunk '{_name(kind)}' runs past its RIFF chunk")
            inner += 8 + chunk_size + (chunk_size & 1)
        offset = min(inner, size)  # the last chunk's pad byte may be missing or not counted
    return _complete(fmt)


def _streamed_data(reader: _Reader, end: int, ds64_data: int | None) -> int | None:
    """The data chunk's size if it is one a writer leaves when streaming, else None.

    sox and arecord derive the RIFF size from it, so that looks real: only the data size tells.
    """
    inner = 12
    for _ in range(_MAX_CHUNKS):
        head = reader.read(inner, 8)
        if len(head) < 8:
            return None
        kind, chunk_size = struct.unpack("<4sI", head)
        if kind == b"data":
            if ds64_data is not None:  # RF64, BW64: 0xFFFFFFFF says "see ds64"
                chunk_size = ds64_data if chunk_size == 0xFFFFFFFF else chunk_size
                return chunk_size if chunk_size in _PLACEHOLDERS else None
            streamed = (
                chunk_size in _PLACEHOLDERS
                or chunk_size in _STREAM_DATA_SIZES
                or 0 <= _SOX_UNSPEC - chunk_size < 1 << 16
            )
            return chunk_size if streamed else None
        inner += 8 + chunk_size + (chunk_size & 1)
        if inner >= end:
            return None
    return None


# ---------------------------------------------------------------- MXF (SMPTE 377-1)

# Partition packs and the RIP: 06 0E 2B 34 02 05 01 01 0D 01 02 01 01 kind status 00,
# byte 7 (the registry version) ignored as MXF readers do.
_HEADER_KEYS = frozenset({(2, 1), (2, 2), (2, 3), (2, 4)})
_INCOMPLETE_HEADERS = frozenset({(2, 1), (2, 2)})  # open and closed incomplete
_BODY_KEYS = frozenset({(3, 1), (3, 2), (3, 3), (3, 4), (3, 0x11)})  # 0x11: generic stream
_FOOTER_KEYS = frozenset({(4, 1), (4, 2), (4, 3), (4, 4)})
_RIP_KEY = (0x11, 1)
_FILL_KEY_TAIL = b"\x03\x01\x02\x10\x01\x00\x00\x00"  # after 06 0E 2B 34 01 01 01 vv
_PACK_MIN = 88  # the fixed fields and the essence container batch header


def _mxf_key(key: bytes) -> tuple[int, int] | None:
    """(kind, status) when `key` is a partition pack or RIP key, else None."""
    if len(key) < 16 or key[:7] != b"\x06\x0e\x2b\x34\x02\x05\x01" or key[15]:
        return None
    if key[8:13] != b"\x0d\x01\x02\x01\x01":
        return None
    return key[13], key[14]


def _klv(reader: _Reader, offset: int) -> tuple[bytes, int, int] | None:
    """(key, value offset, value length) of the KLV at `offset`; None if cut off by EOF.

    The value length is -1 for a BER length MXF never uses (indefinite, over 8 bytes).
    """
    head = reader.read(offset, 25)
    if len(head) < 17:
        return None
    first = head[16]
    if first < 0x80:
        return head[:16], offset + 17, first
    width = first & 0x7F
    if not 1 <= width <= 8:
        return head[:16], offset + 17, -1
    if len(head) < 17 + width:
        return None
    return head[:16], offset + 17 + width, int.from_bytes(head[17 : 17 + width], "big")


def _cut_off(reader: _Reader, offset: int) -> bool:
    """Whether the KLV at `offset` is cut off by the end of the file."""
    klv = _klv(reader, offset)
    return klv is None or klv[2] >= 0 and klv[1] + klv[2] > reader.size


def _after_fill(reader: _Reader, offset: int) -> int:
    """The offset past the fill items (KAG alignment) that start at `offset`."""
    for _ in range(_MAX_KLVS):
        klv = _klv(reader, offset)
        if klv is None or klv[2] < 0 or not _is_fill(klv[0]):
            break
        offset = klv[1] + klv[2]
    return offset


def _is_fill(key: bytes) -> bool:
    return key[:7] == b"\x06\x0e\x2b\x34\x01\x01\x01" and key[8:] == _FILL_KEY_TAIL


class _Partition(NamedTuple):
    kind: tuple[int, int]
    footer: int  # FooterPartition: 0 while the writer does not know it
    end: int  # where the pack ends
    counted: int  # HeaderByteCount + IndexByteCount: what follows the pack and its fill


def _partition(reader: _Reader, offset: int) -> _Partition | None:
    """The partition pack at `offset`, None if there is none (or it is cut off)."""
    klv = _klv(reader, offset)
    if klv is None:
        return None
    key, start, length = klv
    kind = _mxf_key(key)
    if kind is None or not _PACK_MIN <= length <= 65536 or start + length > reader.size:
        return None
    value = reader.read(start, 56)
    if len(value) < 56:  # the file shrank since its size was taken
        return None
    this, _previous, footer, header_bytes, index_bytes = struct.unpack_from(">5Q", value, 8)
    if this != offset:
        return None
    return _Partition(kind, footer, start + length, header_bytes + index_bytes)


def _judge_mxf(reader: _Reader) -> Verdict:
    """A finished MXF ends with a random index pack listing its partitions, the footer last.

    Without one, the header's FooterPartition (0 while the writer does not know it yet)
    says whether a footer is being written; a RIP-less file is never called complete,
    since a writer may be about to add the RIP. With FooterPartition 0, only a header whose
    status is incomplete (open or closed: ffmpeg's while it writes) says the file is
    unfinished; a complete one may be a finished file that has no footer.
    """
    reader.fmt = "MXF"
    size = reader.size
    header = _partition(reader, 0)
    if header is None:
        if _cut_off(reader, 0):
            return _incomplete("MXF", "header partition pack cut off")
        return _unknown("MXF", "malformed header partition pack")
    rip = _rip(reader)
    if rip is not None:
        return _judge_rip(reader, header, *rip)
    footer_at = header.footer
    if footer_at == 0:
        if header.kind in _INCOMPLETE_HEADERS:
            return _incomplete("MXF", "no footer partition yet")
        return _unknown("MXF", "complete header, no footer partition, no random index pack")
    footer = _partition(reader, footer_at)
    if footer is None:
        if _cut_off(reader, footer_at):
            return _incomplete("MXF", f"footer partition at offset {footer_at} not written yet")
        return _unknown("MXF", f"no footer partition pack at offset {footer_at}")
    if footer.kind not in _FOOTER_KEYS:
        return _unknown("MXF", f"no footer partition pack at offset {footer_at}")
    # HeaderByteCount and IndexByteCount count what follows the pack's own fill item.
    min_end = _after_fill(reader, footer.end) + footer.counted
    if min_end > size:
        return _incomplete(
            "MXF",
            f"footer partition cut off (at least {min_end - footer_at} bytes, "
            f"{size - footer_at} present)",
        )
    ending = _walk_klvs(reader, footer_at, size)
    if ending == "overruns":
        return _incomplete("MXF", "footer partition cut off")
    if ending == "tiles":
        return _unknown("MXF", "footer partition but no random index pack")
    return _unknown("MXF", "malformed footer partition")


def _rip(reader: _Reader) -> tuple[int, list[int]] | None:
    """(offset, partition offsets) of the RIP that ends the file; None if there is none.

    The last 4 bytes of a RIP are its overall length; its entries are (BodySID, offset).
    """
    size = reader.size
    tail = reader.read(size - 4, 4)
    if len(tail) < 4:
        return None
    length = struct.unpack(">I", tail)[0]
    start = size - length
    if not 16 + 1 + 12 + 4 <= length <= _MAX_RIP_BYTES or start < 0:
        return None
    klv = _klv(reader, start)
    if klv is None or _mxf_key(klv[0]) != _RIP_KEY:
        return None
    _, value, value_length = klv
    if value + value_length != size or value_length < 16 or (value_length - 4) % 12:
        return None
    body = reader.read(value, value_length - 4)
    if len(body) != value_length - 4:  # the file shrank since its size was taken
        return None
    return start, [off for _sid, off in struct.iter_unpack(">IQ", body)]


def _judge_rip(reader: _Reader, header: _Partition, rip_at: int, offsets: list[int]) -> Verdict:
    """Complete when the RIP's entries are partitions, the last the footer, ending at the RIP."""
    mismatch = _unknown("MXF", "random index pack does not match the partitions")
    footer_at = offsets[-1]
    if offsets[0] != 0 or any(b <= a for a, b in pairwise(offsets)) or footer_at >= rip_at:
        return mismatch
    if header.footer not in (0, footer_at):
        return mismatch
    half = _MAX_PACK_CHECKS // 2
    checked = offsets[1:] if len(offsets) <= _MAX_PACK_CHECKS else offsets[1:half] + offsets[-half:]
    for offset in checked:
        partition = _partition(reader, offset)
        wanted = _FOOTER_KEYS if offset == footer_at else _BODY_KEYS
        if partition is None or partition.kind not in wanted:
            return mismatch
    if _walk_klvs(reader, footer_at, rip_at) != "tiles":
        return mismatch
    return _complete("MXF")


def _walk_klvs(
    reader: _Reader, start: int, stop: int
) -> Literal["tiles", "overruns", "malformed"]:
    """Whether the KLVs from `start` end exactly at `stop`, one runs past it, or neither."""
    offset = start
    for _ in range(_MAX_KLVS):
        if offset == stop:
            return "tiles"
        klv = _klv(reader, offset)
        if klv is None or klv[1] > stop:
            return "overruns"
        key, value, length = klv
        if length < 0 or key[:4] != b"\x06\x0e\x2b\x34":
            return "malformed"
        offset = value + length
        if offset > stop:
            return "overruns"
    return "malformed"
