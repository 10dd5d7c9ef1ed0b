"""Turn raw JSON records into Dialogues, collecting every problem with its file, dialogue and field."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from ipm_prefdial.sources import Dialogue, SourceError, Utterance
from ipm_prefdial.taxonomy import Taxonomy, builtin

SEEKER_NAMES = frozenset({"seeker", "usr", "user", "speaker"})  # "speaker": FailedESConv
SUPPORTER_NAMES = frozenset({"supporter", "sys", "assistant", "listener"})  # "listener": FailedESConv


def read_text(path: Path) -> str:
    """File contents as text; bytes that are not UTF-8 survive as lone surrogates so that the record and
    field holding them can be named later (see ``bad_utf8``)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return data.decode("utf-8", errors="surrogateescape")


def bad_utf8(text: str) -> str | None:
    for ch in text:
        if "\udc80" <= ch <= "\udcff":
            return f"not valid UTF-8 (byte 0x{ord(ch) - 0xDC00:02x})"
    return None


def iter_records(text: str, path: Path) -> Iterator[tuple[int, object]]:
    """(index, record) for a JSON list or JSON lines; malformed JSON names the record it breaks in."""
    decoder = json.JSONDecoder()
    n = len(text)

    def skip(i: int) -> int:
        while i < n and text[i] in " \t\r\n\ufeff":
            i += 1
        return i

    i = skip(0)
    if i == n:
        raise SourceError(f"{path}: empty file, expected a JSON list of dialogues or JSON lines")
    if text[i] == "[":  # one JSON list; decode element by element to know where an error is
        i = skip(i + 1)
        index = 0
        if i < n and text[i] == "]":
            return
        while True:
            try:
                record, end = decoder.raw_decode(text, i)
            except json.JSONDecodeError as exc:
                raise SourceError(
                    f"{path}: dialogue {index}: malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
                ) from None
            yield index, record
            index += 1
            i = skip(end)
            if i < n and text[i] == ",":
                i = skip(i + 1)
                continue
            if i < n and text[i] == "]":
                if skip(i + 1) != n:
                    raise SourceError(f"{path}: unexpected data after the closing ']' of the dialogue list")
                return
            line = text.count("\n", 0, i) + 1
            raise SourceError(f"{path}: dialogue {index}: malformed JSON at line {line}: expected ',' or ']'")
    index = 0
    # split on \n only: str.splitlines also breaks at U+2028 and friends, which JSON allows inside strings
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SourceError(
                f"{path}: dialogue {index} (line {lineno}): malformed JSON at column {exc.colno}: {exc.msg}"
            ) from None
        yield index, record
        index += 1


def optional_str(record: dict, key: str, where: str, problems: list[str]) -> str | None:
    value = record.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(f"{where}: field '{key}': expected a string, got {type(value).__name__}")
        return None
    bad = bad_utf8(value)
    if bad:
        problems.append(f"{where}: field '{key}': {bad}")
    return value


def parse_dialogue(record: object, *, path: Path, index: int, dialog_id: int,
                   unknown: Counter, problems: list[str], taxonomy: Taxonomy | None = None,
                   counts: Counter | None = None) -> Dialogue | None:
    """One record -> Dialogue. Problems are appended (never raised) so that a file reports all of them. Labels are
    read with ``taxonomy`` (ESConv's by default); an empty label is a problem unless the taxonomy says such turns are
    not to be mined (then the turn is kept as history, strategy "", and counted in ``counts``)."""
    taxonomy = taxonomy or builtin("esconv")
    counts = counts if counts is not None else Counter()
    empty_labels = 0
    where = f"{path}: dialogue {index}"
    start = len(problems)
    if not isinstance(record, dict):
        problems.append(f"{where}: expected a JSON object, got {type(record).__name__}")
        return None
    dialog = record.get("dialog")
    if dialog is None:
        problems.append(f"{where}: missing field 'dialog'")
        return None
    if not isinstance(dialog, list):
        problems.append(f"{where}: field 'dialog': expected a list of utterances, got {type(dialog).__name__}")
        return None
    utterances: list[Utterance] = []
    for k, turn in enumerate(dialog):
        field = f"dialog[{k}]"
        if not isinstance(turn, dict):
            problems.append(f"{where}: field '{field}': expected an object, got {type(turn).__name__}")
            continue
        speaker = turn.get("speaker")
        raw = turn.get("content", turn.get("text"))
        if not isinstance(raw, str):
            problems.append(f"{where}: field '{field}.content': missing or not a string")
            continue
        bad = bad_utf8(raw)
        if bad:
            problems.append(f"{where}: field '{field}.content': {bad}")
            continue
        text = " ".join(raw.split())
        if not text:
            problems.append(f"{where}: field '{field}.content': empty utterance")
            continue
        if speaker in SEEKER_NAMES:
            utterances.append(Utterance(text, None))
            continue
        if speaker not in SUPPORTER_NAMES:
            problems.append(f"{where}: field '{field}.speaker': unknown speaker {speaker!r}")
            continue
        annotation = turn.get("annotation") if isinstance(turn.get("annotation"), dict) else {}
        label = annotation.get("strategy", turn.get("strategy"))
        key = "annotation.strategy" if "strategy" in annotation or "strategy" not in turn else "strategy"
        if (label is None or (isinstance(label, str) and not label.strip())) and taxonomy.empty == "skip":
            utterances.append(Utterance(text, ""))
            empty_labels += 1
            continue
        if not isinstance(label, str) or not label.strip():
            problems.append(f"{where}: field '{field}.{key}': supporter utterance without a strategy")
            continue
        strategy = taxonomy.canonical(label)
        if strategy is None:
            unknown[label] += 1
            problems.append(f"{where}: field '{field}.{key}': unknown strategy {label!r}")
            continue
        utterances.append(Utterance(text, strategy))
    emotion = optional_str(record, "emotion_type", where, problems)
    problem = optional_str(record, "problem_type", where, problems)
    if len(problems) > start:
        return None
    if not any(u.strategy for u in utterances):
        problems.append(f"{where}: field 'dialog': no supporter utterance"
                        + (" with a strategy" if empty_labels else ""))
        return None
    counts["empty_labels_skipped"] += empty_labels
    return Dialogue(dialog_id, tuple(utterances), emotion, problem)


def unknown_labels_message(unknown: Counter, taxonomy: Taxonomy | None = None) -> str:
    taxonomy = taxonomy or builtin("esconv")
    listed = ", ".join(f"{label!r} ({count})" for label, count in unknown.most_common())
    where = ("synonyms in ipm_prefdial/resources/taxonomies/esconv.yaml" if taxonomy.name == "esconv"
             else f"variants in the {taxonomy.name} taxonomy; --taxonomy FILE.yaml for another")
    return f"unknown strategy labels: {listed}. Known: {', '.join(taxonomy.names)} (case-insensitive; {where})"
