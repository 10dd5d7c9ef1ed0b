"""``ipm validate``: check a build directory against its card, its manifest and the conversion rule."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from fnmatch import fnmatch
from pathlib import Path

import pyarrow.parquet as pq

from ipm_prefdial.convert import parse_tagged
from ipm_prefdial.mining.judge import ERROR_TYPES, JUDGED, NOT_APPLICABLE, STATUS_PATTERN
from ipm_prefdial.mining.policy import IMPORTED, is_copy, normalise
from ipm_prefdial.prompts import Prompts, RgInstruction, sha256_text
from ipm_prefdial.release.card import read_card_metadata
from ipm_prefdial.release.features import CONFIG_SPLITS, FEATURES, PAIR_CONFIGS, RETAINED_OF, TASK_OF, is_retained
from ipm_prefdial.release.files import sha256_file
from ipm_prefdial.taxonomy import Taxonomy, TaxonomyError, builtin, from_manifest
from ipm_prefdial.tokens import BUNDLED, TokenCounter, TokenizerError, Trimmer, load_tokenizer

MAX_PER_KIND = 5  # examples shown per kind of row problem; the count is always complete


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be checked here, and why (not a failure)
    row_problems: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    summary: list[tuple[str, str, int, int]] = field(default_factory=list)  # config, split, rows, dialogues
    incomplete: str | None = None  # the manifest says requests are left failed: what is missing, how to complete it

    def add(self, text: str) -> None:
        self.problems.append(text)

    def row(self, kind: str, where: str) -> None:
        self.row_problems[kind].append(where)

    @property
    def ok(self) -> bool:
        return self.valid_but_incomplete and not self.incomplete

    @property
    def valid_but_incomplete(self) -> bool:
        """Every rule holds; the build may still be incomplete (``ipm publish --allow-incomplete``)."""
        return not self.problems and not self.row_problems

    def lines(self) -> list[str]:
        out = ([self.incomplete] if self.incomplete else []) + list(self.problems)
        for kind, wheres in self.row_problems.items():
            more = f", ... ({len(wheres)} in all)" if len(wheres) > MAX_PER_KIND else ""
            shown = ", ".join(wheres[:MAX_PER_KIND]) + more
            out.append(f"{kind}: {shown}")
        return out


def validate(directory: str | Path, trim_tokenizer: str | None = None) -> Report:
    """Check a build. ``trim_tokenizer`` replaces the tokenizer a trimmed build names (for a local one that is
    not where the manifest's name would find it)."""
    root = Path(directory)
    report = Report()
    if not root.is_dir():
        report.add(f"{root}: not a directory")
        return report
    card_meta = _card(root, report)
    manifest = _manifest(root, report)
    if manifest.get("complete") is False:
        left = manifest.get("incomplete") or {}
        kinds = ", ".join(f"{k} {v}" for k, v in (left.get("transient_failures") or {}).items())
        report.incomplete = (f"manifest.json: incomplete build: {left.get('requests', '?')} requests ended in "
                             f"transient failures ({kinds or 'kinds not recorded'}); run the command that made it "
                             f"again to complete it: {left.get('rerun') or 'ipm build ...'}")
    on_disk = {p.relative_to(root).as_posix() for p in (root / "data").rglob("*.parquet")}
    unreadable = _unreadable(root, on_disk, report)
    _check_files(root, manifest, on_disk, unreadable, report)
    configs = _check_card(root, card_meta, on_disk, unreadable, report, manifest.get("counts") if manifest else None)
    prompts = _rg_rule(manifest, report)
    try:
        taxonomy = from_manifest(manifest or {})
    except TaxonomyError as exc:
        report.add(str(exc))
        taxonomy = builtin("esconv")
    split_of_dialog: dict[int, tuple[str, str]] = {}
    ids_per_split: dict[str, dict[str, set[str]]] = {}
    sft_prompts: dict[tuple[str, str], list] = {}
    judged_rows: dict[tuple[str, str], list[dict]] = {}  # (config, split) -> rows, for the retained configs
    statuses: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))  # config -> judge_status -> rows
    for config, files in configs.items():
        seen_ids: dict[str, str] = {}
        ids_per_split[config] = {}
        for split, rel in files.items():
            path = root / rel
            if not path.is_file() or rel in unreadable:
                continue
            table = pq.read_table(path)
            expected = FEATURES[config].arrow_schema
            if not table.schema.equals(expected, check_metadata=False):
                got, want = (s.to_string(show_schema_metadata=False) for s in (table.schema, expected))
                report.add(f"{rel}: schema differs from the {config} features:\n  got      {got}\n  expected {want}")
                continue
            rows = table.to_pylist()
            if config in RETAINED_OF or config in RETAINED_OF.values():
                judged_rows[(config, split)] = rows
            dialogs = set()
            ids_per_split[config][split] = set()
            for row in rows:
                where = f"{config}/{split} id {row['id']}"
                dialogs.add(row["dialog_id"])
                ids_per_split[config][split].add(row["id"])
                if row["id"] in seen_ids:
                    report.row("duplicate id", f"{where} (also in {seen_ids[row['id']]})")
                seen_ids[row["id"]] = split
                previous = split_of_dialog.setdefault(row["dialog_id"], (split, config))
                if previous[0] != split:
                    report.row("dialogue in two splits",
                               f"dialog_id {row['dialog_id']} in {previous[1]}/{previous[0]} and {config}/{split}")
                _check_row(config, row, where, prompts, report, sft_prompts, taxonomy)
                if config in PAIR_CONFIGS:
                    statuses[config][row["judge_status"]] += 1
            report.summary.append((config, split, len(rows), len(dialogs)))
    _check_same_turns(ids_per_split, report)
    for config, recorded in ((manifest or {}).get("judge_status") or {}).items():
        got = dict(sorted(statuses.get(config, {}).items()))
        if config in configs and got != {k: v for k, v in recorded.items() if v}:
            report.add(f"manifest.json: judge_status.{config} = {recorded}, but the rows say {got}")
    _check_retained(judged_rows, report)
    if manifest.get("trim"):
        _check_trim(root, configs, manifest, trim_tokenizer, unreadable, report)
    if manifest:
        for config, per_split in manifest.get("counts", {}).items():
            for split, n in per_split.items():
                got = next((r for c, s, r, _ in report.summary if c == config and s == split), None)
                if got is not None and got != n:
                    report.add(f"manifest.json: counts.{config}.{split} = {n}, but the file has {got} rows")
    return report


