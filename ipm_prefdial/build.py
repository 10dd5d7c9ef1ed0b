"""``ipm build``: source -> splits -> SFT configs -> parquet + card + manifest."""

from __future__ import annotations

import json
import os
import re
import shlex
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ipm_prefdial import __version__
from ipm_prefdial.config import RANGES, BuildConfig, ConfigError, check_headers, check_range, option
from ipm_prefdial.convert import sft_rows, turn_count, turns
from ipm_prefdial.progress import progress_bar
from ipm_prefdial.prompts import Prompts
from ipm_prefdial.release.card import render_card
from ipm_prefdial.release.features import CONFIG_SPLITS, FEATURES, SFT_CONFIGS, TASK_OF
from ipm_prefdial.release.files import DataFiles, stale_temp_files, write_bytes_atomic
from ipm_prefdial.sources import load_source
from ipm_prefdial.splits import SPLIT_METHODS, SPLITS, assign, split_ids
from ipm_prefdial.taxonomy import BUILTIN, Taxonomy, builtin, load_taxonomy
from ipm_prefdial.tokens import (
    SAMPLE_ROWS,
    TokenCounter,
    TokenizerError,
    Trimmer,
    length_stats,
    load_tokenizer,
    sample_rows,
)

BUILD_FILES = ("README.md", "manifest.json", "data")  # everything a build may write in its directory


@dataclass
class BuildResult:
    out: Path
    manifest: dict
    seconds: float
    dry_run: dict | None = None  # requests and token estimates per task, when nothing was sent

    @property
    def complete(self) -> bool:
        return self.manifest.get("complete", True)


def check_config(cfg: BuildConfig) -> None:
    """Every option, before any work starts: choices, ranges, combinations, and where the build may be written. A
    bad value is one line naming the option; nothing is read, sent or written."""
    from ipm_prefdial.engines import ENGINES
    from ipm_prefdial.executors import EXECUTORS
    from ipm_prefdial.sources.load import SOURCES

    choices = {"source": SOURCES, "split": SPLIT_METHODS, "stage": STAGES, "on_invalid": ON_INVALID,
               "engine": ENGINES, "judge_engine": ENGINES, "executor": EXECUTORS}
    for name, allowed in choices.items():
        value = getattr(cfg, name)
        if value is not None and value not in allowed:
            raise ConfigError(f"{option(name)} must be one of {', '.join(allowed)}, not {value!r}")
    for name in RANGES:
        check_range(name, getattr(cfg, name, None))
    if cfg.stage == "all" and cfg.engine == "openai" and not cfg.base_url:
        raise ConfigError("--engine openai needs --base-url")
    if cfg.stage == "all" and not cfg.no_judge and cfg.judge_engine == "openai" and not (cfg.judge_base_url
                                                                                          or cfg.base_url):
        raise ConfigError("--judge-engine openai needs --judge-base-url")
    for name in ("base_url", "judge_base_url"):
        url = getattr(cfg, name)
        if url is not None:
            check_url(url, option(name))
    if not VERSION.fullmatch(cfg.dataset_version):
        raise ConfigError(f"--dataset-version must look like 1.2.0 (letters, digits, '.', '-', '+'; it becomes the "
                          f"Hub tag v<version>), not {cfg.dataset_version!r}")
    if not isinstance(cfg.vllm, dict) or not all(isinstance(k, str) for k in cfg.vllm):
        raise ConfigError("vllm: expected a mapping of vLLM engine settings (e.g. max_num_seqs: 64)")
    for name in ("headers", "judge_headers"):
        check_headers(name, getattr(cfg, name))
    biggest = max(cfg.sp_max_tokens, cfg.rg_max_tokens, cfg.vm_max_tokens, cfg.judge_max_tokens)
    if cfg.context_tokens is not None and cfg.context_tokens <= biggest:
        raise ConfigError(f"--context-tokens {cfg.context_tokens} leaves no room for a prompt next to an answer of "
                          f"up to {biggest} tokens (the largest --*-max-tokens)")
    if cfg.stage == "import" and cfg.source not in IMPORT_SOURCES:
        raise ConfigError(f"--stage import: the {cfg.source} source holds no pairs of its own (ESC-Pro's "
                          "non-preferred replies are such pairs); use --stage sft or all")
    if cfg.taxonomy is not None and cfg.taxonomy not in BUILTIN and not Path(cfg.taxonomy).is_file():
        raise ConfigError(f"--taxonomy {cfg.taxonomy}: neither a built-in taxonomy ({', '.join(BUILTIN)}) nor a file")
    for name in ("cache_dir", "prompts_dir"):
        path = getattr(cfg, name)
        if path is not None and Path(path).exists() and not Path(path).is_dir():
            raise ConfigError(f"{option(name)} {path}: not a directory")
    if cfg.prompts_dir is not None and not Path(cfg.prompts_dir).is_dir():
        raise ConfigError(f"--prompts-dir {cfg.prompts_dir}: no such directory")
    check_out(Path(cfg.out))


