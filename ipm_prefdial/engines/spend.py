"""What requests cost and what a build may spend: prices per million tokens, the batch discount, and a ``Budget``
that holds the worst case of every request before it is sent.

The rule of ``--max-spend``: the dollars of the build's answered requests (from the usage they return, the
answers already in the cache included) plus the worst case of every request in flight or in a submitted batch never
pass the cap. A request's worst case is its prompt counted high (``WORST_PROMPT`` times our own estimate, which
already counts 3.5 characters a token: a provider's tokenizer may count more than ours) plus its ``max_tokens``, all
at the input and output prices (no cached-token discount assumed). A request whose worst case does not fit is not
sent: it ends as a ``spend_cap`` failure, never recorded in the cache, so a rerun with a higher cap sends it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ipm_prefdial.engines.requests import ChatRequest, ChatResult, estimate_tokens

WORST_PROMPT = 1.25  # our prompt estimate times this: what a request's prompt can cost at most
MODES = ("online", "batch")


@dataclass(frozen=True)
class Prices:
    """US dollars per million tokens; ``cached_input`` None counts cached prompt tokens at the input price;
    ``batch_discount`` is the share of the price a batch saves (OpenAI and Azure: one half)."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None
    batch_discount: float = 0.5

    @property
    def free(self) -> bool:
        return not (self.input or self.output or self.cached_input)

    def cost(self, prompt_tokens: int, cached_tokens: int, completion_tokens: int, batch: bool = False) -> float:
        cached = min(cached_tokens, prompt_tokens)
        cached_price = self.input if self.cached_input is None else self.cached_input
        usd = ((prompt_tokens - cached) * self.input + cached * cached_price + completion_tokens * self.output) / 1e6
        return usd * (1 - self.batch_discount) if batch else usd

    def worst(self, request: ChatRequest, batch: bool = False) -> float:
        """The most ``request`` can cost (its prompt counted high, every answer token used)."""
        prompt = math.ceil(estimate_tokens(request.messages) * WORST_PROMPT)
        return self.cost(prompt, 0, request.sampling.max_tokens, batch)

    def as_dict(self) -> dict:
        return {"input": self.input, "cached_input": self.cached_input, "output": self.output,
                "batch_discount": self.batch_discount}


def mode_of(result: ChatResult) -> str:
    """How an answer was paid for: results of a batch carry its id in ``extra``."""
    return "batch" if result.extra.get("batch") else "online"


@dataclass
class Tally:
    """Requests, tokens and dollars of one role in one mode."""

    requests: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0

    def as_dict(self) -> dict:
        return {"requests": self.requests, "prompt_tokens": self.prompt_tokens,
                "cached_prompt_tokens": self.cached_prompt_tokens, "completion_tokens": self.completion_tokens,
                "usd": round(self.usd, 6)}


@dataclass
class Budget:
    """The build's spend: settled dollars (answers, this run's and the cache's), dollars held for requests in flight
    or in batches, and the cap. One per build, shared by the roles (each with its prices)."""

    cap: float | None = None
    prices: dict[str, Prices] = field(default_factory=dict)  # role ("policy", "judge") -> prices
    spent: float = 0.0  # answers of this build, cached ones included
    spent_now: float = 0.0  # answers that arrived in this run
    held: float = 0.0
    tallies: dict[tuple[str, str], Tally] = field(default_factory=dict)
    stopped: int = 0  # requests not sent because the cap would have been passed

    def price(self, role: str) -> Prices:
        return self.prices.get(role, Prices())

    def hold(self, usd: float) -> bool:
        """Hold ``usd`` for a request about to be sent (or a line about to be submitted), if the cap allows it; a
        caller whose request is refused counts it in ``stopped``."""
        if self.cap is not None and self.spent + self.held + usd > self.cap + 1e-12:
            return False
        self.held += usd
        return True

    def release(self, usd: float) -> None:
        self.held = max(0.0, self.held - usd)

    def charge(self, role: str, result: ChatResult, *, fresh: bool) -> float:
        """Count an answer (``fresh``: it arrived in this run; else it was in the cache); its dollars."""
        if not (result.prompt_tokens or result.completion_tokens):
            return 0.0
        mode = mode_of(result)
        usd = self.price(role).cost(result.prompt_tokens, result.cached_tokens, result.completion_tokens,
                                    batch=mode == "batch")
        tally = self.tallies.setdefault((role, mode), Tally())
        tally.requests += 1
        tally.prompt_tokens += result.prompt_tokens
        tally.cached_prompt_tokens += min(result.cached_tokens, result.prompt_tokens)
        tally.completion_tokens += result.completion_tokens
        tally.usd += usd
        self.spent += usd
        if fresh:
            self.spent_now += usd
        return usd

    @property
    def reached(self) -> bool:
        return self.stopped > 0

    def report(self) -> dict:
        """The manifest's ``spend`` section: by role and mode, the cap and the prices."""
        by_role: dict[str, dict] = {}
        for (role, mode), tally in sorted(self.tallies.items()):
            by_role.setdefault(role, {})[mode] = tally.as_dict()
        return {"usd": round(self.spent, 6), "usd_this_run": round(self.spent_now, 6), "max_spend": self.cap,
                "cap_reached": self.reached, "requests_not_sent": self.stopped,
                "prices": {role: p.as_dict() for role, p in sorted(self.prices.items())}, "by_role": by_role}

    def line(self) -> str:
        return (f"spend cap reached: --max-spend {self.cap:g} USD; this build's answers cost {self.spent:.4f} USD "
                f"({self.spent_now:.4f} in this run); {self.stopped:,} requests were not sent")