def _card(root: Path, report: Report) -> dict:
    path = root / "README.md"
    if not path.is_file():
        report.add(f"{path}: missing dataset card")
        return {}
    try:
        meta = read_card_metadata(path.read_text(encoding="utf-8"))
    except Exception as exc:  # yaml errors come in many classes
        report.add(f"{path}: the YAML header does not parse: {exc}")
        return {}
    if not meta:
        report.add(f"{path}: no YAML header (--- ... ---)")
    elif meta.get("license") != "cc-by-nc-4.0":
        report.add(f"{path}: license is {meta.get('license')!r}, ESConv-derived data must be cc-by-nc-4.0")
    return meta


def _manifest(root: Path, report: Report) -> dict:
    path = root / "manifest.json"
    if not path.is_file():
        report.add(f"{path}: missing")
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        report.add(f"{path}: not valid JSON: {exc}")
        return {}


def _unreadable(root: Path, on_disk: set[str], report: Report) -> set[str]:
    """Data files that are not parquet at all (named once, then left out of every other check)."""
    bad = set()
    for rel in sorted(on_disk):
        try:
            pq.ParquetFile(root / rel)
        except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
            report.add(f"{rel}: not a readable parquet file ({exc})")
            bad.add(rel)
    return bad


def _check_files(root: Path, manifest: dict, on_disk: set[str], unreadable: set[str], report: Report) -> None:
    listed = manifest.get("files", {}) if manifest else {}
    for rel, info in listed.items():
        path = root / rel
        if not path.is_file():
            report.add(f"{rel}: listed in manifest.json but missing")
            continue
        if rel in unreadable:
            continue
        digest = sha256_file(path)
        if digest != info.get("sha256"):
            report.add(f"{rel}: sha256 {digest[:12]}... differs from manifest.json "
                       f"({str(info.get('sha256'))[:12]}...): edited after the build")
        rows = pq.ParquetFile(path).metadata.num_rows
        if rows != info.get("rows"):
            report.add(f"{rel}: {rows} rows, manifest.json says {info.get('rows')}")
    for rel in sorted(on_disk - set(listed)):
        report.add(f"{rel}: not listed in manifest.json")


