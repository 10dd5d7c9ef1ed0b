"""LLM engines behind one interface (``Engine``), the persistent request cache and the runner.

| engine | what | extra |
|---|---|---|
| ``local`` (default) | llama.cpp in-process (xllamacpp), OpenAI API on 127.0.0.1 | core |
| ``openai`` | any OpenAI-compatible endpoint | core |
| ``vllm`` | in-process ``vllm.LLM.chat`` | ``vllm`` |
| ``transformers`` | in-process batched ``generate`` | ``train`` |
"""

from __future__ import annotations

from ipm_prefdial.engines.base import (
    EXIT_GONE,
    EXIT_REFUSED,
    ChatRequest,
    ChatResult,
    Choice,
    Engine,
    EngineStop,
    JsonSchema,
    Sampling,
)
from ipm_prefdial.engines.cache import CacheError, RequestCache
from ipm_prefdial.engines.runner import Stats, run_coroutine, run_requests, run_sync

ENGINES = ("local", "openai", "vllm", "transformers")


def make_engine(name: str, *, model: str | None = None, base_url: str | None = None, concurrency: int | None = None,
                context_tokens: int | None = None, headers: dict[str, str] | None = None,
                give_up_after: float | None = None, retries: int | None = None, **options) -> Engine:
    """An engine by name; heavy imports happen here or at ``start``, never at package import. ``context_tokens``
    is the prompt + answer budget (each engine has its own default). ``headers`` go with every request to an
    endpoint; ``give_up_after`` is how long an HTTP engine may go without an answer while failing (``Breaker``);
    ``retries`` how often it retries a request that failed with a transient kind."""
    http = {**({"give_up_after": give_up_after} if give_up_after else {}),
            **({"max_attempts": retries + 1} if retries is not None else {})}
    if name == "local":
        from ipm_prefdial.engines.local import LocalEngine

        return LocalEngine(model, **({"slots": concurrency} if concurrency else {}),
                           **({"slot_context": context_tokens} if context_tokens else {}), **http, **options)
    if name == "openai":
        if not base_url:
            raise ValueError("--engine openai needs --base-url (e.g. http://localhost:8000/v1)")
        from ipm_prefdial.engines.openai_http import OpenAIEngine

        return OpenAIEngine(base_url, model, **({"concurrency": concurrency} if concurrency else {}),
                            context_tokens=context_tokens, headers=headers, **http, **options)
    if name == "vllm":  # no model: the bundled SmolLM2-135M, as for the embedded engine
        from ipm_prefdial.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model, concurrency=concurrency,
                          **({"max_model_len": context_tokens} if context_tokens else {}), **options)
    if name == "transformers":
        if not model:
            raise ValueError("--engine transformers needs --model (a local checkpoint or Hub id)")
        from ipm_prefdial.engines.transformers_engine import TransformersEngine

        return TransformersEngine(model, **({"batch_size": concurrency} if concurrency else {}),
                                  **({"context_tokens": context_tokens} if context_tokens else {}), **options)
    raise ValueError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")


__all__ = ["ENGINES", "EXIT_GONE", "EXIT_REFUSED", "CacheError", "ChatRequest", "ChatResult", "Choice", "Engine",
           "EngineStop", "JsonSchema", "RequestCache", "Sampling", "Stats", "make_engine", "run_coroutine",
           "run_requests", "run_sync"]
