"""``vllm``: in-process vLLM (its ``AsyncLLM``): the GPU engine, and vLLM's CPU build in the tests.

- Every request is a vLLM request of its own, and its answer comes back as soon as it is finished, so the runner
  commits it at once (``stream_grouped``: a dialogue's requests in turn order on one stream, ``concurrency``
  streams, vLLM batching whatever is in flight). A killed build loses only the requests in flight.
- One vLLM instance per base model (``VLLMRuntime``). LoRA adapters of that base are engines of their own (their
  identity is the base's and the adapter's), served by the same instance with a ``LoRARequest`` per request:
  `ipm train`'s SP, RG and VM adapters on one base are one engine start, not three.
- Structured outputs: choices, and JSON schemas with ``disable_any_whitespace`` (a small model otherwise pads the
  JSON with newlines until ``max_tokens``).
- vLLM's engine core runs in other processes; a watchdog (``engines.reaper``) kills them if this process is killed.
- Settings pass through (``vllm:`` in the config file, ``--vllm-arg KEY=VALUE``) over defaults that work on a GPU
  and on a CPU (where ``gpu_memory_utilization`` is the share of RAM vLLM reserves, the dtype is one the
  processor computes natively, and no prompt is prefilled in pieces: see ``default_args``).

vLLM is an optional extra imported only when the engine starts. ``request_spec`` is the translation from our
requests to vLLM's sampling arguments as plain data, tested without vLLM.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import platform
import uuid
from collections.abc import AsyncIterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

from ipm_prefdial.engines.base import Engine
from ipm_prefdial.engines.breaker import EngineStop
from ipm_prefdial.engines.checks import check_output
from ipm_prefdial.engines.identity import model_identity
from ipm_prefdial.engines.requests import ChatRequest, ChatResult, Choice, JsonSchema, failure
from ipm_prefdial.engines.streaming import stream_grouped
from ipm_prefdial.errors import SetupError

BUNDLED = "bundled"  # SmolLM2-135M-Instruct, dequantised once from the GGUF the project ships with (offline)
LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # what vLLM accepts as max_lora_rank
# The /proc/cpuinfo flags that mean bf16 arithmetic in hardware, by architecture (platform.machine()).
BF16_FLAGS = {"x86_64": ("avx512_bf16", "amx_bf16"), "aarch64": ("bf16",)}
MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}  # other spellings of the same architectures


def on_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def native_dtype(flags: str, machine: str) -> str:
    """vLLM's dtype on a CPU with these feature ``flags`` (/proc/cpuinfo's words): bfloat16 only where the
    processor has bf16 instructions, float32 where vLLM's CPU build would emulate bf16 (an AVX2-only host took
    602.8 s for bench_vllm.py's 90 RG requests in bfloat16, an AVX-512 host 164.9 s)."""
    native = BF16_FLAGS.get(MACHINES.get(machine.lower(), machine.lower()), ())
    return "bfloat16" if set(flags.split()) & set(native) else "float32"