def check_url(url: str, name: str) -> None:
    """An endpoint that can be asked: http(s), a host, a port in range (the message never repeats a password)."""
    from urllib.parse import urlsplit

    from ipm_prefdial.engines.openai_http import public_url

    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname) and not re.search(r"\s", url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError:
        ok = False
    if not ok:
        try:
            shown = public_url(url)
        except ValueError:
            shown = url.split("@")[-1]
        raise ConfigError(f"{name} must be an http:// or https:// URL with a host (and a port from 1 to 65535), "
                          f"not {shown!r}")


IMPORT_SOURCES = ("esc-pro",)  # sources holding pairs of their own
STAGES = ("sft", "import", "all")  # import: the SFT configs and the pairs the source itself holds (ESC-Pro), no LLM
ON_INVALID = ("error", "skip")
SHELL_SAFE = re.compile(r"[\w./:@%+=,-]+")
VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+-]{0,63}")


def check_out(out: Path) -> None:
    """A build writes README.md, manifest.json and data/ in its directory and removes stale parquet files there, so
    it may only be a new or empty directory, an earlier build, or the package directory of a checkout (where
    ``load_dataset("ipm_prefdial", ...)`` finds it); anything else (a file, a folder of other things) is refused
    before anything is read or written."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ConfigError(f"--out {out}: a file, not a directory")
    if out.resolve() == Path(__file__).resolve().parent:  # the checkout's package directory (PRODUCT.md)
        return
    # hidden entries (.git, .gitattributes of a clone of the dataset's Hub repo) are left alone, not refused
    foreign = sorted(p.name for p in out.iterdir() if p.name not in BUILD_FILES and not p.name.startswith("."))
    if not foreign and (out / "data").exists() and not (out / "data").is_dir():
        foreign = ["data (a file)"]
    if not foreign and (out / "manifest.json").is_file():
        try:
            name = json.loads((out / "manifest.json").read_text(encoding="utf-8")).get("name")
        except (ValueError, UnicodeDecodeError, AttributeError):
            name = None
        if name != "IPM-PrefDial":
            foreign = ["manifest.json (not an IPM-PrefDial build's)"]
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(f"--out {out}: holds {shown}, so it is not a build directory; a build only writes "
                          f"{', '.join(BUILD_FILES)} there: choose a new or empty directory")


def resolve_taxonomy(cfg: BuildConfig) -> Taxonomy:
    """--taxonomy: a built-in name or a YAML file; by default the source's own (ESConv's for ESConv-style JSON). A
    file that cannot be used is bad input (its name and field)."""
    from ipm_prefdial.sources.load import source_taxonomy

    if cfg.taxonomy is None:
        return source_taxonomy(cfg.source)
    if cfg.taxonomy in BUILTIN:
        return builtin(cfg.taxonomy)
    return load_taxonomy(cfg.taxonomy)


def build(cfg: BuildConfig, console: Console | None = None) -> BuildResult:
    console = console or Console(stderr=True)
    check_config(cfg)
    started = time.perf_counter()
    if cfg.stage == "all":
        from ipm_prefdial.pipeline import preflight

        with console.status("asking the endpoints"):
            preflight(cfg)  # a dead endpoint or a refused key stops the build here, in seconds
    out = Path(cfg.out)
    taxonomy = resolve_taxonomy(cfg)
    prompts = Prompts(Path(cfg.prompts_dir), taxonomy) if cfg.prompts_dir else Prompts(taxonomy=taxonomy)
    prompts.check_listing()
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else None

    with console.status("reading the source"):
        source = load_source(cfg.source, cfg.source_path, on_invalid=cfg.on_invalid, cache_dir=cache_dir,
                             taxonomy=taxonomy)

    method = cfg.resolved_split()
    per_split = assign(source, split_ids(method, source, seed=cfg.seed), cfg.limit)
    counter, trim, no_count = _token_counting(cfg, cache_dir, console)

    # The files are put in place together at the end; a build that stops before leaves the directory as it was.
    with DataFiles(out, FEATURES) as data:
        # The SFT rows go to their parquet files as they are made (a row group at a time); the prompts whose length
        # in tokens the card reports are kept (a seeded sample, or all of them when the build trims).
        counts: dict[str, dict[str, int]] = {c: {s: 0 for s in SPLITS} for c in SFT_CONFIGS}
        total = sum(len(v) for v in per_split.values())
        measured = None if cfg.dry_run or counter is None else _LengthSample(
            counter, sum(turn_count(d) for split in SPLITS for d in per_split[split]), exact=trim is not None)
        distribution = {s: Counter() for s in SPLITS}
        with progress_bar(console) as progress:
            task = progress.add_task("converting dialogues", total=total)
            for split in SPLITS:
                for dialogue in per_split[split]:
                    for turn in turns(dialogue):
                        for config, row in sft_rows(turn, prompts, trim).items():
                            if not cfg.dry_run:
                                data.sink(config, split).add(row)
                                if measured is not None:
                                    measured.add(config, row["prompt"])
                            counts[config][split] += 1
                        distribution[split][turn.strategy] += 1
                    progress.advance(task)

        rows: dict[str, dict[str, list[dict]]] = {}
        mined = None
        imported = (_import_pairs(per_split, prompts, cfg.source, trim)
                    if cfg.stage != "sft" and cfg.source in IMPORT_SOURCES else None)
        by_strategy: dict[str, dict[str, int]] | None = None
        judge_status: dict[str, dict[str, int]] | None = None
        if cfg.stage == "all":
            from ipm_prefdial.pipeline import dry_run_estimate, mine

            if cfg.dry_run:
                return BuildResult(out, {}, time.perf_counter() - started,
                                   dry_run_estimate(per_split, prompts, cfg, trim))
            mined = mine(per_split, prompts, cfg, console, trim)
            rows.update(mined.rows)
            mined.rows = {}  # the rows are held here only, so each config's are let go once written
            by_strategy, judge_status = mined.by_strategy, mined.judge_status
        elif cfg.dry_run:
            return BuildResult(out, {}, time.perf_counter() - started, {})
        if imported is not None and imported["rows"]:  # next to the mined pairs, after them; never judged
            from ipm_prefdial.mining import MINED_SPLITS

            by_strategy = by_strategy or {s: {} for s in taxonomy.names}

            for split in MINED_SPLITS:
                rows.setdefault("joint_pairs", {s: [] for s in MINED_SPLITS})[split].extend(imported["rows"][split])
            for row in (r for split in MINED_SPLITS for r in imported["rows"][split]):
                by_strategy[row["strategy"]]["joint_pairs"] = by_strategy[row["strategy"]].get("joint_pairs", 0) + 1
            # imported rows are never judged: their status is "skipped", counted with the mined rows' statuses
            judge_status = dict(judge_status or {})
            per = dict(judge_status.get("joint_pairs", {}))
            per["skipped"] = per.get("skipped", 0) + sum(len(v) for v in imported["rows"].values())
            judge_status["joint_pairs"] = dict(sorted(per.items()))

        with console.status("measuring prompt lengths"):
            lengths = measured.stats() if measured is not None else {"tokenizer": None, "note": no_count}
        # the pair rows go to their files a config at a time, each list let go once written
        for config in list(rows):
            counts[config] = {split: len(rows[config].get(split, [])) for split in CONFIG_SPLITS[config]}
            for split in CONFIG_SPLITS[config]:
                data.sink(config, split).extend(rows[config].get(split, []))
            del rows[config]
        files = data.commit()
    _remove_stale(out, files)

    manifest = {
        "name": "IPM-PrefDial",
        "version": cfg.dataset_version,
        "license": "cc-by-nc-4.0",
        "tool": {"name": "ipm_prefdial", "version": __version__},
        "stage": cfg.stage,
        # false while requests of this build ended in transient failures (retries ran out): the same command
        # sends them again; `ipm validate` and `ipm publish` refuse an incomplete build
        "complete": not (mined and mined.transient),
        "incomplete": {"requests": sum(mined.transient.values()), "transient_failures": mined.transient,
                       "rerun": rerun_command(_public_config(cfg))} if mined and mined.transient else None,
        "source": {**source.info, "counts": source.counts},
        "taxonomy": taxonomy.as_dict(),
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
        "judge_status": judge_status,
        "pairs_by_strategy": by_strategy,
        "imported": None if imported is None else {
            "origin": cfg.source, "config": "joint_pairs", "miner_engine": "import",
            "pairs": {s: len(v) for s, v in imported["rows"].items()}, "dropped_same_as_gold": imported["dropped"]},
        "counts": counts,
        "strategy_distribution": {s: {name: distribution[s][name] for name in taxonomy.names} for s in SPLITS},
        "files": files,
    }
    write_bytes_atomic(out / "README.md", render_card(manifest, out.resolve().name).encode("utf-8"))
    # The manifest goes last: a build interrupted before this point is visibly incomplete to `ipm validate`.
    write_bytes_atomic(out / "manifest.json", (_json(manifest) + "\n").encode("utf-8"))
    return BuildResult(out, manifest, time.perf_counter() - started)


def _import_pairs(per_split: dict, prompts: Prompts, origin: str, trim) -> dict:
    """The pairs the source holds itself (ESC-Pro), per mined split: {"rows", "dropped"}."""
    from ipm_prefdial.mining import MINED_SPLITS, imported_pairs

    out: dict = {"rows": {}, "dropped": 0}
    for split in MINED_SPLITS:
        out["rows"][split] = []
        for dialogue in per_split[split]:
            for turn in turns(dialogue):
                if turn.negatives:
                    rows, dropped = imported_pairs(turn, prompts, origin, trim)
                    out["rows"][split] += rows
                    out["dropped"] += dropped
    return out


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


class _LengthSample:
    """Prompt lengths in tokens per SFT config (pair prompts are the same prompts), for the card: all rows of a
    trimmed build, a seeded sample of ``SAMPLE_ROWS`` otherwise (chosen by row number, so only the sampled prompts
    are kept while the rows stream to their files)."""

    def __init__(self, counter: TokenCounter, rows: int, exact: bool):
        self.counter = counter
        self.rows = rows
        self.picked = sample_rows(rows, None if exact else SAMPLE_ROWS)
        self.seen: dict[str, int] = {c: 0 for c in SFT_CONFIGS}
        self.kept: dict[str, list] = {c: [] for c in SFT_CONFIGS}

    def add(self, config: str, prompt: list[dict]) -> None:
        index = self.seen[config]
        self.seen[config] += 1
        if self.picked is None or index in self.picked:
            self.kept[config].append(prompt)

    def stats(self) -> dict:
        out: dict = {"tokenizer": self.counter.name}
        for config in SFT_CONFIGS:
            assert self.seen[config] == self.rows, (config, self.seen[config], self.rows)
            out[config] = length_stats(self.counter, self.kept[config], rows=self.rows)
        return out


# Options that may hold a local path: a build records only the last part (a file or folder name), since a build
# is published and must not carry the building machine's directories; sources and models are identified by
# their sha256 elsewhere in the manifest.
PATH_OPTIONS = ("source_path", "taxonomy", "out", "cache_dir", "prompts_dir", "model", "sp_model", "rg_model",
                "vm_model", "judge_model", "trim_tokenizer")


def _public_config(cfg: BuildConfig) -> dict:
    """The config as recorded: local paths as names, nothing secret (header values, a URL's user and password or
    query keys are left out)."""
    from ipm_prefdial.engines.openai_http import public_url

    recorded = cfg.as_dict()
    for name in PATH_OPTIONS:
        value = recorded.get(name)
        if isinstance(value, str) and (os.path.isabs(value) or os.path.exists(value)):
            recorded[name] = Path(value).name
    for name in ("headers", "judge_headers"):
        recorded[name] = sorted(recorded[name])  # their names: the values may be keys
    for name in ("base_url", "judge_base_url"):
        if recorded[name]:
            recorded[name] = public_url(recorded[name])
    return recorded


def rerun_command(recorded: dict) -> str:
    """The ``ipm build`` command of a recorded config (the options that differ from the defaults; local paths are
    names, header values left out): what completes an incomplete build."""
    defaults = BuildConfig().as_dict()
    parts = ["ipm build"]
    for name, value in recorded.items():
        if name in ("dry_run", "vllm", "headers", "judge_headers") or value == defaults.get(name) or value is None:
            continue
        if isinstance(value, bool):
            parts.append(option(name))
        else:
            text = str(value)
            parts.append(f"{option(name)} {text if SHELL_SAFE.fullmatch(text) else shlex.quote(text)}")
    parts += [f"--vllm-arg {k}={v}" for k, v in sorted(recorded.get("vllm", {}).items())]
    parts += [f"--header {k}=..." for k in recorded.get("headers", [])]
    parts += [f"--judge-header {k}=..." for k in recorded.get("judge_headers", [])]
    return " ".join(parts)


def _remove_stale(out: Path, keep: dict[str, dict]) -> None:
    """Parquet files of known configs that this build did not write are from an older build, and temp files are
    from a build that was killed: remove them."""
    for config in FEATURES:
        folder = out / "data" / config
        if not folder.is_dir():
            continue
        for path in folder.glob("*.parquet"):
            if path.relative_to(out).as_posix() not in keep:
                path.unlink()
        for path in stale_temp_files(folder):
            path.unlink(missing_ok=True)
        if not any(folder.iterdir()):
            folder.rmdir()


def _json(obj: object) -> str:
    return json.dumps(obj, indent=2, ensure_ascii=False)
