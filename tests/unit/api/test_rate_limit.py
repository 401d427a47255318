"""The playback keys' token buckets (api/rate_limit.py), on a clock the test moves."""

from __future__ import annotations

import pytest

from mediamill.api.rate_limit import RateLimiter
from mediamill.schemas.errors import RateLimitedError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_of_twice_the_rate_then_429_with_the_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(5.0, clock=clock)
    for _ in range(10):
        limiter.check(("key", "10.0.0.1"))
    with pytest.raises(RateLimitedError) as refused:
        limiter.check(("key", "10.0.0.1"))
    assert refused.value.context["retry_after_s"] == pytest.approx(0.2)
    limiter.check(("key", "10.0.0.2"))  # another address has its own bucket
    limiter.check(("other key", "10.0.0.1"))
    clock.now += 0.2
    limiter.check(("key", "10.0.0.1"))  # one token back
    with pytest.raises(RateLimitedError):
        limiter.check(("key", "10.0.0.1"))


def test_the_rate_holds_over_time() -> None:
    clock = Clock()
    limiter = RateLimiter(10.0, clock=clock)
    accepted = 0
    for _ in range(1000):  # 100 requests a second for 10 s
        clock.now += 0.01
        try:
            limiter.check("k")
            accepted += 1
        except RateLimitedError:
            pass
    assert 100 <= accepted <= 100 + 20 + 1  # the rate, plus the burst


def test_memory_stays_bounded() -> None:
    clock = Clock()
    limiter = RateLimiter(1.0, max_buckets=100, clock=clock)
    for i in range(1000):
        limiter.check(i)
    assert len(limiter._buckets) <= 100
