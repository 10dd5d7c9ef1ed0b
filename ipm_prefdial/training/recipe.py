"""The recipe: for each model (SP, RG, VM) SFT with TRL's SFTTrainer, then DPO with TRL's DPOTrainer from the SFT
model, then test-turn evaluation of the decoupled and joint systems after each stage.

Checkpoints: ``<out>/<task>/sft`` is the SFT model with its LoRA adapter merged (a full checkpoint, the DPO
reference and starting point; the adapter itself is kept in ``sft-lora``); ``<out>/<task>/dpo`` is the DPO LoRA
adapter on top of it (``adapter_config.json`` names the SFT directory as its base), or a full checkpoint with
``lora: false``; ``<out>/<task>/final`` is SFT then DPO as one adapter on the original base (``training.export``),
so one vLLM instance serves SP, RG and VM. All load in the ``transformers`` engine, so ``ipm build --sp-model
<out>/sp/dpo`` mines with them.
"""

from __future__ import annotations

import gc
import math
import random
import time
from pathlib import Path

from ipm_prefdial.training.config import TrainConfig
from ipm_prefdial.training.data import (
    PAIR_CONFIG,
    SFT_CONFIG,
    TrainDataError,
    fit_prompt,
    load_split,
    select_pairs,
)
from ipm_prefdial.training.models import (
    answer_tokens,
    device_and_dtype,
    load_model,
    mean_logprobs,
    token_counter,
)


def _peft_config(cfg: TrainConfig):
    if not cfg.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM")


def _common_args(cfg: TrainConfig, stage, out: Path, steps_hint: int) -> dict:
    _, dt = device_and_dtype(cfg.dtype)
    import torch

    return dict(
        output_dir=str(out / "trainer"), num_train_epochs=stage.epochs, learning_rate=stage.learning_rate,
        per_device_train_batch_size=stage.batch_size, per_device_eval_batch_size=stage.batch_size,
        gradient_accumulation_steps=stage.grad_accum, warmup_steps=float(stage.warmup_ratio),
        logging_steps=max(1, min(stage.logging_steps, steps_hint)), save_strategy="no", report_to=cfg.report_to,
        seed=cfg.seed, bf16=dt == torch.bfloat16, fp16=False, gradient_checkpointing=cfg.gradient_checkpointing,
        max_length=cfg.max_length, dataloader_num_workers=0, disable_tqdm=True,
    )


def _fit_rows(rows: list[dict], tok, cfg: TrainConfig, answer_keys: tuple[str, ...], empty_ok: bool = False
              ) -> tuple[list[dict], int, int]:
    """Rows with prompts shortened from the left to fit max_length: (rows, how many were shortened, how many were
    left out because not even the system prompt, the current turn and the answer fit)."""
    count = token_counter(tok)
    out, shortened, dropped = [], 0, 0
    for r in rows:
        longest = max(answer_tokens(tok, r[k][0]["content"]) for k in answer_keys)
        prompt = fit_prompt(r["prompt"], longest, cfg.max_length, count)
        if count(prompt) + longest > cfg.max_length:  # the system prompt, current turn and answer do not fit
            dropped += 1
            continue
        shortened += prompt != r["prompt"]
        out.append({**r, "prompt": prompt})
    if rows and not out and not empty_ok:
        raise TrainDataError(f"max_length {cfg.max_length}: no example fits (system prompt and current turn are "
                           f"longer); raise max_length")
    return out, shortened, dropped


