"""Pick a source, read it, and return dialogues in their original order."""

from __future__ import annotations

import hashlib
import os
import random
from collections import Counter
from pathlib import Path

from ipm_prefdial.sources import Dialogue, LoadedSource, SourceError
from ipm_prefdial.sources.download import fetch_upstream
from ipm_prefdial.sources.records import iter_records, parse_dialogue, read_text, unknown_labels_message
from ipm_prefdial.taxonomy import Taxonomy, builtin

# Corpora in their own layouts (ipm_prefdial.sources.layouts); their licences let nobody redistribute them, so a
# user points --source-path at their own copy.
LAYOUT_SOURCES = ("extes", "mesc", "esc-pro")
SOURCES = ("esconv", "failed-esconv", "json", *LAYOUT_SOURCES)
HUB_FILES = ("train.txt", "valid.txt", "test.txt")
# The Hub split of ESConv (upstream process.py): random.seed(13); shuffle; valid, test = the first 195 each.
HUB_SEED, HUB_VALID, HUB_TEST = 13, 195, 195


def hub_permutation(n: int) -> list[int]:
    """Original indices in the order upstream's seeded shuffle put them (valid, test, train)."""
    order = list(range(n))
    random.Random(HUB_SEED).shuffle(order)
    return order


def source_taxonomy(source: str) -> Taxonomy:
    """The taxonomy a source's labels are read with unless --taxonomy names another: the corpus's own for the
    layouts that ship one, ESConv's for the ESConv-style sources."""
    return builtin(source if source in LAYOUT_SOURCES else "esconv")


def load_source(source: str, path: str | os.PathLike | None = None, *, on_invalid: str = "error",
                cache_dir: Path | None = None, taxonomy: Taxonomy | None = None) -> LoadedSource:
    """Read ``source``. Without ``path`` (and without IPM_ESCONV_PATH for esconv) upstream is downloaded."""
    if source not in SOURCES:
        raise SourceError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    if on_invalid not in ("error", "skip"):
        raise SourceError(f"on_invalid must be 'error' or 'skip', not {on_invalid!r}")
    taxonomy = taxonomy or source_taxonomy(source)
    if source in LAYOUT_SOURCES:
        from ipm_prefdial.sources.layouts import load_layout

        if path is None:
            raise SourceError(f"--source {source} needs --source-path pointing at your copy of the corpus (its "
                              "licence lets nobody redistribute it, so it is not downloaded)")
        return load_layout(source, Path(path), taxonomy, on_invalid)
    if path is None and source == "esconv":
        path = os.environ.get("IPM_ESCONV_PATH") or None
    info: dict = {"source": source}
    if path is None:
        if source == "json":
            raise SourceError("--source json needs --source-path pointing at a JSON or JSONL file")
        name = "ESConv.json" if source == "esconv" else "FailedESConv.json"
        local = fetch_upstream(name, cache_dir=cache_dir)
        info["download"] = {"file": name, "git_blob_id": local.name.split("-", 1)[0]}
        path = local
    p = Path(path)
    if p.is_dir():
        if all((p / f).is_file() for f in HUB_FILES):
            return _load_hub_layout(p, info, on_invalid, taxonomy)
        for name in ("ESConv.json", "FailedESConv.json"):
            if (p / name).is_file():
                p = p / name
                break
        else:
            raise SourceError(f"{p}: a directory without ESConv.json or the Hub split files {', '.join(HUB_FILES)}")
    if not p.is_file():
        raise SourceError(f"{p}: no such file")
    text = read_text(p)
    info.update(file=p.name, layout="json", sha256=_sha256(p))  # a name and a digest, never a local path
    records = [(p, i, i, rec) for i, rec in iter_records(text, p)]
    dialogues, skipped, counts = _parse_all(records, on_invalid, taxonomy)
    return LoadedSource(dialogues, info, None, skipped, counts)


def _load_hub_layout(directory: Path, info: dict, on_invalid: str, taxonomy: Taxonomy) -> LoadedSource:
    per_file = {name: list(iter_records(read_text(directory / name), directory / name)) for name in HUB_FILES}
    sizes = {name: len(v) for name, v in per_file.items()}
    n = sum(sizes.values())
    info.update(file=directory.name, layout="hub-split",
                sha256={name: _sha256(directory / name) for name in HUB_FILES})
    if sizes["valid.txt"] == HUB_VALID and sizes["test.txt"] == HUB_TEST:
        # Invert the seeded shuffle so that dialog_id is the index in the original ESConv order.
        order = hub_permutation(n)
        offsets = {"valid.txt": 0, "test.txt": HUB_VALID, "train.txt": HUB_VALID + HUB_TEST}
        info["dialog_id"] = "original order (seeded shuffle of the Hub files inverted)"
    else:
        order = list(range(n))
        offsets = {"train.txt": 0, "valid.txt": sizes["train.txt"], "test.txt": sizes["train.txt"] + sizes["valid.txt"]}
        info["dialog_id"] = "file order train, valid, test (sizes differ from ESConv's Hub split)"
    records = []
    given: dict[str, list[int]] = {}
    for name, split in zip(HUB_FILES, ("train", "validation", "test"), strict=False):
        ids = [order[offsets[name] + i] for i, _ in per_file[name]]
        given[split] = ids
        records += [(directory / name, i, did, rec) for (i, rec), did in zip(per_file[name], ids, strict=False)]
    records.sort(key=lambda r: r[2])
    dialogues, skipped, counts = _parse_all(records, on_invalid, taxonomy)
    return LoadedSource(dialogues, info, given, skipped, counts)


def _parse_all(records: list[tuple[Path, int, int, object]], on_invalid: str, taxonomy: Taxonomy
               ) -> tuple[list[Dialogue], list[dict], dict[str, int]]:
    unknown: Counter = Counter()
    counts: Counter = Counter()
    problems: list[str] = []
    dialogues: list[Dialogue] = []
    skipped: list[dict] = []
    for path, index, dialog_id, record in records:
        before = len(problems)
        dialogue = parse_dialogue(record, path=path, index=index, dialog_id=dialog_id, unknown=unknown,
                                  problems=problems, taxonomy=taxonomy, counts=counts)
        if dialogue is not None:
            dialogues.append(dialogue)
        elif on_invalid == "skip":  # recorded in the manifest: the file by name, not by path
            skipped.append({"dialog_id": dialog_id,
                            "problems": [p.replace(str(path), path.name) for p in problems[before:]]})
    if problems and on_invalid != "skip":
        if unknown:
            problems.insert(0, unknown_labels_message(unknown, taxonomy))
        raise SourceError(problems)
    return dialogues, skipped, {"dialogues": len(dialogues), "supporter_turns": _supporter_turns(dialogues),
                                "empty_labels_skipped": counts["empty_labels_skipped"]}


def _supporter_turns(dialogues: list[Dialogue]) -> int:
    """Supporter turns with a label: the turns a build makes samples of."""
    return sum(1 for d in dialogues for u in d.utterances if u.strategy)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
