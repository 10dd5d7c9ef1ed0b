"""Declaring an option once: its config field holds the type (the annotation), the default, the range or choices,
the help text and the group it is listed under. From that one declaration come the command line (``cli.options``
makes the Typer options), the checks of values from the command line and from YAML files (``check_options``,
``load_config``) and the names used in messages (``flag``).

A config class is a dataclass whose fields are made with ``option(...)``::

    @dataclass
    class Sampling:
        temperature: float = option(0.7, "Policy temperature.", group=ENGINES, range=(0, 2))
"""

from __future__ import annotations

import dataclasses
import functools
import re
import types
import typing
from collections.abc import Callable
from dataclasses import MISSING, dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from ipm_prefdial.errors import ConfigError

HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # an HTTP token (RFC 9110)


@dataclass(frozen=True)
class Range:
    """Where a number may lie: at least ``low`` (above it when ``open_low``), at most ``high``."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False

    def holds(self, value: float) -> bool:
        low, high = self.low, self.high
        return not ((low is not None and (value <= low if self.open_low else value < low))
                    or (high is not None and value > high))

    def rule(self) -> str:
        if self.high is None:
            return f"above {self.low:g}" if self.open_low else f"at least {self.low:g}"
        return f"above {self.low:g} and at most {self.high:g}" if self.open_low else \
            f"between {self.low:g} and {self.high:g}"


@dataclass(frozen=True)
class Spec:
    """What a field's ``option(...)`` declares besides its type and default."""

    help: str
    group: str
    range: Range | None = None
    choices: tuple[str, ...] | None = None
    flags: tuple[str, ...] = ()  # command-line names; default: --field-name
    pairs: str | None = None  # a mapping given as repeated KEY=VALUE: "settings" (YAML scalars) or "headers"
    required: bool = False  # on the command line
    hidden: bool = False  # not listed by --help


def option(default: Any = MISSING, help: str = "", *, group: str, range: tuple | Range | None = None,
           choices: tuple[str, ...] | None = None, flags: tuple[str, ...] = (), pairs: str | None = None,
           required: bool = False, hidden: bool = False) -> Any:
    """A config field declared as an option. ``range`` is ``(low, high)`` or ``(low, high, open_low)``; a mapping
    (``pairs``) defaults to an empty dict."""
    if isinstance(range, tuple):
        range = Range(*range)
    spec = Spec(" ".join(help.split()), group, range, choices, flags, pairs, required, hidden)
    if pairs is not None:
        return dataclasses.field(default_factory=dict, metadata={"option": spec})
    return dataclasses.field(default=default, metadata={"option": spec})


@dataclass(frozen=True)
class Declared:
    """One declared option of a config class."""

    name: str
    kind: type  # str, int, float, bool or dict (the annotation without its None)
    optional: bool  # None is a value (unset)
    default: Any
    spec: Spec

    @property
    def flag(self) -> str:
        return self.spec.flags[0] if self.spec.flags else flag(self.name)


@functools.cache
def declared(cls: type) -> tuple[Declared, ...]:
    """The options of a config class, in field order."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in fields(cls):
        spec = f.metadata.get("option")
        if spec is None:
            continue
        kind, optional = _kind(hints[f.name])
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        out.append(Declared(f.name, kind, optional, default, spec))
    return tuple(out)


def _kind(hint: Any) -> tuple[type, bool]:
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return _kind(rest[0])[0], True
    return (typing.get_origin(hint) or hint), False


def flag(name: str) -> str:
    """The command-line name of a field: ``--give-up-after`` for ``give_up_after``."""
    return "--" + name.replace("_", "-")


KIND_WORDS = {int: "a whole number", float: "a number", bool: "true or false", dict: "a mapping", str: "a string"}


def check_type(option: Declared, value: object, where: str) -> None:
    """A value of the wrong kind (``concurrency: many`` in a YAML file) is named before anything runs."""
    if value is None:
        return
    kind = option.kind
    if kind is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, kind)
    if not ok:
        raise ConfigError(f"{where}: expected {KIND_WORDS[kind]}, got {value!r}")


def check_range(option: Declared, value: float | None, label: str | None = None) -> None:
    """``value`` within the option's range, else a ``ConfigError`` naming ``label`` (default: its flag)."""
    check_bounds(option.spec.range, value, label or option.flag)


def check_bounds(bounds: Range | None, value: float | None, label: str) -> None:
    """``value`` within ``bounds``, else a ``ConfigError`` naming ``label``."""
    if value is None or bounds is None or isinstance(value, bool) or bounds.holds(value):
        return
    raise ConfigError(f"{label} must be {bounds.rule()}, not {value!r}")