def cpu_flags(cpuinfo: str) -> str:
    """The first processor's feature flags in /proc/cpuinfo's text (x86: ``flags``, aarch64: ``Features``)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return value.strip()
    return ""


@cache
def cpu_dtype() -> str:
    """``native_dtype`` of this machine; float32 where /proc/cpuinfo cannot be read (float32 is never emulated)."""
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        cpuinfo = ""
    return native_dtype(cpu_flags(cpuinfo), platform.machine())


def default_args(gpu: bool, max_model_len: int = 8192) -> dict[str, Any]:
    """vLLM settings that work out of the box. On a CPU ``gpu_memory_utilization`` is the share of RAM reserved
    (vLLM's 0.92 fails there), the KV cache is ``VLLM_CPU_KVCACHE_SPACE`` GiB, eager mode saves the minute
    that torch.compile takes at every start, and the dtype is the processor's own (``cpu_dtype``).

    Nor is a prompt prefilled in pieces on a CPU: every request of ours is seeded, and vLLM's CPU build dies ("CPU
    Generator does not use offset", then EngineDeadError) when a seeded request's prefill is split across steps
    (it rewinds the request's random generator, which a CPU generator cannot do). AsyncLLM's defaults split them:
    chunked prefill on, with a step of 2,048 tokens (vLLM's CPU defaults name only the LLM class and the API
    server, so AsyncLLM's context falls back to ``SchedulerConfig.DEFAULT_MAX_NUM_BATCHED_TOKENS``); a prompt of
    more new tokens than the step has left is split. Without chunked prefill a step must hold the longest
    prompt, ``max_model_len`` (vLLM refuses less), and a prompt that does not fit waits for the next step."""
    if gpu:
        return {"dtype": "auto", "gpu_memory_utilization": 0.90, "max_num_seqs": 256}
    return {"dtype": cpu_dtype(), "gpu_memory_utilization": 0.30, "enforce_eager": True, "max_num_seqs": 32,
            "enable_chunked_prefill": False, "max_num_batched_tokens": max_model_len}


def adapter_base(path: str) -> str | None:
    """The base model a PEFT adapter directory names, or None when ``path`` is not an adapter."""
    config = Path(path) / "adapter_config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text(encoding="utf-8"))["base_model_name_or_path"]


def adapter_rank(path: str) -> int:
    config = json.loads((Path(path) / "adapter_config.json").read_text(encoding="utf-8"))
    return max([int(config.get("r", 8)), *(int(v) for v in (config.get("rank_pattern") or {}).values())])


def request_spec(request: ChatRequest, identity: str) -> dict[str, Any]:
    """The messages and the SamplingParams keyword arguments of one request, as plain data."""
    s = request.sampling
    params: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens,
                              "seed": request.seed(identity)}
    if isinstance(request.output, Choice):
        params["structured_outputs"] = {"choice": list(request.output.labels)}
    elif isinstance(request.output, JsonSchema):
        # vLLM's grammar backends (xgrammar, guidance) enforce string bounds exactly, so the soft bound applies;
        # no free whitespace (vLLM 0.32 reads that from the engine's settings: see VLLMRuntime.settings)
        params["structured_outputs"] = {"json": request.output.bounded_schema(), "disable_any_whitespace": True}
    return {"messages": request.message_dicts(), "sampling": params}


def sampling_params(vllm: Any, params: dict[str, Any]) -> Any:
    """SamplingParams from ``request_spec``'s data (vLLM >= 0.11: ``structured_outputs``)."""
    params = dict(params)
    structured = params.pop("structured_outputs", None)
    if structured is not None:
        from vllm.sampling_params import StructuredOutputsParams

        params["structured_outputs"] = StructuredOutputsParams(**structured)
    return vllm.SamplingParams(**params)


class VLLMRuntime:
    """One vLLM instance (one base model) and the adapters it serves."""

    starts = 0  # engine starts in this process, all runtimes together (the tests count them)

    def __init__(self, base: str, *, max_model_len: int, engine_args: dict[str, Any], adapters: Sequence[str] = ()):
        self.base = base
        self.max_model_len = max_model_len
        self.engine_args = dict(engine_args)
        self.adapters = list(dict.fromkeys(adapters))
        self.llm: Any = None
        self.tokenizer: Any = None
        self.vllm: Any = None
        self.started = 0
        self.resolved_dtype: str | None = None  # what vLLM made of the dtype setting, once started
        self._reaper: Any = None
        self._lock: asyncio.Lock | None = None

    def settings(self, gpu: bool) -> dict[str, Any]:
        """The AsyncEngineArgs keywords: defaults, then the user's settings, then what the adapters need."""
        args: dict[str, Any] = {**default_args(gpu, self.max_model_len), "max_model_len": self.max_model_len,
                                "enable_prefix_caching": True, "disable_log_stats": True,
                                # compact JSON: vLLM applies this per engine, not per request, and only with
                                # an explicit grammar backend (guidance: llguidance, as in the embedded engine)
                                "structured_outputs_config": {"backend": "guidance", "disable_any_whitespace": True},
                                **self.engine_args}
        if self.adapters:
            rank = max(adapter_rank(a) for a in self.adapters)
            args.setdefault("enable_lora", True)
            args.setdefault("max_loras", len(self.adapters))
            args.setdefault("max_lora_rank", next((r for r in LORA_RANKS if r >= rank), LORA_RANKS[-1]))
        return args

    def dtype(self) -> str:
        """The dtype vLLM runs (or, before it starts, the one it will be asked for: ``auto`` is the model's)."""
        return self.resolved_dtype or str(self.settings(on_gpu())["dtype"])

    def lora_request(self, adapter: str | None) -> Any:
        if adapter is None:
            return None
        from vllm.lora.request import LoRARequest

        k = self.adapters.index(adapter) + 1
        return LoRARequest(f"adapter-{k}", k, adapter)

    async def start(self) -> None:
        """Start the instance once, however many of its engines (LoRA views) ask at the same time."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            await self._start()

    async def _start(self) -> None:
        if self.llm is not None:
            return
        try:
            import vllm
            from vllm.engine.arg_utils import AsyncEngineArgs
            from vllm.v1.engine.async_llm import AsyncLLM
        except ImportError as exc:
            raise SetupError(f"the vllm engine needs vLLM: pip install 'ipm_prefdial[vllm]' on a CUDA machine, or "
                               f"make test-vllm for vLLM's CPU build ({exc}); elsewhere use --engine openai against "
                               "`vllm serve`, or --engine local") from None
        gpu = on_gpu()
        if not gpu:
            os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        from ipm_prefdial.engines import reaper

        self._reaper = reaper.watch()  # before the engine core exists, so it is noted from its first moment
        self.vllm = vllm
        self.llm = AsyncLLM.from_engine_args(AsyncEngineArgs(model=self.base, **self.settings(gpu)))
        self.tokenizer = self.llm.get_tokenizer()
        self.resolved_dtype = str(self.llm.model_config.dtype).removeprefix("torch.")
        self.started += 1
        VLLMRuntime.starts += 1

    async def close(self) -> None:
        """Shut the instance down and give its memory back before another one starts."""
        if self.llm is not None:
            self.llm.shutdown()
            self.llm = None
            self.tokenizer = None
            gc.collect()
            try:
                import torch

                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            except ImportError:
                pass
        if self._reaper is not None:
            self._reaper.terminate()
            self._reaper.wait()
            self._reaper = None


def resolve_model(model: str | None, cache_dir: str | None = None) -> tuple[str, str | None]:
    """(base model, adapter or None): an adapter directory is served on the base it names; no model (or
    ``bundled``) is SmolLM2-135M-Instruct, dequantised once from the bundled GGUF into the cache directory."""
    model = model or BUNDLED
    lora = None
    base = adapter_base(model)
    if base is not None:
        model, lora = base, model
    if model == BUNDLED:
        from ipm_prefdial.engines.checkpoint import resolve_base

        model = resolve_base(BUNDLED, cache_dir, log=lambda line: None)
    return model, lora


class VLLMEngine(Engine):
    """A model served by a ``VLLMRuntime``: its base model, or one LoRA adapter on it."""

    name = "vllm"

    def __init__(self, model: str | None = None, *, lora: str | None = None, max_model_len: int = 8192,
                 concurrency: int | None = None, runtime: VLLMRuntime | None = None, cache_dir: str | None = None,
                 **engine_args: Any):
        if lora is None:
            model, lora = resolve_model(model, cache_dir)
        self.model = model
        self.lora = lora
        self.runtime = runtime or VLLMRuntime(model, max_model_len=max_model_len, engine_args=engine_args,
                                              adapters=[lora] if lora else [])
        if lora and lora not in self.runtime.adapters:
            self.runtime.adapters.append(lora)
        self.context_tokens = self.runtime.max_model_len
        streams = {**default_args(on_gpu()), **self.runtime.engine_args}.get("max_num_seqs", 32)
        self.concurrency = concurrency or int(streams)  # as many streams as vLLM runs sequences at once

    @classmethod
    def group(cls, models: dict[str, str | None], *, max_model_len: int = 8192, concurrency: int | None = None,
              cache_dir: str | None = None, **engine_args: Any) -> dict[str, VLLMEngine]:
        """Engines for several roles: one runtime per base model, one engine per (base, adapter)."""
        runtimes: dict[str, VLLMRuntime] = {}
        engines: dict[tuple, VLLMEngine] = {}
        out: dict[str, VLLMEngine] = {}
        for role, model in models.items():
            key = resolve_model(model, cache_dir)
            if key not in engines:
                base, lora = key
                runtime = runtimes.setdefault(base, VLLMRuntime(base, max_model_len=max_model_len,
                                                                engine_args=engine_args))
                engines[key] = cls(base, lora=lora, concurrency=concurrency, runtime=runtime)
            out[role] = engines[key]
        return out

    def host(self) -> object:
        return self.runtime

    async def _start(self) -> None:
        await self.runtime.start()

    async def close(self) -> None:
        await self.runtime.close()

    def _identify(self, memo) -> tuple[str, str]:
        identity, name = model_identity(self.model, memo)
        if self.lora:
            lora_identity, name = model_identity(self.lora, memo)
            identity = f"{identity}+lora:{lora_identity}"
        return identity, name

    def describe(self) -> dict:
        return {**super().describe(), "lora": self.lora is not None, "max_model_len": self.runtime.max_model_len,
                "dtype": self.runtime.dtype(), "engine_starts": self.runtime.started}

    def stream(self, requests: Sequence[ChatRequest]) -> AsyncIterator[tuple[int, ChatResult]]:
        return stream_grouped(requests, self.complete, self.concurrency)

    async def complete(self, request: ChatRequest) -> ChatResult:
        """One request, answered when vLLM finishes it. Never raises for a bad request; a dead engine stops the
        run (every other request would fail the same way)."""
        await self.start()
        runtime = self.runtime
        spec = request_spec(request, self.identity)
        ids = runtime.tokenizer.apply_chat_template(spec["messages"], tokenize=True, add_generation_prompt=True,
                                                    return_dict=False)
        if len(ids) + request.sampling.max_tokens > runtime.max_model_len:
            return failure("context", f"{len(ids)} prompt tokens + max_tokens {request.sampling.max_tokens} exceed "
                                      f"max_model_len {runtime.max_model_len}", prompt_tokens=len(ids))
        params = sampling_params(runtime.vllm, spec["sampling"])
        final = None
        try:
            async for output in runtime.llm.generate({"prompt_token_ids": ids}, params, f"ipm-{uuid.uuid4().hex}",
                                                     lora_request=runtime.lora_request(self.lora)):
                final = output
        except (ValueError, TypeError) as exc:  # refused by vLLM's input checks
            return failure("client_error", f"vLLM refused the request: {exc}", prompt_tokens=len(ids))
        except Exception as exc:
            if type(exc).__name__ == "EngineDeadError":  # every later request would fail alike: stop, resumable
                raise EngineStop(f"vLLM ({self.display_name})", "engine dead", " ".join(str(exc).split())[:300]
                                 ) from None
            raise
        if final is None or not final.outputs:
            return failure("malformed_response", "vLLM returned no output", prompt_tokens=len(ids))
        completion = final.outputs[0]
        usage = {"prompt_tokens": len(ids), "cached_tokens": int(getattr(final, "num_cached_tokens", 0) or 0),
                 "completion_tokens": len(completion.token_ids or [])}
        return check_output(request, completion.text, completion.finish_reason, **usage)
