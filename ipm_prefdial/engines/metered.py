"""One role's view of an HTTP engine that pays for its requests: ``Metered`` holds each request's worst case in the
build's ``Budget`` before sending it and counts its dollars when it is answered (``engines.spend``); a request the
spend cap leaves no room for ends as ``spend_cap``: not sent, not recorded. ``engines.batch.BatchEngine`` is the
same view sending through the provider's batch API."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence

from ipm_prefdial.engines.base import Engine
from ipm_prefdial.engines.requests import ChatRequest, ChatResult, failure
from ipm_prefdial.engines.spend import Budget
from ipm_prefdial.engines.streaming import stream_grouped


class Metered(Engine):
    """A role's view of an HTTP engine (``openai_http.OpenAIEngine``) that holds each request's worst case in the
    ``Budget`` before sending it and counts its dollars when it is answered; a request the cap leaves no room for
    ends as ``spend_cap`` (not sent, not recorded)."""

    def __init__(self, inner, role: str, budget: Budget):
        self.inner, self.role, self.budget = inner, role, budget
        self.name = inner.name

    # everything but sending is the inner engine's
    model = property(lambda self: self.inner.model)
    concurrency = property(lambda self: self.inner.concurrency)
    context_tokens = property(lambda self: self.inner.context_tokens)
    display_name = property(lambda self: self.inner.display_name)

    def identify(self, memo=None) -> str:
        return self.inner.identify(memo)

    @property
    def identity(self) -> str:
        return self.inner.identity

    async def start(self) -> None:
        await self.inner.start()

    async def close(self) -> None:
        await self.inner.close()

    def host(self) -> object:
        return self.inner.host()

    def fit(self, request: ChatRequest) -> tuple[ChatRequest, int]:
        return self.inner.fit(request)

    def describe(self) -> dict:
        return self.inner.describe()

    def attach_progress(self, progress) -> None:
        getattr(self.inner, "attach_progress", lambda _: None)(progress)

    def count_cached(self, results: Iterable[ChatResult]) -> None:
        for result in results:
            self.budget.charge(self.role, result, fresh=False)

    def stream(self, requests: Sequence[ChatRequest]) -> AsyncIterator[tuple[int, ChatResult]]:
        return stream_grouped(requests, self._complete, self.inner.concurrency)

    async def _complete(self, request: ChatRequest) -> ChatResult:
        # an answer that does not parse is asked again (openai_http.RESEEDS): each try may be paid for
        tries = 1 + (getattr(self.inner, "reseeds", 0) if request.output is not None else 0)
        worst = tries * self.budget.price(self.role).worst(request)
        if not self.budget.hold(worst):
            self.budget.stopped += 1
            return failure("spend_cap", self.budget.line())
        try:
            result = await self.inner.complete(request)
        finally:
            self.budget.release(worst)
        self.budget.charge(self.role, result, fresh=True)
        return result
