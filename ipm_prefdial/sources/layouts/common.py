"""What the readers of the corpora in their own layouts share: the file being read, the problems and counts
collected across its dialogues, and the assembly of the parsed dialogues into a ``LoadedSource``."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ipm_prefdial.sources import Dialogue, LoadedSource, SourceError, Utterance
from ipm_prefdial.sources.records import bad_utf8, unknown_labels_message
from ipm_prefdial.taxonomy import Taxonomy


@dataclass(frozen=True)
class Layout:
    """A corpus's layout: its name, the field that holds a dialogue's utterances (named in problems), and the counts
    of what its reader met that only this layout has (always recorded, 0 when nothing happened)."""

    name: str
    content_key: str
    counts: tuple[str, ...] = ()


@dataclass
class SourceFile:
    """One file being read: ``shown`` opens its problem messages (the path as given), ``name`` replaces it in the
    skipped list (no path of this machine is recorded)."""

    shown: str
    name: str


@dataclass
class ParseState:
    """What parsing one corpus collects across its dialogues."""

    taxonomy: Taxonomy
    problems: list[str] = field(default_factory=list)
    unknown: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)

    def label(self, raw: object, where: str, key: str, local: Counter) -> str | None:
        """A supporter turn's strategy: the taxonomy's name, "" for an empty label the taxonomy skips (counted in
        ``local``), or None after recording a problem."""
        if (raw is None or (isinstance(raw, str) and not raw.strip())) and self.taxonomy.empty == "skip":
            local["empty_labels_skipped"] += 1
            return ""
        if not isinstance(raw, str) or not raw.strip():
            self.problems.append(f"{where}: field '{key}': supporter utterance without a strategy")
            return None
        name = self.taxonomy.canonical(raw)
        if name is None:
            self.unknown[raw] += 1
            self.problems.append(f"{where}: field '{key}': unknown strategy {raw!r}")
        return name

    def text(self, raw: object, where: str, key: str) -> str | None:
        """A whitespace-normalised, non-empty text, or None after recording a problem."""
        if not isinstance(raw, str):
            got = "missing" if raw is None else f"expected a string, got {type(raw).__name__}"
            self.problems.append(f"{where}: field '{key}': {got}")
            return None
        bad = bad_utf8(raw)
        if bad:
            self.problems.append(f"{where}: field '{key}': {bad}")
            return None
        text = " ".join(raw.split())
        if not text:
            self.problems.append(f"{where}: field '{key}': empty utterance")
            return None
        return text


# A layout's dialogue parser: (record, where, parse, local counts) -> (utterances, problem_type, emotion_type) or
# None when it recorded problems.
Parsed = tuple[list[Utterance], str | None, str | None]
Parser = Callable[[object, str, ParseState, Counter], "Parsed | None"]


def assemble(records: list[tuple[SourceFile, int, int, object]], layout: Layout, parser: Parser, taxonomy: Taxonomy,
              on_invalid: str, info: dict) -> LoadedSource:
    """Parse every record: the dialogues kept, the skipped ones (with on_invalid="skip") and the counts; or one
    SourceError with every problem."""
    p = ParseState(taxonomy)
    dialogues: list[Dialogue] = []
    skipped: list[dict] = []
    for file, index, dialog_id, record in records:
        where = f"{file.shown}: dialogue {index}"
        start, local = len(p.problems), Counter()
        parsed = parser(record, where, p, local)
        if parsed is not None and len(p.problems) == start:
            utterances, problem_type, emotion_type = parsed
            if any(u.strategy for u in utterances):
                dialogues.append(Dialogue(dialog_id, tuple(utterances), emotion_type, problem_type))
                p.counts.update(local)
                p.counts["same_speaker_runs"] += same_speaker_runs(utterances)
                continue
            if local["empty_labels_skipped"] and taxonomy.empty == "skip":
                # only greetings and closings: nothing to mine, which the taxonomy allows; dropped and counted
                p.counts["dialogues_without_labelled_turns"] += 1
                continue
            p.problems.append(f"{where}: field '{layout.content_key}': no supporter utterance"
                              + (" with a strategy" if local["empty_labels_skipped"] else ""))
        if on_invalid == "skip":  # recorded in the manifest: the file by name, not by path
            skipped.append({"dialog_id": dialog_id,
                            "problems": [q.replace(file.shown, file.name, 1) for q in p.problems[start:]]})
    if p.problems and on_invalid != "skip":
        if p.unknown:
            p.problems.insert(0, unknown_labels_message(p.unknown, taxonomy))
        raise SourceError(p.problems)
    counts = {"dialogues": len(dialogues),
              "supporter_turns": sum(1 for d in dialogues for u in d.utterances if u.strategy),
              "empty_labels_skipped": p.counts["empty_labels_skipped"],
              "same_speaker_runs": p.counts["same_speaker_runs"],
              "dialogues_without_labelled_turns": p.counts["dialogues_without_labelled_turns"]}
    counts.update({name: p.counts[name] for name in layout.counts})
    return LoadedSource(dialogues, info, None, skipped, counts)


def same_speaker_runs(utterances: list[Utterance]) -> int:
    """Runs of two or more consecutive utterances of the same side (seeker, supporter)."""
    runs, previous, length = 0, None, 0
    for u in utterances:
        length = length + 1 if u.supporter == previous else 1
        previous = u.supporter
        runs += length == 2
    return runs


def read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def sha256_of(data: bytes | str) -> str:
    """The digest of a file's bytes; text from ``read_text`` is turned back into exactly those bytes."""
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogateescape")
    return hashlib.sha256(data).hexdigest()