def _fit_sample(rows: list[dict], tok, cfg: TrainConfig, answer_keys: tuple[str, ...], cap: int | None
                ) -> tuple[list[dict], int, int, int]:
    """A seeded sample of at most ``cap`` rows among those that fit ``max_length`` (prompts shortened as
    ``_fit_rows`` does), in their original order: (rows, shortened, left out as too long, rows examined). Rows are
    examined in a seeded order until ``cap`` fit, so a cap of a dozen does not tokenise all 14,763 SFT rows."""
    if cap is None or cap >= len(rows):
        fitted, shortened, dropped = _fit_rows(rows, tok, cfg, answer_keys)
        return fitted, shortened, dropped, len(rows)
    order = random.Random(cfg.seed).sample(range(len(rows)), len(rows))
    picked: list[tuple[int, dict]] = []
    shortened = dropped = examined = 0
    for i in order:
        if len(picked) == cap:
            break
        examined += 1
        fitted, short, too_long = _fit_rows([rows[i]], tok, cfg, answer_keys, empty_ok=True)
        shortened, dropped = shortened + short, dropped + too_long
        picked += [(i, r) for r in fitted]
    if not picked:
        raise TrainDataError(f"max_length {cfg.max_length}: no example fits (system prompt and current turn are "
                             f"longer); raise max_length")
    return [r for _, r in sorted(picked, key=lambda item: item[0])], shortened, dropped, examined


def _quiet(trainer) -> None:
    """No per-step dict printing and no dataset progress bars: ipm logs one summary line per stage."""
    import datasets
    from transformers.trainer_callback import PrinterCallback

    datasets.disable_progress_bars()
    trainer.remove_callback(PrinterCallback)


def _steps(n: int, stage) -> int:
    return max(1, math.ceil(n / (stage.batch_size * stage.grad_accum)) * max(1, math.ceil(stage.epochs)))


def run_sft(task: str, base: str, cfg: TrainConfig, out: Path, log) -> dict:
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    rows = load_split(cfg.data, SFT_CONFIG[task], "train")
    model, tok = load_model(base, cfg.dtype)
    # the cap counts examples that can actually be trained on
    fitted, shortened, too_long, examined = _fit_sample(rows, tok, cfg, ("completion",), cfg.sft.max_examples)
    dataset = Dataset.from_list([{"prompt": r["prompt"], "completion": r["completion"]} for r in fitted])
    args = SFTConfig(**_common_args(cfg, cfg.sft, out, _steps(len(fitted), cfg.sft)), completion_only_loss=True)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tok,
                         peft_config=_peft_config(cfg))
    _quiet(trainer)
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    target = out / task / "sft"
    trained = trainer.model
    if cfg.lora:
        trained.save_pretrained(out / task / "sft-lora", safe_serialization=True)  # for the final adapter export
        trained = trained.merge_and_unload()
    trained.save_pretrained(target, safe_serialization=True)
    tok.save_pretrained(target)
    tokens = sum(len(tok.apply_chat_template([*r["prompt"], *r["completion"]], tokenize=True, return_dict=False))
                 for r in fitted) * max(1.0, cfg.sft.epochs)
    log(f"{task.upper()} SFT: {len(fitted)} examples ({examined} examined: {shortened} prompts shortened, "
        f"{too_long} too long for max_length {cfg.max_length} left out), {len(losses)} logged steps, "
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f}, {seconds:.0f} s" if losses else f"{task.upper()} SFT done")
    metrics = {
        "examples": len(fitted), "examples_too_long": too_long, "prompts_shortened": shortened,
        "steps": trainer.state.global_step,
        "train_loss": float(result.training_loss), "train_loss_first": float(losses[0]) if losses else None,
        "train_loss_last": float(losses[-1]) if losses else None, "seconds": round(seconds, 1),
        "tokens_per_s": round(tokens / seconds, 1) if seconds else None,
        "steps_per_s": round(trainer.state.global_step / seconds, 3) if seconds else None,
        "log_history": trainer.state.log_history, "checkpoint": str(target),
    }
    del trainer, model, trained
    gc.collect()
    return metrics


def _pair_margins(model, tok, rows: list[dict], batch_size: int) -> tuple[list[float], list[float]]:
    prompts = [r["prompt"] for r in rows]
    chosen = mean_logprobs(model, tok, prompts, [r["chosen"][0]["content"] for r in rows], batch_size)
    rejected = mean_logprobs(model, tok, prompts, [r["rejected"][0]["content"] for r in rows], batch_size)
    return chosen, rejected


def _accuracy(chosen: list[float], rejected: list[float]) -> float | None:
    return sum(c > r for c, r in zip(chosen, rejected, strict=True)) / len(chosen) if chosen else None


