"""The commands over a build: ``validate``, ``view``, ``agreement``, ``publish``, ``export``."""

from __future__ import annotations

from pathlib import Path

import typer

from ipm_prefdial.cli import command, err, out, render, say
from ipm_prefdial.cli.options import choice
from ipm_prefdial.errors import ConfigError

BUILD_DIR = typer.Argument(Path("ipm_prefdial"), help="Build directory.")
EXPORT_FORMATS = ("llamafactory", "cso", "openai-jsonl")


@command()
def validate(directory: Path = BUILD_DIR,
             trim_tokenizer: str | None = typer.Option(None, help="Tokenizer to check a trimmed build with, when "
                                                                  "the one it names is not found here.")) -> None:
    """Check a build: schema vs card, ids, splits, the conversion rule, row counts and sha256 vs the manifest."""
    from ipm_prefdial.validate import validate as run_validate

    if not render.validation(out, err, directory, run_validate(directory, trim_tokenizer)):
        raise typer.Exit(1)


@command("agreement")
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
    from ipm_prefdial.agreement.figures import agreement
    from ipm_prefdial.agreement.render import summary_line, tables, to_json, to_markdown

    if not annotations and not reference:
        raise ConfigError("nothing to compare the judge with: pass annotation files (JSON lines exported by "
                          "ipm view) and/or --reference REF.jsonl (another judge's labels)")
    for path, name in ((json_out, "--json"), (markdown, "--markdown")):
        if path is not None and path.is_dir():
            raise ConfigError(f"{name} {path}: a directory, not a file")
    result = agreement(build_dir, annotations or [], reference or [])
    for table in tables(result):
        out.print(table)
    for warning in result["warnings"]:
        say("warning", warning)
    for note in result["notes"]:
        out.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    out.print(summary_line(result), highlight=False, markup=False, soft_wrap=True)
    for path, text, what in ((json_out, to_json, "figures"), (markdown, to_markdown, "markdown")):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text(result), encoding="utf-8")
            out.print(f"{what} -> {path}", highlight=False, markup=False, soft_wrap=True)


@command()
def publish(
    directory: Path = BUILD_DIR,
    repo_id: str = typer.Option(..., "--repo-id", help="Dataset repo on the Hub, ORG/NAME."),
    private: bool = typer.Option(False, "--private", help="Create the repo private."),
    allow_incomplete: bool = typer.Option(False, "--allow-incomplete", help="Publish a build that is valid but "
                                                                            "incomplete (requests left failed); "
                                                                            "the card says so."),
) -> None:
    """Validate a build, upload it to the Hub as a dataset and tag v<version> (token: HF_TOKEN or hf auth login).
    An invalid or incomplete build is refused (exit code 1)."""
    from ipm_prefdial.publish import publish as run_publish

    done = run_publish(directory, repo_id, private=private, allow_incomplete=allow_incomplete)
    out.print(f"published {done.repo_id} {done.tag} (commit {done.commit}): {done.url}")
    out.print(f'load it with: load_dataset("{done.repo_id}", "response_pairs", revision="{done.tag}")')


@command()
def view(
    directory: Path = BUILD_DIR,
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
    from ipm_prefdial.view import write_view

    summary = write_view(directory, output, sample=sample, seed=seed, annotate=annotate,
                         tokenizer="auto" if tokenizer is None else None if tokenizer == "none" else tokenizer)
    flagged = ", ".join(f"{name} {n}" for name, n in summary.flags.items() if n) or "none"
    shown = f"{summary.pairs:,} of the build's {summary.of:,} pairs" if summary.of != summary.pairs \
        else f"{summary.pairs:,} pairs"
    out.print(f"wrote {summary.out} ({summary.bytes / 1e6:.1f} MB): {shown} from {summary.dialogues:,} dialogues; "
              f"flags: {flagged}" + ("; annotate mode" if annotate else ""), highlight=False, soft_wrap=True)


@command("export")
def export_command(
    directory: Path = BUILD_DIR,
    fmt: choice(EXPORT_FORMATS) = typer.Option(..., "--format", help="llamafactory (sharegpt, with "  # type: ignore
                                               "dataset_info.json), cso (CSO's ESC-Pro pair layout; joint pairs) or "
                                               "openai-jsonl (OpenAI fine-tuning: SFT and preference)."),
    output: Path = typer.Option(..., "-o", "--output", help="Directory to write (new, empty, or an earlier export)."),
    config: list[str] | None = typer.Option(None, "--config", help="Only this config (repeat for more); default: "
                                                                    "every config the format can hold."),
) -> None:
    """Write a build in the layouts other trainers read (LLaMA-Factory, CSO, OpenAI fine-tuning)."""
    from ipm_prefdial.release.exports import export

    record = export(directory, output, fmt.value, config or None)
    for name, rows in record["files"].items():
        out.print(f"  {name}: {rows:,} rows", highlight=False)
    out.print(f"wrote {output} ({fmt.value}): {len(record['files'])} files, "
              f"{sum(record['files'].values()):,} rows", highlight=False, soft_wrap=True)
    if not record["build"]["complete"]:
        err.print("note: the build is incomplete (manifest.json complete: false); rerun its build to complete it",
                  highlight=False, soft_wrap=True)
