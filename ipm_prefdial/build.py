"""``ipm build``, in stages a reader can follow from ``build``:

1. ``prepare``: the taxonomy, the prompts, the source, its split and the token counter;
2. ``write_sft``: the SFT configs, streamed to their parquet files;
3. ``make_pairs``: the pairs the source holds itself (ESC-Pro), the mined pairs and the judge's verdicts
   (``mining``);
4. ``write_pairs``: the pair configs to their files; all files put in place together;
5. the manifest and the card (``release.manifest``), the manifest last.

``--dry-run`` stops after ``prepare`` with the plan of what would be sent (``mining.plan``).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from ipm_prefdial.config import IMPORT_SOURCES, BuildConfig, recorded_config, rerun_command
from ipm_prefdial.convert import sft_rows, turn_count, turns
from ipm_prefdial.errors import ConfigError
from ipm_prefdial.mining.policy import MINED_SPLITS, source_pairs
from ipm_prefdial.progress import progress_bar
from ipm_prefdial.prompts import Prompts
from ipm_prefdial.release.features import CONFIG_SPLITS, FEATURES, SFT_CONFIGS
from ipm_prefdial.release.files import DataFiles, stale_temp_files
from ipm_prefdial.release.manifest import manifest as build_manifest
from ipm_prefdial.release.manifest import write_release
from ipm_prefdial.sources import LoadedSource, load_source
from ipm_prefdial.splits import SPLITS, assign, split_ids
from ipm_prefdial.taxonomy import BUILTIN, Taxonomy, builtin, load_taxonomy
from ipm_prefdial.tokens import LengthSample, TokenCounter, TokenizerError, Trimmer, load_tokenizer


@dataclass
class BuildResult:
    out: Path
    manifest: dict
    seconds: float
    dry_run: dict | None = None  # requests and token estimates per task, when nothing was sent

    @property
    def complete(self) -> bool:
        return self.manifest.get("complete", True)


def build(cfg: BuildConfig, console: Console | None = None) -> BuildResult:
    console = console or Console(stderr=True)
    cfg.check()
    started = time.perf_counter()
    if cfg.stage == "all":
        from ipm_prefdial.mining.run import preflight

        with console.status("asking the endpoints"):
            preflight(cfg)  # a dead endpoint or a refused key stops the build here, in seconds
    prep = prepare(cfg, console)
    if cfg.dry_run:
        return BuildResult(prep.out, {}, time.perf_counter() - started, dry_run(prep, cfg))
    # The files are put in place together at the end; a build that stops before leaves the directory as it was.
    with DataFiles(prep.out, FEATURES) as data:
        sft = write_sft(prep, data, console)
        pairs = make_pairs(prep, cfg, console)
        with console.status("measuring prompt lengths"):
            lengths = sft.lengths.stats() if sft.lengths is not None else {"tokenizer": None, "note": prep.no_count}
        counts = {**sft.counts, **write_pairs(pairs.rows, data)}
        files = data.commit()
    remove_stale(prep.out, files)
    recorded = recorded_config(cfg)
    manifest = build_manifest(
        cfg=cfg, recorded=recorded, rerun=rerun_command(recorded), source=prep.source, taxonomy=prep.taxonomy,
        method=prep.method, per_split=prep.per_split, prompts=prep.prompts, trim=prep.trim, lengths=lengths,
        mined=pairs.mined, imported=pairs.imported, pairs_by_strategy=pairs.by_strategy,
        judge_status=pairs.judge_status, counts=counts, distribution=sft.distribution, files=files)
    write_release(prep.out, manifest)
    return BuildResult(prep.out, manifest, time.perf_counter() - started)


# ---------------------------------------------------------------------------------------------- 1. prepare


@dataclass
class Prepared:
    """What every later stage reads: the build's taxonomy, prompts, source and split, and its token counting."""

    out: Path
    taxonomy: Taxonomy
    prompts: Prompts
    source: LoadedSource
    method: str
    per_split: dict[str, list]
    counter: TokenCounter | None
    trim: Trimmer | None
    no_count: str | None  # why prompt lengths are not measured


def prepare(cfg: BuildConfig, console: Console) -> Prepared:
    taxonomy = resolve_taxonomy(cfg)
    prompts = Prompts(Path(cfg.prompts_dir), taxonomy) if cfg.prompts_dir else Prompts(taxonomy=taxonomy)
    prompts.check_listing()
    cache_dir = Path(cfg.cache_dir) if cfg.cache_dir else None
    with console.status("reading the source"):
        source = load_source(cfg.source, cfg.source_path, on_invalid=cfg.on_invalid, cache_dir=cache_dir,
                             taxonomy=taxonomy)
    method = cfg.resolved_split()
    per_split = assign(source, split_ids(method, source, seed=cfg.seed), cfg.limit)
    counter, trim, no_count = token_counting(cfg, cache_dir, console)
    return Prepared(Path(cfg.out), taxonomy, prompts, source, method, per_split, counter, trim, no_count)


def resolve_taxonomy(cfg: BuildConfig) -> Taxonomy:
    """--taxonomy: a built-in name or a YAML file; by default the source's own (ESConv's for ESConv-style JSON). A
    file that cannot be used is bad input (its name and field)."""
    from ipm_prefdial.sources.load import source_taxonomy

    if cfg.taxonomy is None:
        return source_taxonomy(cfg.source)
    if cfg.taxonomy in BUILTIN:
        return builtin(cfg.taxonomy)
    return load_taxonomy(cfg.taxonomy)


