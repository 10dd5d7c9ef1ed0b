"""The ``ipm`` command line."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ipm_prefdial import __version__
from ipm_prefdial.engines import ENGINES
from ipm_prefdial.executors import EXECUTORS
from ipm_prefdial.sources.load import SOURCES
from ipm_prefdial.splits import SPLIT_METHODS

app = typer.Typer(
    name="ipm",
    help="Build IPM-PrefDial (preference data for emotional-support dialogue) and check it.",
    no_args_is_help=True,
    add_completion=True,
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


@contextmanager
def _exit_codes(*bad_input: type[BaseException]) -> Iterator[None]:
    """What a command may meet, as one line and the exit code of its class: an engine that stopped (its own: 75
    gone, 1 refused), a bad option (2), bad input (1: ``bad_input``, a damaged cache)."""
    from ipm_prefdial.config import ConfigError
    from ipm_prefdial.engines import CacheError, EngineStop

    try:
        yield
    except EngineStop as stop:
        raise _fail(_stop_line(stop), stop.exit_code) from None
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    except (CacheError, *bad_input) as exc:
        raise _fail(str(exc), 1) from None


def choice(name: str, values: tuple[str, ...]) -> type[Enum]:
    """An enum of option values: ``--help`` lists them and shell completion offers them."""
    return Enum(name, [(v.replace("-", "_"), v) for v in values], type=str)  # type: ignore[return-value]


def _value(member: Enum | None) -> str | None:
    return member.value if member is not None else None


SourceChoice = choice("SourceChoice", SOURCES)
SplitChoice = choice("SplitChoice", SPLIT_METHODS)
StageChoice = choice("StageChoice", ("sft", "import", "all"))
OnInvalidChoice = choice("OnInvalidChoice", ("error", "skip"))
EngineChoice = choice("EngineChoice", ENGINES)
ExecutorChoice = choice("ExecutorChoice", EXECUTORS)


@app.command()
def build(
    source: SourceChoice | None = typer.Option(
        None, help="esconv (default) | failed-esconv | json (any ESConv-style JSON/JSONL) | extes | mesc | esc-pro "
                   "(your copy, by --source-path)."),
    taxonomy: str | None = typer.Option(
        None, help="Strategy labels: esconv | extes | mesc | esc-pro | a YAML file (default: the source's own)."),
    source_path: str | None = typer.Option(
        None, help="Local copy: a JSON list / JSONL file, or a directory with the Hub's train/valid/test.txt. "
                   "For esconv, IPM_ESCONV_PATH is used when unset; else upstream is downloaded and cached."),
    split: SplitChoice | None = typer.Option(None, help="decoupledesc (the paper's, default for esconv) | hf | "
                                                        "random."),
    seed: int | None = typer.Option(None, help="Seed of --split random (0 or more)."),
    stage: StageChoice | None = typer.Option(None, help="sft: the SFT configs only (no LLM) | import: also the "
                                                        "source's own pairs (ESC-Pro; no LLM) | all: also mine "
                                                        "pairs."),
    limit: int | None = typer.Option(None, help="The first N dialogues of each split (in the split's order)."),
    out_dir: str | None = typer.Option(None, "--out", help="Build directory (default: ./ipm_prefdial): new, empty "
                                                           "or an earlier build."),
    dataset_version: str | None = typer.Option(None, help="Version written to the card and manifest (default 0.2.0)."),
    on_invalid: OnInvalidChoice | None = typer.Option(None, help="error (default): stop and list bad records | skip: "
                                                                 "drop bad dialogues, counted in the manifest."),
    cache_dir: str | None = typer.Option(None, help="Cache root (default: IPM_CACHE_DIR or the user cache dir)."),
    prompts_dir: str | None = typer.Option(None, help="Use prompt templates from this directory."),
    trim_tokens: int | None = typer.Option(None, help="Shorten every prompt from its oldest history until prompt + "
                                                      "answer fit N tokens, N >= 64 (off: the paper's data is "
                                                      "untrimmed)."),
    trim_tokenizer: str | None = typer.Option(None, help="Tokenizer counting those tokens and the card's prompt "
                                                         "lengths: bundled (SmolLM2, default) | a path | a Hub id | "
                                                         "none."),
    engine: EngineChoice | None = typer.Option(None, help="Policy engine: local (default) | openai | vllm | "
                                                          "transformers."),
    base_url: str | None = typer.Option(None, help="OpenAI-compatible endpoint of the policy (key: OPENAI_API_KEY; "
                                                   "Azure: AZURE_OPENAI_API_KEY, a deployment URL with "
                                                   "?api-version=...)."),
    model: str | None = typer.Option(None, help="Policy model for SP, RG and VM (default: the engine's)."),
    sp_model: str | None = typer.Option(None, help="SP policy, e.g. an SFT checkpoint from ipm train."),
    rg_model: str | None = typer.Option(None, help="RG policy."),
    vm_model: str | None = typer.Option(None, help="VM (joint) policy."),
    concurrency: int | None = typer.Option(None, help="Requests in flight per engine (1 to 4096)."),
    context_tokens: int | None = typer.Option(None, help="Prompt + answer budget per request (default: the "
                                                         "engine's; local 4096 per slot). Longer prompts lose their "
                                                         "oldest history."),
    samples: int | None = typer.Option(None, help="Policy samples per turn (default 1, as the paper; at most 64)."),
    temperature: float | None = typer.Option(None, help="Policy temperature, 0 to 2 (default 0.7)."),
    top_p: float | None = typer.Option(None, help="Policy top_p, above 0 and at most 1 (default 0.95)."),
    sp_max_tokens: int | None = typer.Option(None, help="Answer bound of SP requests (default 32)."),
    rg_max_tokens: int | None = typer.Option(None, help="Answer bound of RG requests (default 160); a reply cut "
                                                        "there is trimmed to its last full sentence."),
    vm_max_tokens: int | None = typer.Option(None, help="Answer bound of VM requests (default 192)."),
    judge_max_tokens: int | None = typer.Option(None, help="Answer bound of judge requests (default 320)."),
    retries: int | None = typer.Option(None, help="Retries of a request that fails with a transient kind (timeout, "
                                                  "429, 5xx, dropped connection), 0 to 20 (default 4); one still "
                                                  "failing makes the build incomplete (exit code 3)."),
    give_up_after: float | None = typer.Option(None, help="Seconds without a single answer, while requests keep "
                                                          "failing (a dead server, a lost cluster), before the build "
                                                          "stops with exit code 75, answers kept (default 120)."),
    header: list[str] | None = typer.Option(None, "--header", help="An HTTP header for every request to --base-url, "
                                                                   "NAME=VALUE (repeatable; a gateway's key, an "
                                                                   "organisation). Never written anywhere."),
    judge_header: list[str] | None = typer.Option(None, "--judge-header", help="An HTTP header for the judge's "
                                                                               "endpoint (default: --header's when "
                                                                               "the judge uses --base-url)."),
    executor: ExecutorChoice | None = typer.Option(None, help="local (default): this process | ray: engines in Ray "
                                                              "actors (RAY_ADDRESS or --ray-address, else a local "
                                                              "Ray)."),
    workers: int | None = typer.Option(None, help="Ray workers, each owning one engine (default 2)."),
    worker_cpus: float | None = typer.Option(None, help="CPUs per Ray worker (default: the cluster's shared out, at "
                                                        "most 1; an embedded engine uses as many threads)."),
    worker_gpus: float | None = typer.Option(None, help="GPUs per Ray worker (default 0)."),
    ray_address: str | None = typer.Option(None, help="Ray cluster address (default: RAY_ADDRESS, else local)."),
    vllm_arg: list[str] | None = typer.Option(None, "--vllm-arg", help="A vLLM engine setting, KEY=VALUE "
                                                                      "(repeatable; e.g. max_num_seqs=64, "
                                                                      "tensor_parallel_size=2)."),
    judge_engine: EngineChoice | None = typer.Option(None, help="Judge engine (default: the policy engine)."),
    judge_base_url: str | None = typer.Option(None, help="Judge endpoint (engine openai)."),
    judge_model: str | None = typer.Option(None, help="Judge model (default: the policy model)."),
    no_judge: bool | None = typer.Option(None, "--no-judge", help="Skip the judge (judge is null)."),
    no_cache: bool | None = typer.Option(None, "--no-cache", help="Neither read nor write the request cache."),
    retry_failed: bool | None = typer.Option(None, "--retry-failed",
                                             help="Re-send requests whose recorded answer was a failure."),
    dry_run: bool | None = typer.Option(None, "--dry-run",
                                        help="Print requests and a token estimate; send and write nothing."),
    config: Path | None = typer.Option(None, "--config", help="YAML file with any of these options."),
) -> None:
    """Build the dataset: source -> splits -> SFT configs (-> mined pairs) -> parquet, card, manifest.

    Exit codes: 0 done; 1 bad input (a source record, a refused request); 2 a bad option; 3 finished incomplete
    (requests left failed: run it again); 75 an engine or cluster went away (answers kept: run it again)."""
    from ipm_prefdial.build import check_config
    from ipm_prefdial.config import BuildConfig, ConfigError, parse_headers, parse_settings

    try:
        cfg = BuildConfig.load(config, source=_value(source), source_path=source_path, taxonomy=taxonomy,
                               split=_value(split),
                               seed=seed, stage=_value(stage), limit=limit, out=out_dir,
                               dataset_version=dataset_version, on_invalid=_value(on_invalid),
                               cache_dir=cache_dir, prompts_dir=prompts_dir, trim_tokens=trim_tokens,
                               trim_tokenizer=trim_tokenizer, engine=_value(engine), base_url=base_url,
                               executor=_value(executor), workers=workers, worker_cpus=worker_cpus,
                               worker_gpus=worker_gpus, ray_address=ray_address,
                               model=model, sp_model=sp_model, rg_model=rg_model, vm_model=vm_model,
                               concurrency=concurrency, context_tokens=context_tokens, samples=samples,
                               temperature=temperature, top_p=top_p,
                               sp_max_tokens=sp_max_tokens, rg_max_tokens=rg_max_tokens, vm_max_tokens=vm_max_tokens,
                               judge_max_tokens=judge_max_tokens, retries=retries, give_up_after=give_up_after,
                               judge_engine=_value(judge_engine), judge_base_url=judge_base_url,
                               judge_model=judge_model, no_judge=no_judge, no_cache=no_cache,
                               retry_failed=retry_failed, dry_run=dry_run)
        cfg.vllm = {**cfg.vllm, **parse_settings(vllm_arg or [], "--vllm-arg")}
        cfg.headers = {**cfg.headers, **parse_headers(header or [], "--header")}
        cfg.judge_headers = {**cfg.judge_headers, **parse_headers(judge_header or [], "--judge-header")}
        check_config(cfg)
    except ConfigError as exc:
        raise _fail(str(exc), 2) from None
    if cfg.executor == "ray" and cfg.stage == "all" and not cfg.dry_run:
        _build_under_supervision(cfg)
    _run_build(cfg)


@app.command("build-child", hidden=True)
def build_child() -> None:
    """``ipm build --executor ray``'s driver: the checked config on stdin, run in a process the parent watches."""
    import sys

    from ipm_prefdial.config import BuildConfig
    from ipm_prefdial.executors.supervise import quiet_ray_driver, report_exit

    cfg = BuildConfig(**json.loads(sys.stdin.read()))
    quiet_ray_driver()
    try:
        _run_build(cfg)
    except typer.Exit as exit_:
        report_exit(exit_.exit_code)
        raise
    except KeyboardInterrupt:
        report_exit(130)
        raise
    except BaseException:  # a bug or an unforeseen error: its own traceback, not "the cluster went away"
        report_exit(1)
        raise
    report_exit(0)


