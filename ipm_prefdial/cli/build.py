"""``ipm build``, and the Ray build's driver run as a child process the command watches."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import typer

from ipm_prefdial.cli import command, err, out, render, say
from ipm_prefdial.cli.options import from_config
from ipm_prefdial.config import GROUPS, BuildConfig
from ipm_prefdial.errors import IpmError

CONFIG = inspect.Parameter("config", inspect.Parameter.KEYWORD_ONLY, annotation=Path | None,
                           default=typer.Option(None, "--config", help="YAML file with any of these options (keys are "
                                                                       "the option names; the command line wins)."))


@command()
@from_config(BuildConfig, GROUPS, extra=[CONFIG])
def build(values: dict, config: Path | None) -> None:
    """Build the dataset: source -> splits -> SFT configs (-> mined pairs) -> parquet, card, manifest.

    Exit codes: 0 done; 1 bad input (a source record, a refused request); 2 a bad option; 3 finished incomplete
    (requests left failed: run it again); 75 an engine or cluster went away (answers kept: run it again)."""
    cfg = BuildConfig.load(config, **values)
    cfg.check()
    if cfg.executor == "ray" and cfg.stage == "all" and not cfg.dry_run:
        _build_under_supervision(cfg)
    _run_build(cfg)


@command("build-child", hidden=True)
def build_child() -> None:
    """``ipm build --executor ray``'s driver: the checked config on stdin, run in a process the parent watches."""
    import sys

    from ipm_prefdial.executors.supervise import quiet_ray_driver, report_exit

    cfg = BuildConfig(**json.loads(sys.stdin.read()))
    quiet_ray_driver()
    try:
        _run_build(cfg)
    except IpmError as exc:
        report_exit(exc.exit_code)
        raise
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


def _build_under_supervision(cfg: BuildConfig) -> None:
    """Run the Ray build in a child process this one watches (see ``executors.supervise``); ends with its code."""
    import dataclasses

    from ipm_prefdial.executors import supervise
    from ipm_prefdial.paths import cache_root

    root = cache_root(cfg.cache_dir)
    code, line = supervise.run(dataclasses.asdict(cfg), None if cfg.no_cache else root / "requests.sqlite",
                               root / "logs")
    if line:
        say("error", line)
    raise typer.Exit(code)


def _run_build(cfg: BuildConfig) -> None:
    """Build with a checked config and print the summary; the exit code says how it ended."""
    from ipm_prefdial.build import build as run_build

    result = run_build(cfg, console=err)
    if result.dry_run is not None:
        render.dry_run(out, result.dry_run)
        return
    render.build_summary(out, result)