def _check_card(root: Path, meta: dict, on_disk: set[str], unreadable: set[str], report: Report,
                counts: dict | None = None) -> dict[str, dict[str, str]]:
    """Config -> split -> data file, from the card's ``configs``; also checks dataset_info against the files."""
    result: dict[str, dict[str, str]] = {}
    if not meta:
        return result
    infos = {i.get("config_name"): i for i in meta.get("dataset_info", []) or []}
    matched: set[str] = set()
    for entry in meta.get("configs", []) or []:
        name = entry.get("config_name")
        if name not in FEATURES:
            report.add(f"README.md: unknown config {name!r} in configs")
            continue
        result[name] = {}
        splits = {f.get("split"): f.get("path") for f in entry.get("data_files", [])}
        # a split with no rows is not listed (load_dataset cannot open an empty split); the manifest counts it 0
        empty = {s for s, n in (counts or {}).get(name, {}).items() if n == 0}
        if not set(splits) <= set(CONFIG_SPLITS[name]) or set(CONFIG_SPLITS[name]) - set(splits) - empty:
            report.add(f"README.md: config {name} has splits {sorted(splits)}, expected {list(CONFIG_SPLITS[name])}"
                       + (f" less the empty ones ({', '.join(sorted(empty))})" if empty else ""))
        for split, pattern in splits.items():
            hits = sorted(p for p in on_disk if fnmatch(p, pattern))
            if not hits:
                report.add(f"README.md: config {name} split {split}: no file matches {pattern}")
                continue
            matched.update(hits)
            result[name][split] = hits[0]
            if len(hits) > 1:
                report.add(f"README.md: config {name} split {split}: {len(hits)} files match {pattern}, expected one")
        info = infos.get(name)
        if info is None:
            report.add(f"README.md: dataset_info has no entry for config {name}")
            continue
        if info.get("features") != FEATURES[name]._to_yaml_list():
            report.add(f"README.md: dataset_info features of {name} differ from the {name} schema")
        for split_info in info.get("splits", []):
            rel = result[name].get(split_info.get("name"))
            if rel and rel not in unreadable:
                rows = pq.ParquetFile(root / rel).metadata.num_rows
                if rows != split_info.get("num_examples"):
                    report.add(f"README.md: dataset_info {name}/{split_info.get('name')} num_examples "
                               f"{split_info.get('num_examples')}, the file has {rows} rows")
    for rel in sorted(on_disk - matched):
        report.add(f"{rel}: not part of any config in README.md")
    return result


def _rg_rule(manifest: dict, report: Report) -> RgInstruction | None:
    """How the build's RG prompts end: from its manifest; for builds that predate that record, the bundled
    templates when their hash matches."""
    if manifest.get("rg_instruction"):
        return RgInstruction(manifest["rg_instruction"])
    rule = Prompts().rg_rule
    if manifest and sha256_text(rule.template) != manifest.get("prompts", {}).get("rg_instruction"):
        report.add("manifest.json: no rg_instruction, and the bundled RG instruction template differs from the "
                   "build's; the strategy named in RG prompts was not checked")
        return None
    return rule


