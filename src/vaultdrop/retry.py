"""The retry policy: pure, so every rule is unit-tested without a clock, a vault or a disk.

`decide` turns one error into "try again at" or "give up". An outage (Unavailable) costs
no attempt: jobs waiting on it are woken when the service answers again (see outage.py),
so their own delay is only a safety net.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .errors import RetryLater, Unavailable

OUTAGE_SAFETY_NET = 300.0  # longest a job waits on an outage without being woken


@dataclass(frozen=True)
class Policy:
    max_attempts: int
    backoff_base: float
    backoff_max: float

    @property
    def max_delay(self) -> float:
        """No retry is ever scheduled further ahead than this (clamps a clock stepped back)."""
        return max(self.backoff_max, OUTAGE_SAFETY_NET)


@dataclass(frozen=True)
class Retry:
    delay: float
    attempts: int  # attempts spent after this error


@dataclass(frozen=True)
class GiveUp:
    attempts: int


def backoff(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """Exponential backoff with full jitter: spreads retries after an outage."""
    return rng.uniform(base / 2, min(cap, base * 2 ** max(0, attempt - 1)))


def decide(error: RetryLater, attempts: int, outage_streak: int, policy: Policy,
           rng: random.Random) -> Retry | GiveUp:
    """What one transient error means for a job that has spent `attempts` so far."""
    if isinstance(error, Unavailable):
        return Retry(backoff(outage_streak + 1, policy.backoff_base, OUTAGE_SAFETY_NET, rng), attempts)
    spent = attempts + 1
    if spent >= policy.max_attempts:
        return GiveUp(spent)
    return Retry(backoff(spent, policy.backoff_base, policy.backoff_max, rng), spent)
