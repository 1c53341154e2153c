"""The container completeness judge against real ffmpeg files (tests/media) and edits of them."""

from __future__ import annotations

import os
import re
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vaultdrop import containers
from vaultdrop.containers import Verdict, judge, judge_open

MEDIA = Path(__file__).resolve().parents[1] / "media"
FORMATS = {
    "moov_end.mp4": "MP4",
    "faststart.mp4": "MP4",
    "fragmented.mp4": "MP4",
    "clip.mov": "MOV",
    "audio.m4a": "MP4",
    "op1a.mxf": "MXF",
    "tone.wav": "WAV",
    "tone_rf64.wav": "RF64",
    "clip.avi": "AVI",
}
NO_MFRA = "fragmented_no_mfra.mp4"  # fragmented, made with skip_trailer: no end marker
ALL = [*FORMATS, NO_MFRA]
BMFF = [name for name in ALL if name.endswith((".mp4", ".mov", ".m4a"))]
DATA = {name: (MEDIA / name).read_bytes() for name in ALL}
RIP_KEY = re.compile(re.escape(bytes.fromhex("060e2b34020501")) + b"." + re.escape(
    bytes.fromhex("0d01020101110100")), re.DOTALL)  # fmt: skip
FILL_KEY = bytes.fromhex("060e2b34010101020301021001000000")


def verdict_of(data: bytes) -> Verdict:
    fd = os.memfd_create("container")
    try:
        os.write(fd, data)
        return judge_open(fd, len(data))
    finally:
        os.close(fd)


def well_formed(verdict: Verdict) -> bool:
    """The reason conventions the daemon's logs and job errors rely on."""
    state, fmt, reason = verdict
    if state == "complete":
        return fmt is not None and reason == ""
    if state == "incomplete":
        return fmt is not None and reason.startswith(f"incomplete {fmt}: ")
    return state == "unknown" and (reason == "" if fmt is None else reason.startswith(f"{fmt}: "))


def boxes(data: bytes) -> list[tuple[bytes, int, int]]:
    """(type, offset, size) of the top-level boxes of well-formed ISO BMFF bytes, else []."""
    found, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        if size == 1 and offset + 16 <= len(data):
            size = struct.unpack_from(">Q", data, offset + 8)[0]
            if size < 16:
                return []
        elif size < 8:
            return []
        found.append((kind, offset, size))
        offset += size
    return found if offset == len(data) else []


def box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def mfra(moofs: list[int]) -> bytes:
    """An mfra with one version-1 tfra listing `moofs`, and its mfro."""
    entries = b"".join(struct.pack(">QQBBB", n, moof, 1, 1, 1) for n, moof in enumerate(moofs))
    tfra = box(b"tfra", struct.pack(">B3xIII", 1, 1, 0, len(moofs)) + entries)
    size = 8 + len(tfra) + 16
    return box(b"mfra", tfra + box(b"mfro", struct.pack(">II", 0, size)))


def fragments(count: int, payload: int = 64) -> tuple[bytes, list[int]]:
    """The ftyp and moov of the fragmented file, then `count` synthetic moof/mdat pairs."""
    head = DATA[NO_MFRA][:779]  # ftyp and moov (with mvex)
    fragment = box(b"moof", box(b"mfhd", struct.pack(">II", 0, 1))) + box(b"mdat", bytes(payload))
    moofs = [len(head) + n * len(fragment) for n in range(count)]
    return head + fragment * count, moofs


# ---------------------------------------------------------------- the real files


@pytest.mark.parametrize("name", FORMATS)
def test_each_file_is_complete(name: str) -> None:
    assert judge(MEDIA / name) == Verdict("complete", FORMATS[name], "")


def test_fragmented_without_mfra_is_unknown() -> None:
    verdict = judge(MEDIA / NO_MFRA)
    assert verdict.state == "unknown" and verdict.format == "MP4"
    assert "no mfra" in verdict.reason


def unknown_prefixes(name: str) -> set[int]:
    """The cut points where a prefix is a well-formed file in its own right, so "unknown".

    Below the bytes needed to recognise the container (8 for a box header, 16 for the MXF
    key, 12 for RIFF + size + form) nothing is recognised. Above that, only these cuts at a
    box or partition boundary may leave a structure that could be finished: a fragmented
    MP4 right after its moov or a whole fragment, a faststart MP4 with its moov but no
    mdat yet, an MXF whose footer is whole but whose RIP is not there. So are the 1-7 bytes
    after such a cut: the start of the next box header, or junk after a finished file. Every
    other cut, inside a box, chunk or partition or at a boundary that leaves the index
    missing, must be "incomplete".
    """
    data = DATA[name]
    if name.endswith(".mxf"):
        return set(range(16)) | {len(data) - struct.unpack(">I", data[-4:])[0]}
    if name not in BMFF:
        return set(range(12))
    cuts = set(range(8))
    top = boxes(data)
    fragmented = any(kind == b"moof" for kind, _, _ in top)
    for index, (_, offset, _) in enumerate(top[1:], 1):
        before = [kind for kind, _, _ in top[:index]]
        if b"moov" not in before:
            continue
        if before[-1] != b"moof" if fragmented else b"mdat" not in before:
            cuts.update(range(offset, offset + 8))  # the box header at offset is 8 bytes or more
    return cuts