def _check_row(config: str, row: dict, where: str, prompts: RgInstruction | None, report: Report,
               sft_prompts: dict[tuple[str, str], list], taxonomy: Taxonomy) -> None:
    task = TASK_OF[config]
    pair = config in PAIR_CONFIGS or config in RETAINED_OF
    turn_id = f"{row['dialog_id']}-{row['turn_index']}"
    imported = pair and (row["miner"] or {}).get("engine") == IMPORTED  # a pair the source holds (ESC-Pro)
    if not (re.fullmatch(re.escape(turn_id) + (r"-n\d+" if imported else r"-s\d+"), row["id"]) if pair
            else row["id"] == turn_id):
        report.row("id is not <dialog_id>-<turn_index>" + (("-n<k>" if imported else "-s<k>") if pair else ""),
                   where)
    if imported and task != "vm":
        report.row("imported pair outside joint_pairs", where)
    labels = taxonomy.names
    if row["strategy"] not in labels:
        report.row(f"gold strategy not in the {taxonomy.name} taxonomy", f"{where} ({row['strategy']!r})")
    prompt = row["prompt"] or []
    if not prompt or prompt[0]["role"] != "system" or not (prompt[0]["content"] or "").strip():
        report.row("prompt does not start with a non-empty system message", where)
    chat = prompt[1:]
    roles = [m["role"] for m in chat]
    if task == "sp":
        if roles != ["user"]:
            report.row("SP prompt is not system + one user message", where)
    elif roles != ["user", "assistant"] * (len(roles) // 2) + ["user"]:
        report.row("prompt roles do not alternate user/assistant from a user message to a user message", where)
    if any(m["content"] is None or (m["role"] != "user" and not m["content"].strip()) for m in prompt):
        report.row("empty message in the prompt", where)
    if task == "vm":
        for m in chat:
            tag = parse_tagged(m["content"])[0]
            # an untagged supporter message: a turn with an empty label, where the taxonomy keeps it as history
            if m["role"] == "assistant" and tag not in labels and not (tag is None and taxonomy.empty == "skip"):
                report.row("VM history message without a known [strategy] tag", where)
                break
    if task == "rg" and prompts is not None and chat:
        named = prompts.parse(chat[-1]["content"])
        if named != row["strategy"]:
            report.row("RG prompt does not name the row's strategy after the history", f"{where} ({named!r})")
    if not pair:
        sft_prompts[(task, turn_id)] = prompt
        target = _one_message(row["completion"], "completion", where, report)
        if target is not None:
            _check_target(task, "completion", target, row, where, report)
        return
    known = sft_prompts.get((task, turn_id))
    if sft_prompts and known is None:
        report.row("pair of a turn that is not in the SFT configs", where)
    elif known is not None and known != prompt:
        report.row("pair prompt differs from the SFT prompt of the same turn", where)
    chosen = _one_message(row["chosen"], "chosen", where, report)
    rejected = _one_message(row["rejected"], "rejected", where, report)
    if chosen is None or rejected is None:
        return
    _check_target(task, "chosen", chosen, row, where, report)
    if chosen == rejected:
        report.row("chosen equals rejected", where)
    rejected_strategy = row["rejected_strategy"]
    if task == "sp":
        if rejected not in labels or rejected == row["strategy"]:
            report.row("SP rejected is not a strategy name distinct from the gold one", f"{where} ({rejected!r})")
        if rejected_strategy != rejected:
            report.row("SP rejected_strategy is not the rejected strategy", where)
    elif task == "rg":
        if rejected_strategy != row["strategy"]:
            report.row("RG rejected_strategy is not the gold strategy", where)
        if chosen != rejected and normalise(chosen) == normalise(rejected):
            report.row("rejected copies chosen (up to case and whitespace)", where)
    elif task == "vm":
        label, reply = parse_tagged(rejected)
        expected = taxonomy.canonical(label, variants=False) if label is not None else None
        if rejected_strategy != expected:
            report.row("VM rejected_strategy does not match the tag of the rejected output", where)
        if chosen != rejected and is_copy(expected, reply, row["strategy"], parse_tagged(chosen)[1]):
            report.row("rejected copies chosen (up to case and whitespace)", where)
    miner = row["miner"]
    if miner is None or not miner.get("model") or not miner.get("engine"):
        report.row("pair without miner engine/model", where)
    _check_judge(config, row["judge"], where, report)
    _check_judge_status(config, row, where, report)


def _one_message(messages: list | None, column: str, where: str, report: Report) -> str | None:
    if not messages or len(messages) != 1 or messages[0]["role"] != "assistant" or \
            not (messages[0]["content"] or "").strip():
        report.row(f"{column} is not one non-empty assistant message", where)
        return None
    return messages[0]["content"]


def _check_target(task: str, column: str, target: str, row: dict, where: str, report: Report) -> None:
    """The gold side: the strategy name (SP), the tagged utterance (VM)."""
    if task == "sp" and target != row["strategy"]:
        report.row(f"SP {column} is not the row's strategy name", f"{where} ({target!r})")
    if task == "vm":
        strategy, reply = parse_tagged(target)
        if strategy != row["strategy"] or not reply:
            report.row(f"VM {column} is not '[<strategy>] <reply>' with the row's strategy", where)


def _check_judge(config: str, judge: dict | None, where: str, report: Report) -> None:
    if judge is None:
        return
    if config == "strategy_pairs":
        report.row("strategy pair with a judge verdict (only response-level pairs are judged)", where)
        return
    errors = (judge["chosen_error"], judge["rejected_error"])
    if any(e is not None and e not in ERROR_TYPES for e in errors):
        report.row("judge error label outside None / Lack Empathy / Early Emotion Shift / Template Response", where)
    if judge["retained"] != (errors[0] is None and errors[1] is not None):
        report.row("judge retained disagrees with the rule (chosen without error, rejected with one)", where)
    if not judge.get("model"):
        report.row("judge verdict without a model", where)


def _check_judge_status(config: str, row: dict, where: str, report: Report) -> None:
    status = row["judge_status"]
    if status is None or not re.fullmatch(STATUS_PATTERN, status):
        report.row("judge_status is not judged, failed:<kind>, skipped or not_applicable", f"{where} ({status!r})")
        return
    if config == "strategy_pairs":
        if status != NOT_APPLICABLE:
            report.row("strategy pair whose judge_status is not not_applicable", f"{where} ({status!r})")
    elif status == NOT_APPLICABLE:
        report.row("response-level pair with judge_status not_applicable", where)
    if (row["judge"] is not None) != (status == JUDGED):
        report.row("judge is set exactly when judge_status is 'judged'", f"{where} ({status!r})")


def _check_retained(rows: dict[tuple[str, str], list[dict]], report: Report) -> None:
    """A retained config holds exactly the judge-retained rows of its parent config, in the same order."""
    keys = {(retained, split) for (config, split) in rows for retained, parent in RETAINED_OF.items()
            if config in (retained, parent)}
    for config, split in sorted(keys):  # a split with no rows has no file: it counts as empty
        parent = RETAINED_OF[config]
        got = rows.get((config, split), [])
        expected = [r for r in rows.get((parent, split), []) if is_retained(r)]
        if got == expected:
            continue
        got_ids, want_ids = [r["id"] for r in got], [r["id"] for r in expected]
        extra = [i for i in got_ids if i not in set(want_ids)]
        missing = [i for i in want_ids if i not in set(got_ids)]
        detail = (f"not retained there: {', '.join(extra[:MAX_PER_KIND]) or '-'}; retained but missing: "
                  f"{', '.join(missing[:MAX_PER_KIND]) or '-'}") if extra or missing else "rows or order differ"
        report.add(f"{config}/{split} is not the retained rows of {parent}/{split} ({detail})")


def _check_trim(root: Path, configs: dict, manifest: dict, override: str | None, unreadable: set[str],
                report: Report) -> None:
    """--trim-tokens, read from the manifest: every SFT prompt + its answer fits the bound, unless it is as short
    as it can get (the system prompt and the current turn alone); pair prompts equal SFT prompts (checked above)."""
    trim = manifest["trim"]
    name = override or (manifest.get("build_config") or {}).get("trim_tokenizer") or BUNDLED
    try:
        tokenizer, recorded = load_tokenizer(name)
    except TokenizerError as exc:
        report.notes.append(f"--trim-tokens {trim['tokens']} not checked: {exc} (ipm validate --trim-tokenizer "
                            "PATH points at it)")
        return
    if recorded != trim["tokenizer"]:
        report.notes.append(f"--trim-tokens checked with {recorded}; the build was trimmed with {trim['tokenizer']}")
    trimmer = Trimmer(TokenCounter(tokenizer, recorded), trim["tokens"], trim["max_tokens"])
    for config in ("strategy_sft", "response_sft", "joint_sft"):
        task = TASK_OF[config]
        for rel in configs.get(config, {}).values():
            if rel in unreadable or not (root / rel).is_file():
                continue
            rows = pq.read_table(root / rel, columns=["id", "prompt", "completion"]).to_pylist()
            lengths = trimmer.counter.prompts([r["prompt"] for r in rows])
            for row, length in zip(rows, lengths, strict=True):
                answer = (row["completion"] or [{"content": ""}])[0]["content"] or ""
                if length + trimmer.reserve(task, answer) <= trim["tokens"]:
                    continue
                body = row["prompt"][1:]
                shortest = len(body) == 1 and ("\n" not in body[0]["content"] or task != "sp")
                if not shortest:
                    report.row(f"prompt + answer over the build's --trim-tokens {trim['tokens']}",
                               f"{config} id {row['id']} ({length} prompt tokens)")


def _check_same_turns(ids: dict[str, dict[str, set[str]]], report: Report) -> None:
    sft = [c for c in ("strategy_sft", "response_sft", "joint_sft") if c in ids]
    for config in sft[1:]:
        for split, got in ids[config].items():
            ref = ids[sft[0]].get(split)
            if ref is not None and ref != got:
                report.add(f"{config}/{split}: turns differ from {sft[0]}/{split} ({len(got ^ ref)} ids)")
