"""ExTES (Zheng et al., 2024): one JSON list of dialogues (``ExTES.json``, or inside ``ExTES.zip``), 16 strategies."""

from __future__ import annotations

import zipfile
from collections import Counter
from pathlib import Path, PurePath

from ipm_prefdial.sources import LoadedSource, SourceError, Utterance
from ipm_prefdial.sources.layouts.common import Layout, Parsed, ParseState, SourceFile, assemble, read_bytes, sha256_of
from ipm_prefdial.sources.records import iter_records, optional_str, read_text
from ipm_prefdial.taxonomy import Taxonomy

LAYOUT = Layout("extes", "content", ("ai_objects",))
EXTES_FILE, EXTES_ZIP = "ExTES.json", "ExTES.zip"

def load(path: Path, taxonomy: Taxonomy, on_invalid: str) -> LoadedSource:
    if path.is_dir():
        for name in (EXTES_FILE, EXTES_ZIP):
            if (path / name).is_file():
                path = path / name
                break
        else:
            raise SourceError(f"{path}: a directory without {EXTES_FILE} or {EXTES_ZIP}")
    info: dict = {"source": "extes", "file": path.name, "layout": "extes"}
    if zipfile.is_zipfile(path):
        info["sha256"] = sha256_of(read_bytes(path))
        member, data = _zip_member(path, EXTES_FILE)
        info.update(member=member, member_sha256=sha256_of(data))
        text = data.decode("utf-8", errors="surrogateescape")
        file = SourceFile(f"{path}:{member}", f"{path.name}:{member}")
    else:
        text = read_text(path)
        info["sha256"] = sha256_of(text)
        file = SourceFile(str(path), path.name)
    records = [(file, i, i, rec) for i, rec in iter_records(text, PurePath(file.shown))]
    return assemble(records, LAYOUT, _parse_extes, taxonomy, on_invalid, info)


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


def _parse_extes(record: object, where: str, p: ParseState, local: Counter) -> Parsed | None:
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
    scene = optional_str(record, "scene", where, p.problems)
    return utterances, scene, None
