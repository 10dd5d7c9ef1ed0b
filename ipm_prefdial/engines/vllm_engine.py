"""``vllm``: in-process ``vllm.LLM.chat`` with every prompt of a batch in one call (GPU).

vLLM is an optional extra (``pip install 'ipm_prefdial[vllm]'``) imported only when this engine starts.
``request_spec`` is the whole translation from our requests to vLLM's arguments, as plain data, so it is
tested without vLLM installed.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

from ipm_prefdial.engines.base import ChatRequest, ChatResult, Choice, Engine, JsonSchema, check_output
from ipm_prefdial.engines.identity import model_identity


def request_spec(request: ChatRequest, model: str) -> dict[str, Any]:
    """The messages and the SamplingParams keyword arguments of one request, as plain data."""
    s = request.sampling
    params: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens,
                              "seed": request.seed(model)}
    if isinstance(request.output, Choice):
        params["structured_outputs"] = {"choice": list(request.output.labels)}
    elif isinstance(request.output, JsonSchema):
        params["structured_outputs"] = {"json": request.output.schema}
    return {"messages": request.message_dicts(), "sampling": params}


def sampling_params(vllm: Any, params: dict[str, Any]) -> Any:
    """SamplingParams from ``request_spec``'s data, for vLLM >= 0.11 (structured_outputs) or older
    releases (guided_decoding)."""
    params = dict(params)
    structured = params.pop("structured_outputs", None)
    if structured is not None:
        try:
            from vllm.sampling_params import StructuredOutputsParams

            params["structured_outputs"] = StructuredOutputsParams(**structured)
        except ImportError:  # vLLM < 0.11
            from vllm.sampling_params import GuidedDecodingParams

            params["guided_decoding"] = GuidedDecodingParams(**structured)
    return vllm.SamplingParams(**params)


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(self, model: str, *, lora: str | None = None, max_model_len: int = 8192, dtype: str = "bfloat16",
                 tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9, **llm_kwargs: Any):
        self.model = model
        self.base_model = model
        self.context_tokens = max_model_len  # prompts over it lose their oldest history (Engine.fit)
        self.lora = lora
        self.llm_kwargs = {"max_model_len": max_model_len, "dtype": dtype, "tensor_parallel_size": tensor_parallel_size,
                           "gpu_memory_utilization": gpu_memory_utilization, "enable_prefix_caching": True,
                           **llm_kwargs}
        self._llm: Any = None
        self._vllm: Any = None

    async def start(self) -> None:
        if self._llm is not None:
            return
        try:
            import vllm
        except ImportError as exc:
            raise RuntimeError("the vllm engine needs vLLM on a CUDA machine: pip install 'ipm_prefdial[vllm]' "
                               f"({exc}); elsewhere use --engine openai against `vllm serve`, or --engine local") \
                from None
        self._vllm = vllm
        kwargs = dict(self.llm_kwargs)
        if self.lora:
            kwargs.setdefault("enable_lora", True)
        self._llm = vllm.LLM(model=self.base_model, **kwargs)

    async def close(self) -> None:
        self._llm = None

    def _identify(self, memo) -> tuple[str, str]:
        identity, name = model_identity(self.base_model, memo)
        if self.lora:
            lora_identity, name = model_identity(self.lora, memo)
            identity = f"{identity}+lora:{lora_identity}"
        return identity, name

    def describe(self) -> dict:
        return {**super().describe(), "lora": self.lora is not None, "max_model_len": self.llm_kwargs["max_model_len"]}

    async def stream(self, requests: Sequence[ChatRequest]) -> AsyncIterator[tuple[int, ChatResult]]:
        if not requests:
            return
        await self.start()
        specs = [request_spec(r, self.identity) for r in requests]
        lora_request = None
        if self.lora:
            from vllm.lora.request import LoRARequest

            lora_request = LoRARequest("adapter", 1, self.lora)
        outputs = await asyncio.to_thread(
            self._llm.chat, [s["messages"] for s in specs],
            sampling_params=[sampling_params(self._vllm, s["sampling"]) for s in specs],
            lora_request=lora_request, use_tqdm=True)
        for i, (request, output) in enumerate(zip(requests, outputs, strict=True)):
            completion = output.outputs[0]
            usage = {"prompt_tokens": len(output.prompt_token_ids or []),
                     "cached_tokens": int(getattr(output, "num_cached_tokens", 0) or 0),
                     "completion_tokens": len(completion.token_ids or [])}
            yield i, check_output(request, completion.text, completion.finish_reason, **usage)
