"""The ``ipm`` command line: thin commands (parse -> config -> call -> render).

- ``build``: ``ipm build`` (and the supervised Ray driver it may start);
- ``data``: the commands over a build: ``validate``, ``view``, ``agreement``, ``publish``, ``export``;
- ``models``: ``train``, ``infer``, ``eval``, ``engine-check``;
- ``batches``: ``batches list|cancel|import`` (a build's provider batches, by its cache);
- ``options``: the Typer options made from the configs' declarations (``ipm_prefdial.options``);
- ``render``: the summaries the commands print.

Errors: every command runs under ``handled``: an error of ours (``errors.IpmError``) is its one line and its exit
code; anything else is a bug, shown with its traceback and one line saying so (exit 1).
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable

import typer
from rich.console import Console
from rich.markup import escape

from ipm_prefdial import __version__
from ipm_prefdial.errors import IpmError

app = typer.Typer(
    name="ipm",
    help="Build IPM-PrefDial (preference data for emotional-support dialogue) and check it.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True)
out = Console()
BUG = ("this is a bug in ipm_prefdial, not a problem with your input or options: please report it with the "
       "traceback above")
STYLE = {"error": "bold red", "incomplete": "bold yellow"}


def say(label: str, line: str) -> None:
    """One line on stderr, introduced by ``label`` (error, incomplete, warning)."""
    err.print(f"[{STYLE.get(label, 'bold yellow')}]{label}:[/] {escape(line)}", highlight=False, soft_wrap=True)


def handled(command: Callable) -> Callable:
    """A command whose errors of ours end it with their line and exit code, and whose bugs show their traceback."""
    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except IpmError as exc:
            say(exc.label, exc.line())
            raise typer.Exit(exc.exit_code) from None
        except (typer.Exit, typer.Abort, typer.BadParameter, KeyboardInterrupt):
            raise
        except Exception:
            err.print(traceback.format_exc(), highlight=False, markup=False, soft_wrap=True, end="")
            say("error", BUG)
            raise typer.Exit(1) from None
    return run


def command(name: str | None = None, **kwargs) -> Callable:
    """``app.command`` for a handled command."""
    def register(function: Callable) -> Callable:
        app.command(name, **kwargs)(handled(function))
        return function
    return register


def _version(value: bool) -> None:
    if value:
        out.print(f"ipm_prefdial {__version__}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit.")) -> None:
    pass


from ipm_prefdial.cli import batches, build, data, models  # noqa: E402, F401 - the commands register themselves
