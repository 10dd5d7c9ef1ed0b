"""Strategy taxonomies: the labels a corpus annotates its supporter turns with, a one-line definition of each (the
system prompts list them), the other spellings its files use, and what an empty label means.

ESConv's eight are the default; ExTES (16), MESC (10) and ESC-Pro (8) ship in ``resources/taxonomies/``; any other
corpus brings a YAML file of the same shape (``--taxonomy FILE.yaml``)::

    name: my-corpus
    empty: skip            # an empty label: a turn not to mine (counted), or `error`
    labels:
      - name: Question
        definition: ask something that helps the seeker say more.
    variants:              # other spellings -> label (case and spacing never matter)
      Questions: Question
    example: "[Question] How have you been sleeping?"   # optional: the joint format's example in the prompts

Matching is case-insensitive and ignores runs of spaces, so variants list only other words.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

import yaml

from ipm_prefdial.errors import InputError

EMPTY_RULES = ("error", "skip")
BUILTIN = ("esconv", "extes", "mesc", "esc-pro")


class TaxonomyError(InputError):
    """A taxonomy file that cannot be used, or a label outside it; the message names the file, field or place."""


def _key(label: str) -> str:
    return " ".join(label.split()).lower()


@dataclass(frozen=True)
class Label:
    name: str
    definition: str


@dataclass(frozen=True)
class Taxonomy:
    name: str
    labels: tuple[Label, ...]
    variants: Mapping[str, str] = field(default_factory=dict, hash=False)  # spelling -> label name
    empty: str = "error"
    example: str | None = None  # "[label] message": the joint prompt's example of its format (optional)

    def __post_init__(self) -> None:
        lookup = {_key(label.name): label.name for label in self.labels}
        object.__setattr__(self, "_names", dict(lookup))
        lookup.update({_key(spelling): name for spelling, name in self.variants.items()})
        object.__setattr__(self, "_lookup", lookup)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)

    def canonical(self, label: str, *, variants: bool = True) -> str | None:
        """The taxonomy's name for ``label`` (any case or spacing, or a listed variant), or None. ``variants=False``
        accepts the label names only: what a model is asked to answer."""
        if not variants:
            return self._names.get(_key(label))  # type: ignore[attr-defined]
        return self._lookup.get(_key(label))  # type: ignore[attr-defined]

    def require(self, label: str, where: str) -> str:
        """``label`` as the taxonomy names it; a TaxonomyError naming ``where`` when it is not one of its labels."""
        name = self.canonical(label)
        if name is None:
            raise TaxonomyError(f"{where}: unknown strategy {label!r} (the {self.name} taxonomy has "
                                f"{len(self.labels)}: {', '.join(self.names)})")
        return name

    def as_dict(self) -> dict:
        """The taxonomy as a build records it in its manifest (``from_manifest`` reads it back)."""
        labels = [{"name": label.name, "definition": label.definition} for label in self.labels]
        out: dict = {"name": self.name, "labels": labels, "variants": dict(self.variants), "empty": self.empty}
        if self.example is not None:
            out["example"] = self.example
        return out

    def example_parts(self) -> tuple[str, str]:
        """(label, message) of the example, or ("", "") without one: the prompts show the joint format with it."""
        if self.example is None:
            return "", ""
        end = self.example.find("]")
        return self.canonical(self.example[1:end]) or "", self.example[end + 1:].strip()

    def listing(self) -> str:
        """One ``- name: definition`` line per label, as the system prompts show them."""
        return "\n".join(f"- {label.name}: {label.definition}" for label in self.labels)


def _text(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise TaxonomyError(f"{where}: must be a non-empty string")
    if "\n" in value.strip():
        raise TaxonomyError(f"{where}: must be one line (it goes into the prompts' list of strategies)")
    return value.strip()


def parse_taxonomy(data: object, source: str) -> Taxonomy:
    """A taxonomy from the YAML mapping ``data``; ``source`` (a file name) opens every error message."""
    if not isinstance(data, dict):
        raise TaxonomyError(f"{source}: expected a mapping with name, labels, variants and empty")
    unknown = sorted(set(data) - {"name", "labels", "variants", "empty", "example"})
    if unknown:
        raise TaxonomyError(f"{source}: unknown field {unknown[0]!r} (a taxonomy has name, labels, variants, empty, "
                            "example)")
    name = _text(data.get("name"), f"{source}: field name")
    raw = data.get("labels")
    if not isinstance(raw, list) or len(raw) < 2:
        raise TaxonomyError(f"{source}: field labels: a list of at least two {{name, definition}} entries")
    labels, seen = [], {}
    for k, entry in enumerate(raw):
        where = f"{source}: labels[{k}]"
        if not isinstance(entry, dict) or set(entry) != {"name", "definition"}:
            raise TaxonomyError(f"{where}: expected exactly name and definition")
        label = Label(_text(entry["name"], f"{where}.name"), _text(entry["definition"], f"{where}.definition"))
        if any(c in label.name for c in "[]()|:"):
            raise TaxonomyError(f"{where}.name: {label.name!r} has a bracket, parenthesis, '|' or ':', which the "
                                "joint format '[strategy] reply', the prompts' 'name: definition' lines or the "
                                "card's tables cannot carry")
        if _key(label.name) in seen:
            raise TaxonomyError(f"{where}.name: {label.name!r} repeats labels[{seen[_key(label.name)]}]")
        seen[_key(label.name)] = k
        labels.append(label)
    names = {_key(label.name): label.name for label in labels}
    variants_raw = data.get("variants") or {}
    if not isinstance(variants_raw, dict):
        raise TaxonomyError(f"{source}: field variants: a mapping of spelling -> label")
    variants = {}
    for spelling, target in variants_raw.items():
        where = f"{source}: variants[{spelling!r}]"
        spelling = _text(spelling, where)
        if _key(_text(target, where)) not in names:
            raise TaxonomyError(f"{where}: {target!r} is not one of the labels")
        if _key(spelling) in names and names[_key(spelling)] != names[_key(target)]:
            raise TaxonomyError(f"{where}: {spelling!r} is itself a label; it cannot also mean {target!r}")
        variants[spelling] = names[_key(target)]
    empty = data.get("empty", "error")
    if empty not in EMPTY_RULES:
        raise TaxonomyError(f"{source}: field empty: {empty!r} (one of {', '.join(EMPTY_RULES)})")
    example = data.get("example")
    if example is not None:
        example = _text(example, f"{source}: field example")
        tag = example[1:example.find("]")] if example.startswith("[") and "]" in example else None
        if tag is None or _key(tag) not in names or not example[example.find("]") + 1:].strip():
            raise TaxonomyError(f"{source}: field example: {example!r} must be '[<one of the labels>] <a message>'")
    return Taxonomy(name, tuple(labels), variants, empty, example)


def load_taxonomy(path: str | Path) -> Taxonomy:
    """A taxonomy file (``--taxonomy FILE.yaml``)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TaxonomyError(f"--taxonomy {path}: no such file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise TaxonomyError(f"--taxonomy {path.name}: cannot read it ({exc})") from None
    return parse_taxonomy(data, path.name)


def from_manifest(manifest: dict, where: str = "manifest.json") -> Taxonomy:
    """The taxonomy a build was made with, as its manifest records it; ESConv's for builds from before taxonomies."""
    recorded = manifest.get("taxonomy")
    if recorded is None:
        return builtin("esconv")
    return parse_taxonomy(recorded, f"{where}: taxonomy")


@cache
def builtin(name: str) -> Taxonomy:
    """One of the taxonomies that ship with the package: esconv, extes, mesc, esc-pro."""
    if name not in BUILTIN:
        raise TaxonomyError(f"no built-in taxonomy {name!r} (one of {', '.join(BUILTIN)})")
    text = resources.files("ipm_prefdial.resources").joinpath("taxonomies", f"{name}.yaml").read_text(encoding="utf-8")
    return parse_taxonomy(yaml.safe_load(text), f"{name}.yaml")
