"""``transformers``: in-process batched ``generate`` for local checkpoints (e.g. what ``ipm train`` writes).

Left padding, batches of similar length, CPU or GPU. A checkpoint is a directory (or Hub id) with a
tokenizer, optionally a PEFT adapter directory on top of its base model, or a GGUF file (``gguf_file``).
Choices are answered exactly: each label's log-probability given the prompt is scored and the best one is
taken (sampled from the label distribution when temperature > 0). JSON answers are generated and checked.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from ipm_prefdial.engines.base import Engine
from ipm_prefdial.engines.checks import check_output
from ipm_prefdial.engines.identity import model_identity
from ipm_prefdial.engines.requests import ChatRequest, ChatResult, Choice


class TransformersEngine(Engine):
    name = "transformers"

    def __init__(self, model: str, *, gguf_file: str | None = None, adapter: str | None = None,
                 device: str | None = None, batch_size: int = 8, context_tokens: int = 4096, dtype: str = "auto"):
        self.path = model
        self.gguf_file = gguf_file
        self.adapter = adapter
        self.device = device
        self.batch_size = batch_size
        self.context_tokens = context_tokens
        self.dtype = dtype
        # A PEFT adapter directory (adapter_config.json) loads on top of the base model it names.
        config = Path(model) / "adapter_config.json"
        if adapter is None and config.is_file():
            self.adapter = str(Path(model))
            self.path = json.loads(config.read_text(encoding="utf-8"))["base_model_name_or_path"]
        self.model = self.path
        self._tok: Any = None
        self._lm: Any = None

    # -- lifecycle -----------------------------------------------------------------------------------
    async def _start(self) -> None:
        if self._lm is None:
            await asyncio.to_thread(self._load)

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        kwargs = {"gguf_file": self.gguf_file} if self.gguf_file else {}
        self._tok = AutoTokenizer.from_pretrained(self.path, **kwargs)
        self._tok.padding_side = "left"
        if self._tok.pad_token is None:
            self._tok.pad_token = self._tok.eos_token
        device = self.device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = {"auto": torch.bfloat16 if device.startswith("cuda") else torch.float32,
                 "bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[self.dtype]
        lm = AutoModelForCausalLM.from_pretrained(self.path, dtype=dtype, **kwargs)
        if self.adapter:
            from peft import PeftModel

            lm = PeftModel.from_pretrained(lm, self.adapter)
        self._lm = lm.to(device).eval()
        self._device = device
        # Chat models end a turn with their own token (<|im_end|> for SmolLM2): stop there too.
        eos = {self._tok.eos_token_id}
        for token in ("<|im_end|>", "<|eot_id|>", "<|end|>"):
            tid = self._tok.convert_tokens_to_ids(token)
            if isinstance(tid, int) and tid != self._tok.unk_token_id and tid is not None:
                eos.add(tid)
        self._eos = sorted(t for t in eos if t is not None)

    async def close(self) -> None:
        self._lm = None

    def _identify(self, memo) -> tuple[str, str]:
        """The checkpoint by content (weights, configs, tokenizer), and the adapter's on top: a model retrained into
        the same directory never meets the previous one's answers."""
        base = str(Path(self.path) / self.gguf_file) if self.gguf_file else self.path
        identity, name = model_identity(base, memo)
        if self.adapter:
            adapter_identity, name = model_identity(self.adapter, memo)
            identity = f"{identity}+adapter:{adapter_identity}"
        return identity, name

    def describe(self) -> dict:
        return {**super().describe(), "adapter": self.adapter is not None}

    # -- requests ------------------------------------------------------------------------------------
    async def stream(self, requests: Sequence[ChatRequest]) -> AsyncIterator[tuple[int, ChatResult]]:
        if not requests:
            return
        await self.start()
        prompts = [self._tok.apply_chat_template(r.message_dicts(), tokenize=False, add_generation_prompt=True)
                   for r in requests]
        choice = [i for i, r in enumerate(requests) if isinstance(r.output, Choice)]
        free = sorted((i for i, r in enumerate(requests) if not isinstance(r.output, Choice)),
                      key=lambda i: len(prompts[i]))
        for i in choice:  # one forward pass per label set; small models, few labels
            yield i, await asyncio.to_thread(self._choose, requests[i], prompts[i])
        for start in range(0, len(free), self.batch_size):
            batch = free[start:start + self.batch_size]
            results = await asyncio.to_thread(self._generate, [requests[i] for i in batch], [prompts[i] for i in batch])
            for i, result in zip(batch, results, strict=True):
                yield i, result

    def _generate(self, requests: list[ChatRequest], prompts: list[str]) -> list[ChatResult]:
        import time

        import torch

        started = time.perf_counter()
        enc = self._tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(self._device)
        first = requests[0].sampling
        sample = first.temperature > 0
        torch.manual_seed(requests[0].seed(self.identity))  # one seed per batch: per-row seeds are not possible here
        with torch.no_grad():
            out = self._lm.generate(**enc, do_sample=sample, temperature=first.temperature if sample else None,
                                    top_p=first.top_p if sample else None, top_k=None,
                                    max_new_tokens=max(r.sampling.max_tokens for r in requests),
                                    eos_token_id=self._eos, pad_token_id=self._tok.pad_token_id)
        latency = time.perf_counter() - started
        width = enc["input_ids"].shape[1]
        results = []
        for row, request in enumerate(requests):
            tokens = out[row, width:].tolist()
            ended = next((k for k, t in enumerate(tokens) if t in self._eos), None)
            limit = request.sampling.max_tokens
            body = tokens[:ended] if ended is not None else tokens
            finish = "stop" if ended is not None and ended < limit else "length"
            body = body[:limit]
            text = self._tok.decode(body, skip_special_tokens=True)
            usage = {"prompt_tokens": int(enc["attention_mask"][row].sum()), "completion_tokens": len(body),
                     "latency_s": latency / len(requests)}
            results.append(check_output(request, text, finish, **usage))
        return results

    def _choose(self, request: ChatRequest, prompt: str) -> ChatResult:
        """Score every label as the continuation of the prompt; the answer is the most likely one."""
        import time

        import torch

        started = time.perf_counter()
        labels = list(request.output.labels)  # type: ignore[union-attr]
        prompt_ids = self._tok(prompt, add_special_tokens=False)["input_ids"]
        end = [self._eos[0]] if self._eos else []
        tails = [self._tok(label, add_special_tokens=False)["input_ids"] + end for label in labels]
        # The prompt runs once; the labels continue from its cached keys and values (8 labels cost ~one prompt).
        with torch.no_grad():
            first = self._lm(input_ids=torch.tensor([prompt_ids], device=self._device), use_cache=True)
            cache = first.past_key_values
            cache.batch_repeat_interleave(len(labels))
            width = max(len(t) for t in tails)
            pad = self._tok.pad_token_id
            ids = torch.tensor([t + [pad] * (width - len(t)) for t in tails], device=self._device)
            mask = torch.tensor([[1] * (len(prompt_ids) + len(t)) + [0] * (width - len(t)) for t in tails],
                                device=self._device)
            logits = self._lm(input_ids=ids, attention_mask=mask, past_key_values=cache, use_cache=True).logits
        head = torch.log_softmax(first.logits[0, -1].float(), dim=-1)
        rest = torch.log_softmax(logits.float(), dim=-1)
        scores = []
        for k, tail in enumerate(tails):
            score = float(head[tail[0]])
            for j in range(1, len(tail)):
                score += float(rest[k, j - 1, tail[j]])
            scores.append(score)
        t = request.sampling.temperature
        if t > 0:
            generator = torch.Generator().manual_seed(request.seed(self.identity))
            probs = torch.softmax(torch.tensor(scores) / t, dim=0)
            pick = int(torch.multinomial(probs, 1, generator=generator))
        else:
            pick = max(range(len(labels)), key=lambda k: scores[k])
        return ChatResult(text=labels[pick], parsed=labels[pick], finish_reason="stop",
                          prompt_tokens=len(prompt_ids), completion_tokens=len(tails[pick]),
                          latency_s=time.perf_counter() - started,
                          extra={"label_logprobs": dict(zip(labels, scores, strict=True))})
