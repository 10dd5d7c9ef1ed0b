"""Typer options made from a config class's declarations (``ipm_prefdial.options``): one option per field, with
its help, choices, range and default in the help text, listed under its group. A command made by ``from_config``
receives the values given on the command line as a mapping (None: not given), ready for ``options.load_config``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from enum import Enum
from typing import Any, Optional

import typer

from ipm_prefdial.options import Declared, declared


@functools.cache
def choice(values: tuple[str, ...]) -> type[Enum]:
    """An enum of option values: ``--help`` lists them and shell completion offers them."""
    name = "Choice_" + "_".join(v.replace("-", "_") for v in values)
    return Enum(name, [(v.replace("-", "_"), v) for v in values], type=str)  # type: ignore[return-value]


def help_text(option: Declared) -> str:
    """The declared help, then the range and the default."""
    notes = []
    if option.spec.range is not None:
        notes.append(option.spec.range.rule())
    if option.default not in (None, False, {}) and not option.spec.required:
        notes.append(f"default {option.default:g}" if isinstance(option.default, float) else
                     f"default {option.default}")
    return option.spec.help + (f" ({'; '.join(notes)})" if notes else "")


def parameter(option: Declared) -> inspect.Parameter:
    """The Typer parameter of one declared option; its value is None when it was not given."""
    if option.spec.choices is not None:
        kind: Any = choice(option.spec.choices)
    elif option.spec.pairs is not None:
        kind = list[str]
    else:
        kind = option.kind
    info = typer.Option(... if option.spec.required else None, option.flag, help=help_text(option),
                        rich_help_panel=option.spec.group, show_default=False, hidden=option.spec.hidden)
    annotation = kind if option.spec.required else Optional[kind]  # noqa: UP045 - Typer reads the annotation
    return inspect.Parameter(option.name, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)


def given(values: dict[str, Any]) -> dict[str, Any]:
    """The command line's values as config values (choices as their strings)."""
    return {name: value.value if isinstance(value, Enum) else value for name, value in values.items()}


def from_config(cls: type, groups: Sequence[str], extra: Sequence[inspect.Parameter] = ()) -> Callable:
    """Decorate ``body(values, **extra)`` into a Typer command with an option per declared field of ``cls``
    (listed by ``groups``, in field order within a group) and the ``extra`` parameters."""
    options = sorted(declared(cls), key=lambda o: groups.index(o.spec.group))
    params = [*(parameter(o) for o in options), *extra]
    names = {o.name for o in options}

    def decorate(body: Callable) -> Callable:
        @functools.wraps(body)
        def command(**kwargs: Any) -> Any:
            values = given({k: v for k, v in kwargs.items() if k in names})
            return body(values, **{k: v for k, v in kwargs.items() if k not in names})

        command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        command.__annotations__ = {p.name: p.annotation for p in params}
        del command.__wrapped__  # Typer reads the signature above, not the body's
        return command
    return decorate