def _build_under_supervision(cfg) -> None:
    """Run the Ray build in a child process this one watches (see ``executors.supervise``); ends with its code."""
    import dataclasses

    from ipm_prefdial.executors import supervise
    from ipm_prefdial.sources.download import default_cache_dir

    root = Path(cfg.cache_dir) if cfg.cache_dir else default_cache_dir()
    code, line = supervise.run(dataclasses.asdict(cfg), None if cfg.no_cache else root / "requests.sqlite",
                               root / "logs")
    if line:
        err.print(f"[bold red]error:[/] {escape(line)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _run_build(cfg) -> None:
    """Build with a checked config and print the summary; the exit code says how it ended."""
    from ipm_prefdial.build import build as run_build
    from ipm_prefdial.sources import SourceError
    from ipm_prefdial.taxonomy import TaxonomyError

    with _exit_codes(SourceError, TaxonomyError, FileNotFoundError, RuntimeError):
        result = run_build(cfg, console=err)
    if result.dry_run is not None:
        _print_dry_run(result.dry_run)
        return
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
    if m.get("mining"):
        parts = []
        for task, info in m["mining"].items():
            acc = info["accounting"]
            pairs = sum(info["pairs"].values())
            trimmed = sum(v for k, v in info["outcomes"].items() if k.endswith("_trimmed"))
            lost = sum(v for k, v in info["outcomes"].items() if k.startswith("failed:"))
            parts.append(f"{task.upper()}: {_accounting(acc)}, {pairs} pairs ({trimmed} trimmed at max_tokens), "
                         f"{lost} failed")
        out.print("mining " + "; ".join(parts))
    for config, info in (m.get("judge") or {}).items():
        out.print(f"judge {config}: {_accounting(info['accounting'])}, {info['retained']} of {info['judged']} "
                  f"retained ({info['judge_failures']} judge failures)")
    pools: dict[str, tuple[list[str], dict]] = {}  # one Ray pool may serve several roles
    for role, d in (m.get("models") or {}).items():
        if "per_worker" in d:
            pools.setdefault(json.dumps(d["per_worker"]), ([], d))[0].append(role.upper())
    for roles, d in pools.values():
        out.print(f"ray {'+'.join(roles)} ({d['workers']} workers): {_per_worker(d['per_worker'])}")
    if not result.complete:
        left = m["incomplete"]
        kinds = ", ".join(f"{k} {v}" for k, v in left["transient_failures"].items())
        err.print(f"[bold yellow]incomplete:[/] {left['requests']} requests ended in transient failures ({kinds}); "
                  f"the build is written but marked incomplete (manifest.json complete: false). Run the same "
                  "command again to send them again and complete it.", highlight=False, soft_wrap=True)
        raise typer.Exit(3)


def _stop_line(stop) -> str:
    """The one line of a run that stopped because its engine is gone or refuses it."""
    from ipm_prefdial.engines import EXIT_GONE

    if stop.exit_code != EXIT_GONE:
        return f"{stop}; nothing was recorded for the refused requests"
    kept = getattr(stop, "kept", None)
    kept_text = f"{kept:,} answers of this run are kept in the request cache; " if kept else ""
    return f"{stop}; no dataset written; {kept_text}run the same command again to resume"


def _per_worker(workers: list[dict]) -> str:
    """Answers and rate of each Ray worker."""
    return "; ".join(f"worker {k}: {w['answered']} answers" + (f" at {w['requests_per_s']}/s" if w["requests_per_s"]
                                                              else "")
                     + (f", {w['deaths']} restarts" if w["deaths"] else "") for k, w in enumerate(workers))


DRY_RUN_COLUMNS = (("requests", "requests"), ("cached", "cached"), ("send", "to send"),
                   ("prompt_tokens", "prompt tokens to send (est.)"),
                   ("completion_tokens_max", "completion tokens (max)"))


def _print_dry_run(estimate: dict) -> None:
    table = Table(title="dry run: nothing sent, nothing written", title_justify="left")
    table.add_column("task", no_wrap=True, min_width=max((len(t) for t in estimate), default=5))
    for _, title in DRY_RUN_COLUMNS:
        table.add_column(title, justify="right")
    for task, e in estimate.items():
        table.add_row(task, *(f"{e[k]:,}" for k, _ in DRY_RUN_COLUMNS))
    if estimate:
        table.add_row("total", *(f"{sum(e[k] for e in estimate.values()):,}" for k, _ in DRY_RUN_COLUMNS))
    out.print(table)
    if any(task.startswith("judge:") for task in estimate):
        out.print("Judge requests are known for the pairs whose policy answers are cached; for the answers still to "
                  "come, at most one each is counted.", soft_wrap=True)


def _accounting(acc: dict) -> str:
    """Where every request of a run went: requests = cached + failures replayed + sent + repeats."""
    parts = [f"{acc['cache_hits']} cached"]
    if acc.get("replayed_failures"):
        parts.append(f"{acc['replayed_failures']} failures replayed")
    parts.append(f"{acc['sent']} sent")
    if acc.get("merged"):
        parts.append(f"{acc['merged']} repeats of another request")
    return f"{acc['requests']} requests ({', '.join(parts)})"


@app.command()
def validate(directory: Path = typer.Argument(Path("ipm_prefdial"), help="Build directory."),
             trim_tokenizer: str | None = typer.Option(None, help="Tokenizer to check a trimmed build with, when "
                                                                  "the one it names is not found here.")) -> None:
    """Check a build: schema vs card, ids, splits, the conversion rule, row counts and sha256 vs the manifest."""
    from ipm_prefdial.validate import validate as run_validate

    report = run_validate(directory, trim_tokenizer)
    for note in report.notes:
        err.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
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


@app.command("agreement")
def agreement_command(
    annotations: list[Path] | None = typer.Argument(None, help="Annotation files (JSON lines exported by ipm view: "
                                                               "one line per annotated pair, any annotators)."),
    build_dir: Path = typer.Option(..., "--build", help="Build directory whose judge verdicts are compared."),
    reference: list[Path] | None = typer.Option(None, "--reference", help="Per-reply labels of another judge "
                                                                          "(JSON lines: id, config, reply, error; "
                                                                          "repeatable); one rater named by the "
                                                                          "file's stem unless lines name a rater."),
    json_out: Path | None = typer.Option(None, "--json", help="Write every figure as JSON."),
    markdown: Path | None = typer.Option(None, "--markdown", help="Write every figure as markdown tables."),
) -> None:
    """How far to trust the LLM judge: its error labels vs people's (and another judge's): Cohen's kappas per
    reply and per pair, confusion of labels, disagreeing pairs, and the preference for the gold reply."""
    from ipm_prefdial.agreement import AgreementError, summary_line, tables, to_json, to_markdown
    from ipm_prefdial.agreement import agreement as run_agreement
    from ipm_prefdial.config import ConfigError

    with _exit_codes():
        if not annotations and not reference:
            raise ConfigError("nothing to compare the judge with: pass annotation files (JSON lines exported by "
                              "ipm view) and/or --reference REF.jsonl (another judge's labels)")
        for path, name in ((json_out, "--json"), (markdown, "--markdown")):
            if path is not None and path.is_dir():
                raise ConfigError(f"{name} {path}: a directory, not a file")
    with _exit_codes(AgreementError, OSError):
        result = run_agreement(build_dir, annotations or [], reference or [])
        for table in tables(result):
            out.print(table)
        for warning in result["warnings"]:
            err.print(f"[bold yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)
        for note in result["notes"]:
            out.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
        out.print(summary_line(result), highlight=False, markup=False, soft_wrap=True)
        for path, text, what in ((json_out, to_json, "figures"), (markdown, to_markdown, "markdown")):
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text(result), encoding="utf-8")
                out.print(f"{what} -> {path}", highlight=False, markup=False, soft_wrap=True)


@app.command()
def publish(
    directory: Path = typer.Argument(Path("ipm_prefdial"), help="Build directory."),
    repo_id: str = typer.Option(..., "--repo-id", help="Dataset repo on the Hub, ORG/NAME."),
    private: bool = typer.Option(False, "--private", help="Create the repo private."),
    allow_incomplete: bool = typer.Option(False, "--allow-incomplete", help="Publish a build that is valid but "
                                                                            "incomplete (requests left failed); "
                                                                            "the card says so."),
) -> None:
    """Validate a build, upload it to the Hub as a dataset and tag v<version> (token: HF_TOKEN or hf auth login).
    An invalid or incomplete build is refused (exit code 1)."""
    from ipm_prefdial.publish import PublishError
    from ipm_prefdial.publish import publish as run_publish

    try:
        done = run_publish(directory, repo_id, private=private, allow_incomplete=allow_incomplete)
    except PublishError as exc:
        raise _fail(str(exc), 1) from None
    out.print(f"published {done.repo_id} {done.tag} (commit {done.commit}): {done.url}")
    out.print(f'load it with: load_dataset("{done.repo_id}", "response_pairs", revision="{done.tag}")')


SystemChoice = choice("SystemChoice", ("decoupled", "joint", "rg-gold"))
TrainStageChoice = choice("TrainStageChoice", ("sft", "dpo"))
PairsChoice = choice("PairsChoice", ("retained", "all"))


@app.command()
def view(
    directory: Path = typer.Argument(Path("ipm_prefdial"), help="Build directory."),
    output: Path = typer.Option(Path("view.html"), "-o", "--output",
                                help="The HTML file to write (outside the build)."),
    sample: int | None = typer.Option(None, help="Put a sample of N pairs in the page, stratified by config, gold "
                                                 "strategy and judge outcome (all pairs when not given)."),
    seed: int = typer.Option(0, help="Seed of --sample."),
    annotate: bool = typer.Option(False, "--annotate", help="A page for blind annotation only: the two replies in "
                                                            "an order fixed per pair, no gold or judge marks."),
    tokenizer: str | None = typer.Option(None, help="Tokenizer to count prompt lengths with: bundled, a local "
                                                    "directory or GGUF file, a Hub id, or none (characters / 4). "
                                                    "Default: the build's own when it is the bundled one."),
) -> None:
    """Write one offline HTML page to read, chart and annotate a build (no server; open it in a browser)."""
    from ipm_prefdial.view import ViewError, write_view

    with _exit_codes(ViewError):
        summary = write_view(directory, output, sample=sample, seed=seed, annotate=annotate,
                             tokenizer="auto" if tokenizer is None else None if tokenizer == "none" else tokenizer)
    flagged = ", ".join(f"{name} {n}" for name, n in summary.flags.items() if n) or "none"
    shown = f"{summary.pairs:,} of the build's {summary.of:,} pairs" if summary.of != summary.pairs \
        else f"{summary.pairs:,} pairs"
    out.print(f"wrote {summary.out} ({summary.bytes / 1e6:.1f} MB): {shown} from {summary.dialogues:,} dialogues; "
              f"flags: {flagged}" + ("; annotate mode" if annotate else ""), highlight=False, soft_wrap=True)


ExportChoice = choice("ExportChoice", ("llamafactory", "cso", "openai-jsonl"))


@app.command("export")
def export_command(
    directory: Path = typer.Argument(Path("ipm_prefdial"), help="Build directory."),
    fmt: ExportChoice = typer.Option(..., "--format", help="llamafactory (sharegpt, with dataset_info.json), cso "
                                                           "(CSO's ESC-Pro pair layout; joint pairs) or openai-jsonl "
                                                           "(OpenAI fine-tuning: SFT and preference)."),
    output: Path = typer.Option(..., "-o", "--output", help="Directory to write (new, empty, or an earlier export)."),
    config: list[str] | None = typer.Option(None, "--config", help="Only this config (repeat for more); default: "
                                                                    "every config the format can hold."),
) -> None:
    """Write a build in the layouts other trainers read (LLaMA-Factory, CSO, OpenAI fine-tuning)."""
    from ipm_prefdial.exports import ExportError, export

    with _exit_codes(ExportError, OSError):
        record = export(directory, output, _value(fmt), config or None)
    for name, rows in record["files"].items():
        out.print(f"  {name}: {rows:,} rows", highlight=False)
    out.print(f"wrote {output} ({_value(fmt)}): {len(record['files'])} files, "
              f"{sum(record['files'].values()):,} rows", highlight=False, soft_wrap=True)
    if not record["build"]["complete"]:
        err.print("note: the build is incomplete (manifest.json complete: false); rerun its build to complete it",
                  highlight=False, soft_wrap=True)


@app.command()
def infer(
    data: Path = typer.Option(Path("ipm_prefdial"), help="Build directory (its test split is used)."),
    system: SystemChoice = typer.Option(..., help="decoupled (SP then RG) | joint (VM) | rg-gold (RG with the gold "
                                                  "strategy)."),
    out_file: Path = typer.Option(..., "--out", help="Predictions JSONL to write."),
    run: Path | None = typer.Option(None, help="An `ipm train` run: models at RUN/<sp|rg|vm>/<stage>."),
    stage: TrainStageChoice = typer.Option("dpo", help="Which models of --run: sft | dpo."),
    engine: EngineChoice | None = typer.Option(None, help="local (default) | openai | vllm | transformers (default "
                                                          "with --run or --sp-model etc.)."),
    model: str | None = typer.Option(None, help="One model for every task (default: the engine's)."),
    base_url: str | None = typer.Option(None, help="OpenAI-compatible endpoint (engine openai)."),
    sp_model: str | None = typer.Option(None, help="SP model (decoupled)."),
    rg_model: str | None = typer.Option(None, help="RG model (decoupled, rg-gold)."),
    vm_model: str | None = typer.Option(None, help="VM model (joint)."),
    limit: int | None = typer.Option(None, help="The first N test turns (default: all; 1,792 with the paper's split)."),
    concurrency: int | None = typer.Option(None, help="Requests in flight."),
    cache_dir: str | None = typer.Option(None, help="Request cache directory (default: IPM_CACHE_DIR or the user "
                                                    "cache)."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Neither read nor write the request cache."),
    rg_max_tokens: int = typer.Option(160, help="Answer bound of RG requests."),
    vm_max_tokens: int = typer.Option(192, help="Answer bound of VM requests."),
    executor: ExecutorChoice = typer.Option("local", help="local: this process | ray: engines in Ray actors (as ipm "
                                                          "build)."),
    workers: int = typer.Option(2, help="Ray workers, each owning one engine."),
    worker_cpus: float | None = typer.Option(None, help="CPUs per Ray worker (default: the cluster's shared out, at "
                                                        "most 1)."),
    worker_gpus: float = typer.Option(0.0, help="GPUs per Ray worker."),
    ray_address: str | None = typer.Option(None, help="Ray cluster address (default: RAY_ADDRESS, else local)."),
) -> None:
    """Run a system on the test turns of a build (gold history, greedy decoding); write predictions JSONL."""
    from ipm_prefdial.evaluation.infer import InferConfig, InferError, check_infer
    from ipm_prefdial.evaluation.infer import infer as run_infer
    from ipm_prefdial.progress import progress_bar

    cfg = InferConfig(data=str(data), system=system.value, out=str(out_file), run=str(run) if run else None,
                      stage=stage.value, engine=_value(engine), model=model, base_url=base_url, sp_model=sp_model,
                      rg_model=rg_model, vm_model=vm_model, limit=limit, concurrency=concurrency,
                      cache_dir=cache_dir, no_cache=no_cache, rg_max_tokens=rg_max_tokens,
                      vm_max_tokens=vm_max_tokens, executor=executor.value, workers=workers, worker_cpus=worker_cpus,
                      worker_gpus=worker_gpus, ray_address=ray_address)
    with _exit_codes(InferError, ValueError, RuntimeError, OSError):
        check_infer(cfg)
        with progress_bar(err) as progress:
            summary = run_infer(cfg, progress)
    models = ", ".join(f"{k.upper()} {v}" for k, v in summary["models"].items())
    out.print(f"{summary['rows']} predictions ({summary['trimmed']} trimmed at max_tokens to their last sentence, "
              f"{summary['failed']} without a reply) -> {summary['out']}; {models}; strategy taxonomy "
              f"{summary['taxonomy']}")
    for task, acc in summary["accounting"].items():
        out.print(f"{task.upper()}: {_accounting(acc)}, {acc['completion_tokens']} completion tokens, "
                  f"{acc['wall_s']:.1f} s")
    for pool in summary["ray"]:
        out.print(f"ray {'+'.join(t.upper() for t in pool['tasks'])} ({len(pool['per_worker'])} workers): "
                  + _per_worker(pool["per_worker"]))
    from ipm_prefdial.engines.runner import transient_left

    left = transient_left(summary["accounting"].values())
    if left:
        err.print(f"[bold yellow]incomplete:[/] {sum(left.values())} requests ended in transient failures "
                  f"({', '.join(f'{k} {v}' for k, v in left.items())}): their predictions have no reply. Run "
                  "the same command again to send them again.", highlight=False, soft_wrap=True)
        raise typer.Exit(3)


@app.command("eval")
def evaluate(
    predictions: list[Path] = typer.Option(..., "--predictions", help="Predictions JSONL file(s) (ipm infer's, or "
                                                                       "any with the same fields)."),
    extra: list[Path] | None = typer.Argument(None, help="More predictions files (--predictions A B C)."),
    judge_engine: EngineChoice | None = typer.Option(None, help="Also score replies with an LLM judge on this "
                                                                "engine."),
    judge_model: str | None = typer.Option(None, help="Judge model (default: the engine's)."),
    judge_base_url: str | None = typer.Option(None, help="Judge endpoint (engine openai)."),
    judge_concurrency: int | None = typer.Option(None, help="Judge requests in flight."),
    cache_dir: str | None = typer.Option(None, help="Request cache directory for the judge."),
    json_out: Path | None = typer.Option(None, "--json", help="Write the metrics as JSON (one file: its object; "
                                                              "several: keyed by system)."),
    report: Path | None = typer.Option(None, help="Write report.md and preference.png into this directory."),
    taxonomy: str | None = typer.Option(None, help="The strategy labels: a built-in taxonomy (esconv, extes, mesc, "
                                                   "esc-pro) or a taxonomy YAML file (default: the one each file "
                                                   "records, as ipm infer writes its build's; else ESConv's)."),
) -> None:
    """Strategy metrics (Q, weighted F1, preference p, bias B; lenient and strict), reference metrics (BLEU,
    Distinct, ROUGE-L, F1, length) and optional judge scores of one or more predictions files."""
    import time

    from ipm_prefdial.config import ConfigError, check_range
    from ipm_prefdial.evaluation.evaluate import PredictionsError, label_of, read_predictions, taxonomy_option
    from ipm_prefdial.evaluation.evaluate import evaluate as run_eval
    from ipm_prefdial.progress import progress_bar
    from ipm_prefdial.taxonomy import TaxonomyError

    with _exit_codes(TaxonomyError):  # a name that is neither built in nor a file: 2; a file it cannot use: 1
        given = taxonomy_option(taxonomy) if taxonomy is not None else None
        check_range("concurrency", judge_concurrency, "--judge-concurrency")
        if judge_engine is not None and judge_engine.value == "openai" and not judge_base_url:
            raise ConfigError("--judge-engine openai needs --judge-base-url")
        for path, name in ((json_out, "--json"), (report, "--report")):
            if path is not None and path.exists() and (path.is_dir() if name == "--json" else not path.is_dir()):
                raise ConfigError(f"{name} {path}: {'a directory' if name == '--json' else 'a file'}, not "
                                  f"{'a file' if name == '--json' else 'a directory'}")
    files = [*predictions, *(extra or [])]
    results: dict[str, dict] = {}
    started = time.perf_counter()
    with _exit_codes(PredictionsError, ValueError, RuntimeError, OSError):
        for path in files:
            rows = read_predictions(path, given)
            label = label_of(path, rows)
            if label in results:
                label = f"{label} [{len(results)}]"
            results[label] = run_eval(rows, given)
            if judge_engine:
                from ipm_prefdial.evaluation.judge import judge_scores

                with progress_bar(err) as progress:
                    judged = judge_scores(rows, engine=judge_engine.value, model=judge_model,
                                          base_url=judge_base_url,
                                          cache_dir=cache_dir, concurrency=judge_concurrency, progress=progress)
                results[label]["judge"] = judged["scores"]
                results[label]["judge_details"] = {k: v for k, v in judged.items() if k != "scores"}
    seconds = time.perf_counter() - started
    taxonomies = ", ".join(dict.fromkeys(r["taxonomy"] for r in results.values()))
    table = Table(title=f"ipm eval ({seconds:.1f} s; strategy taxonomy {taxonomies})", title_justify="left")
    table.add_column("metric")
    for label in results:
        table.add_column(label, justify="right")
    from ipm_prefdial.evaluation.report import ROWS, _fmt, _get

    for title, key in ROWS:
        values = [_get(r, key) for r in results.values()]
        if any(v is not None for v in values):
            table.add_row(title, *(_fmt(v) for v in values))
    out.print(table)
    if json_out:
        payload = next(iter(results.values())) if len(results) == 1 else results
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        out.print(f"metrics -> {json_out}")
    if report:
        from ipm_prefdial.evaluation.report import write_report

        paths = write_report(results, report)
        out.print(f"report -> {paths['markdown']}, {paths['chart']}")


@app.command()
def train(
    quick: bool = typer.Option(False, "--quick", help="The laptop preset: SmolLM2-135M, capped data, ~10 min on a "
                                                      "2-core CPU; proves the recipe runs, not that it helps."),
    data: Path | None = typer.Option(None, help="Build directory (default ./ipm_prefdial)."),
    config: Path | None = typer.Option(None, "--config", help="TrainConfig YAML (every knob; see configs/)."),
    arms: str | None = typer.Option(None, help="decoupled,joint (default both): SP+RG and/or VM."),
    pairs: PairsChoice | None = typer.Option(None, help="retained (default): DPO on judge-retained pairs, falling "
                                                        "back to all when too few | all."),
    out_dir: str | None = typer.Option(None, "--out", help="Run directory (default runs/ipm, or runs/quick)."),
    base_model: str | None = typer.Option(None, help="bundled (SmolLM2-135M-Instruct) | a Hub id | a directory."),
    cache_dir: str | None = typer.Option(None, help="Where the bundled model is dequantised (default: the cache)."),
) -> None:
    """SFT then DPO for SP, RG (decoupled) and VM (joint) with TRL, then both systems on test turns."""
    from ipm_prefdial.training.config import TrainConfig, TrainConfigError
    from ipm_prefdial.training.data import TrainDataError
    from ipm_prefdial.training.run import train as run_train

    try:
        cfg = TrainConfig.load(config, quick=quick, data=str(data) if data else None, arms=arms,
                               pairs=_value(pairs), out=out_dir, base_model=base_model)
    except TrainConfigError as exc:
        raise _fail(str(exc), 2) from None
    try:
        metrics = run_train(cfg, log=lambda line: err.print(line, highlight=False, markup=False, soft_wrap=True),
                            cache_dir=cache_dir)
    except (TrainDataError, FileNotFoundError, NotADirectoryError) as exc:
        raise _fail(str(exc), 1) from None
    table = Table(title=f"ipm train -> {cfg.out} ({metrics['seconds']:.0f} s)", title_justify="left")
    for col in ("model", "SFT loss first -> last", "DPO pairs", "held-out pref. acc. before -> after"):
        table.add_column(col)
    for task in cfg.tasks:
        s, d = metrics[task]["sft"], metrics[task]["dpo"]
        table.add_row(task.upper(), f"{s['train_loss_first']:.3f} -> {s['train_loss_last']:.3f}",
                      f"{d['pairs_used']} ({d['pairs_source']})",
                      f"{d['heldout_pref_accuracy_before']:.3f} -> {d['heldout_pref_accuracy_after']:.3f}")
    out.print(table)
    for arm in cfg.arms:
        for stage in ("sft", "dpo"):
            lenient = metrics[arm]["test"][stage]["strategy"]["lenient"]
            out.print(f"{arm} {stage.upper()}: Q {lenient['Q']:.2f}, B {lenient['B']:.3f} "
                      f"({metrics[arm]['test'][stage]['turns']} test turns)")


@app.command("engine-check")
def engine_check(
    engine: EngineChoice = typer.Option("local", help="local | openai | vllm | transformers."),
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
    from ipm_prefdial.config import ConfigError, check_range
    from ipm_prefdial.engines import make_engine
    from ipm_prefdial.engines.check import run_check

    with _exit_codes(ValueError, RuntimeError, OSError):
        check_range("concurrency", concurrency)
        check_range("max_tokens", max_tokens)
        if engine.value == "openai" and not base_url:
            raise ConfigError("--engine openai needs --base-url")
        eng = make_engine(engine.value, model=model, base_url=base_url, concurrency=concurrency)
        stats, startup = run_check(eng, requests, max_tokens, cache_dir, retry_failed, err)
    wall = max(stats.wall_s, 1e-9)
    out.print(f"engine {eng.name} ({eng.display_name}), concurrency {eng.concurrency}, startup {startup:.1f} s")
    out.print(f"requests/s: {stats.requests / wall:.2f}")
    out.print(f"output tokens/s: {stats.completion_tokens / wall:.1f}")
    _print_stats(stats)


def _print_stats(stats) -> None:
    table = Table(title="accounting", title_justify="left", show_header=False)
    for key, value in stats.as_dict().items():
        table.add_row(key, ", ".join(f"{k}: {v}" for k, v in value.items()) or "0" if isinstance(value, dict)
                      else str(value))
    out.print(table)


if __name__ == "__main__":  # python -m ipm_prefdial.cli (e.g. under accelerate launch)
    app()
