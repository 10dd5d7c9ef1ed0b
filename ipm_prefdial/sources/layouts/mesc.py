"""MESC (Chu et al., 2024): the upstream split files and ``MESC.csv`` with the clean utterances; 10 strategies."""

from __future__ import annotations

import csv
import io
import re
from collections import Counter
from pathlib import Path

from ipm_prefdial.sources import LoadedSource, SourceError, Utterance
from ipm_prefdial.sources.layouts.common import Layout, Parsed, ParseState, SourceFile, assemble, sha256_of
from ipm_prefdial.sources.records import SEEKER_NAMES, SUPPORTER_NAMES, iter_records, optional_str, read_text
from ipm_prefdial.taxonomy import Taxonomy

LAYOUT = Layout("mesc", "dialog", ("descriptions_stripped", "csv_matched", "csv_unmatched"))
# chuyq/MESC ships its splits as JSON lists (train/val/test.json) and the same records as JSON lines (*.txt).
MESC_SPLITS = (("train", "train"), ("validation", "val"), ("test", "test"))
MESC_CSV = "MESC.csv"
MESC_SINGLE = "MESC.json"

# MESC's JSON glues a machine-written video description after each utterance, separated by whitespace only. It
# always starts "The speaker ..." or "The emotion state of the speaker ..." (all 5,636 turns of val/test.json;
# no utterance of MESC.csv contains "The speaker"); the text is cut at its first occurrence.
MESC_DESCRIPTION = re.compile(r"\s+The (?:speaker|emotion state of the speaker)\b")


def load(path: Path, taxonomy: Taxonomy, on_invalid: str) -> LoadedSource:
    """chuyq/MESC: ``train.json``/``val.json``/``test.json`` (JSON lists; the ``.txt`` files hold the same records
    as JSON lines), each dialogue ``{"problem_type", "situation", "dialog": [{"text", "speaker": "user"|"sys",
    "emotion", "strategy"}]}``, plus ``MESC.csv`` with the clean utterances (one row per turn: Utterance, Speaker
    Client/Therapist, Strategy, Dialogue_ID, Utterance_ID, ...).

    A directory with the three split files gives the upstream split (dialog_id in file order train, val, test); a
    single file (any of them, or MESC.json) gives no split. Each JSON turn is its utterance followed by a video
    description. With ``MESC.csv`` next to the JSON, a dialogue takes its text from the CSV dialogue (the rows of one
    Dialogue_ID, in file order) that has the same number of turns, the same speakers in order (user = Client,
    sys = Therapist) and whose every utterance begins its JSON turn (whitespace-normalised); the first such dialogue
    wins (every val/test dialogue matches exactly one). A dialogue with no match, or any dialogue without the CSV,
    has the description cut at ``MESC_DESCRIPTION``."""
    info: dict = {"source": "mesc", "layout": "mesc"}
    given: dict[str, list[int]] | None = None
    if path.is_dir():
        directory = path
        for ext in ("json", "txt"):
            names = [f"{stem}.{ext}" for _, stem in MESC_SPLITS]
            if all((directory / n).is_file() for n in names):
                files = [directory / n for n in names]
                break
        else:
            if not (directory / MESC_SINGLE).is_file():
                missing = [f"{stem}.json" for _, stem in MESC_SPLITS if not (directory / f"{stem}.json").is_file()]
                raise SourceError(f"{directory}: a directory without MESC's train.json, val.json and test.json "
                                  f"(missing: {', '.join(missing)}) or {MESC_SINGLE}")
            files = [directory / MESC_SINGLE]
    else:
        directory, files = path.parent, [path]
    texts = {f: read_text(f) for f in files}
    records: list[tuple[SourceFile, int, int, object]] = []
    if len(files) == 1:
        f = files[0]
        info.update(file=f.name, sha256=sha256_of(texts[f]))
        records = [(SourceFile(str(f), f.name), i, i, rec) for i, rec in iter_records(texts[f], f)]
    else:
        given = {}
        info.update(file=directory.name, files=[f.name for f in files],
                    sha256={f.name: sha256_of(texts[f]) for f in files},
                    dialog_id="file order train, val, test")
        for (split, _), f in zip(MESC_SPLITS, files, strict=True):
            start = len(records)
            records += [(SourceFile(str(f), f.name), i, start + i, rec) for i, rec in iter_records(texts[f], f)]
            given[split] = list(range(start, len(records)))
    csv_path = directory / MESC_CSV
    index = None
    if csv_path.is_file():
        csv_text = read_text(csv_path)
        index = _mesc_csv_index(csv_text, csv_path)
        info["csv"] = {"file": MESC_CSV, "sha256": sha256_of(csv_text)}
    info["text"] = f"{MESC_CSV} where a dialogue matches, else the JSON text with the video description cut" \
        if index is not None else "the JSON text with the video description cut"

    def parse(record: object, where: str, p: ParseState, local: Counter) -> Parsed | None:
        return _parse_mesc(record, where, p, local, index)

    loaded = assemble(records, LAYOUT, parse, taxonomy, on_invalid, info)
    loaded.given_split = given
    return loaded


