"""Rate limiting, the one backoff (reconnects, restarts, database retries) and the Connection's other
timing rules (pure; time is passed in)."""

from __future__ import annotations

import random


class TokenBucket:
    """``rate`` tokens a second up to ``burst``. Order methods take one token each; a request
    that finds none waits (it is queued, never dropped)."""

    def __init__(self, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._at = now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
            self._at = now

    def try_take(self, now: float) -> bool:
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False

    def wait_time(self, now: float) -> float:
        """Seconds until a token is available."""
        self._refill(now)
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate

    def set_limits(self, rate: float, burst: float, now: float) -> None:
        """New ``rate`` and ``burst`` from now on; what is in the bucket stays, up to the new burst."""
        if rate <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate > 0 and burst >= 1, got {rate}, {burst}")
        self._refill(now)
        self.rate = rate
        self.burst = float(burst)
        self._tokens = min(self._tokens, self.burst)

    def drain(self, now: float) -> None:
        """The exchange said we are too fast: start again from an empty bucket."""
        self._refill(now)
        self._tokens = 0.0


def doubling(initial: float, maximum: float, attempt: int) -> float:
    """``initial`` doubled ``attempt`` times, at most ``maximum`` (the exponent is capped, so a
    long outage never overflows)."""
    return min(maximum, initial * 2 ** min(max(attempt, 0), 62))


class Backoff:
    """Exponential backoff: ``initial`` doubling with each attempt up to ``maximum``; reset after
    a success (the link healthy for a while, the database answering again).

    With ``jitter`` (the default) each delay is drawn between ``initial / 2`` and that ceiling;
    without it the delay is the ceiling itself (the supervisor's restarts, the Recorder's
    retries: one process, no herd to spread, and tests that check the figures)."""

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None, *,
                 jitter: bool = True) -> None:
        if not 0 < initial <= maximum:
            raise ValueError(f"backoff needs 0 < initial <= maximum, got {initial}, {maximum}")
        self.initial = initial
        self.maximum = maximum
        self.jitter = jitter
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        ceiling = doubling(self.initial, self.maximum, self.attempt)
        self.attempt += 1
        if not self.jitter:
            return ceiling
        # Jitter keeps many clients from reconnecting in lockstep after an exchange outage.
        return self._rng.uniform(self.initial / 2, ceiling)

    def reset(self) -> None:
        self.attempt = 0


def token_refresh_delay(expires_in_s: float) -> float:
    """Seconds after a login at which to renew the session: at 80% of its life, so the renewal
    answers well before the token expires (also for the short-lived tokens of a test server)."""
    return max(0.5, 0.8 * expires_in_s)


def retry_delay(failures: int, initial: float = 0.25, maximum: float = 30.0) -> float:
    """Delay before retrying after ``failures`` consecutive failures (1 or more): doubling from
    ``initial`` up to ``maximum`` (a :class:`Backoff` without jitter, for callers that count the
    failures themselves)."""
    return doubling(initial, maximum, failures - 1)