def spans(*starts: int) -> set[int]:
    """Each box boundary in `starts` and the 7 cuts inside the box header that starts there."""
    return {start + k for start in starts for k in range(8)}


def test_the_unknown_cut_points_are_the_expected_ones() -> None:
    """Pins `unknown_prefixes` to the layouts ffmpeg wrote, so it cannot silently widen.

    The boundaries are the "unknown" cuts; each brings the 7 cuts inside the next box's
    header, which could be junk after a finished file as well (faststart: after the moov,
    1552, and after the free box, 1560; fragmented: after the moov and after each whole
    fragment). A cut 1-7 bytes after a boundary where the file is certainly unfinished
    (moov_end before its moov, fragmented after a moof) stays "incomplete".
    """
    assert unknown_prefixes("faststart.mp4") - set(range(8)) == spans(1552, 1560)
    assert unknown_prefixes("moov_end.mp4") == set(range(8))
    assert unknown_prefixes("fragmented.mp4") - set(range(8)) == spans(1258, 4867, 7380, 8889)
    assert unknown_prefixes(NO_MFRA) - set(range(8)) == spans(779, 2904, 4494)
    assert unknown_prefixes("op1a.mxf") - set(range(16)) == {33280}


@pytest.mark.parametrize("name", ALL)
def test_every_proper_prefix_is_not_complete(name: str) -> None:
    """Every cut 0..len-1: "unknown" exactly at `unknown_prefixes`, else "incomplete"."""
    data, expected_unknown = DATA[name], unknown_prefixes(name)
    recognised = 8 if name in BMFF else 16 if name.endswith(".mxf") else 12
    fd = os.open(MEDIA / name, os.O_RDONLY)
    try:
        for cut in range(len(data)):
            verdict = judge_open(fd, cut)
            assert well_formed(verdict), (cut, verdict)
            wanted = "unknown" if cut in expected_unknown else "incomplete"
            assert verdict.state == wanted, (cut, verdict)
            if cut < recognised:
                assert verdict.format is None, (cut, verdict)
            elif cut >= 16:  # an MOV's "qt  " brand is at bytes 8-11
                assert verdict.format == FORMATS.get(name, "MP4"), (cut, verdict)
    finally:
        os.close(fd)


def test_file_shorter_than_the_size_given() -> None:
    """Truncated between the stat and the reads: short reads are a cut, not an error."""
    fd = os.open(MEDIA / "moov_end.mp4", os.O_RDONLY)
    try:
        assert judge_open(fd, len(DATA["moov_end.mp4"]) + 1000).reason == (
            "incomplete MP4: box header cut off at offset 8531"
        )
    finally:
        os.close(fd)


@pytest.mark.parametrize("name", ALL)
def test_file_shrunk_under_the_size_given_never_raises(name: str) -> None:
    """Rewritten in place between the stat and the reads: every length the file shrinks to,
    judged with its old size and others past its end. Only a well-formed verdict comes out
    (op1a.mxf cut inside a partition pack or the RIP raised struct.error)."""
    data = DATA[name]
    fd = os.memfd_create("shrunk")
    try:
        os.write(fd, data)
        for cut in range(len(data), -1, -1):
            os.ftruncate(fd, cut)  # shrinking keeps the bytes before the cut
            claimed = {len(data)}
            if cut % 4 == 0:  # a quarter of the cuts: sizes just, and well, past the end
                claimed |= {cut + 1, cut + 7, cut + 8, cut + 57, cut + 4096 + cut % 997}
            for size in sorted(claimed - {cut}):
                verdict = judge_open(fd, size)
                assert well_formed(verdict), (cut, size, verdict)
    finally:
        os.close(fd)


def test_shrunk_mxf_is_not_judged_on_missing_bytes() -> None:
    data = DATA["op1a.mxf"]
    fd = os.memfd_create("shrunk")
    try:
        os.write(fd, data[:32300])  # inside the footer partition pack
        assert judge_open(fd, len(data)) == Verdict(
            "unknown", "MXF", "MXF: no footer partition pack at offset 32256"
        )
        os.ftruncate(fd, len(data) - 20)  # inside the RIP
        assert judge_open(fd, len(data)).state == "unknown"
    finally:
        os.close(fd)


