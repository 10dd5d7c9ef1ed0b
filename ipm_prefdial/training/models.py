"""Loading, saving and scoring of models for ``ipm train`` (the base model is resolved in engines/checkpoint.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


def device_and_dtype(dtype: str):
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if dtype == "auto":
        dt = torch.bfloat16 if device == "cuda" and torch.cuda.is_bf16_supported() else torch.float32
    else:
        dt = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[dtype]
    return device, dt


def load_model(path: str, dtype: str = "auto") -> tuple[Any, Any]:
    """(model, tokenizer) of a checkpoint directory or Hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device, dt = device_and_dtype(dtype)
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dt).to(device)
    return model, tok


def token_counter(tok):
    """Token length of a chat prompt (with the generation prompt), for ``fit_prompt``."""

    def count(messages: list[dict]) -> int:
        return len(tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True, return_dict=False))

    return count


def answer_tokens(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"]) + 2  # the answer and its end-of-turn


def mean_logprobs(model, tok, prompts: list[list[dict]], answers: list[str], batch_size: int = 8) -> list[float]:
    """Mean token log-probability of each answer given its chat prompt (the answer's end-of-turn included)."""
    import torch

    device = next(model.parameters()).device
    out: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            ids, masks = [], []
            for prompt, answer in zip(prompts[start : start + batch_size], answers[start : start + batch_size],
                                      strict=True):
                p = tok.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=False)
                full = tok.apply_chat_template([*prompt, {"role": "assistant", "content": answer}], tokenize=True,
                                               return_dict=False)
                if full[: len(p)] != p:  # a template that rewrites the prompt: score the answer tokens alone
                    full = p + tok(answer, add_special_tokens=False)["input_ids"]
                ids.append(full)
                masks.append([0] * len(p) + [1] * (len(full) - len(p)))
            width = max(len(x) for x in ids)
            pad = tok.pad_token_id
            input_ids = torch.tensor([x + [pad] * (width - len(x)) for x in ids], device=device)
            attention = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids], device=device)
            target = torch.tensor([m + [0] * (width - len(m)) for m in masks], device=device)
            with torch.no_grad():
                logits = model(input_ids=input_ids, attention_mask=attention).logits.float()
            logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, 1:, None]).squeeze(-1)
            mask = target[:, 1:].float()
            means = (logp * mask).sum(-1) / mask.sum(-1).clamp(min=1)
            out.extend(float(x) for x in means)
    finally:
        model.train(was_training)
    return [x if math.isfinite(x) else float("-inf") for x in out]


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)
