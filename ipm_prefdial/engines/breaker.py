"""Giving up on an engine that has stopped answering: ``EngineStop`` (a run cannot go on with this engine) and
``Breaker`` (when to say so)."""

from __future__ import annotations

import time

from ipm_prefdial.errors import EXIT_GONE, EXIT_REFUSED, IpmError

__all__ = ["EXIT_GONE", "EXIT_REFUSED", "Breaker", "EngineStop"]


class EngineStop(IpmError):
    """A run cannot go on with this engine: nothing more is sent, every answer already committed stays in the
    cache, and the message is one line naming the endpoint, the kind of failure and the server's words.

    ``exit_code`` is ``EXIT_GONE`` (75: the endpoint or cluster went away; run the same command again to resume) or
    ``EXIT_REFUSED`` (1: it answers, but refuses our requests; rerunning the same command would not help). ``kept``
    is how many answers of this run the request cache holds (set by whoever ran the requests)."""

    def __init__(self, endpoint: str, kind: str, detail: str, exit_code: int = EXIT_GONE):
        super().__init__(endpoint, kind, detail, exit_code)
        self.endpoint, self.kind, self.detail, self.exit_code = endpoint, kind, detail, exit_code
        self.kept: int | None = None

    def __str__(self) -> str:
        return f"{self.endpoint}: {self.kind}: {self.detail}"

    def line(self) -> str:
        if self.exit_code != EXIT_GONE:
            return f"{self}; nothing was recorded for the refused requests"
        kept = f"{self.kept:,} answers of this run are kept in the request cache; " if self.kept else ""
        return f"{self}; no dataset written; {kept}run the same command again to resume"


class Breaker:
    """Gives up on an engine that has stopped answering: when no request has succeeded for ``after`` seconds while
    requests keep failing with transient kinds, ``check`` raises ``EngineStop``. A dead server would otherwise be
    retried for every request of a build, one recorded failure every few seconds, for hours.

    The clock runs only while requests are in flight (``begin``/``end`` around each): it starts at the first request
    (a model's load time does not count), restarts at every answer, and does not count the time the engine sat idle
    (an engine that waits for hours while another host's engine works starts afresh)."""

    def __init__(self, endpoint: str, after: float | None):
        self.endpoint, self.after = endpoint, after
        self.last_ok: float | None = None
        self.failing = 0  # transient failures since the last answer
        self.kind, self.error = "", ""
        self.in_flight = 0
        self.idle_since: float | None = None

    def begin(self) -> None:
        """A request starts."""
        now = time.monotonic()
        if self.in_flight == 0:
            if self.last_ok is None:
                self.last_ok = now
            elif self.idle_since is not None:
                self.last_ok += now - self.idle_since  # idle time is not time without an answer
        self.in_flight += 1

    def end(self) -> None:
        """A request ends (answered, failed or given up)."""
        self.in_flight -= 1
        if self.in_flight == 0:
            self.idle_since = time.monotonic()

    def ok(self) -> None:
        self.last_ok, self.failing = time.monotonic(), 0

    def failed(self, kind: str, error: str) -> None:
        """A transient failure of one attempt; raises when the engine has been failing for too long."""
        if self.last_ok is None:  # a failure outside begin/end (a caller of its own) starts the clock too
            self.last_ok = time.monotonic()
        self.failing += 1
        self.kind, self.error = kind, error
        self.check()

    def remaining(self) -> float:
        """Seconds until a failing engine is given up (inf without a limit): how long a backoff may sleep."""
        if not self.after or self.last_ok is None:
            return float("inf")
        return max(0.0, self.after - (time.monotonic() - self.last_ok))

    def check(self) -> None:
        if self.failing and self.remaining() <= 0:
            raise EngineStop(self.endpoint, f"no answer for {self.after:g} s",
                             f"the last of {self.failing} failed attempts: {self.kind}: {self.error}")