def test_any_error_but_oserror_is_unknown(monkeypatch) -> None:
    """The last line of defence: a bug in a judge is "unknown", never an escaped exception;
    OSError from reading still escapes (the daemon lets the upload say what is wrong)."""

    def broken(*args: object) -> None:
        raise struct.error("unpack requires a buffer of 48 bytes")

    monkeypatch.setattr(containers, "_rip", broken)
    assert verdict_of(DATA["op1a.mxf"]) == Verdict(
        "unknown",
        "MXF",
        "MXF: could not judge the headers (error: unpack requires a buffer of 48 bytes)",
    )
    monkeypatch.setattr(containers, "_box", lambda *args: 1 // 0)
    verdict = verdict_of(DATA["moov_end.mp4"])
    assert verdict.state == "unknown" and "ZeroDivisionError" in verdict.reason
    assert well_formed(verdict)
    monkeypatch.setattr(containers, "_mxf_key", lambda key: [][0])  # before any format is known
    assert verdict_of(DATA["moov_end.mp4"]) == Verdict("unknown", None, "")

    def failing(fd: int, length: int, offset: int) -> bytes:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(containers.os, "pread", failing)
    with pytest.raises(OSError):
        verdict_of(DATA["tone.wav"])


# ---------------------------------------------------------------- ISO BMFF edits


@pytest.mark.parametrize("name", [name for name in FORMATS if name in BMFF])
def test_a_few_bytes_after_a_finished_mp4_are_unknown(name: str) -> None:
    """1-7 bytes after whole boxes with their index: a box header cut off, or junk after a
    finished file (a copy tool's padding, a stray newline). Not certain: "unknown"."""
    data, fmt = DATA[name], FORMATS[name]
    for extra in (b"\x00", b"\n", b"\0\0\0\x10", b"\0\0\0\x10fre", b"\0\0\0\x01mda"):
        why = f"{len(extra)} bytes after the last box: a box header cut off, or junk"
        assert verdict_of(data + extra) == Verdict("unknown", fmt, f"{fmt}: {why}")
    # A whole header says more: a box running past the end, or a 64-bit size cut off.
    assert verdict_of(data + struct.pack(">I4s", 16, b"free")).state == "incomplete"
    assert verdict_of(data + struct.pack(">I4sI", 1, b"mdat", 0)).reason == (
        f"incomplete {fmt}: box header cut off at offset {len(data)}"
    )


def test_a_few_bytes_after_an_unfinished_mp4_stay_incomplete() -> None:
    data = DATA["moov_end.mp4"]
    assert verdict_of(data[:7011] + b"\x00\x00\x07").reason == (  # the mdat whole, no moov
        "incomplete MP4: box header cut off at offset 7011"
    )


def test_mdat_size_still_zero_is_incomplete() -> None:
    """What a recording muxer leaves until it finishes: mdat size 0, no moov yet."""
    data = DATA["moov_end.mp4"]
    recording = data[:40] + struct.pack(">I", 0) + data[44:7011]
    assert verdict_of(recording) == Verdict(
        "incomplete", "MP4", "incomplete MP4: mdat size not written yet (0)"
    )
    # The moov written but the size not patched yet: size 0 still hides everything after.
    assert verdict_of(data[:40] + struct.pack(">I", 0) + data[44:]).state == "incomplete"


def test_mdat_size_zero_after_the_moov_is_unknown() -> None:
    """With the index already written, size 0 may be the legal "to the end of the file"."""
    data = DATA["faststart.mp4"]
    assert verdict_of(data[:1560] + struct.pack(">I", 0) + data[1564:]) == Verdict(
        "unknown", "MP4", "MP4: box 'mdat' runs to the end of the file (size 0)"
    )


def test_mdat_running_past_the_end() -> None:
    data = DATA["moov_end.mp4"]
    assert verdict_of(data[:5000]) == Verdict(
        "incomplete",
        "MP4",
        "incomplete MP4: box 'mdat' runs past the end of the file (declared 6971 bytes, 4960 present)",
    )


def test_missing_moov_is_incomplete() -> None:
    data = DATA["moov_end.mp4"]
    assert verdict_of(data[:7011]) == Verdict("incomplete", "MP4", "incomplete MP4: no moov box")
    renamed = data[:7015] + b"free" + data[7019:]  # the moov turned into padding
    assert verdict_of(renamed).reason == "incomplete MP4: no moov box"


def test_64_bit_largesize_box() -> None:
    """ffmpeg turns free + mdat into one mdat with a 64-bit size when it passes 4 GiB."""
    data = DATA["moov_end.mp4"]
    large = data[:32] + struct.pack(">I4sQ", 1, b"mdat", 6971 + 8) + data[48:]
    assert verdict_of(large) == Verdict("complete", "MP4", "")
    for cut in range(33, 48):  # inside the 16-byte header
        assert verdict_of(large[:cut]).reason == "incomplete MP4: box header cut off at offset 32"
    too_large = data[:32] + struct.pack(">I4sQ", 1, b"mdat", 1 << 40) + data[48:]
    assert "declared 1099511627776 bytes" in verdict_of(too_large).reason


def test_mov_without_ftyp_is_mov() -> None:
    """Old QuickTime files start with mdat or wide; no ftyp means MOV."""
    data = DATA["clip.mov"]
    assert verdict_of(data[20:]) == Verdict("complete", "MOV", "")  # wide, mdat, moov


def test_fragmented_complete_without_the_tfra_shortcut() -> None:
    """tfra boxes renamed: the judge walks every fragment and still finds the mfra."""
    data = DATA["fragmented.mp4"].replace(b"tfra", b"free")
    assert verdict_of(data) == Verdict("complete", "MP4", "")


def test_many_fragments_with_mfra_read_only_the_head_and_tail(monkeypatch) -> None:
    body, moofs = fragments(2_000)
    calls = []
    real_pread = os.pread

    def pread(fd: int, length: int, offset: int) -> bytes:
        calls.append(length)
        return real_pread(fd, length, offset)

    monkeypatch.setattr(containers.os, "pread", pread)
    assert verdict_of(body + mfra(moofs)) == Verdict("complete", "MP4", "")
    assert len(calls) <= 6 and sum(calls) <= 6 * 4096
    assert verdict_of(body).state == "unknown"  # no mfra: every fragment walked
    assert verdict_of(body + box(b"moof")).state == "incomplete"  # a fragment without mdat
    assert verdict_of(body[:-10]).state == "incomplete"


def test_walk_is_bounded(monkeypatch) -> None:
    monkeypatch.setattr(containers, "_MAX_BOXES", 10)
    body, _ = fragments(20)
    assert verdict_of(body) == Verdict("unknown", "MP4", "MP4: more than 10 top-level boxes")


def sparse_fragments(count: int, payload: int) -> tuple[int, list[int]]:
    """A memfd: the ftyp and moov of the fragmented file, then `count` moof/mdat pairs with
    `payload` bytes of hole each, so that each box header costs a pread of its own."""
    head = DATA[NO_MFRA][:779]
    moof = box(b"moof", box(b"mfhd", struct.pack(">II", 0, 1)))
    fragment = moof + struct.pack(">I4s", 8 + payload, b"mdat")
    fd = os.memfd_create("fragments")
    os.write(fd, head)
    moofs = [len(head) + n * (len(fragment) + payload) for n in range(count)]
    for at in moofs:
        os.pwrite(fd, fragment, at)
    os.ftruncate(fd, moofs[-1] + len(fragment) + payload)
    return fd, moofs


def test_reads_are_bounded(monkeypatch) -> None:
    """A fragmented MP4 without an mfra costs a pread per fragment: at most _MAX_READS, then
    "unknown" (100,000 fragments took 0.4-2 s). With an mfra, the head and tail suffice."""
    budget = 2_000  # containers._MAX_READS
    fd, moofs = sparse_fragments(3_000, 8192)
    calls: list[int] = []
    real_pread = os.pread

    def pread(fd: int, length: int, offset: int) -> bytes:
        calls.append(length)
        return real_pread(fd, length, offset)

    monkeypatch.setattr(containers.os, "pread", pread)
    try:
        size = os.fstat(fd).st_size
        assert judge_open(fd, size) == Verdict(
            "unknown", "MP4", f"MP4: not judged within {budget} reads"
        )
        assert len(calls) == budget
        calls.clear()
        os.pwrite(fd, mfra(moofs), size)
        assert judge_open(fd, os.fstat(fd).st_size) == Verdict("complete", "MP4", "")
        assert len(calls) <= 6
    finally:
        os.close(fd)


def test_mfra_that_lies_is_not_complete() -> None:
    body, moofs = fragments(10)
    # The tfra points at a moof that is not there: the walk takes over and finds the mfra.
    assert verdict_of(body + mfra([m + 1 for m in moofs])).state == "complete"
    # An mfro whose size does not lead to an mfra: no end marker at all.
    bad = body + mfra(moofs)
    assert verdict_of(bad[:-4] + struct.pack(">I", 7)).state == "unknown"


def test_image_and_segment_without_moov_are_unknown() -> None:
    heif = box(b"ftyp", b"heic" + bytes(4) + b"mif1") + box(b"meta", bytes(20)) + box(b"mdat", b"x")
    assert verdict_of(heif) == Verdict("unknown", "MP4", "MP4: no moov box")
    segment = box(b"styp", b"msdh" + bytes(4)) + box(b"moof") + box(b"mdat", b"x")
    assert verdict_of(segment).state == "unknown"


# ---------------------------------------------------------------- MXF edits

HEADER_FOOTER_FIELD = 44  # the header pack's value starts at 20; FooterPartition at +24


def test_growing_mxf_is_incomplete() -> None:
    """ffmpeg while writing: header partition open incomplete, FooterPartition 0, no RIP."""
    data = bytearray(DATA["op1a.mxf"])
    data[14] = 0x01
    data[HEADER_FOOTER_FIELD : HEADER_FOOTER_FIELD + 8] = bytes(8)
    rip_at = len(data) - 57
    for cut in (200, 6144, 20_000, 32256, 32300, rip_at, len(data) - 1):
        assert verdict_of(bytes(data[:cut])) == Verdict(
            "incomplete", "MXF", "incomplete MXF: no footer partition yet"
        )
    # A streaming writer never fills FooterPartition in; its RIP still says where the footer is.
    assert verdict_of(bytes(data)) == Verdict("complete", "MXF", "")


def test_truncated_mxf_without_rip() -> None:
    data = DATA["op1a.mxf"]
    assert verdict_of(data[:20_000]).reason == (
        "incomplete MXF: footer partition at offset 32256 not written yet"
    )
    assert verdict_of(data[:33_000]).state == "incomplete"  # inside the footer's index
    # The footer whole but no RIP: a writer may be about to add it, so not complete.
    assert verdict_of(data[:33280]) == Verdict(
        "unknown", "MXF", "MXF: footer partition but no random index pack"
    )


def test_closed_mxf_header_without_footer_is_unknown() -> None:
    data = bytearray(DATA["op1a.mxf"][:20_000])
    data[HEADER_FOOTER_FIELD : HEADER_FOOTER_FIELD + 8] = bytes(8)
    assert verdict_of(bytes(data)).state == "unknown"  # closed complete header (02 04)


@pytest.mark.parametrize(
    ("status", "state"),
    [(1, "incomplete"), (2, "incomplete"), (3, "unknown"), (4, "unknown")],
    ids=["open-incomplete", "closed-incomplete", "open-complete", "closed-complete"],
)
def test_mxf_without_footer_or_rip_by_header_status(status: int, state: str) -> None:
    """FooterPartition 0 and no RIP: unfinished only if the header says it is incomplete;
    a complete one (open or closed) may head a finished file that has no footer."""
    data = bytearray(DATA["op1a.mxf"])
    data[14] = status
    data[HEADER_FOOTER_FIELD : HEADER_FOOTER_FIELD + 8] = bytes(8)
    for cut in (200, 6144, 20_000, 32256, len(data) - 57):
        verdict = verdict_of(bytes(data[:cut]))
        assert verdict.state == state and well_formed(verdict), (cut, verdict)
        if state == "unknown":
            assert verdict.reason == (
                "MXF: complete header, no footer partition, no random index pack"
            )


def test_mxf_rip_that_disagrees_is_unknown() -> None:
    data = DATA["op1a.mxf"]
    wrong_footer = data[:HEADER_FOOTER_FIELD] + struct.pack(">Q", 6144) + data[52:]
    assert verdict_of(wrong_footer).reason == "MXF: random index pack does not match the partitions"
    wrong_entry = data[:-16] + struct.pack(">Q", 6000) + data[-8:]  # the body entry
    assert verdict_of(wrong_entry).state == "unknown"


@pytest.mark.parametrize("width", [1, 2, 3, 4, 8])
def test_mxf_ber_long_form_of_any_width(width: int) -> None:
    """The header pack's length (136, ffmpeg: 83 00 00 88) in other long forms; the fill
    item after it absorbs the difference so every offset stays. Short forms: the RIP."""
    data = DATA["op1a.mxf"]
    assert data[16:20] == b"\x83\x00\x00\x88" and data[156:172] == FILL_KEY
    fill = 336 - (width - 3)
    rewritten = (
        data[:16] + bytes([0x80 | width]) + (136).to_bytes(width, "big") + data[20:156]
        + FILL_KEY + b"\x83" + fill.to_bytes(3, "big") + bytes(fill) + data[512:]
    )  # fmt: skip
    assert len(rewritten) == len(data)
    assert verdict_of(rewritten) == Verdict("complete", "MXF", "")
    assert verdict_of(rewritten[:100]).state == "incomplete"


@pytest.mark.parametrize("length", [b"\x80", b"\x89" + bytes(9)])
def test_mxf_ber_forms_mxf_never_uses(length: bytes) -> None:
    """Indefinite and over-8-byte lengths: malformed, so unknown, never a guess."""
    data = DATA["op1a.mxf"]
    assert verdict_of(data[:16] + length + data[20:]).state == "unknown"


# ---------------------------------------------------------------- RIFF edits


STREAMED = "sizes not written (a streamed file)"
WAV_DATA = 0x4A  # tone.wav: the data chunk's size field (after fmt and LIST INFO)


def test_streamed_wav_is_unknown() -> None:
    """A writer that cannot seek back (`ffmpeg -f wav - > x.wav`) leaves its placeholders
    for good, and the file plays: the same bytes as ffmpeg's while it records to a file, so
    "unknown" (settle decides), never "incomplete" (a failed job)."""
    data = DATA["tone.wav"]
    assert data[WAV_DATA - 4 : WAV_DATA] == b"data"
    ffmpeg_pipe = data[:4] + b"\xff" * 4 + data[8:WAV_DATA] + b"\xff" * 4 + data[WAV_DATA + 4 :]
    assert verdict_of(ffmpeg_pipe) == Verdict(
        "unknown", "WAV", f"WAV: {STREAMED}: RIFF size 0xffffffff"
    )
    for riff in (0, 0xFFFFFFFF):
        edited = data[:4] + struct.pack("<I", riff) + data[8:]
        why = f"WAV: {STREAMED}: RIFF size {riff:#x}"
        assert verdict_of(edited) == Verdict("unknown", "WAV", why)
        assert verdict_of(edited[:100]).state == "unknown"  # cut short, or still being written


@pytest.mark.parametrize(
    "data_size",
    [0x7FFFF000, 0x7FFFF000 // 6 * 6, 0x80000000, 0x7FFFFF00, 0xFFFFFFFF, 0],
    ids=["sox-16bit", "sox-24bit-stereo", "arecord", "arecord-2", "ffmpeg", "zero"],
)
def test_streamed_wav_data_size_placeholder_is_unknown(data_size: int) -> None:
    """sox (MS_UNSPEC rounded to whole blocks) and arecord (its 2 GiB cap) write a RIFF size
    derived from a made-up data size when they cannot seek back: only that size tells. The
    RIFF size real but the data size a placeholder (ffmpeg's, 0): just as unknown."""
    data = DATA["tone.wav"]
    if data_size in (0, 0xFFFFFFFF):  # the RIFF size real, past the end
        riff = len(data) + 1000
    else:  # sox, arecord: the RIFF size derived from the data size
        riff = WAV_DATA + 4 - 8 + data_size
    edited = (
        data[:4] + struct.pack("<I", riff) + data[8:WAV_DATA]
        + struct.pack("<I", data_size) + data[WAV_DATA + 4 :]
    )  # fmt: skip
    why = f"WAV: {STREAMED}: data size {data_size:#x}"
    assert verdict_of(edited) == Verdict("unknown", "WAV", why)


def test_wav_real_size_past_the_end_is_incomplete() -> None:
    """A real size larger than the file is a prefix of a finished file."""
    data = DATA["tone.wav"]
    riff_size = len(data) - 8
    assert verdict_of(data[:-1]).reason == (
        f"incomplete WAV: RIFF chunk runs past the end of the file "
        f"(declared {riff_size} bytes, {riff_size - 1} present)"
    )
    for size in (0x7FFEF000, 0x7FFFF001, 0x80000002, 0x10000):  # near, not at, the placeholders
        riff_larger = data[:4] + struct.pack("<I", size) + data[8:]
        assert verdict_of(riff_larger).state == "incomplete"
        both = (
            data[:4] + struct.pack("<I", size + WAV_DATA + 4 - 8) + data[8:WAV_DATA]
            + struct.pack("<I", size) + data[WAV_DATA + 4 :]
        )  # fmt: skip
        assert verdict_of(both).state == "incomplete"


def test_streamed_rf64_is_unknown() -> None:
    """ffmpeg -rf64 always to a pipe: RF64 0xFFFFFFFF, the ds64 sizes left at 0."""
    data = DATA["tone_rf64.wav"]  # data chunk size 0xFFFFFFFF: its size comes from ds64
    ffmpeg_pipe = data[:20] + bytes(24) + data[44:]
    why = f"RF64: {STREAMED}: ds64 RIFF size 0x0"
    assert verdict_of(ffmpeg_pipe) == Verdict("unknown", "RF64", why)
    assert verdict_of(data[:20] + bytes(8) + data[28:]).state == "unknown"
    riff_only = data[:28] + bytes(8) + data[36:]  # the ds64 data size 0, its RIFF size real
    why = f"RF64: {STREAMED}: data size 0x0"
    assert verdict_of(riff_only[:-1]) == Verdict("unknown", "RF64", why)
    assert verdict_of(data[:-1]).state == "incomplete"  # real sizes: a prefix


def test_bytes_after_the_riff_chunk_are_unknown() -> None:
    assert verdict_of(DATA["tone.wav"] + b"ID3\x03").state == "unknown"


@pytest.mark.parametrize("pad", [b"\x00", b""])
def test_odd_chunk_pad_byte(pad: bytes) -> None:
    """An odd last chunk: its pad byte counted in the RIFF size, or not, or missing."""
    chunks = b"fmt " + struct.pack("<I", 16) + bytes(16) + b"data" + struct.pack("<I", 3) + b"abc"
    counted = b"RIFF" + struct.pack("<I", 4 + len(chunks) + 1) + b"WAVE" + chunks + b"\x00"
    uncounted = b"RIFF" + struct.pack("<I", 4 + len(chunks)) + b"WAVE" + chunks + pad
    assert verdict_of(counted) == Verdict("complete", "WAV", "")
    assert verdict_of(uncounted) == Verdict("complete", "WAV", "")


def test_opendml_avi_continues_with_avix() -> None:
    data = DATA["clip.avi"]
    movi = b"LIST" + struct.pack("<I", 4) + b"movi"
    avix = b"RIFF" + struct.pack("<I", 4 + len(movi)) + b"AVIX" + movi
    assert verdict_of(data + avix) == Verdict("complete", "AVI", "")
    # An AVIX whose size is still (or, streamed, for good) the placeholder: unknown.
    recording = b"RIFF\xff\xff\xff\xffAVIX" + movi
    assert verdict_of(data + recording) == Verdict(
        "unknown", "AVI", f"AVI: {STREAMED}: RIFF size at offset {len(data)} 0xffffffff"
    )
    assert verdict_of(b"RIFF\xff\xff\xff\xff" + data[8:]).state == "unknown"  # ffmpeg -f avi -
    # A real AVIX size past the end: a prefix of a finished file.
    cut = data + b"RIFF" + struct.pack("<I", 4 + len(movi) + 100) + b"AVIX" + movi
    assert verdict_of(cut).reason.startswith("incomplete AVI: RIFF chunk at offset")


# ---------------------------------------------------------------- not recognised


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00",
        b"\x00\x00\x00\x08",
        b"RIFF",
        b"just some text named clip.mov\n",
        bytes(1000),
        os.urandom(4096),
        (b"\x47\x40\x00\x10" + bytes(184)) * 20,  # MPEG-TS: no end marker
        bytes.fromhex("1a45dfa3") + bytes(60),  # Matroska: left alone
    ],
)
def test_unrecognised_is_unknown(data: bytes) -> None:
    assert verdict_of(data) == Verdict("unknown", None, "")


