"""``ipm build``: source -> splits -> SFT configs -> parquet + card + manifest."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ipm_prefdial import __version__
from ipm_prefdial.config import BuildConfig, ConfigError
from ipm_prefdial.convert import sft_rows, turns
from ipm_prefdial.progress import progress_bar
from ipm_prefdial.prompts import Prompts
from ipm_prefdial.release.card import render_card
from ipm_prefdial.release.features import CONFIG_SPLITS, FEATURES, SFT_CONFIGS, TASK_OF, data_file
from ipm_prefdial.release.files import sha256_file, write_bytes_atomic, write_parquet_atomic
from ipm_prefdial.sources import load_source
from ipm_prefdial.splits import SPLIT_METHODS, SPLITS, assign, split_ids
from ipm_prefdial.strategies import STRATEGIES
from ipm_prefdial.tokens import SAMPLE_ROWS, TokenCounter, TokenizerError, Trimmer, length_stats, load_tokenizer

BUILD_FILES = ("README.md", "manifest.json", "data")  # everything a build may write in its directory


@dataclass
class BuildResult:
    out: Path
    manifest: dict
    seconds: float
    dry_run: dict | None = None  # requests and token estimates per task, when nothing was sent


def check_config(cfg: BuildConfig) -> None:
    if cfg.stage not in ("sft", "all"):
        raise ConfigError(f"--stage must be sft or all, not {cfg.stage!r}")
    if cfg.samples < 1:
        raise ConfigError("--samples must be at least 1")
    from ipm_prefdial.engines import ENGINES

    for option in ("engine", "judge_engine"):
        value = getattr(cfg, option)
        if value is not None and value not in ENGINES:
            raise ConfigError(f"--{option.replace('_', '-')} must be one of {', '.join(ENGINES)}, not {value!r}")
    if cfg.stage == "all" and cfg.engine == "openai" and not cfg.base_url:
        raise ConfigError("--engine openai needs --base-url")
    if cfg.resolved_split() not in SPLIT_METHODS:
        raise ConfigError(f"--split must be one of {', '.join(SPLIT_METHODS)}, not {cfg.split!r}")
    if cfg.on_invalid not in ("error", "skip"):
        raise ConfigError(f"--on-invalid must be error or skip, not {cfg.on_invalid!r}")
    if cfg.limit is not None and cfg.limit < 1:
        raise ConfigError("--limit must be at least 1")
    from ipm_prefdial.executors import EXECUTORS

    if cfg.executor not in EXECUTORS:
        raise ConfigError(f"--executor must be one of {', '.join(EXECUTORS)}, not {cfg.executor!r}")
    if cfg.workers < 1 or cfg.worker_gpus < 0 or (cfg.worker_cpus is not None and cfg.worker_cpus <= 0):
        raise ConfigError("--workers must be at least 1, --worker-cpus above 0 and --worker-gpus at least 0")
    if not isinstance(cfg.vllm, dict) or not all(isinstance(k, str) for k in cfg.vllm):
        raise ConfigError("vllm: expected a mapping of vLLM engine settings (e.g. max_num_seqs: 64)")
    if cfg.trim_tokens is not None and cfg.trim_tokens < 64:
        raise ConfigError("--trim-tokens must be at least 64 (the system prompts alone take more)")


def build(cfg: BuildConfig, console: Console | None = None) -> BuildResult:
    console = console or Console(stderr=True)
    check_config(cfg)
    started = time.perf_counter()
    out = Path(cfg.out)
    prompts = Prompts(Path(cfg.prompts_dir)) if cfg.prompts_dir else Prompts()
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else None

    with console.status("reading the source"):
        source = load_source(cfg.source, cfg.source_path, on_invalid=cfg.on_invalid, cache_dir=cache_dir)
    method = cfg.resolved_split()
    per_split = assign(source, split_ids(method, source, seed=cfg.seed), cfg.limit)
    counter, trim, no_count = _token_counting(cfg, cache_dir, console)

    rows: dict[str, dict[str, list[dict]]] = {c: {s: [] for s in SPLITS} for c in SFT_CONFIGS}
    distribution = {s: Counter() for s in SPLITS}
    total = sum(len(v) for v in per_split.values())
    with progress_bar(console) as progress:
        task = progress.add_task("converting dialogues", total=total)
        for split in SPLITS:
            for dialogue in per_split[split]:
                for turn in turns(dialogue):
                    for config, row in sft_rows(turn, prompts, trim).items():
                        rows[config][split].append(row)
                    distribution[split][turn.strategy] += 1
                progress.advance(task)

    mined = None
    if cfg.stage == "all":
        from ipm_prefdial.pipeline import dry_run_estimate, mine

        if cfg.dry_run:
            return BuildResult(out, {}, time.perf_counter() - started,
                               dry_run_estimate(per_split, prompts, cfg, trim))
        mined = mine(per_split, prompts, cfg, console, trim)
        rows.update(mined.rows)
    elif cfg.dry_run:
        return BuildResult(out, {}, time.perf_counter() - started, {})

    with console.status("measuring prompt lengths"):
        lengths = _prompt_lengths(rows, counter, no_count, exact=trim is not None)
    files: dict[str, dict] = {}
    for config in rows:
        for split in CONFIG_SPLITS[config]:
            if not rows[config][split]:  # load_dataset cannot open an empty split: none is written or listed
                continue
            rel = data_file(config, split)
            table = write_parquet_atomic(out / rel, rows[config][split], FEATURES[config])
            files[rel] = {"rows": table.num_rows, "bytes": (out / rel).stat().st_size,
                          "arrow_bytes": table.nbytes, "sha256": sha256_file(out / rel)}
    _remove_stale(out, files)

    manifest = {
        "name": "IPM-PrefDial",
        "version": cfg.dataset_version,
        "license": "cc-by-nc-4.0",
        "tool": {"name": "ipm_prefdial", "version": __version__},
        "stage": cfg.stage,
        "source": source.info,
        "split": {
            "method": method,
            "seed": cfg.seed if method == "random" else None,
            "limit": cfg.limit,
            "dialogues": {s: len(per_split[s]) for s in SPLITS},
            "skipped_invalid": source.skipped,
        },
        "executor": {"kind": cfg.executor, "workers": cfg.workers if cfg.executor == "ray" else 1},
        "prompts": prompts.hashes(),
        "rg_instruction": prompts.rg_rule.template,  # how RG prompts end; validate and infer read it from here
        "build_config": _public_config(cfg),
        "trim": None if trim is None else {
            "tokens": trim.tokens, "tokenizer": trim.counter.name,
            "answer_reserve": "max(gold answer, --<task>-max-tokens) + 2 tokens",
            "max_tokens": trim.max_tokens,
            "shortened": {c: trim.shortened.get(TASK_OF[c], 0) for c in SFT_CONFIGS},
            "over_budget": {c: trim.over.get(TASK_OF[c], 0) for c in SFT_CONFIGS}},
        "prompt_tokens": lengths,
        "models": mined.models if mined else {},
        "sampling": mined.sampling if mined else {},
        "mining": mined.mining if mined else None,
        "judge": mined.judge if mined else None,
        "judge_status": mined.judge_status if mined else None,
        "pairs_by_strategy": mined.by_strategy if mined else None,
        "counts": {c: {s: len(rows[c][s]) for s in CONFIG_SPLITS[c]} for c in rows},
        "strategy_distribution": {s: {name: distribution[s][name] for name in STRATEGIES} for s in SPLITS},
        "files": files,
    }
    write_bytes_atomic(out / "README.md", render_card(manifest, out.resolve().name).encode("utf-8"))
    # The manifest goes last: a build interrupted before this point is visibly incomplete to `ipm validate`.
    write_bytes_atomic(out / "manifest.json", (_json(manifest) + "\n").encode("utf-8"))
    return BuildResult(out, manifest, time.perf_counter() - started)


def _token_counting(cfg: BuildConfig, cache_dir: Path | None, console: Console):
    """(counter, trimmer, why there is no counter): the trim tokenizer counts prompt lengths for every card and
    shortens prompts with --trim-tokens; without transformers (or with --trim-tokenizer none) lengths are not
    measured, and --trim-tokens is an error."""
    if cfg.trim_tokenizer == "none":
        if cfg.trim_tokens:
            raise ConfigError("--trim-tokens needs a tokenizer (--trim-tokenizer bundled, a path or a Hub id)")
        return None, None, "not measured (--trim-tokenizer none)"
    try:
        with console.status("loading the trim tokenizer"):
            tokenizer, name = load_tokenizer(cfg.trim_tokenizer, cache_dir)
    except TokenizerError as exc:
        if cfg.trim_tokens:
            raise ConfigError(str(exc)) from None
        return None, None, f"not measured: {exc}"
    counter = TokenCounter(tokenizer, name)
    if not cfg.trim_tokens:
        return counter, None, None
    limits = {"sp": cfg.sp_max_tokens, "rg": cfg.rg_max_tokens, "vm": cfg.vm_max_tokens}
    return counter, Trimmer(counter, cfg.trim_tokens, limits), None


def _prompt_lengths(rows: dict, counter: TokenCounter | None, no_count: str | None, exact: bool) -> dict:
    """Prompt lengths in tokens per SFT config (pair prompts are the same prompts): all rows of a trimmed build,
    a seeded sample otherwise."""
    if counter is None:
        return {"tokenizer": None, "note": no_count}
    out: dict = {"tokenizer": counter.name}
    for config in SFT_CONFIGS:
        prompts = [r["prompt"] for split in SPLITS for r in rows[config][split]]
        out[config] = length_stats(counter, prompts, sample=None if exact else SAMPLE_ROWS)
    return out


# Options that may hold a local path: a build records only the last part (a file or folder name), since a build
# is published and must not carry the building machine's directories; sources and models are identified by
# their sha256 elsewhere in the manifest.
PATH_OPTIONS = ("source_path", "out", "cache_dir", "prompts_dir", "model", "sp_model", "rg_model", "vm_model",
                "judge_model", "trim_tokenizer")


def _public_config(cfg: BuildConfig) -> dict:
    """The config as recorded: local paths as names, nothing secret (none of these options are)."""
    recorded = cfg.as_dict()
    for option in PATH_OPTIONS:
        value = recorded.get(option)
        if isinstance(value, str) and (os.path.isabs(value) or os.path.exists(value)):
            recorded[option] = Path(value).name
    return recorded


def _remove_stale(out: Path, keep: dict[str, dict]) -> None:
    """Parquet files of known configs that this build did not write are from an older build: remove them."""
    for config in FEATURES:
        folder = out / "data" / config
        if not folder.is_dir():
            continue
        for path in folder.glob("*.parquet"):
            if path.relative_to(out).as_posix() not in keep:
                path.unlink()
        if not any(folder.iterdir()):
            folder.rmdir()


def _json(obj: object) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)
