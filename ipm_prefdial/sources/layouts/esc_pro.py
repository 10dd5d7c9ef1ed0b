"""ESC-Pro (Zhao et al., 2025): ESConv's dialogues with preferred and non-preferred supporter replies."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from ipm_prefdial.sources import LoadedSource, SourceError, Utterance
from ipm_prefdial.sources.layouts.common import Layout, Parsed, ParseState, SourceFile, assemble, sha256_of
from ipm_prefdial.sources.records import SEEKER_NAMES, SUPPORTER_NAMES, iter_records, optional_str, read_text
from ipm_prefdial.taxonomy import Taxonomy

LAYOUT = Layout("esc-pro", "messages", ("negatives",))
# The Hub dataset's file name is not pinned here: these names first, else the directory's only JSON/JSONL file.
ESC_PRO_FILES = ("ESC-Pro.json", "ESC-Pro.jsonl", "esc-pro.json", "esc_pro.json")

def load(path: Path, taxonomy: Taxonomy, on_invalid: str) -> LoadedSource:
    if path.is_dir():
        known = [path / n for n in ESC_PRO_FILES if (path / n).is_file()]
        candidates = known or sorted(f for f in path.iterdir() if f.is_file() and f.suffix in (".json", ".jsonl"))
        if len(candidates) != 1:
            listed = f" ({', '.join(f.name for f in candidates)})" if candidates else ""
            raise SourceError(f"{path}: a directory with {len(candidates) or 'no'} JSON files{listed}; point "
                              f"--source-path at the ESC-Pro file")
        path = candidates[0]
    text = read_text(path)
    info = {"source": "esc-pro", "file": path.name, "layout": "esc-pro", "sha256": sha256_of(text)}
    file = SourceFile(str(path), path.name)
    records = [(file, i, i, rec) for i, rec in iter_records(text, path)]
    return assemble(records, LAYOUT, _parse_esc_pro, taxonomy, on_invalid, info)


def _parse_esc_pro(record: object, where: str, p: ParseState, local: Counter) -> Parsed | None:
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
    scene = optional_str(record, "scene", where, p.problems)
    return utterances, scene, None


def _negatives(raw: object, where: str, key: str, p: ParseState) -> tuple[tuple[str, str], ...] | None:
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