def token_counting(cfg: BuildConfig, cache_dir: Path | None, console: Console):
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


def dry_run(prep: Prepared, cfg: BuildConfig) -> dict:
    """What the build would ask, per task (nothing without --stage all: no LLM is asked)."""
    if cfg.stage != "all":
        return {}
    from ipm_prefdial.mining.plan import dry_run_estimate

    return dry_run_estimate(prep.per_split, prep.prompts, cfg, prep.trim)


# ------------------------------------------------------------------------------------------- 2. SFT configs


@dataclass
class SftOutput:
    counts: dict[str, dict[str, int]]  # config -> split -> rows
    distribution: dict[str, Counter]  # split -> gold strategy -> turns
    lengths: LengthSample | None  # the prompts whose length in tokens the card reports


def write_sft(prep: Prepared, data: DataFiles, console: Console) -> SftOutput:
    """The SFT rows go to their parquet files as they are made (a row group at a time); the prompts whose length in
    tokens the card reports are kept (a seeded sample, or all of them when the build trims)."""
    counts: dict[str, dict[str, int]] = {c: {s: 0 for s in SPLITS} for c in SFT_CONFIGS}
    lengths = None if prep.counter is None else LengthSample(
        prep.counter, SFT_CONFIGS, sum(turn_count(d) for split in SPLITS for d in prep.per_split[split]),
        exact=prep.trim is not None)
    distribution = {s: Counter() for s in SPLITS}
    with progress_bar(console) as progress:
        task = progress.add_task("converting dialogues", total=sum(len(v) for v in prep.per_split.values()))
        for split in SPLITS:
            for dialogue in prep.per_split[split]:
                for turn in turns(dialogue):
                    for config, row in sft_rows(turn, prep.prompts, prep.trim).items():
                        data.sink(config, split).add(row)
                        if lengths is not None:
                            lengths.add(config, row["prompt"])
                        counts[config][split] += 1
                    distribution[split][turn.strategy] += 1
                progress.advance(task)
    return SftOutput(counts, distribution, lengths)


# ------------------------------------------------------------------------------------------------ 3. pairs


@dataclass
class Pairs:
    rows: dict[str, dict[str, list[dict]]] = field(default_factory=dict)  # config -> split -> rows
    mined: object = None  # mining.run.MiningOutput, with stage all
    imported: dict | None = None  # the manifest's record of the source's own pairs
    by_strategy: dict[str, dict[str, int]] | None = None  # gold strategy -> config -> pairs
    judge_status: dict[str, dict[str, int]] | None = None  # config -> judge_status -> rows


def make_pairs(prep: Prepared, cfg: BuildConfig, console: Console) -> Pairs:
    """The pair configs: mined and judged (stage all), then the source's own pairs after them (never judged)."""
    pairs = Pairs()
    if cfg.stage == "all":
        from ipm_prefdial.mining.run import mine

        mined = mine(prep.per_split, prep.prompts, cfg, console, prep.trim)
        pairs.rows, mined.rows = mined.rows, {}  # the rows are held here only, so each config's go once written
        pairs.mined, pairs.by_strategy, pairs.judge_status = mined, mined.by_strategy, mined.judge_status
    if cfg.stage != "sft" and cfg.source in IMPORT_SOURCES:
        own = source_pairs(prep.per_split, prep.prompts, cfg.source, prep.trim)
        pairs.imported = {"origin": cfg.source, "config": "joint_pairs", "miner_engine": "import",
                          "pairs": {s: len(v) for s, v in own["rows"].items()}, "dropped_same_as_gold": own["dropped"]}
        _add_imported(pairs, own["rows"], prep.taxonomy)
    return pairs


def _add_imported(pairs: Pairs, imported: dict[str, list[dict]], taxonomy: Taxonomy) -> None:
    """The source's own joint pairs next to the mined ones, counted by strategy and as "skipped" by the judge."""
    by_strategy = pairs.by_strategy or {s: {} for s in taxonomy.names}
    for split in MINED_SPLITS:
        pairs.rows.setdefault("joint_pairs", {s: [] for s in MINED_SPLITS})[split].extend(imported[split])
    for row in (r for split in MINED_SPLITS for r in imported[split]):
        by_strategy[row["strategy"]]["joint_pairs"] = by_strategy[row["strategy"]].get("joint_pairs", 0) + 1
    judge_status = dict(pairs.judge_status or {})
    per = dict(judge_status.get("joint_pairs", {}))
    per["skipped"] = per.get("skipped", 0) + sum(len(v) for v in imported.values())
    judge_status["joint_pairs"] = dict(sorted(per.items()))
    pairs.by_strategy, pairs.judge_status = by_strategy, judge_status


# ------------------------------------------------------------------------------------------ 4. pair files


def write_pairs(rows: dict[str, dict[str, list[dict]]], data: DataFiles) -> dict[str, dict[str, int]]:
    """The pair rows to their files a config at a time, each config's lists let go once written; rows per split."""
    counts = {}
    for config in list(rows):
        counts[config] = {split: len(rows[config].get(split, [])) for split in CONFIG_SPLITS[config]}
        for split in CONFIG_SPLITS[config]:
            data.sink(config, split).extend(rows[config].get(split, []))
        del rows[config]
    return counts


def remove_stale(out: Path, keep: dict[str, dict]) -> None:
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
