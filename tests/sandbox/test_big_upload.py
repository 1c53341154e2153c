"""A 1 GiB upload streams through in constant memory while progress.xml follows it live."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import psutil

from vaultdrop.sandbox.launcher import SandboxProcess

from .client import VaultClient

SIZE = 1024**3 + 12345  # odd size: nothing lines up with a chunk by accident
RSS_LIMIT = 100 * 1024**2


def sparse_sha256(size: int) -> str:
    digest, zeros, left = hashlib.sha256(), bytes(1024**2), size
    while left:
        digest.update(zeros[: min(left, len(zeros))])
        left -= min(left, len(zeros))
    return digest.hexdigest()


def test_one_gib_upload_streams_in_constant_memory(sandbox: SandboxProcess, tmp_path: Path) -> None:
    big = tmp_path / "big.mp4"
    with big.open("wb") as out:
        out.truncate(SIZE)
    client = VaultClient(sandbox)
    key = client.new_key()
    server = psutil.Process(sandbox.process.pid)
    started = time.monotonic()
    curl = subprocess.Popen(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-F", f"upload_file=@{big}",
                             client.upload_url(key)], stdout=subprocess.PIPE, text=True)
    samples: list[tuple[str | None, int, int]] = []
    peak_rss = 0
    while curl.poll() is None:
        samples.append(client.progress(key))
        peak_rss = max(peak_rss, server.memory_info().rss)
        time.sleep(0.1)
    assert curl.communicate(timeout=5)[0] == "200"
    elapsed = time.monotonic() - started
    samples.append(client.progress(key))

    streaming = [s for s in samples if s[0] is None]
    received = [s[1] for s in streaming]
    assert received == sorted(received), "received went backwards while streaming"
    assert len({r for r in received if 0 < r < SIZE}) >= 3, f"progress not seen growing: {received}"
    sizes = {s[2] for s in streaming}
    content_length = max(sizes)
    assert sizes <= {0, content_length} and content_length > SIZE  # the file plus multipart framing
    assert samples[-1] == (key, SIZE, SIZE)
    assert peak_rss < RSS_LIMIT, f"sandbox RSS peaked at {peak_rss / 1024**2:.0f} MiB"
    [video] = sandbox.videos()
    assert video["size"] == SIZE and video["sha256"] == sparse_sha256(SIZE)
    assert client.get(f"/video/delete/{key}.xml").status_code == 200  # free the GiB at once
    print(f"1 GiB upload in {elapsed:.1f} s, peak sandbox RSS {peak_rss / 1024**2:.0f} MiB")
