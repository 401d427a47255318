"""Token buckets for publishable keys: `MEDIAMILL_PLAYBACK_RATE_PER_S` per (key, client
address), a bucket of twice that for bursts.

The buckets live in this API process (a request costs a dict lookup, no round trip);
with N processes behind a balancer a client gets up to N times the rate, which is
what the limit is for: a bound on what one page or one script can send, not a quota.
Memory is bounded: past `max_buckets`, buckets that refilled are dropped (a full
bucket is the same as none).
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Hashable

from mediamill.schemas.errors import RateLimitedError


class RateLimiter:
    def __init__(
        self,
        rate_per_s: float,
        *,
        burst: float | None = None,
        max_buckets: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst if burst is not None else max(1.0, 2 * rate_per_s)
        self.max_buckets = max_buckets
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, at)

    def check(self, key: Hashable) -> None:
        """Take one token from `key`'s bucket, or RateLimitedError saying how long until
        one is there."""
        now = self._clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate_per_s)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                wait_s = (1.0 - tokens) / self.rate_per_s
                raise RateLimitedError(
                    f"too many requests from this address with this playback key (at most "
                    f"{self.rate_per_s:g} a second); retry in {math.ceil(wait_s)} s",
                    retry_after_s=wait_s,
                )
            if key not in self._buckets and len(self._buckets) >= self.max_buckets:
                self._prune(now)
            self._buckets[key] = (tokens - 1.0, now)

    def _prune(self, now: float) -> None:
        full_after_s = self.burst / self.rate_per_s
        self._buckets = {k: v for k, v in self._buckets.items() if now - v[1] < full_after_s}
        if len(self._buckets) >= self.max_buckets:  # all busy: forget the oldest half
            keep = sorted(self._buckets.items(), key=lambda kv: kv[1][1])[len(self._buckets) // 2 :]
            self._buckets = dict(keep)
