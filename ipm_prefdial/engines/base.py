"""The engine interface: a batch of chat requests in, one result per request out, whoever answers. The engines
(``local``, ``openai``, ``vllm``, ``transformers``) derive from ``Engine``; the values they take and give are in
``engines.requests``."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ipm_prefdial.engines.requests import ChatRequest, ChatResult, fit_context


class Engine(ABC):
    """An LLM that answers chat requests. ``model`` is what the engine calls the model (a served id, a path);
    ``identity`` is what cache keys and seeds are derived from (the model's content, see ``engines.identity``);
    ``display_name`` is what rows, cards and manifests show (never a path)."""

    name: str = "engine"
    model: str = ""
    concurrency: int = 1
    context_tokens: int | None = None  # prompt + answer budget; None: no limit known
    _identity: str | None = None
    _display: str | None = None

    def _identify(self, memo: Any) -> tuple[str, str]:
        """(identity, display name); engines with local weights name them by content."""
        if not self.model:
            raise RuntimeError(f"engine {self.name}: the model is not known yet (start the engine first)")
        return f"served:{self.model}", self.model

    def identify(self, memo: Any = None) -> str:
        """The identity, computed once (``memo``, the request cache, remembers file digests between runs)."""
        if self._identity is None:
            self._identity, self._display = self._identify(memo)
        return self._identity

    @property
    def identity(self) -> str:
        return self.identify()

    @property
    def display_name(self) -> str:
        self.identify()
        return self._display or self.model

    async def start(self) -> None:
        """Acquire resources (load a model, start a server, ask an endpoint its model) once, however many callers
        ask at the same time (a Ray worker's slots, the LoRA views of one vLLM instance)."""
        locks = self.__dict__.setdefault("_start_locks", {})
        lock = locks.setdefault(id(asyncio.get_running_loop()), asyncio.Lock())
        async with lock:
            await self._start()

    async def _start(self) -> None:  # noqa: B027 - optional hook
        """The engine's own start; idempotent, and run by ``start`` under its lock."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release them. Safe to call twice."""

    def host(self) -> object:
        """What serves this engine: engines with one host (LoRA adapters of one vLLM instance) run together and
        are started and closed once."""
        return self

    def fit(self, request: ChatRequest) -> tuple[ChatRequest, int]:
        """The request as this engine will be sent it (oldest history dropped to fit the context budget), and how
        many messages (or lines) were dropped. The runner keys, seeds and sends the fitted request."""
        return fit_context(request, self.context_tokens)

    @abstractmethod
    def stream(self, requests: Sequence[ChatRequest]) -> AsyncIterator[tuple[int, ChatResult]]:
        """Yield (index into ``requests``, result) as answers arrive, one per request, in any order."""

    def describe(self) -> dict:
        """What the manifest records about this engine (never a secret, never a local path)."""
        return {"engine": self.name, "model": self.display_name, "identity": self.identity}
