"""The commands about models: ``train``, ``reproduce``, ``infer``, ``eval``, ``engine-check``."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer

from ipm_prefdial.cli import command, err, out, render
from ipm_prefdial.cli.options import choice, from_config
from ipm_prefdial.config import EXECUTOR, TOKENS, EngineOptions
from ipm_prefdial.engines import ENGINES, EngineSpec
from ipm_prefdial.errors import ConfigError
from ipm_prefdial.evaluation.infer import DATA, RUN, InferConfig
from ipm_prefdial.options import Range, check_bounds, check_range, find

Engine = choice(ENGINES)


@command()
def train(
    quick: bool = typer.Option(False, "--quick", help="The laptop preset: SmolLM2-135M, capped data, ~10 min on a "
                                                      "2-core CPU; proves the recipe runs, not that it helps."),
    data: Path | None = typer.Option(None, help="Build directory (default ./ipm_prefdial)."),
    config: Path | None = typer.Option(None, "--config", help="TrainConfig YAML (every knob; see configs/)."),
    arms: str | None = typer.Option(None, help="decoupled,joint (default both): SP+RG and/or VM."),
    pairs: choice(("retained", "all")) | None = typer.Option(  # type: ignore[valid-type]
        None, help="retained (default): DPO on judge-retained pairs, falling back to all when too few | all."),
    out_dir: str | None = typer.Option(None, "--out", help="Run directory (default runs/ipm, or runs/quick)."),
    base_model: str | None = typer.Option(None, help="bundled (SmolLM2-135M-Instruct) | a Hub id | a directory."),
    cache_dir: str | None = typer.Option(None, help="Where the bundled model is dequantised (default: the cache)."),
) -> None:
    """SFT then DPO for SP, RG (decoupled) and VM (joint) with TRL, then both systems on test turns."""
    from ipm_prefdial.training.config import TrainConfig
    from ipm_prefdial.training.run import train as run_train

    cfg = TrainConfig.load(config, quick=quick, data=str(data) if data else None, arms=arms,
                           pairs=pairs.value if pairs else None, out=out_dir, base_model=base_model)
    metrics = run_train(cfg, log=lambda line: err.print(line, highlight=False, markup=False, soft_wrap=True),
                        cache_dir=cache_dir)
    render.train_summary(out, cfg, metrics)


@command()
def reproduce(
    quick: bool = typer.Option(False, "--quick", help="The laptop preset: SmolLM2-135M, one dialogue of each split "
                                                      "mined, ipm train --quick's caps (~16 min on a 2-core CPU)."),
    config: Path | None = typer.Option(None, "--config", help="ReproduceConfig YAML (source, limit, build:, train:, "
                                                              "bootstrap; see configs/reproduce_gpu.yaml)."),
    out_dir: str | None = typer.Option(None, "--out", help="Run directory (default runs/reproduce, or "
                                                           "runs/reproduce-quick)."),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Dialogues of each split mined (default: the "
                                                                  "config's; the SFT data is always whole)."),
    cache_dir: str | None = typer.Option(None, help="Where the bundled model is dequantised (default: the cache)."),
) -> None:
    """The paper's loop, resumable: SFT data -> SFT (SP, RG, VM) -> mining with the SFT models -> judge -> DPO ->
    inference -> evaluation with intervals and paired comparisons. Writes OUT/stages.json, OUT/results.json,
    OUT/report.md; a rerun skips every stage whose inputs and settings did not change."""
    from ipm_prefdial.reproduce.config import ReproduceConfig
    from ipm_prefdial.reproduce.loop import Loop

    cfg = ReproduceConfig.load(config, quick=quick, out=out_dir, limit=limit)
    loop = Loop(cfg, log=lambda line: err.print(line, highlight=False, markup=False, soft_wrap=True),
                cache_dir=cache_dir)
    summary = loop.run()
    render.reproduce_summary(out, cfg, summary)


@command()
@from_config(InferConfig, (DATA, RUN, "Engines", EXECUTOR))
def infer(values: dict) -> None:
    """Run a system on the test turns of a build (gold history, greedy decoding); write predictions JSONL."""
    from ipm_prefdial.evaluation.infer import check_infer
    from ipm_prefdial.evaluation.infer import infer as run_infer
    from ipm_prefdial.options import load_config
    from ipm_prefdial.progress import progress_bar

    cfg = load_config(InferConfig, None, values)
    check_infer(cfg)
    with progress_bar(err) as progress:
        summary = run_infer(cfg, progress)
    render.infer_summary(out, summary)


@command("eval")
def evaluate(
    predictions: list[Path] = typer.Option(..., "--predictions", help="Predictions JSONL file(s) (ipm infer's, or "
                                                                       "any with the same fields)."),
    extra: list[Path] | None = typer.Argument(None, help="More predictions files (--predictions A B C)."),
    judge_engine: Engine | None = typer.Option(None, help="Also score replies with an LLM judge on this "  # type: ignore
                                                          "engine."),
    judge_model: str | None = typer.Option(None, help="Judge model (default: the engine's)."),
    judge_base_url: str | None = typer.Option(None, help="Judge endpoint (engine openai)."),
    judge_concurrency: int | None = typer.Option(None, help="Judge requests in flight."),
    cache_dir: str | None = typer.Option(None, help="Request cache directory for the judge."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the metrics as JSON (one predictions file: its "
                                                              "object; several: keyed by system, the baseline's "
                                                              "included)."),
    report: Path | None = typer.Option(None, help="Write report.md and preference.png into this directory."),
    taxonomy: str | None = typer.Option(None, help="The strategy labels: a built-in taxonomy (esconv, extes, mesc, "
                                                   "esc-pro) or a taxonomy YAML file (default: the one each file "
                                                   "records, as ipm infer writes its build's; else ESConv's)."),
    baseline: Path | None = typer.Option(None, "--baseline", help="A predictions file to compare each of "
                                                                  "--predictions with: A - B per metric over the "
                                                                  "turns both hold, with a 95% interval and p "
                                                                  "(paired bootstrap over dialogues)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Resamples of the dialogues behind each 95% interval "
                                                            "(0: no intervals)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the resampling (the same seed, the same bytes)."),
) -> None:
    """Strategy metrics (Q, weighted F1, preference p, bias B; lenient and strict), reference metrics (BLEU,
    Distinct, ROUGE-L, F1, length) and optional judge scores of one or more predictions files, each with a 95%
    interval (bootstrap over dialogues); --baseline B adds paired differences A - B with intervals and p."""
    from ipm_prefdial.evaluation.evaluate import evaluate_files, taxonomy_option

    given = taxonomy_option(taxonomy) if taxonomy is not None else None  # unknown name: 2; a bad file: 1
    check_bounds(Range(0, 100_000), bootstrap, "--bootstrap")
    check_bounds(Range(0, 2**32 - 1), seed, "--seed")
    if baseline is not None and bootstrap == 0:
        raise ConfigError("--baseline needs resamples: --bootstrap of at least 1 (default 1000)")
    check_range(find(EngineOptions, "concurrency"), judge_concurrency, "--judge-concurrency")
    if judge_engine is not None and judge_engine.value == "openai" and not judge_base_url:
        raise ConfigError("--judge-engine openai needs --judge-base-url")
    for path, name in ((json_out, "--json"), (report, "--report")):
        if path is not None and path.exists() and (path.is_dir() if name == "--json" else not path.is_dir()):
            raise ConfigError(f"{name} {path}: {'a directory' if name == '--json' else 'a file'}, not "
                              f"{'a file' if name == '--json' else 'a directory'}")
    judge = None if judge_engine is None else EngineSpec(judge_engine.value, judge_model, judge_base_url,
                                                         judge_concurrency)
    started = time.perf_counter()
    results = evaluate_files([*predictions, *(extra or [])], given, judge, cache_dir, err, baseline=baseline,
                             resamples=bootstrap, seed=seed)
    render.eval_table(out, results, time.perf_counter() - started)
    if json_out:
        # one predictions file: its object (with --baseline, its `compare`; the baseline's own figures are in the
        # table and the report); several: keyed by system
        files = len(results) - (baseline is not None)
        payload = next(iter(results.values())) if files == 1 else results
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        out.print(f"metrics -> {json_out}")
    if report:
        from ipm_prefdial.evaluation.report import write_report

        paths = write_report(results, report)
        out.print(f"report -> {paths['markdown']}, {paths['chart']}")


@command("engine-check")
def engine_check(
    engine: Engine = typer.Option("local", help="local | openai | vllm | transformers."),  # type: ignore
    base_url: str | None = typer.Option(None, help="OpenAI-compatible endpoint, e.g. http://localhost:8000/v1 "
                                                   "(key from OPENAI_API_KEY)."),
    model: str | None = typer.Option(None, help="Model: a GGUF path or hf://owner/repo/file.gguf (local), a "
                                                "served model name (openai), a checkpoint (vllm, transformers)."),
    requests: int = typer.Option(16, "--requests", min=1, help="How many requests to send."),
    concurrency: int | None = typer.Option(None, help="Requests in flight (local: slots; transformers: batch)."),
    max_tokens: int = typer.Option(64, help="Answer length bound per request."),
    cache_dir: Path | None = typer.Option(None, help="Use (and fill) the request cache in this directory."),
    retry_failed: bool = typer.Option(False, help="Re-send requests whose recorded answer was a failure."),
) -> None:
    """Exercise an engine: N short requests, then throughput and accounting."""
    from ipm_prefdial.engines import make_engine
    from ipm_prefdial.engines.check import run_check

    check_range(find(EngineOptions, "concurrency"), concurrency)
    check_bounds(Range(*TOKENS), max_tokens, "--max-tokens")
    if engine.value == "openai" and not base_url:
        raise ConfigError("--engine openai needs --base-url")
    eng = make_engine(EngineSpec(engine.value, model, base_url, concurrency))
    stats, startup = run_check(eng, requests, max_tokens, cache_dir, retry_failed, err)
    render.engine_check(out, eng, stats, startup)
