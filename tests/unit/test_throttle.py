from vaultdrop.clients.throttle import Throttle


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_throttle_holds_the_aggregate_rate() -> None:
    clock = FakeClock()
    throttle = Throttle(1_000_000, burst=0.0, clock=clock)
    waited = 0.0
    for _ in range(10):  # two "uploads" interleaving 100 kB chunks
        delay = throttle.delay_for(100_000)
        waited = max(waited, delay)
    assert abs(waited - 1.0) < 1e-9


def test_idle_time_is_not_banked_beyond_the_burst() -> None:
    clock = FakeClock()
    throttle = Throttle(1_000_000, burst=0.25, clock=clock)
    clock.now += 100
    assert throttle.delay_for(250_000) == 0  # the burst allowance, not 100 s of credit
    assert abs(throttle.delay_for(1_000_000) - 0.75) < 1e-9