def check_options(cfg: object) -> None:
    """Every declared option of a config: choices and ranges (types are checked where values are read)."""
    for opt in declared(type(cfg)):
        value = getattr(cfg, opt.name)
        if opt.spec.choices is not None and value is not None and value not in opt.spec.choices:
            raise ConfigError(f"{opt.flag} must be one of {', '.join(opt.spec.choices)}, not {value!r}")
        check_range(opt, value)
        if opt.kind is dict and (not isinstance(value, dict) or not all(isinstance(k, str) for k in value)):
            raise ConfigError(f"{opt.name}: expected a mapping of {opt.spec.pairs} (e.g. "
                              f"{'X-Team: research' if opt.spec.pairs == 'headers' else 'max_num_seqs: 64'})")
        if opt.spec.pairs == "headers":
            check_headers(opt, value)


def find(cls: type, name: str) -> Declared:
    return next(opt for opt in declared(cls) if opt.name == name)


def read_mapping(path: str | Path, error: type[Exception] = ConfigError) -> dict:
    """A YAML config file's mapping (an empty file: {}), or ``error`` with one line naming the file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise error(f"{path}: cannot read the config: {exc}") from None
    if not isinstance(data, dict):
        raise error(f"{path}: expected a mapping of option names to values")
    return data


def load_config(cls: type, yaml_path: str | Path | None = None, given: dict | None = None):
    """Defaults, then the YAML file, then every value given on the command line that is not None (a mapping given
    as KEY=VALUE pairs is merged over the file's)."""
    values: dict = {}
    options = {opt.name: opt for opt in declared(cls)}
    if yaml_path is not None:
        path = Path(yaml_path)
        data = unnest(cls, read_mapping(path), path)
        for key, value in data.items():
            name = str(key).replace("-", "_")
            if name not in options:
                raise ConfigError(f"{path}: unknown option {key!r}; known: {', '.join(sorted(options))}")
            values[name] = value
        for key, value in values.items():
            check_type(options[key], value, f"{path}: {key}")
    for name, value in (given or {}).items():
        if value is None:
            continue
        if options[name].spec.pairs is not None:
            value = {**values.get(name, {}), **parse_pairs(options[name], value)}
        values[name] = value
    return cls(**values)


def unnest(cls: type, data: dict, path: Path) -> dict:
    """A YAML config's sections (``cls.nested``: section -> {key: option name, or a sub-section}) as flat options:
    ``prices: {input: 2.5, judge: {input: 1}}`` gives ``price_input`` and ``judge_price_input``."""
    out = dict(data)
    for section, names in getattr(cls, "nested", {}).items():
        if section not in out:
            continue
        value = out.pop(section)

        def flatten(value, names: dict, where: str) -> None:
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: {where}: expected a mapping of {', '.join(names)}")
            for key, item in value.items():
                if key not in names:
                    raise ConfigError(f"{path}: {where}: unknown key {key!r}; known: {', '.join(names)}")
                if isinstance(names[key], dict):
                    flatten(item, names[key], f"{where}.{key}")
                else:
                    out[names[key]] = item
        flatten(value, names, section)
    return out


def parse_pairs(option: Declared, items: list[str] | dict) -> dict:
    """A mapping option's ``KEY=VALUE`` strings as a mapping (already a mapping: as it is)."""
    if isinstance(items, dict):
        return items
    parse: Callable[[list[str], str], dict] = parse_headers if option.spec.pairs == "headers" else parse_settings
    return parse(items, option.flag)


def parse_settings(items: list[str], flag_name: str) -> dict:
    """``KEY=VALUE`` strings as a mapping; values read as YAML scalars (``64`` is an int, ``true`` a bool)."""
    out: dict = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{flag_name} {item!r}: expected KEY=VALUE")
        try:
            out[key.strip().replace("-", "_")] = yaml.safe_load(value) if value.strip() else ""
        except yaml.YAMLError:
            out[key.strip().replace("-", "_")] = value
    return out


def parse_headers(items: list[str], flag_name: str) -> dict[str, str]:
    """``--header KEY=VALUE`` values as a mapping, header names checked (the values are never echoed)."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key or not HEADER_NAME.fullmatch(key):
            shown = key if HEADER_NAME.fullmatch(key or "-") else "..."
            raise ConfigError(f"{flag_name} {shown}=...: expected NAME=VALUE with a header name of letters, digits "
                              "and -")
        out[key] = value.strip()
    return out


def check_headers(option: Declared, headers: dict) -> None:
    for key, value in headers.items():
        if not isinstance(key, str) or not HEADER_NAME.fullmatch(key) or not isinstance(value, str) \
                or "\n" in value or "\r" in value:
            raise ConfigError(f"{flag(option.name)}: header {str(key)!r} needs a name of letters, digits and - and a "
                              "one-line string value")