def test_fifo_does_not_hang(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.mov")
    assert judge(tmp_path / "pipe.mov") == Verdict("unknown", None, "")


@given(st.binary(max_size=200))
@settings(max_examples=300, deadline=None)
def test_random_bytes_never_raise(data: bytes) -> None:
    assert well_formed(verdict_of(data))


# ---------------------------------------------------------------- mutations (Hypothesis)

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.binary(max_size=64)),
        st.tuples(st.just("truncate"), st.floats(0, 1)),
        st.tuples(st.just("rewrite"), st.floats(0, 1), st.binary(min_size=1, max_size=32)),
    ),
    min_size=1,
    max_size=3,
)


@given(name=st.sampled_from(ALL), ops=OPS)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_mutations_never_raise(name: str, ops: list[tuple]) -> None:
    """Any mix of appends, truncations and overwrites gives a well-formed verdict; pure
    truncations are never complete."""
    data = DATA[name]
    for op in ops:
        if op[0] == "append":
            data += op[1]
        elif op[0] == "truncate":
            data = data[: int(op[1] * len(data))]
        else:
            at = int(op[1] * len(data))
            data = data[:at] + op[2] + data[at + len(op[2]) :]
    verdict = verdict_of(data)
    assert well_formed(verdict)
    if all(op[0] == "truncate" for op in ops) and len(data) < len(DATA[name]):
        assert verdict.state != "complete"