CsvIndex = dict[tuple[int, tuple[bool, ...]], list[list[tuple[str, int]]]]


def _mesc_csv_index(text: str, path: Path) -> CsvIndex:
    """MESC.csv's dialogues keyed by (number of turns, speakers: True for the therapist), each a list of
    (normalised utterance, CSV line)."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff"), newline=""))
    missing = [c for c in ("Utterance", "Speaker", "Dialogue_ID") if c not in (reader.fieldnames or [])]
    if missing:
        raise SourceError(f"{path}: missing column {', '.join(repr(c) for c in missing)} (MESC.csv has "
                          "Utterance, Speaker, Emotion, Strategy, Dialogue_ID, Utterance_ID, ...)")
    dialogues: dict[str, list[tuple[str | None, str, int]]] = {}
    try:
        for row in reader:
            speaker = (row.get("Speaker") or "").strip().lower()
            role = {"client": "seeker", "therapist": "supporter"}.get(speaker)
            dialogues.setdefault(row.get("Dialogue_ID") or "", []).append(
                (role, " ".join((row.get("Utterance") or "").split()), reader.line_num))
    except csv.Error as exc:
        raise SourceError(f"{path}: line {reader.line_num}: malformed CSV: {exc}") from None
    index: CsvIndex = {}
    for rows in dialogues.values():
        if any(role is None or not utt for role, utt, _ in rows):
            continue  # a speaker other than Client/Therapist or an empty utterance: never a match
        key = (len(rows), tuple(role == "supporter" for role, _, _ in rows))
        index.setdefault(key, []).append([(utt, line) for _, utt, line in rows])
    return index


def _parse_mesc(record: object, where: str, p: ParseState, local: Counter, index: CsvIndex | None) -> Parsed | None:
    if not isinstance(record, dict):
        p.problems.append(f"{where}: expected a JSON object, got {type(record).__name__}")
        return None
    dialog = record.get("dialog")
    if not isinstance(dialog, list):
        got = "missing field 'dialog'" if dialog is None else \
            f"field 'dialog': expected a list of utterances, got {type(dialog).__name__}"
        p.problems.append(f"{where}: {got}")
        return None
    start = len(p.problems)
    turns: list[tuple[str, str | None]] = []  # (whitespace-normalised JSON text, strategy or None)
    for k, turn in enumerate(dialog):
        key = f"dialog[{k}]"
        if not isinstance(turn, dict):
            p.problems.append(f"{where}: field '{key}': expected an object, got {type(turn).__name__}")
            continue
        raw = p.text(turn.get("text"), where, f"{key}.text")
        speaker = turn.get("speaker")
        if speaker in SEEKER_NAMES:
            strategy = None
        elif speaker in SUPPORTER_NAMES:
            strategy = p.label(turn.get("strategy"), where, f"{key}.strategy", local)
            if strategy is None:
                continue
        else:
            p.problems.append(f"{where}: field '{key}.speaker': unknown speaker {speaker!r}")
            continue
        if raw is not None:
            turns.append((raw, strategy))
    if len(p.problems) > start:
        return None
    texts = _mesc_csv_texts(turns, index)
    if index is not None:
        local["csv_matched" if texts is not None else "csv_unmatched"] += 1
    if texts is None:
        texts = [MESC_DESCRIPTION.split(raw, maxsplit=1)[0] for raw, _ in turns]
    local["descriptions_stripped"] += sum(text != raw for text, (raw, _) in zip(texts, turns, strict=True))
    utterances = [Utterance(text, strategy) for text, (_, strategy) in zip(texts, turns, strict=True)]
    problem = optional_str(record, "problem_type", where, p.problems)
    return utterances, problem, None


def _mesc_csv_texts(turns: list[tuple[str, str | None]], index: CsvIndex | None) -> list[str] | None:
    if not index:
        return None
    key = (len(turns), tuple(strategy is not None for _, strategy in turns))
    for rows in index.get(key, ()):
        if all(raw.startswith(utt) for (raw, _), (utt, _) in zip(turns, rows, strict=True)):
            return [utt for utt, _ in rows]
    return None
