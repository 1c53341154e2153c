"""Cost of one container completeness check (vaultdrop.intake.containers): `python benchmarks/container_check.py`.

The daemon judges a file on every settle check, so the cost must not grow with its size.
Builds sparse files in a temporary directory (removed at the end) from the real headers in
tests/media: a 2 GiB MP4 with its moov at the end, a 2 GiB OP1a MXF, and fragmented MP4s
of 10,000 moof/mdat pairs (200 kB of sparse payload each) with and without an mfra, and of
100,000 without. Prints the median time of judge() and the preads and bytes one check costs.
Without an mfra every fragment costs a pread, so the check stops at containers._MAX_READS
and answers "unknown": its cost is capped whatever the number of fragments.
"""

from __future__ import annotations

import os
import statistics
import struct
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from vaultdrop import containers
from vaultdrop.containers import judge

MEDIA = Path(__file__).resolve().parents[1] / "tests" / "media"
GIB = 1 << 30
FILL_KEY = bytes.fromhex("060e2b34010101020301021001000000")


def sparse(path: Path, pieces: list[bytes | int]) -> None:
    """Write `pieces` in order: bytes are written, an int leaves that many bytes of hole."""
    with path.open("wb") as out:
        for piece in pieces:
            if isinstance(piece, int):
                out.seek(piece, os.SEEK_CUR)
            else:
                out.write(piece)
        out.truncate()


def mp4(path: Path, gap: int) -> None:
    """moov_end.mp4 with its free + mdat turned into one 64-bit mdat of `gap` bytes."""
    data = (MEDIA / "moov_end.mp4").read_bytes()
    sparse(path, [data[:32], struct.pack(">I4sQ", 1, b"mdat", 16 + gap), gap, data[7011:]])


def mxf(path: Path, gap: int) -> None:
    """op1a.mxf with a `gap`-byte fill item before its footer, every offset moved with it."""
    data = (MEDIA / "op1a.mxf").read_bytes()
    footer = struct.unpack_from(">Q", data, 44)[0]
    moved = struct.pack(">Q", footer + gap)
    head, tail = bytearray(data[:footer]), bytearray(data[footer:])
    for pack in (0, 6144):  # FooterPartition in the header and body partition packs
        head[pack + 44 : pack + 52] = moved
    tail[28:36] = tail[44:52] = tail[-12:-4] = moved  # footer This/Footer, the RIP entry
    filler = FILL_KEY + b"\x88" + struct.pack(">Q", gap - 25)
    sparse(path, [bytes(head), filler, gap - 25, bytes(tail)])


def box(kind: bytes, payload: bytes = b"") -> bytes:
    return struct.pack(">I4s", 8 + len(payload), kind) + payload


def fragmented(path: Path, count: int, payload: int, with_mfra: bool) -> None:
    """The ftyp + moov of fragmented_no_mfra.mp4, `count` moof/mdat pairs, maybe an mfra."""
    head = (MEDIA / "fragmented_no_mfra.mp4").read_bytes()[:779]
    moof = box(b"moof", box(b"mfhd", struct.pack(">II", 0, 1)))
    mdat = struct.pack(">I4s", 8 + payload, b"mdat")
    pieces: list[bytes | int] = [head]
    for _ in range(count):
        pieces += [moof, mdat, payload]
    if with_mfra:
        step = len(moof) + len(mdat) + payload
        entries = b"".join(
            struct.pack(">QQBBB", n, len(head) + n * step, 1, 1, 1) for n in range(count)
        )
        tfra = box(b"tfra", struct.pack(">B3xIII", 1, 1, 0, count) + entries)
        mfro = box(b"mfro", struct.pack(">II", 0, 8 + len(tfra) + 16))
        pieces.append(box(b"mfra", tfra + mfro))
    sparse(path, pieces)


def reads_of(path: Path) -> tuple[int, int]:
    """(preads, bytes read) of one check."""
    sizes: list[int] = []
    real = os.pread

    def counting(fd: int, length: int, offset: int) -> bytes:
        sizes.append(length)
        return real(fd, length, offset)

    containers.os.pread = counting  # type: ignore[assignment]
    try:
        judge(path)
    finally:
        containers.os.pread = real  # type: ignore[assignment]
    return len(sizes), sum(sizes)


def median_us(path: Path, runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        judge(path)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    cases: list[tuple[str, Callable[[Path], None], int]] = [
        ("MP4 2 GiB, 64-bit mdat, moov at end", lambda p: mp4(p, 2 * GIB), 2000),
        ("MXF OP1a 2 GiB, footer + RIP", lambda p: mxf(p, 2 * GIB), 2000),
        ("fMP4 10,000 fragments, mfra", lambda p: fragmented(p, 10_000, 200_000, True), 2000),
        ("fMP4 10,000 fragments, no mfra", lambda p: fragmented(p, 10_000, 200_000, False), 200),
        ("fMP4 100,000 fragments, no mfra", lambda p: fragmented(p, 100_000, 200_000, False), 200),
    ]
    print(f"pread cap per check: {containers._MAX_READS} (then \"unknown\")")
    print(f"{'case':40} {'size':>9} {'verdict':>10} {'median':>11} {'preads':>7} {'bytes':>8}")
    with tempfile.TemporaryDirectory(prefix="container-check-") as tmp:
        for name, build, runs in cases:
            path = Path(tmp) / "file"
            build(path)
            verdict = judge(path)
            median = median_us(path, runs)
            preads, read = reads_of(path)
            size = path.stat().st_size
            print(
                f"{name:40} {size / GIB:7.2f}Gi {verdict.state:>10} {median:9.1f}us"
                f" {preads:7d} {read:8d}"
            )
            path.unlink()


if __name__ == "__main__":
    main()