def structured(name: str, extra: bytes) -> bool:
    """Whether appended bytes form the structure that could make a file end there."""
    if name in BMFF:
        return bool(boxes(extra))  # whole boxes tiling the appended bytes
    if name.endswith(".mxf"):
        return RIP_KEY.search(extra) is not None  # a RIP, which must end the file
    if name.endswith(".avi"):
        return extra[:4] == b"RIFF" and extra[8:12] == b"AVIX"
    return False  # WAV, RF64: nothing may follow the RIFF chunk


EXTRA = st.one_of(
    st.binary(min_size=1, max_size=64),
    st.builds(box, st.sampled_from([b"free", b"mdat", b"moof", b"mfra", b"\x00\x00\x00\x00"]),
              st.binary(max_size=16)),
    st.builds(lambda parts: b"".join(parts), st.lists(st.builds(box, st.just(b"skip")), min_size=1)),
)  # fmt: skip


@given(name=st.sampled_from(ALL), extra=EXTRA, tail=st.integers(0, 300))
@settings(max_examples=400, deadline=None)
def test_appended_bytes_complete_only_as_structure(name: str, extra: bytes, tail: int) -> None:
    """Appending bytes, or a copy of the file's own last bytes (an mfra, a RIP), makes a
    file complete only when what was appended is itself well-formed structure."""
    for added in (extra, DATA[name][-tail:] if tail else extra):
        verdict = verdict_of(DATA[name] + added)
        assert well_formed(verdict)
        if verdict.state == "complete":
            assert structured(name, added), (added, verdict)


