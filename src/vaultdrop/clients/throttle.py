"""A daemon-wide bandwidth limit shared by every upload in flight."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class Throttle:
    """Virtual-time token bucket: each chunk books its slot on one shared timeline.

    Booking (rather than sleeping a fixed amount per chunk) keeps the aggregate rate right
    however many uploads share the limit, with at most `burst` seconds of slack. Uploads
    book from their own sending threads, hence the lock.
    """

    def __init__(self, bytes_per_second: int, burst: float = 0.25,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if bytes_per_second <= 0:
            raise ValueError("a throttle needs a positive rate")
        self._rate = float(bytes_per_second)
        self._burst = burst
        self._clock = clock
        self._next = clock()
        self._lock = threading.Lock()

    def delay_for(self, count: int) -> float:
        """Book `count` bytes; return how long the caller must wait before sending them."""
        with self._lock:
            now = self._clock()
            self._next = max(self._next, now - self._burst) + count / self._rate
            return max(0.0, self._next - now - self._burst)
