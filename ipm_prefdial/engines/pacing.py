"""Meeting an API's rate limit without a storm of 429s: ``Pacer`` decides when an HTTP attempt may go out.

- **The server's own count**: once answers carry ``x-ratelimit-limit-requests`` (a minute's limit) and
  ``x-ratelimit-remaining-requests``, the pacer keeps a copy of the server's bucket: refilled at the limit's rate,
  never above what the server last said remains (less the attempts still in flight), one taken per attempt. An
  attempt waits for a request's room instead of being answered 429. A ``-tokens`` count at 0 holds new attempts
  until its ``x-ratelimit-reset-tokens`` (``"20ms"``, ``"1s"``, ``"6m0s"``), at most ``MAX_HOLD`` seconds.
- **Adaptive concurrency** (additive increase, multiplicative decrease, as TCP does), for servers that say nothing:
  the attempts in flight are held to ``limit``, which starts at the engine's concurrency. A 429 halves it (once per
  round: only a 429 to an attempt sent after the last cut cuts again, so one burst of 429s is one cut) and empties
  the copy of the bucket; every answer adds ``1 / limit`` (about one more in flight per round), up to the
  concurrency again.

- **The user's own caps** (``--rpm``, ``--tpm``): buckets of one second of the allowed requests and tokens (a
  request's tokens: its prompt estimate plus ``max_tokens``, as Azure counts them), refilled continuously; an
  attempt waits for room in both, so even the first burst stays under them.

Retry waits (``retry-after-ms``, else ``retry-after``) stay per request (``retry_after``): the engine's backoff waits
them out without holding a place in flight.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Mapping

MAX_HOLD = 60.0  # the longest a server's count may hold an attempt (seconds); beyond it the attempt goes out
DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?(?:(\d+(?:\.\d+)?)ms)?")


class Pacer:
    """When an attempt may be sent: ``sent = await pacer.acquire()``, the attempt, ``await pacer.release()``, then
    ``pacer.answered(headers)`` or ``pacer.limited(sent, headers)``. Made inside the event loop it serves."""

    def __init__(self, concurrency: int, rpm: float | None = None, tpm: float | None = None):
        self.caps = [Cap(rpm / 60.0) if rpm else None, Cap(tpm / 60.0) if tpm else None]  # requests, tokens
        self.ceiling = max(1, concurrency)
        self.limit = float(self.ceiling)
        self.in_flight = 0
        self.hold_until = 0.0  # monotonic time before which no new attempt goes out
        self.cut_at = float("-inf")  # when the limit was last cut
        self.cuts = 0
        self.rate = 0.0  # requests a second the server allows (its x-ratelimit-limit-requests / 60); 0: unknown
        self.room = 0.0  # the copy of the server's bucket: requests it would take now (when rate is known)
        self.size = 1.0  # the most room the server has said it has
        self.room_at = time.monotonic()
        self._changed = asyncio.Condition()

    async def acquire(self, tokens: int = 0) -> float:
        """Wait for a place in flight (and for the end of a hold, and for room under the user's caps for one request
        of ``tokens``); returns the time the attempt goes out."""
        while True:
            hold = self.hold_until - time.monotonic()
            if hold > 0:
                await asyncio.sleep(hold)  # holding no lock: a cancelled build stops here at once
                continue
            async with self._changed:
                await self._changed.wait_for(lambda: self.in_flight < max(1, int(self.limit)))
                now = time.monotonic()
                if now < self.hold_until:
                    continue
                need = (1.0, float(tokens))
                wait = max((cap.wait(now, n) for cap, n in zip(self.caps, need, strict=True) if cap), default=0.0)
                wait = wait or self._take(now)
                if wait > 0:
                    self._hold(wait)
                    continue
                for cap, n in zip(self.caps, need, strict=True):
                    if cap:
                        cap.take(n)
                self.in_flight += 1
                return now

    def _take(self, now: float) -> float:
        """Take a request's room from the copy of the server's bucket: 0, or the seconds until there is room."""
        if not self.rate:
            return 0.0
        self._refill(now)
        if self.room >= 1.0 - 1e-9:  # a whole request's room (less the float's rounding of the refill)
            self.room = max(0.0, self.room - 1.0)
            return 0.0
        wait = (1.0 - self.room) / self.rate
        if wait > MAX_HOLD:  # no room for long: the server answers for itself (429, retry-after, give-up)
            self.room -= 1.0
            return 0.0
        return wait

    def _refill(self, now: float) -> None:
        self.room = min(self.size, self.room + (now - self.room_at) * self.rate)
        self.room_at = now

    def _hold(self, seconds: float) -> None:
        """No new attempt goes out for ``seconds`` (a longer hold already set stays)."""
        if seconds > 0:
            self.hold_until = max(self.hold_until, time.monotonic() + seconds)

    async def release(self) -> None:
        async with self._changed:
            self.in_flight -= 1
            self._changed.notify_all()

    def answered(self, headers: Mapping[str, str]) -> None:
        """An answer that was not a 429: grow the limit; hold new attempts when the server says it has no room."""
        self.limit = min(float(self.ceiling), self.limit + 1.0 / self.limit)
        self._sync(headers)
        self._hold(exhausted_for(headers))

    def _sync(self, headers: Mapping[str, str], room: float | None = None) -> None:
        """Learn the server's rate and bring the copy of its bucket down to what it says remains."""
        limit = _number(headers.get("x-ratelimit-limit-requests"))
        remaining = _number(headers.get("x-ratelimit-remaining-requests")) if room is None else room
        if not limit or remaining is None:
            return
        now = time.monotonic()
        if not self.rate:  # first news: the bucket is as the server says
            self.room, self.room_at = remaining - self.in_flight, now
        self.rate = limit / 60.0
        self.size = max(self.size, remaining, 1.0)
        self._refill(now)
        # the attempts still in flight may not be in the server's count yet: assume they are not (a wait too many,
        # never a 429 too many)
        self.room = min(self.room, remaining - self.in_flight)

    def limited(self, sent: float, headers: Mapping[str, str]) -> None:
        """A 429 to an attempt sent at ``sent``: halve the limit, once per round."""
        if sent > self.cut_at:
            self.limit = max(1.0, self.limit / 2)
            self.cut_at = time.monotonic()
            self.cuts += 1
        self._sync(headers, room=0.0)
        self._hold(exhausted_for(headers))