def _mean_margin(chosen: list[float], rejected: list[float]) -> float | None:
    return sum(c - r for c, r in zip(chosen, rejected, strict=True)) / len(chosen) if chosen else None


def run_dpo(task: str, sft_dir: str, cfg: TrainConfig, out: Path, log) -> dict:
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    every = load_split(cfg.data, PAIR_CONFIG[task], "train")
    selection = select_pairs(task, every, cfg.pairs, cfg.min_retained)
    log(f"{task.upper()} DPO pairs: {selection.note}")
    if not selection.rows:
        raise TrainDataError(f"{cfg.data}: {PAIR_CONFIG[task]} has no train pairs to train {task.upper()} with DPO")
    model, tok = load_model(sft_dir, cfg.dtype)
    fitted, shortened, too_long, _ = _fit_sample(selection.rows, tok, cfg, ("chosen", "rejected"),
                                                 cfg.dpo.max_examples)
    validation = load_split(cfg.data, PAIR_CONFIG[task], "validation")
    held = _fit_sample(validation, tok, cfg, ("chosen", "rejected"), cfg.heldout_pairs)[0] if validation else []
    bs = cfg.eval_batch_size
    train_before = _pair_margins(model, tok, fitted, bs)
    held_before = _pair_margins(model, tok, held, bs)

    def as_dataset(items):
        return Dataset.from_list([{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
                                  for r in items])

    args = DPOConfig(**_common_args(cfg, cfg.dpo, out, _steps(len(fitted), cfg.dpo)), beta=cfg.beta,
                     eval_strategy="no")
    trainer = DPOTrainer(model=model, args=args, train_dataset=as_dataset(fitted),
                         eval_dataset=as_dataset(held) if held else None, processing_class=tok,
                         peft_config=_peft_config(cfg))
    _quiet(trainer)
    started = time.perf_counter()
    result = trainer.train()
    seconds = time.perf_counter() - started
    evaluation = trainer.evaluate() if held else {}
    policy = trainer.model
    train_after = _pair_margins(policy, tok, fitted, bs)
    held_after = _pair_margins(policy, tok, held, bs)
    target = out / task / "dpo"
    policy.save_pretrained(target, safe_serialization=True)  # the LoRA adapter (base: the SFT directory)
    tok.save_pretrained(target)
    history = trainer.state.log_history
    metrics = {
        "pairs_available": len(every), "pairs_selected": len(selection.rows), "pairs_used": len(fitted),
        "pairs_too_long": too_long,
        "pairs_source": selection.source, "pairs_note": selection.note, "prompts_shortened": shortened,
        "heldout_pairs": len(held), "steps": trainer.state.global_step, "train_loss": float(result.training_loss),
        "eval_reward_accuracy": _finite(evaluation.get("eval_rewards/accuracies")),
        "eval_reward_margin": _finite(evaluation.get("eval_rewards/margins")),
        "eval_loss": _finite(evaluation.get("eval_loss")),
        "heldout_pref_accuracy_before": _accuracy(*held_before),
        "heldout_pref_accuracy_after": _accuracy(*held_after),
        "train_margin_before": _mean_margin(*train_before), "train_margin_after": _mean_margin(*train_after),
        "train_pref_accuracy_before": _accuracy(*train_before), "train_pref_accuracy_after": _accuracy(*train_after),
        "seconds": round(seconds, 1), "steps_per_s": round(trainer.state.global_step / seconds, 3) if seconds else None,
        "log_history": history, "checkpoint": str(target),
    }
    log(f"{task.upper()} DPO: {len(fitted)} pairs ({selection.source}; {too_long} too long left out), train margin "
        f"{metrics['train_margin_before']:.4f}"
        f" -> {metrics['train_margin_after']:.4f}, held-out preference accuracy "
        f"{_fmt(metrics['heldout_pref_accuracy_before'])} -> {_fmt(metrics['heldout_pref_accuracy_after'])}, "
        f"{seconds:.0f} s")
    del trainer, model, policy
    gc.collect()
    return metrics


def _finite(value) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"
