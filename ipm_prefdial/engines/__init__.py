"""LLM engines behind one interface (``Engine``), the persistent request cache and the runner.

| engine | what | extra |
|---|---|---|
| ``local`` (default) | llama.cpp in-process (xllamacpp), OpenAI API on 127.0.0.1 | core |
| ``openai`` | any OpenAI-compatible endpoint | core |
| ``vllm`` | in-process vLLM (``AsyncLLM``) | ``vllm`` |
| ``transformers`` | in-process batched ``generate`` | ``train`` |

The layers, bottom up (a module imports only those below it):

- ``requests``: chat requests, sampling, output constraints, results and failure kinds (values, no I/O);
- ``breaker`` (giving up on a dead engine: ``EngineStop``), ``checks`` (raw answers -> results or failures),
  ``streaming`` (a batch through an engine's workers, one dialogue per stream), ``urls`` (endpoints, proxies),
  ``identity`` (models named by content);
- ``base``: the ``Engine`` interface;
- the engines: ``openai_http``, ``local`` (over it), ``vllm_engine``, ``transformers_engine``;
- ``cache`` (the persistent request cache) and ``runner`` (a batch through an engine and the cache, with
  accounting); ``check`` (``ipm engine-check``).

This module only names the engines and makes one by name; heavy imports happen there or at ``start``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ipm_prefdial.engines.base import Engine
from ipm_prefdial.errors import UsageError

ENGINES = ("local", "openai", "vllm", "transformers")


@dataclass(frozen=True)
class EngineSpec:
    """One role's engine: what ``engines.make_engine`` (or a Ray worker) makes it from. ``options`` are the
    engine's own settings (vLLM's engine arguments)."""

    name: str
    model: str | None = None
    base_url: str | None = None
    concurrency: int | None = None
    context_tokens: int | None = None
    headers: tuple[tuple[str, str], ...] = ()
    retries: int | None = None
    give_up_after: float | None = None
    options: tuple[tuple[str, object], ...] = ()
    rpm: float | None = None  # the user's caps on an HTTP engine: requests and tokens a minute
    tpm: float | None = None

    @property
    def key(self) -> tuple:
        """Roles whose key is equal share one engine."""
        return self.name, self.model, self.base_url, self.headers


def make_engine(spec: EngineSpec) -> Engine:
    """The engine of a spec; heavy imports happen here or at ``start``, never at package import. ``context_tokens``
    is the prompt + answer budget (each engine has its own default). ``headers`` go with every request to an
    endpoint; ``give_up_after`` is how long an HTTP engine may go without an answer while failing (``Breaker``);
    ``retries`` how often it retries a request that failed with a transient kind; ``options`` are vLLM's
    settings."""
    http = {**({"give_up_after": spec.give_up_after} if spec.give_up_after else {}),
            **({"rpm": spec.rpm} if spec.rpm else {}), **({"tpm": spec.tpm} if spec.tpm else {}),
            **({"max_attempts": spec.retries + 1} if spec.retries is not None else {})}
    model, concurrency, context_tokens = spec.model, spec.concurrency, spec.context_tokens
    if spec.name == "local":
        from ipm_prefdial.engines.local import LocalEngine

        return LocalEngine(model, **({"slots": concurrency} if concurrency else {}),
                           **({"slot_context": context_tokens} if context_tokens else {}), **http,
                           **dict(spec.options))
    if spec.name == "openai":
        if not spec.base_url:
            raise UsageError("--engine openai needs --base-url (e.g. http://localhost:8000/v1)")
        from ipm_prefdial.engines.openai_http import OpenAIEngine

        return OpenAIEngine(spec.base_url, model, **({"concurrency": concurrency} if concurrency else {}),
                            context_tokens=context_tokens, headers=dict(spec.headers), **http)
    if spec.name == "vllm":  # no model: the bundled SmolLM2-135M, as for the embedded engine
        from ipm_prefdial.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model, concurrency=concurrency,
                          **({"max_model_len": context_tokens} if context_tokens else {}), **dict(spec.options))
    if spec.name == "transformers":
        if not model:
            raise UsageError("--engine transformers needs --model (a local checkpoint or Hub id)")
        from ipm_prefdial.engines.transformers_engine import TransformersEngine

        return TransformersEngine(model, **({"batch_size": concurrency} if concurrency else {}),
                                  **({"context_tokens": context_tokens} if context_tokens else {}))
    raise UsageError(f"unknown engine {spec.name!r}; choose one of {', '.join(ENGINES)}")
