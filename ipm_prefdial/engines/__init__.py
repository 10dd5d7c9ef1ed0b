"""LLM engines behind one interface (``Engine``), the persistent request cache and the runner.

| engine | what | extra |
|---|---|---|
| ``local`` (default) | llama.cpp in-process (xllamacpp), OpenAI API on 127.0.0.1 | core |
| ``openai`` | any OpenAI-compatible endpoint | core |
| ``vllm`` | in-process ``vllm.LLM.chat`` | ``vllm`` |
| ``transformers`` | in-process batched ``generate`` | ``train`` |
"""

from __future__ import annotations

from ipm_prefdial.engines.base import ChatRequest, ChatResult, Choice, Engine, JsonSchema, Sampling
from ipm_prefdial.engines.cache import CacheError, RequestCache
from ipm_prefdial.engines.runner import Stats, run_coroutine, run_requests, run_sync

ENGINES = ("local", "openai", "vllm", "transformers")


def make_engine(name: str, *, model: str | None = None, base_url: str | None = None, concurrency: int | None = None,
                context_tokens: int | None = None, **options) -> Engine:
    """An engine by name; heavy imports happen here or at ``start``, never at package import. ``context_tokens``
    is the prompt + answer budget (each engine has its own default)."""
    if name == "local":
        from ipm_prefdial.engines.local import LocalEngine

        return LocalEngine(model, **({"slots": concurrency} if concurrency else {}),
                           **({"slot_context": context_tokens} if context_tokens else {}), **options)
    if name == "openai":
        if not base_url:
            raise ValueError("--engine openai needs --base-url (e.g. http://localhost:8000/v1)")
        from ipm_prefdial.engines.openai_http import OpenAIEngine

        return OpenAIEngine(base_url, model, **({"concurrency": concurrency} if concurrency else {}),
                            context_tokens=context_tokens, **options)
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


__all__ = ["ENGINES", "CacheError", "ChatRequest", "ChatResult", "Choice", "Engine", "JsonSchema", "RequestCache",
           "Sampling", "Stats", "make_engine", "run_coroutine", "run_requests", "run_sync"]
