"""The retry policy is pure: every rule is checked without a clock, a vault or a disk."""

from __future__ import annotations

import random

from vaultdrop.errors import ClockSkew, RetryLater, Unavailable
from vaultdrop.retry import OUTAGE_SAFETY_NET, GiveUp, Policy, Retry, decide

POLICY = Policy(max_attempts=3, backoff_base=2.0, backoff_max=10.0)


def test_an_outage_spends_no_attempt_however_long_it_lasts() -> None:
    rng = random.Random(1)
    for streak in range(100):
        verdict = decide(Unavailable("down"), 2, streak, POLICY, rng)
        assert isinstance(verdict, Retry) and verdict.attempts == 2
        assert 0 < verdict.delay <= OUTAGE_SAFETY_NET


def test_other_errors_spend_attempts_and_give_up_at_max_attempts() -> None:
    rng = random.Random(2)
    first = decide(RetryLater("500"), 0, 0, POLICY, rng)
    second = decide(ClockSkew("clock"), 1, 0, POLICY, rng)
    assert isinstance(first, Retry) and first.attempts == 1
    assert isinstance(second, Retry) and second.attempts == 2
    assert decide(RetryLater("500"), 2, 0, POLICY, rng) == GiveUp(3), "the third failed attempt is the last"


def test_backoff_grows_and_never_passes_backoff_max() -> None:
    rng = random.Random(3)
    delays = [decide(RetryLater("x"), 0, 0, Policy(100, 2.0, 10.0), rng).delay for _ in range(200)]
    late = [decide(RetryLater("x"), 50, 0, Policy(100, 2.0, 10.0), rng).delay for _ in range(200)]
    assert all(1.0 <= d <= 2.0 for d in delays)
    assert all(1.0 <= d <= 10.0 for d in late) and max(late) > 5.0


def test_max_delay_bounds_every_retry_the_policy_can_schedule() -> None:
    rng = random.Random(4)
    worst = max(decide(error, attempts, streak, POLICY, rng).delay  # type: ignore[union-attr]
                for error in (Unavailable("x"), RetryLater("y")) for attempts in (0, 1) for streak in (0, 50))
    assert worst <= POLICY.max_delay
