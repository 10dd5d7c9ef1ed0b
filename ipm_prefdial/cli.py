"""The ``ipm`` command line."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ipm_prefdial import __version__

app = typer.Typer(
    name="ipm",
    help="Build IPM-PrefDial (preference data for emotional-support dialogue) and check it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()


def _version(value: bool) -> None:
    if value:
        out.print(f"ipm_prefdial {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    pass


def _fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@app.command()
def build(
    source: str | None = typer.Option(
        None, help="esconv (default) | failed-esconv | json (any ESConv-style JSON/JSONL)."),
    source_path: str | None = typer.Option(
        None, help="Local copy: a JSON list / JSONL file, or a directory with the Hub's train/valid/test.txt. "
                   "For esconv, IPM_ESCONV_PATH is used when unset; else upstream is downloaded and cached."),
    split: str | None = typer.Option(None, help="decoupledesc (the paper's, default for esconv) | hf | random."),
    seed: int | None = typer.Option(None, help="Seed of --split random."),
    stage: str | None = typer.Option(None, help="sft: the SFT configs only (no LLM) | all: also mine pairs."),
    limit: int | None = typer.Option(None, help="The first N dialogues of each split (in the split's order)."),
    out_dir: str | None = typer.Option(None, "--out", help="Build directory (default: ./ipm_prefdial)."),
    dataset_version: str | None = typer.Option(None, help="Version written to the card and manifest (default 0.1.0)."),
    on_invalid: str | None = typer.Option(None, help="error (default): stop and list bad records | skip: drop "
                                                       "bad dialogues, counted in the manifest."),
    cache_dir: str | None = typer.Option(None, help="Cache root (default: IPM_CACHE_DIR or the user cache dir)."),
    prompts_dir: str | None = typer.Option(None, help="Use prompt templates from this directory."),
    config: Path | None = typer.Option(None, "--config", help="YAML file with any of these options."),
) -> None:
    """Build the dataset: source -> splits -> SFT configs (-> mined pairs) -> parquet, card, manifest."""
    from ipm_prefdial.build import build as run_build
    from ipm_prefdial.config import BuildConfig, ConfigError
    from ipm_prefdial.sources import SourceError

    try:
        cfg = BuildConfig.load(config, source=source, source_path=source_path, split=split, seed=seed, stage=stage,
                               limit=limit, out=out_dir, dataset_version=dataset_version, on_invalid=on_invalid,
                               cache_dir=cache_dir, prompts_dir=prompts_dir)
        result = run_build(cfg, console=err)
    except (SourceError, ConfigError, FileNotFoundError) as exc:
        raise _fail(str(exc)) from None
    m = result.manifest
    table = Table(title=f"IPM-PrefDial {m['version']} -> {result.out}", title_justify="left")
    table.add_column("config")
    for s in ("train", "validation", "test"):
        table.add_column(s, justify="right")
    for name, counts in m["counts"].items():
        table.add_row(name, *(f"{counts.get(s, 0):,}" if s in counts else "-" for s in ("train", "validation", "test")))
    out.print(table)
    skipped = m["split"]["skipped_invalid"]
    extra = f"; {len(skipped)} invalid dialogues skipped (see manifest.json)" if skipped else ""
    dialogues = m["split"]["dialogues"]
    out.print(f"split {m['split']['method']}: {dialogues['train']} / {dialogues['validation']} / {dialogues['test']} "
              f"dialogues{extra}; built in {result.seconds:.1f} s")


@app.command()
def validate(directory: Path = typer.Argument(Path("ipm_prefdial"), help="Build directory.")) -> None:
    """Check a build: schema vs card, ids, splits, the conversion rule, row counts and sha256 vs the manifest."""
    from ipm_prefdial.validate import validate as run_validate

    report = run_validate(directory)
    if not report.ok:
        err.print(f"[bold red]{directory}: {len(report.lines())} problem(s)[/]")
        for line in report.lines():
            err.print(f"  - {line}", highlight=False, markup=False, soft_wrap=True)
        raise typer.Exit(1)
    table = Table(title=f"{directory}: valid", title_justify="left")
    for col, justify in (("config", "left"), ("split", "left"), ("rows", "right"), ("dialogues", "right")):
        table.add_column(col, justify=justify)
    for config, split, rows, dialogs in report.summary:
        table.add_row(config, split, f"{rows:,}", f"{dialogs:,}")
    out.print(table)


@app.command("engine-check")
def engine_check(
    engine: str = typer.Option("local", help="local | openai | vllm | transformers."),
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

    try:
        eng = make_engine(engine, model=model, base_url=base_url, concurrency=concurrency)
        stats, startup = run_check(eng, requests, max_tokens, cache_dir, retry_failed, err)
    except (ValueError, RuntimeError) as exc:
        raise _fail(str(exc)) from None
    wall = max(stats.wall_s, 1e-9)
    out.print(f"engine {eng.name} ({eng.model}), concurrency {eng.concurrency}, startup {startup:.1f} s")
    out.print(f"requests/s: {stats.requests / wall:.2f}")
    out.print(f"output tokens/s: {stats.completion_tokens / wall:.1f}")
    _print_stats(stats)


def _print_stats(stats) -> None:
    table = Table(title="accounting", title_justify="left", show_header=False)
    for key, value in stats.as_dict().items():
        table.add_row(key, ", ".join(f"{k}: {v}" for k, v in value.items()) or "0" if isinstance(value, dict)
                      else str(value))
    out.print(table)
