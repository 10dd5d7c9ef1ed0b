"""`ipm export`: a build in the layouts other trainers read, so IPM pairs train where people already train.

- ``llamafactory``: LLaMA-Factory's sharegpt layout, one JSON list per config and split (SFT: ``conversations``
  ending with the gold ``gpt`` turn; pairs: ``conversations`` ending with the seeker's turn, ``chosen`` and
  ``rejected`` as single ``gpt`` messages, the ranking layout the DecoupledESC paper trained with), each with
  ``system`` and ``id``, and a ``dataset_info.json`` that registers every file.
- ``cso``: the pair layout of CSO's ESC-Pro training data (``scene``, ``description``, ``messages`` with the
  system prompt first, ``chosen`` and ``reject`` as single message objects), every supporter message written
  ``(<strategy>) <reply>`` and the system prompt asking for that (prompts/cso_system.j2); for the joint pair
  configs, whose replies carry their strategy. ``scene`` is the problem type and ``description`` the emotion type
  (a build does not keep the seeker's situation text).
- ``openai-jsonl``: OpenAI fine-tuning JSON lines: ``{"messages": [...]}`` for the SFT configs, and the preference
  layout (``input.messages``, ``preferred_output``, ``non_preferred_output``) for the pair configs. No other keys
  (the API refuses unknown ones): line k is row k of the parquet file.

Rows keep the parquet order; the same build gives the same bytes. ``export.json`` records what was written.
"""

from __future__ import annotations

import functools
import json
import shutil
from collections.abc import Callable
from pathlib import Path

from ipm_prefdial.convert import parse_tagged
from ipm_prefdial.errors import ConfigError, InputError
from ipm_prefdial.prompts import Prompts
from ipm_prefdial.release.features import CONFIG_SPLITS, FEATURES, SFT_CONFIGS, data_file
from ipm_prefdial.release.files import read_rows
from ipm_prefdial.taxonomy import TaxonomyError, from_manifest

FORMATS = ("llamafactory", "cso", "openai-jsonl")
SHAREGPT_ROLE = {"user": "human", "assistant": "gpt"}
CSO_CONFIGS = ("joint_pairs", "joint_pairs_retained")  # replies that carry their strategy: CSO's (strategy) reply
DATASET_PREFIX = "ipm_prefdial"


class ExportError(InputError):
    """A build that cannot be exported as asked; the message names the file or config."""


def _system_and_turns(prompt: list[dict], where: str) -> tuple[str | None, list[dict]]:
    system = prompt[0]["content"] if prompt and prompt[0]["role"] == "system" else None
    turns = prompt[1:] if system is not None else list(prompt)
    for k, message in enumerate(turns):
        if message["role"] != ("user" if k % 2 == 0 else "assistant"):
            raise ExportError(f"{where}: prompt message {k + (system is not None)} is {message['role']!r}; sharegpt "
                              "needs the seeker and the supporter in turn, the seeker first")
    return system, turns


def _sharegpt(config: str, row: dict, where: str) -> dict:
    system, turns = _system_and_turns(row["prompt"], where)
    out: dict = {"id": row["id"]}
    conversations = [{"from": SHAREGPT_ROLE[m["role"]], "value": m["content"]} for m in turns]
    if config in SFT_CONFIGS:
        conversations.append({"from": "gpt", "value": row["completion"][0]["content"]})
        out["conversations"] = conversations
    else:
        out["conversations"] = conversations
        out["chosen"] = {"from": "gpt", "value": row["chosen"][0]["content"]}
        out["rejected"] = {"from": "gpt", "value": row["rejected"][0]["content"]}
    if system is not None:
        out["system"] = system
    return out


def _strategy_prefixed(text: str) -> str:
    """``[S] reply`` as CSO writes it, ``(S) reply``; a reply without a tag stays as it is."""
    strategy, reply = parse_tagged(text)
    if strategy is None:
        return text
    return f"({strategy}) {reply}"


def _cso(config: str, row: dict, where: str, system: str | None = None) -> dict:
    _, turns = _system_and_turns(row["prompt"], where)
    # the joint system prompt asks for "[strategy] reply"; CSO's messages are "(strategy) reply", and so is its prompt
    # (listing the build's strategies)
    messages = [{"role": "system", "content": system or Prompts().cso_system}]
    messages += [{"role": m["role"], "content": _strategy_prefixed(m["content"]) if m["role"] == "assistant"
                  else m["content"]} for m in turns]
    return {"scene": row["problem_type"] or "", "description": row["emotion_type"] or "", "messages": messages,
            "chosen": {"role": "assistant", "content": _strategy_prefixed(row["chosen"][0]["content"])},
            "reject": {"role": "assistant", "content": _strategy_prefixed(row["rejected"][0]["content"])}}