class Cap:
    """A bucket of one second of ``rate`` (units a second), refilled continuously, full at the start."""

    def __init__(self, rate: float):
        self.rate, self.size = rate, max(1.0, rate)
        self.room, self.at = self.size, time.monotonic()

    def wait(self, now: float, n: float) -> float:
        """Seconds until ``n`` units fit (one bigger than the bucket goes out when it is full)."""
        self.room = min(self.size, self.room + (now - self.at) * self.rate)
        self.at = now
        need = min(n, self.size)
        return 0.0 if self.room >= need - 1e-9 else (need - self.room) / self.rate

    def take(self, n: float) -> None:
        self.room -= n


def exhausted_for(headers: Mapping[str, str]) -> float:
    """Seconds until the server has room again by an ``x-ratelimit-remaining-*`` at 0 and its ``-reset-*``; 0 when
    it has room, does not say, or the copy of its request bucket paces (a ``-limit-requests`` is known)."""
    hold = 0.0
    for unit in ("requests", "tokens"):
        remaining = _number(headers.get(f"x-ratelimit-remaining-{unit}"))
        if remaining is None or remaining >= 1:
            continue
        if unit == "requests" and _number(headers.get("x-ratelimit-limit-requests")):
            continue  # the copy of the server's bucket paces requests
        hold = max(hold, duration(headers.get(f"x-ratelimit-reset-{unit}")) or 0.0)
    return min(hold, MAX_HOLD)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The wait a 429 or 5xx asks for: ``retry-after-ms`` (milliseconds), else ``retry-after`` (seconds)."""
    ms = _number(headers.get("retry-after-ms"))
    if ms is not None:
        return max(0.0, ms / 1000)
    seconds = _number(headers.get("retry-after"))
    return None if seconds is None else max(0.0, seconds)


def duration(text: str | None) -> float | None:
    """OpenAI's ``x-ratelimit-reset-*`` values as seconds: ``"20ms"`` 0.02, ``"1.5s"``, ``"6m0s"`` 360; a bare number
    is seconds; None when unreadable."""
    if not text:
        return None
    text = text.strip()
    plain = _number(text)
    if plain is not None:
        return plain
    match = DURATION.fullmatch(text)
    if not match or not any(match.groups()):
        return None
    h, m, s, ms = (float(g) if g else 0.0 for g in match.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if value == value and value not in (float("inf"), float("-inf")) else None