def payload_ranges(name: str) -> list[tuple[int, int]]:
    """Byte ranges the judge must never read: media payload (mdat bodies, PCM, essence)."""
    data = DATA[name]
    if name in BMFF:
        return [(offset + 8, offset + size) for kind, offset, size in boxes(data) if kind == b"mdat"]
    if name == "op1a.mxf":
        return [(6144 + 156, 32256)]  # after the body partition pack, before the footer
    return [(data.index(b"data") + 8, len(data))]  # the data chunk comes last in both WAVs


@given(name=st.sampled_from([n for n in ALL if not n.endswith(".avi")]), data=st.data())
@settings(max_examples=300, deadline=None)
def test_payload_rewrites_do_not_change_the_verdict(name: str, data: st.DataObject) -> None:
    start, stop = data.draw(st.sampled_from(payload_ranges(name)))
    at = data.draw(st.integers(start, stop - 1))
    junk = data.draw(st.binary(min_size=1, max_size=min(64, stop - at)))
    original = DATA[name]
    assert verdict_of(original[:at] + junk + original[at + len(junk) :]) == verdict_of(original)


# ---------------------------------------------------------------- large sparse files


def mxf_with_gap(gap: int) -> tuple[bytes, bytes]:
    """op1a.mxf split before its footer, to put a `gap`-byte fill item there: offsets fixed."""
    data = DATA["op1a.mxf"]
    footer = struct.unpack_from(">Q", data, HEADER_FOOTER_FIELD)[0]
    moved = footer + gap
    head, tail = bytearray(data[:footer]), bytearray(data[footer:])
    for pack in (0, 6144):  # the header and body packs: FooterPartition
        head[pack + 44 : pack + 52] = struct.pack(">Q", moved)
    tail[28:36] = struct.pack(">Q", moved)  # the footer pack's ThisPartition
    tail[44:52] = struct.pack(">Q", moved)  # and its FooterPartition
    tail[-12:-4] = struct.pack(">Q", moved)  # the RIP's last entry
    filler = FILL_KEY + b"\x88" + struct.pack(">Q", gap - 25)
    return bytes(head) + filler, bytes(tail)


@pytest.mark.parametrize("kind", ["mp4", "mxf"])
def test_large_sparse_file_costs_a_few_small_reads(tmp_path: Path, monkeypatch, kind: str) -> None:
    gap = 1 << 30
    if kind == "mp4":
        data = DATA["moov_end.mp4"]
        head = data[:32] + struct.pack(">I4sQ", 1, b"mdat", 16 + gap)
        tail = data[7011:]  # the moov
    else:
        head, tail = mxf_with_gap(gap)
        gap -= 25
    path = tmp_path / f"large.{kind}"
    with path.open("wb") as out:
        out.write(head)
        out.seek(gap, os.SEEK_CUR)
        out.write(tail)
    read: list[int] = []
    real_pread = os.pread
    monkeypatch.setattr(
        containers.os, "pread", lambda fd, n, at: read.append(n) or real_pread(fd, n, at)
    )
    assert judge(path).state == "complete"
    assert len(read) <= 8 and sum(read) <= 8 * 4096
    with path.open("r+b") as out:
        out.truncate(path.stat().st_size - 100)
    assert judge(path).state == "incomplete"
