"""Corpora in their own layouts: ExTES, MESC and ESC-Pro, read into the same Dialogue records as ESConv.

Every reader collects all problems of a file, each naming the file, the dialogue (its index in that file) and the
field, as ``records.py`` does for ESConv; with ``on_invalid="skip"`` a bad dialogue is dropped and listed in
``skipped`` instead. ``dialog_id`` is the index in the corpus's original order (skipped dialogues leave a gap).
Texts are whitespace-normalised; labels are read with the taxonomy (its variants and empty-label rule).

Counts (always present, 0 when nothing happened), over the dialogues kept:

- ``dialogues``, ``supporter_turns`` (supporter turns with a label: the turns a build makes samples of);
- ``empty_labels_skipped``: supporter turns with an empty label kept as history (strategy "") because the taxonomy
  says ``empty: skip`` (ExTES's greetings and closings);
- ``same_speaker_runs``: runs of two or more consecutive utterances of one side (kept as separate utterances; the
  conversion merges them);
- ExTES: ``ai_objects``, replies whose ``AI`` value is an object rather than a string;
- MESC: ``descriptions_stripped`` (turns whose text lost the glued video description), ``csv_matched`` and
  ``csv_unmatched`` (dialogues whose clean text came from ``MESC.csv``, or not found there when it was present);
- ESC-Pro: ``negatives``, the non-preferred replies kept on their supporter turns.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePath

from ipm_prefdial.sources import Dialogue, LoadedSource, SourceError, Utterance
from ipm_prefdial.sources.records import (
    SEEKER_NAMES,
    SUPPORTER_NAMES,
    _bad_utf8,
    _optional_str,
    iter_records,
    read_text,
    unknown_labels_message,
)
from ipm_prefdial.taxonomy import Taxonomy

LAYOUTS = ("extes", "mesc", "esc-pro")

EXTES_FILE, EXTES_ZIP = "ExTES.json", "ExTES.zip"
# chuyq/MESC ships its splits as JSON lists (train/val/test.json) and the same records as JSON lines (*.txt).
MESC_SPLITS = (("train", "train"), ("validation", "val"), ("test", "test"))
MESC_CSV = "MESC.csv"
MESC_SINGLE = "MESC.json"
# The Hub dataset's file name is not pinned here: these names first, else the directory's only JSON/JSONL file.
ESC_PRO_FILES = ("ESC-Pro.json", "ESC-Pro.jsonl", "esc-pro.json", "esc_pro.json")

# MESC's JSON glues a machine-written video description after each utterance, separated by whitespace only. It
# always starts "The speaker ..." or "The emotion state of the speaker ..." (all 5,636 turns of val/test.json;
# no utterance of MESC.csv contains "The speaker"); the text is cut at its first occurrence.
MESC_DESCRIPTION = re.compile(r"\s+The (?:speaker|emotion state of the speaker)\b")

LAYOUT_COUNTS = {
    "extes": ("ai_objects",),
    "mesc": ("descriptions_stripped", "csv_matched", "csv_unmatched"),
    "esc-pro": ("negatives",),
}


@dataclass
class _File:
    """One file being read: ``shown`` opens its problem messages (the path as given), ``name`` replaces it in the
    skipped list (no path of this machine is recorded)."""

    shown: str
    name: str


@dataclass
class _Parse:
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
        bad = _bad_utf8(raw)
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
Parser = Callable[[object, str, _Parse, Counter], "Parsed | None"]


def load_layout(layout: str, path: Path, taxonomy: Taxonomy, on_invalid: str = "error") -> LoadedSource:
    """Read ``path`` (a file, a directory holding the corpus's usual file names, or for ExTES a zip) in ``layout``.

    Problems raise one SourceError listing all of them (unknown labels summarised first) unless ``on_invalid`` is
    "skip", which drops the bad dialogues and lists them in ``skipped``."""
    if layout not in LAYOUTS:
        raise SourceError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")
    if on_invalid not in ("error", "skip"):
        raise SourceError(f"on_invalid must be 'error' or 'skip', not {on_invalid!r}")
    path = Path(path)
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    reader = {"extes": _load_extes, "mesc": _load_mesc, "esc-pro": _load_esc_pro}[layout]
    return reader(path, taxonomy, on_invalid)


# ---------------------------------------------------------------------------------------------------- ExTES


def _load_extes(path: Path, taxonomy: Taxonomy, on_invalid: str) -> LoadedSource:
    if path.is_dir():
        for name in (EXTES_FILE, EXTES_ZIP):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise SourceError(f"{path}: a directory without {EXTES_FILE} or {EXTES_ZIP}")
    info: dict = {"source": "extes", "file": path.name, "layout": "extes"}
    if zipfile.is_zipfile(path):
        info["sha256"] = _sha256(_read_bytes(path))
        member, data = _zip_member(path, EXTES_FILE)
        info.update(member=member, member_sha256=_sha256(data))
        text = data.decode("utf-8", errors="surrogateescape")
        file = _File(f"{path}:{member}", f"{path.name}:{member}")
    else:
        text = read_text(path)
        info["sha256"] = _sha256(text)
        file = _File(str(path), path.name)
    records = [(file, i, i, rec) for i, rec in iter_records(text, PurePath(file.shown))]
    return _assemble(records, "extes", _parse_extes, taxonomy, on_invalid, info)


def _zip_member(path: Path, name: str) -> tuple[str, bytes]:
    """The one member of the zip whose file name is ``name`` (any folder, any case; macOS's __MACOSX copies
    ignored): its name and bytes."""
    try:
        with zipfile.ZipFile(path) as archive:
            found = [m for m in archive.namelist() if PurePath(m).name.lower() == name.lower()
                     and not m.startswith("__MACOSX/")]
            if len(found) != 1:
                what = "no" if not found else f"{len(found)} members named"
                raise SourceError(f"{path}: {what} {name} inside the zip"
                                  + (f" ({', '.join(found)})" if found else ""))
            return found[0], archive.read(found[0])
    except (zipfile.BadZipFile, OSError, RuntimeError) as exc:
        raise SourceError(f"{path}: cannot read the zip: {exc}") from None


def _parse_extes(record: object, where: str, p: _Parse, local: Counter) -> Parsed | None:
    """``{"scene", "description", "content": [{"User": text} | {"AI Strategy": label, "AI": reply}]}``. The key
    names the speaker; an item holding both ``User`` and ``AI`` gives both, in its key order. ``AI`` may be an object
    holding the reply under ``Response`` or ``AI`` (and maybe its ``AI Strategy``)."""
    if not isinstance(record, dict):
        p.problems.append(f"{where}: expected a JSON object, got {type(record).__name__}")
        return None
    content = record.get("content")
    if not isinstance(content, list):
        got = "missing field 'content'" if content is None else \
            f"field 'content': expected a list of utterances, got {type(content).__name__}"
        p.problems.append(f"{where}: {got}")
        return None
    utterances: list[Utterance] = []
    for k, item in enumerate(content):
        key = f"content[{k}]"
        if not isinstance(item, dict):
            p.problems.append(f"{where}: field '{key}': expected an object, got {type(item).__name__}")
            continue
        speakers = [name for name in item if name in ("User", "AI")]
        if not speakers:
            p.problems.append(f"{where}: field '{key}': neither 'User' nor 'AI' (keys: {', '.join(map(str, item))})")
            continue
        for speaker in speakers:
            if speaker == "User":
                text = p.text(item["User"], where, f"{key}.User")
                if text is not None:
                    utterances.append(Utterance(text, None))
                continue
            reply, label, label_key = item["AI"], item.get("AI Strategy"), f"{key}.AI Strategy"
            if isinstance(reply, dict):
                local["ai_objects"] += 1
                inner = next((n for n in ("Response", "AI") if isinstance(reply.get(n), str)), None)
                if inner is None:
                    p.problems.append(f"{where}: field '{key}.AI': an object without a 'Response' or 'AI' text "
                                      f"(keys: {', '.join(map(str, reply)) or 'none'})")
                    continue
                if "AI Strategy" not in item and "AI Strategy" in reply:
                    label, label_key = reply["AI Strategy"], f"{key}.AI.AI Strategy"
                reply, text_key = reply[inner], f"{key}.AI.{inner}"
            else:
                text_key = f"{key}.AI"
            text = p.text(reply, where, text_key)
            strategy = p.label(label, where, label_key, local)
            if text is not None and strategy is not None:
                utterances.append(Utterance(text, strategy))
    scene = _optional_str(record, "scene", where, p.problems)
    return utterances, scene, None


# ----------------------------------------------------------------------------------------------------- MESC


def _load_mesc(path: Path, taxonomy: Taxonomy, on_invalid: str) -> LoadedSource:
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
    records: list[tuple[_File, int, int, object]] = []
    if len(files) == 1:
        f = files[0]
        info.update(file=f.name, sha256=_sha256(texts[f]))
        records = [(_File(str(f), f.name), i, i, rec) for i, rec in iter_records(texts[f], f)]
    else:
        given = {}
        info.update(file=directory.name, files=[f.name for f in files],
                    sha256={f.name: _sha256(texts[f]) for f in files},
                    dialog_id="file order train, val, test")
        for (split, _), f in zip(MESC_SPLITS, files, strict=True):
            start = len(records)
            records += [(_File(str(f), f.name), i, start + i, rec) for i, rec in iter_records(texts[f], f)]
            given[split] = list(range(start, len(records)))
    csv_path = directory / MESC_CSV
    index = None
    if csv_path.is_file():
        csv_text = read_text(csv_path)
        index = _mesc_csv_index(csv_text, csv_path)
        info["csv"] = {"file": MESC_CSV, "sha256": _sha256(csv_text)}
    info["text"] = f"{MESC_CSV} where a dialogue matches, else the JSON text with the video description cut" \
        if index is not None else "the JSON text with the video description cut"

    def parse(record: object, where: str, p: _Parse, local: Counter) -> Parsed | None:
        return _parse_mesc(record, where, p, local, index)

    loaded = _assemble(records, "mesc", parse, taxonomy, on_invalid, info)
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


def _parse_mesc(record: object, where: str, p: _Parse, local: Counter, index: CsvIndex | None) -> Parsed | None:
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
    problem = _optional_str(record, "problem_type", where, p.problems)
    return utterances, problem, None


def _mesc_csv_texts(turns: list[tuple[str, str | None]], index: CsvIndex | None) -> list[str] | None:
    if not index:
        return None
    key = (len(turns), tuple(strategy is not None for _, strategy in turns))
    for rows in index.get(key, ()):
        if all(raw.startswith(utt) for (raw, _), (utt, _) in zip(turns, rows, strict=True)):
            return [utt for utt, _ in rows]
    return None


# -------------------------------------------------------------------------------------------------- ESC-Pro


def _load_esc_pro(path: Path, taxonomy: Taxonomy, on_invalid: str) -> LoadedSource:
    if path.is_dir():
        known = [path / n for n in ESC_PRO_FILES if (path / n).is_file()]
        candidates = known or sorted(f for f in path.iterdir() if f.is_file() and f.suffix in (".json", ".jsonl"))
        if len(candidates) != 1:
            listed = f" ({', '.join(f.name for f in candidates)})" if candidates else ""
            raise SourceError(f"{path}: a directory with {len(candidates) or 'no'} JSON files{listed}; point "
                              f"--source-path at the ESC-Pro file")
        path = candidates[0]
    text = read_text(path)
    info = {"source": "esc-pro", "file": path.name, "layout": "esc-pro", "sha256": _sha256(text)}
    file = _File(str(path), path.name)
    records = [(file, i, i, rec) for i, rec in iter_records(text, path)]
    return _assemble(records, "esc-pro", _parse_esc_pro, taxonomy, on_invalid, info)


def _parse_esc_pro(record: object, where: str, p: _Parse, local: Counter) -> Parsed | None:
    """``{"description", "scene", "iter", "messages": [{"role": "user", "content"} | {"role": "assistant",
    "content", "strategy", "negative": [{"content", "strategy"}]}]}`` (XingYuSSS/CSO build_data.py): an assistant
    message is the preferred reply, its ``negative`` list the non-preferred ones at the same point."""
    if not isinstance(record, dict):
        p.problems.append(f"{where}: expected a JSON object, got {type(record).__name__}")
        return None
    messages = record.get("messages")
    if not isinstance(messages, list):
        got = "missing field 'messages'" if messages is None else \
            f"field 'messages': expected a list of messages, got {type(messages).__name__}"
        p.problems.append(f"{where}: {got}")
        return None
    utterances: list[Utterance] = []
    for k, message in enumerate(messages):
        key = f"messages[{k}]"
        if not isinstance(message, dict):
            p.problems.append(f"{where}: field '{key}': expected an object, got {type(message).__name__}")
            continue
        role = message.get("role")
        text = p.text(message.get("content"), where, f"{key}.content")
        negative = message.get("negative")
        if role in SEEKER_NAMES:
            if negative:
                p.problems.append(f"{where}: field '{key}.negative': non-preferred replies on a {role} message")
            elif text is not None:
                utterances.append(Utterance(text, None))
            continue
        if role not in SUPPORTER_NAMES:
            p.problems.append(f"{where}: field '{key}.role': unknown role {role!r}")
            continue
        strategy = p.label(message.get("strategy"), where, f"{key}.strategy", local)
        negatives = _negatives(negative, where, f"{key}.negative", p)
        if strategy == "" and negatives:  # a turn the taxonomy does not mine cannot be the chosen side of a pair
            p.problems.append(f"{where}: field '{key}.negative': non-preferred replies on a message with an empty "
                              "strategy (not a turn to mine)")
            continue
        if text is not None and strategy is not None and negatives is not None:
            utterances.append(Utterance(text, strategy, negatives))
            local["negatives"] += len(negatives)
    scene = _optional_str(record, "scene", where, p.problems)
    return utterances, scene, None


def _negatives(raw: object, where: str, key: str, p: _Parse) -> tuple[tuple[str, str], ...] | None:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        p.problems.append(f"{where}: field '{key}': expected a list of replies, got {type(raw).__name__}")
        return None
    start, out = len(p.problems), []
    for j, item in enumerate(raw):
        if not isinstance(item, dict):
            p.problems.append(f"{where}: field '{key}[{j}]': expected an object, got {type(item).__name__}")
            continue
        text = p.text(item.get("content"), where, f"{key}[{j}].content")
        label = item.get("strategy")
        if not isinstance(label, str) or not label.strip():
            p.problems.append(f"{where}: field '{key}[{j}].strategy': non-preferred reply without a strategy")
            continue
        strategy = p.taxonomy.canonical(label)
        if strategy is None:
            p.unknown[label] += 1
            p.problems.append(f"{where}: field '{key}[{j}].strategy': unknown strategy {label!r}")
        elif text is not None:
            out.append((text, strategy))
    return tuple(out) if len(p.problems) == start else None


# ------------------------------------------------------------------------------------------------- common


def _assemble(records: list[tuple[_File, int, int, object]], layout: str, parser: Parser, taxonomy: Taxonomy,
              on_invalid: str, info: dict) -> LoadedSource:
    """Parse every record: the dialogues kept, the skipped ones (with on_invalid="skip") and the counts; or one
    SourceError with every problem."""
    p = _Parse(taxonomy)
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
                p.counts["same_speaker_runs"] += _runs(utterances)
                continue
            if local["empty_labels_skipped"] and taxonomy.empty == "skip":
                # only greetings and closings: nothing to mine, which the taxonomy allows; dropped and counted
                p.counts["dialogues_without_labelled_turns"] += 1
                continue
            key = {"extes": "content", "mesc": "dialog", "esc-pro": "messages"}[layout]
            p.problems.append(f"{where}: field '{key}': no supporter utterance"
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
    counts.update({name: p.counts[name] for name in LAYOUT_COUNTS[layout]})
    return LoadedSource(dialogues, info, None, skipped, counts)


def _runs(utterances: list[Utterance]) -> int:
    """Runs of two or more consecutive utterances of the same side (seeker, supporter)."""
    runs, previous, length = 0, None, 0
    for u in utterances:
        length = length + 1 if u.supporter == previous else 1
        previous = u.supporter
        runs += length == 2
    return runs


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror or exc}") from exc


def _sha256(data: bytes | str) -> str:
    """The digest of a file's bytes; text from ``read_text`` is turned back into exactly those bytes."""
    if isinstance(data, str):
        data = data.encode("utf-8", errors="surrogateescape")
    return hashlib.sha256(data).hexdigest()
