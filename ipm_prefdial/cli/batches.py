"""``ipm batches``: a build's provider batches, by its request cache: ``list`` them with their counts, ``cancel``
the live ones, ``import`` batch output files (OpenAI's or ``vllm run-batch``'s) into the cache."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import typer

from ipm_prefdial.cli import app, handled, out, say
from ipm_prefdial.errors import ConfigError

batches_app = typer.Typer(name="batches", no_args_is_help=True, help="A build's provider batches (by its request "
                          "cache): list, cancel, import output files.")
app.add_typer(batches_app)
CACHE_DIR = typer.Option(None, "--cache-dir", help="Cache root of the build (default: IPM_CACHE_DIR or the user "
                                                   "cache directory).")


def _cache(cache_dir: str | None):
    from ipm_prefdial.engines.cache import RequestCache
    from ipm_prefdial.paths import cache_root

    path = cache_root(cache_dir) / "requests.sqlite"
    if not path.is_file():
        raise ConfigError(f"{path}: no request cache here (a build's --cache-dir)")
    return RequestCache(path)


@batches_app.command("list")
@handled
def list_command(cache_dir: str | None = CACHE_DIR,
                 live: bool = typer.Option(False, "--live", help="Only the batches still running.")) -> None:
    """Every batch (and exported file) the build recorded: role, provider id, status, lines and counts."""
    from ipm_prefdial.engines.batch_book import LIVE, parts

    with _cache(cache_dir) as cache:
        rows = [p for p in parts(cache) if not live or p["status"] in LIVE]
    out.print(f"{len(rows)} batch parts" + (" still running" if live else ""), highlight=False)
    for p in rows:  # one line each: read by people, found by grep
        counts = json.loads(p["counts"] or "{}")
        made = datetime.fromtimestamp(p["created"], tz=timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        out.print(f"part {p['part']} {p['role']} {p['batch_id'] or '-'} {p['status']}: {p['lines']:,} lines, "
                  f"{counts.get('completed', 0):,} completed, {counts.get('failed', 0):,} failed; made {made}; "
                  f"{p['endpoint']}", highlight=False, soft_wrap=True, markup=False)


@batches_app.command("cancel")
@handled
def cancel_command(cache_dir: str | None = CACHE_DIR,
                   base_url: str | None = typer.Option(None, help="The endpoint (default: the one each batch was sent "
                                                                  "to; the key from OPENAI_API_KEY or "
                                                                  "AZURE_OPENAI_API_KEY)."),
                   header: list[str] | None = typer.Option(None, "--header", help="NAME=VALUE for every call.")
                   ) -> None:
    """Cancel the build's live batches. Lines they have answered are kept by the next build; the others are sent
    again in a new batch when the build is run again."""
    from ipm_prefdial.engines.batch import BatchAPI, status_of
    from ipm_prefdial.engines.batch_book import LIVE, Book, parts
    from ipm_prefdial.engines.breaker import EngineStop
    from ipm_prefdial.engines.openai_http import OpenAIEngine
    from ipm_prefdial.engines.runner import run_coroutine
    from ipm_prefdial.options import parse_headers

    headers = parse_headers(header or [], "--header")
    with _cache(cache_dir) as cache:
        live = [p for p in parts(cache) if p["status"] in LIVE and p["batch_id"]]
        unmade = sum(p["status"] in LIVE and not p["batch_id"] for p in parts(cache))
        if unmade:  # a file uploaded by a build killed before its batch was recorded: the next build settles it
            say("warning", f"{unmade} parts have no batch recorded (a build was stopped meanwhile); run the build "
                           "again to find or make their batches, then cancel")
        if not live:
            out.print("no live batches")
            return

        async def cancel() -> list[tuple[dict, str]]:
            done = []
            for endpoint in dict.fromkeys(p["endpoint"] for p in live):
                engine = OpenAIEngine(base_url or endpoint, "batches", headers=headers)
                api = BatchAPI(engine)
                try:
                    for p in (p for p in live if p["endpoint"] == endpoint):
                        try:
                            status = status_of(await api.cancel(p["batch_id"]))
                        except EngineStop as stop:  # (one that ended meanwhile is refused): the others go on
                            done.append((p, f"not cancelled: {stop}"))
                            continue
                        Book(cache, endpoint).update(p["part"], status=status)
                        done.append((p, status))
                finally:
                    await engine.close()
            return done

        for p, status in run_coroutine(cancel()):
            out.print(f"{p['batch_id']} ({p['role']}, {p['lines']:,} lines): {status}")


@batches_app.command("import")
@handled
def import_command(files: list[Path] = typer.Argument(..., help="Batch output files (JSON lines: OpenAI's output "
                                                               "or error file, vllm run-batch's output)."),
                   cache_dir: str | None = CACHE_DIR) -> None:
    """Read batch output files into the build's cache; then run the build's command again."""
    from ipm_prefdial.engines.batch_book import import_outputs

    for path in files:
        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
    with _cache(cache_dir) as cache:
        counts = import_outputs(cache, files)
    out.print(f"imported {counts['answers']:,} answers and {counts['failures']:,} failures; {counts['resend']:,} "
              f"lines without an answer (sent again by the build); {counts['known']:,} already answered; "
              f"{counts['unknown']:,} not requested by a build of this cache")
    if counts["unknown"] and not (counts["answers"] or counts["failures"]):
        say("warning", "no line of these files belongs to a request this cache wrote out (--batch-export) or sent")