def _openai(config: str, row: dict, where: str) -> dict:
    prompt = [{"role": m["role"], "content": m["content"]} for m in row["prompt"]]
    if config in SFT_CONFIGS:
        return {"messages": [*prompt, {"role": "assistant", "content": row["completion"][0]["content"]}]}
    return {"input": {"messages": prompt},
            "preferred_output": [{"role": "assistant", "content": row["chosen"][0]["content"]}],
            "non_preferred_output": [{"role": "assistant", "content": row["rejected"][0]["content"]}]}


CONVERT: dict[str, Callable[[str, dict, str], dict]] = {"llamafactory": _sharegpt, "cso": _cso,
                                                        "openai-jsonl": _openai}


def _configs(root: Path, fmt: str, asked: list[str] | None) -> list[str]:
    present = [c for c in FEATURES if any((root / data_file(c, s)).is_file() for s in CONFIG_SPLITS[c])]
    usable = [c for c in present if fmt != "cso" or c in CSO_CONFIGS]
    if asked:
        for config in asked:
            if config not in FEATURES:
                raise ConfigError(f"--config {config}: not a config of a build (one of {', '.join(FEATURES)})")
            if fmt == "cso" and config not in CSO_CONFIGS:
                raise ConfigError(f"--config {config}: the cso layout writes supporter replies as '(strategy) reply', "
                                  f"which only the joint pair configs have ({', '.join(CSO_CONFIGS)})")
            if config not in present:
                raise ExportError(f"{root.name}: no {config} in this build")
        return [c for c in FEATURES if c in asked]
    if not usable:
        raise ExportError(f"{root.name}: nothing to export as {fmt}"
                          + (" (it needs joint_pairs: build with --stage all)" if fmt == "cso" else ""))
    return usable


def export(build_dir: str | Path, out: str | Path, fmt: str, configs: list[str] | None = None) -> dict:
    """Write ``build_dir`` in ``fmt`` into ``out`` (new or empty, or an earlier export, which is replaced).
    Returns what ``export.json`` records: format, build, and per file its rows."""
    root, target = Path(build_dir), Path(out)
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt}: one of {', '.join(FORMATS)}")
    if not (root / "manifest.json").is_file():
        raise ExportError(f"{root.name}: no manifest.json (pass a build directory made by `ipm build`)")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"-o {out}: a file, not a directory")
    if target.is_dir() and any(target.iterdir()) and not (target / "export.json").is_file():
        raise ConfigError(f"-o {out}: a directory with other files in it; name a new or empty one")
    if target.resolve().is_relative_to(root.resolve()):
        raise ConfigError(f"-o {out}: inside the build directory; write the export elsewhere")
    manifest = json.loads((root / "manifest.json").read_text(encoding="utf-8"))
    chosen = _configs(root, fmt, configs)
    convert = CONVERT[fmt]
    if fmt == "cso":
        try:
            system = Prompts(taxonomy=from_manifest(manifest)).cso_system
        except TaxonomyError as exc:
            raise ExportError(str(exc)) from None
        convert = functools.partial(_cso, system=system)
    try:
        return _write(root, target, fmt, chosen, convert, manifest)
    except OSError as exc:  # the directory the user named cannot be written (permissions, a full disk)
        raise ExportError(f"-o {out}: cannot write the export: {exc.strerror or exc}") from None


def _write(root: Path, target: Path, fmt: str, chosen: list[str], convert, manifest: dict) -> dict:
    """The export's files into a temp directory beside ``target``, then put in place."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    files: dict[str, int] = {}
    info: dict[str, dict] = {}
    for config in chosen:
        for split in CONFIG_SPLITS[config]:
            if not (root / data_file(config, split)).is_file():
                continue
            rows = read_rows(root, config, split, ExportError) or []
            converted = [convert(config, row, f"{data_file(config, split)}: row {k} (id {row['id']})")
                         for k, row in enumerate(rows)]
            name = f"{config}/{split}.{'jsonl' if fmt == 'openai-jsonl' else 'json'}"
            path = tmp / name
            path.parent.mkdir(parents=True, exist_ok=True)
            if fmt == "openai-jsonl":
                path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in converted), encoding="utf-8")
            else:
                path.write_text(json.dumps(converted, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
            files[name] = len(converted)
            if fmt == "llamafactory":
                pairs = config not in SFT_CONFIGS
                entry: dict = {"file_name": name, "formatting": "sharegpt"}
                columns = {"messages": "conversations", "system": "system"}
                if pairs:
                    entry["ranking"] = True
                    columns.update({"chosen": "chosen", "rejected": "rejected"})
                entry["columns"] = columns
                info[f"{DATASET_PREFIX}_{config}_{split}"] = entry
    if fmt == "llamafactory":
        (tmp / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    record = {"format": fmt, "build": {"name": manifest.get("name"), "version": manifest.get("version"),
                                       "directory": root.name, "complete": manifest.get("complete", True)},
              "files": files}
    (tmp / "export.json").write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    tmp.replace(target)
    return record
