"""``ipm train`` end to end: base model -> SFT and DPO per model -> test-turn evaluation -> metrics, report, curves."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import yaml

from ipm_prefdial.engines.checkpoint import resolve_base
from ipm_prefdial.taxonomy import Taxonomy
from ipm_prefdial.training.config import ARMS, TrainConfig
from ipm_prefdial.training.models import write_json
from ipm_prefdial.training.recipe import run_dpo, run_sft

STAGES = ("sft", "dpo")


def train(cfg: TrainConfig, log=print, cache_dir: str | None = None) -> dict:
    started = time.perf_counter()
    out = Path(cfg.out)
    from ipm_prefdial.training.data import PAIR_CONFIG, SFT_CONFIG, TrainDataError, build_taxonomy, check_configs

    check_configs(cfg.data, [c for t in cfg.tasks for c in (SFT_CONFIG[t], PAIR_CONFIG[t])])  # before any write
    taxonomy = build_taxonomy(cfg.data)  # the build's strategies: the SP's choices and the test metrics' labels
    if out.exists() and not out.is_dir():
        raise TrainDataError(f"--out {out}: a file, not a run directory")
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.as_dict(), sort_keys=False), encoding="utf-8")
    import torch

    torch.manual_seed(cfg.seed)
    base = resolve_base(cfg.base_model, cache_dir, log)
    log(f"base model {base}; arms {', '.join(cfg.arms)}; models {', '.join(t.upper() for t in cfg.tasks)}; "
        f"strategy taxonomy {taxonomy.name} ({len(taxonomy.labels)} strategies)")
    log("caps: " + ", ".join(f"{k}={v}" for k, v in _caps(cfg).items()))
    metrics: dict = {"base_model": base, "taxonomy": taxonomy.name, "config": cfg.as_dict(), "caps": _caps(cfg)}
    logs: dict[str, list] = {}
    for task in cfg.tasks:
        sft = run_sft(task, base, cfg, out, log)
        logs[f"{task}-sft"] = sft.pop("log_history")
        dpo = run_dpo(task, sft["checkpoint"], cfg, out, log)
        logs[f"{task}-dpo"] = dpo.pop("log_history")
        metrics[task] = {"sft": sft, "dpo": dpo}
        if cfg.lora:  # SFT then DPO as one adapter on the original base: one vLLM instance serves all models
            from ipm_prefdial.training.adapters import export_final_adapter

            final = export_final_adapter(base, out / task / "sft-lora", out / task / "dpo", out / task / "final",
                                         sft_merged=out / task / "sft")
            metrics[task]["final"] = final
            log(f"{task.upper()} final adapter on the base (rank {final['rank']}): {final['checkpoint']}; largest "
                f"logit difference from the merged model {final['max_abs_logit_diff']:.2e}")
        write_json(out / "metrics.json", metrics)  # progress survives an interrupted run
    write_json(out / "trainer_logs.json", logs)
    scored = {}
    for arm in cfg.arms:
        metrics[arm] = {"test": {}}
        for stage in STAGES:
            scored[arm, stage] = _evaluate(arm, stage, cfg, out, log, taxonomy)
            metrics[arm]["test"][stage] = scored[arm, stage].result
    metrics["comparisons"] = comparisons(scored)
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    write_json(out / "metrics.json", metrics)
    from ipm_prefdial.training.report import training_curves, write_report

    curves = training_curves(logs, out / "curves.png")
    write_report(metrics, out / "report.md", curves)
    log(f"done in {metrics['seconds']:.0f} s: {out / 'metrics.json'}, {out / 'report.md'}, {curves}")
    return metrics


def _caps(cfg: TrainConfig) -> dict:
    return {"max_length": cfg.max_length, "sft_examples": cfg.sft.max_examples, "dpo_pairs": cfg.dpo.max_examples,
            "heldout_pairs": cfg.heldout_pairs, "test_turns": cfg.test_turns, "eval_max_tokens": cfg.eval_max_tokens}


# (A, B) pairs of (arm, stage) compared on the test turns: the paper's claim, and what DPO adds to each arm
COMPARISONS = ((("decoupled", "dpo"), ("joint", "dpo")), (("decoupled", "sft"), ("joint", "sft")),
               (("decoupled", "dpo"), ("decoupled", "sft")), (("joint", "dpo"), ("joint", "sft")))


def system_name(arm: str, stage: str) -> str:
    return f"{arm} {stage.upper()}"


def comparisons(scored: dict, resamples: int | None = None, seed: int | None = None) -> dict:
    """The paired comparisons (``COMPARISONS``) of the systems ``scored`` holds (keyed by (arm, stage)), keyed
    ``"A - B"`` (``ipm eval``'s resamples and seed unless given)."""
    from ipm_prefdial.evaluation.bootstrap import RESAMPLES, SEED
    from ipm_prefdial.evaluation.evaluate import compare_systems

    resamples, seed = RESAMPLES if resamples is None else resamples, SEED if seed is None else seed
    out = {}
    for a, b in COMPARISONS:
        if a in scored and b in scored:
            out[f"{system_name(*a)} - {system_name(*b)}"] = compare_systems(scored[a], scored[b], system_name(*b),
                                                                            resamples, seed)
    return out


def _evaluate(arm: str, stage: str, cfg: TrainConfig, out: Path, log, taxonomy: Taxonomy):
    from ipm_prefdial.evaluation.evaluate import score_file
    from ipm_prefdial.evaluation.infer import InferConfig, infer

    system = "decoupled" if arm == "decoupled" else "joint"
    models = {f"{task}_model": str(out / task / stage) for task in ARMS[arm]}
    path = out / "predictions" / f"{arm}-{stage}.jsonl"
    summary = infer(InferConfig(data=cfg.data, system=system, out=str(path), engine="transformers",
                                limit=cfg.test_turns, concurrency=cfg.eval_batch_size, cache_dir=str(out / "cache"),
                                rg_max_tokens=cfg.eval_max_tokens, vm_max_tokens=cfg.eval_max_tokens + 8,
                                context_tokens=cfg.max_length, **models))
    scored = score_file(path, taxonomy)
    result = scored.result
    lenient = result["strategy"]["lenient"]
    log(f"{arm} after {stage.upper()}: {summary['rows']} test turns, Q {lenient['Q']:.2f}, B {lenient['B']:.3f}, "
        f"BLEU-2 {result['reference']['bleu-2']:.2f}, ROUGE-L {result['reference']['rouge-l']:.2f}")
    return scored


def non_finite(metrics: dict, prefix: str = "") -> list[str]:
    """Dotted paths of numbers in ``metrics`` that are NaN or infinite (there should be none)."""
    bad = []
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            bad += non_finite(value, name + ".")
        elif isinstance(value, float) and not math.isfinite(value):
            bad.append(name)
    return bad


def load_metrics(out: str | Path) -> dict:
    return json.loads((Path(out) / "metrics.json").read_text(encoding="utf-8"))
