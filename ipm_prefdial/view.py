"""`ipm view`: one offline HTML page to read, chart and blind-annotate a build before it is published.

The page is a single self-contained file (inline CSS and JavaScript, SVG charts drawn in the browser): no server,
no CDN, no request to any address (a Content-Security-Policy in the page forbids them), the same bytes for the same
build, and no path of the building machine. The data goes in as one JSON block in which ``<``, ``>`` and ``&`` are
written as ``\\u003c``-style escapes, and the page only ever puts text into the document as text, so a reply that
contains ``</script>`` or ``<img onerror=...>`` is shown, never run.

Size: a pair prompt repeats its dialogue's history, so the page stores each dialogue once (rebuilt from the
``joint_sft`` rows, whose prompts hold the history message by message) and each pair names its dialogue and the
position of its turn; every distinct string (a reply, an explanation, an utterance) is stored once in a string table.

What a reviewer gets: the manifest's overview, charts that filter the pair table when clicked, a pair browser, flags
for the pairs worth a second look (counted), filters kept in the URL, and an annotate mode whose answers the
viewer exports as ``annotations.jsonl`` for ``ipm agreement``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import random
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from ipm_prefdial.agreement.read import pair_digest
from ipm_prefdial.convert import parse_tagged
from ipm_prefdial.errors import ConfigError, InputError
from ipm_prefdial.mining.judge import ERROR_TYPES
from ipm_prefdial.release.features import PAIR_CONFIGS, RETAINED_OF, TASK_OF, data_file
from ipm_prefdial.release.files import read_rows, write_bytes_atomic
from ipm_prefdial.taxonomy import Taxonomy, TaxonomyError, builtin, from_manifest

PAIR_SPLITS = ("train", "validation")
DIALOGUE_CONFIGS = ("joint_sft", "joint_pairs")  # prompts that hold the history one tagged message per message
NEAR_IDENTICAL = 0.9  # similarity of two replies (after normalising) from which they count as near-identical
LABELS = ("None", *ERROR_TYPES)  # a reply's error label, in the order the page and `ipm agreement` use
# Flags: pairs worth a second look. Order = bit order in the page's data.
FLAGS = (
    ("identical", "chosen and rejected are the same text (case, spacing, punctuation and the strategy tag aside)"),
    ("near-identical", f"chosen and rejected are at least {NEAR_IDENTICAL:.0%} alike (not identical)"),
    ("empty reply", "a reply with no text once its strategy tag is removed"),
    ("prompt trimmed", "the prompt lost its oldest history messages (--trim-tokens)"),
    ("judge failed", "the judge was asked and gave no usable verdict"),
    ("gold judged an error", "the judge found an error in the gold (chosen) reply"),
    ("leftover tag", "a [strategy] tag where the task's format has none"),
    ("untagged reply", "a joint reply without its leading [strategy] tag"),
)
FLAG_BIT = {name: 1 << i for i, (name, _) in enumerate(FLAGS)}
_TAG = re.compile(r"\[([^\[\]\n]{1,60})\]")
_WORD = re.compile(r"\w+")
_LINES = re.compile(r"(?<=\n)(?=[^\n])")  # after a run of newlines: a line keeps the newlines that end it


class ViewError(InputError):
    """A build the viewer cannot read, or an output it must not write; the message names the file or option."""


@dataclass
class ViewSummary:
    out: Path
    pairs: int  # pairs in the page
    of: int  # pairs in the build
    dialogues: int
    bytes: int
    flags: dict[str, int]


# ---------------------------------------------------------------------------------------------------- reading


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ViewError(f"{path.name}: not found in {path.parent.name}/ ({what})") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ViewError(f"{path.parent.name}/{path.name}: not readable JSON ({exc})") from None


def _normal(text: str) -> str:
    """A reply reduced to its words: the leading tag, case, spacing and punctuation removed."""
    _, body = parse_tagged(text)
    return " ".join(_WORD.findall(body.lower()))


def _known_tags(text: str, taxonomy: Taxonomy) -> int:
    return sum(1 for m in _TAG.finditer(text) if taxonomy.canonical(m.group(1)) is not None)


def reply_flags(config: str, chosen: str, rejected: str, taxonomy: Taxonomy | None = None) -> set[str]:
    """The text flags of one pair (the judge's flags are added from its verdict); tags are read with the build's
    taxonomy (ESConv's by default)."""
    taxonomy = taxonomy or builtin("esconv")
    task = TASK_OF[config]
    flags: set[str] = set()
    if task == "sp":  # the replies are strategy names; the pair exists because they differ
        return flags
    a, b = _normal(chosen), _normal(rejected)
    if not a or not b:
        flags.add("empty reply")
    elif a == b:
        flags.add("identical")
    elif 2 * min(len(a), len(b)) >= NEAR_IDENTICAL * (len(a) + len(b)):  # the highest ratio these lengths allow
        if difflib.SequenceMatcher(None, a, b, autojunk=False).ratio() >= NEAR_IDENTICAL:
            flags.add("near-identical")
    if task == "rg" and (_known_tags(chosen, taxonomy) or _known_tags(rejected, taxonomy)):
        flags.add("leftover tag")
    if task == "vm":
        for text in (chosen, rejected):
            strategy, _ = parse_tagged(text)
            if strategy is None:
                flags.add("untagged reply")
            if _known_tags(text, taxonomy) > (1 if strategy is not None else 0):
                flags.add("leftover tag")
    return flags


class _Strings:
    """Every distinct string once; rows refer to strings by index."""

    def __init__(self) -> None:
        self.items: list[str] = []
        self._index: dict[str, int] = {}

    def __call__(self, text: str | None) -> int:
        if text is None:
            return -1
        index = self._index.get(text)
        if index is None:
            index = self._index[text] = len(self.items)
            self.items.append(text)
        return index


class _Table:
    """A small lookup table (strategies, emotion types, ...) in first-seen order after a fixed head."""

    def __init__(self, head: tuple[str, ...] = ()) -> None:
        self.items: list[str] = list(head)
        self._index = {v: i for i, v in enumerate(head)}

    def __call__(self, value: str | None) -> int:
        if value is None:
            return -1
        if value not in self._index:
            self._index[value] = len(self.items)
            self.items.append(value)
        return self._index[value]


def _history(prompt: list[dict]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in prompt if m["role"] != "system"]


def _status(row: dict) -> str:
    """A pair's judge_status; builds from before that column have only the verdict."""
    if "judge_status" in row and row["judge_status"] is not None:
        return row["judge_status"]
    return "judged" if row.get("judge") is not None else ""


def _seen(task: str, prompt: list[dict], seq: list[tuple[str, str]], turn: int) -> int | None:
    """Where in the dialogue the oldest message a pair's prompt still holds stands: 0 when the prompt holds all of
    the history before ``turn``, more when --trim-tokens shortened it; None when the prompt does not fit the
    dialogue as rebuilt."""
    history = [m["content"] for m in prompt if m["role"] != "system"]
    if task == "sp":  # one user message, one line per dialogue message
        count = len(history[0].split("\n")) if history and history[0] else 0
        return turn - count if count <= turn else None
    if len(history) > turn:
        return None
    start = turn - len(history)
    if not history:
        return start
    role, content = seq[start]
    first = history[0]
    whole = (first == content or parse_tagged(first)[1] == parse_tagged(content)[1]
             or (start == turn - 1 and role == "user" and first.startswith(content)))  # RG: the instruction follows
    return start if whole else start + 1  # a message cut by lines is one the prompt no longer holds whole


def _dialogues(rows_by_dialog: dict[int, list[dict]]) -> tuple[dict[int, list[tuple[str, str]]], dict[tuple, int]]:
    """Each dialogue's messages, rebuilt from its rows' prompts (one message per history message, oldest possibly
    dropped by --trim-tokens) and gold answers; and the position of each turn's gold answer in its dialogue."""
    dialogues: dict[int, list[tuple[str, str]]] = {}
    position: dict[tuple, int] = {}
    for dialog_id, rows in rows_by_dialog.items():
        seq: list[tuple[str, str]] = []
        for row in sorted(rows, key=lambda r: r["turn_index"]):
            history = _history(row["prompt"])
            # the history is the dialogue so far with its oldest messages perhaps dropped: find where it overlaps
            # the end of what is rebuilt (the longest overlap), then append what is new
            start = next((d for d in range(len(seq) + 1)
                          if len(seq) - d <= len(history) and seq[d:] == history[: len(seq) - d]), len(seq))
            seq.extend(history[len(seq) - start:])
            position[(dialog_id, row["turn_index"])] = len(seq)
            answer = (row.get("completion") or row.get("chosen"))[0]["content"]
            seq.append(("assistant", answer))
        dialogues[dialog_id] = seq
    return dialogues, position


# ----------------------------------------------------------------------------------------------- prompt lengths


class _PromptLengths:
    """Prompt lengths in tokens of the build's tokenizer, fast enough for every pair of a full build: each distinct
    line of text (with the newlines that end it) is tokenized once, and a prompt's length is the sum of its lines
    plus the chat template's tokens per message (measured once). Within a few tokens of the exact count (a test
    holds it to that); when no tokenizer can be loaded, characters / 4."""

    def __init__(self, name: str | None, required: bool = False) -> None:
        self.unit = "characters / 4"
        self.tokenizer_name: str | None = None
        self._lines: dict[str, int] = {}
        self._tok = None
        if name is None:
            return
        try:
            from ipm_prefdial.tokens import load_tokenizer

            self._tok, self.tokenizer_name = load_tokenizer(name)
            self._measure_template()
            self.unit = "tokens"
        except Exception as exc:  # noqa: BLE001 - no transformers, an unreachable Hub id, a template without roles
            if required:  # the user named it: say why it cannot be used rather than count characters
                raise ConfigError(f"--tokenizer {name}: cannot count tokens with it ({exc})") from None
            self._tok, self.tokenizer_name = None, None

    def _template(self, messages: list[dict], generation: bool) -> int:
        return len(self._tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=generation,
                                                 return_dict=False))

    def _measure_template(self) -> None:
        system = [{"role": "system", "content": "a"}]
        base = self._template(system, False)
        self.per_message = {"system": base - self._text("a")}
        for role in ("user", "assistant"):
            self.per_message[role] = self._template([*system, {"role": role, "content": "b"}], False) - base \
                - self._text("b")
        self.generation = self._template(system, True) - base

    def _text(self, text: str) -> int:
        return len(self._tok(text, add_special_tokens=False)["input_ids"])

    def add_lines(self, texts: list[str]) -> None:
        """Tokenize the distinct lines of ``texts`` in one batch."""
        if self._tok is None:
            return
        new = sorted({line for text in texts for line in _LINES.split(text)} - self._lines.keys())
        if new:
            for line, ids in zip(new, self._tok(new, add_special_tokens=False)["input_ids"], strict=True):
                self._lines[line] = len(ids)

    def content(self, text: str) -> int:
        if self._tok is None:
            return round(len(text) / 4)
        return sum(self._lines[line] for line in _LINES.split(text))

    def prompt(self, messages: list[dict]) -> int:
        if self._tok is None:
            return round(sum(len(m["content"]) for m in messages) / 4)
        return sum(self.content(m["content"]) + self.per_message.get(m["role"], self.per_message["user"])
                   for m in messages) + self.generation


# --------------------------------------------------------------------------------------------------- sampling


def _outcome(row: dict) -> str:
    judge = row["judge"]
    if judge is not None:
        return "retained" if judge["retained"] else "not retained"
    return _status(row) or "none"


def stratified_sample(rows: list[dict], n: int, seed: int = 0) -> list[dict]:
    """``n`` rows drawn without replacement, stratified by (config, gold strategy, judge outcome): each stratum gets
    its share of ``n`` (largest remainders, ties to the larger stratum, then by name) and is drawn by a generator
    seeded from ``seed`` and the stratum's name. Rows keep their order."""
    if n >= len(rows):
        return rows
    strata: dict[tuple, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        strata[(row["_config"], row["strategy"] or "", _outcome(row))].append(i)
    total = len(rows)
    quota = {key: n * len(members) // total for key, members in strata.items()}
    left = n - sum(quota.values())
    by_remainder = sorted(strata, key=lambda k: (-(n * len(strata[k]) % total), -len(strata[k]), k))
    for key in by_remainder[:left]:
        quota[key] += 1
    picked: list[int] = []
    for key in sorted(strata):
        rng = random.Random(hashlib.sha256(f"{seed}|{'|'.join(key)}".encode()).hexdigest())
        picked.extend(rng.sample(strata[key], quota[key]))
    return [rows[i] for i in sorted(picked)]


def one_per_dialogue(rows: list[dict], seed: int = 0) -> list[dict]:
    """One row per dialogue (the one whose seeded hash of config and id is least); rows keep their order."""
    best: dict[int, tuple[str, int]] = {}
    for i, row in enumerate(rows):
        rank = hashlib.sha256(f"{seed}|{row['_config']}/{row['id']}".encode()).hexdigest()
        if row["dialog_id"] not in best or rank < best[row["dialog_id"]][0]:
            best[row["dialog_id"]] = (rank, i)
    return [rows[i] for i in sorted(i for _, i in best.values())]


# ----------------------------------------------------------------------------------------------------- the data


def _tokenizer_name(manifest: dict) -> str | None:
    """The tokenizer to count prompt lengths with: the build's own when it is the bundled one (read offline), else
    none (characters / 4; `ipm view --tokenizer` names one). A recorded name is never looked up on the Hub or in
    the working directory, so the page does not depend on either."""
    recorded = (manifest.get("build_config") or {}).get("trim_tokenizer") or "bundled"
    return "bundled" if recorded == "bundled" else None


def _blind_order(config: str, pair_id: str) -> int:
    """1 when annotate mode shows the rejected reply first (as A): fixed per pair by a hash, about half of them."""
    return hashlib.sha256(f"{config}/{pair_id}".encode()).digest()[0] & 1


def _overview(manifest: dict, root: Path) -> dict:
    """What the overview shows, from the manifest (which never holds a secret or a machine path)."""
    keep = ("name", "version", "tool", "stage", "complete", "incomplete", "source", "split", "executor", "models",
            "sampling", "mining", "judge", "trim", "prompt_tokens", "files")
    out = {key: manifest.get(key) for key in keep if key in manifest}
    if isinstance(out.get("models"), dict):  # endpoints are not shown (a host name can be internal)
        out["models"] = {role: {k: v for k, v in m.items() if k != "base_url"} if isinstance(m, dict) else m
                         for role, m in out["models"].items()}
    out["directory"] = root.name
    return out


def collect(build_dir: str | Path, *, sample: int | None = None, seed: int = 0, annotate: bool = False,
            tokenizer: str | None = "auto") -> dict:
    """The page's data for a build: overview, tables, dialogues and pairs (see the module docstring). For an
    annotation page (``annotate``) only response and joint pairs, one pair per dialogue: two pairs of one turn
    (RG and VM, or two samples) share their gold reply, and a later turn shows an earlier one's gold in its
    history, so either would tell an annotator which reply is gold."""
    root = Path(build_dir)
    if not root.is_dir():
        raise ViewError(f"{root.name}: not a directory (pass a build directory made by `ipm build`)")
    manifest = _read_json(root / "manifest.json", "a build directory has one")
    strings = _Strings()
    try:
        taxonomy = from_manifest(manifest)
    except TaxonomyError as exc:
        raise ViewError(str(exc)) from None
    strategies = _Table(taxonomy.names)
    emotions, problems, statuses = _Table(), _Table(), _Table()
    errors = _Table(LABELS)

    # every pair row of the build, with its config
    rows: list[dict] = []
    files: dict[str, dict[str, int]] = {}
    for config in PAIR_CONFIGS:
        for split in PAIR_SPLITS:
            part = read_rows(root, config, split, ViewError)
            if part is None:
                continue
            files.setdefault(config, {})[split] = len(part)
            for row in part:
                row["_config"], row["_split"] = config, split
            rows.extend(part)
    for retained in RETAINED_OF:
        for split in PAIR_SPLITS:
            path = root / data_file(retained, split)
            if path.is_file():
                files.setdefault(retained, {})[split] = pq.read_metadata(path).num_rows
    of = len(rows)
    if annotate:
        rows = one_per_dialogue([r for r in rows if TASK_OF[r["_config"]] != "sp"], seed)
    if sample is not None:
        rows = stratified_sample(rows, sample, seed)

    # dialogues, once each: from the joint rows of the dialogues that have pairs
    wanted = {row["dialog_id"] for row in rows}
    by_dialog: dict[int, list[dict]] = defaultdict(list)
    for config in DIALOGUE_CONFIGS:
        for split in PAIR_SPLITS:
            for row in read_rows(root, config, split, ViewError, ["dialog_id", "turn_index", "prompt",
                                                        "completion" if config.endswith("_sft") else "chosen"]) or []:
                if row["dialog_id"] in wanted:
                    by_dialog[row["dialog_id"]].append(row)
        if by_dialog:
            break
    for dialog_id, part in by_dialog.items():  # one row per turn (pair configs have a row per sample)
        by_dialog[dialog_id] = list({r["turn_index"]: r for r in part}.values())
    dialogues, position = _dialogues(by_dialog)

    # prompt lengths
    lengths = _PromptLengths(_tokenizer_name(manifest) if tokenizer == "auto" else tokenizer,
                             required=tokenizer not in ("auto", None))
    lengths.add_lines([m["content"] for row in rows for m in row["prompt"]])

    systems: dict[str, int] = {}
    miners = _Table()
    flag_counts: Counter = Counter()
    pairs = []
    for row in rows:
        config = row["_config"]
        chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
        system = next((m["content"] for m in row["prompt"] if m["role"] == "system"), None)
        if system is not None:
            systems.setdefault(config, strings(system))
        flags = reply_flags(config, chosen, rejected, taxonomy)
        judge, status = row["judge"], _status(row)
        if status.startswith("failed"):
            flags.add("judge failed")
        if judge is not None and judge["chosen_error"] is not None:
            flags.add("gold judged an error")
        seq = dialogues.get(row["dialog_id"], [])
        turn = position.get((row["dialog_id"], row["turn_index"]))
        seen = _seen(TASK_OF[config], row["prompt"], seq, turn) if turn is not None else None
        if seen:
            flags.add("prompt trimmed")
        flag_counts.update(flags)
        miner = row["miner"] or {}
        pair: dict[str, Any] = {
            "k": PAIR_CONFIGS.index(config), "sp": PAIR_SPLITS.index(row["_split"]), "id": row["id"],
            "d": row["dialog_id"], "t": row["turn_index"], "at": -1 if turn is None else turn,
            "s": strategies(row["strategy"]), "e": emotions(row["emotion_type"]), "p": problems(row["problem_type"]),
            "c": strings(chosen), "r": strings(rejected), "rs": strategies(row["rejected_strategy"]),
            "js": statuses(status), "pt": lengths.prompt(row["prompt"]), "pm": len(row["prompt"]),
            "f": sum(FLAG_BIT[f] for f in flags), "ab": _blind_order(config, row["id"]),
            "h": pair_digest(chosen, rejected),
            # engine, model and sampling (the per-request seed and prompt hash stay in the parquet)
            "mn": miners(json.dumps({k: v for k, v in miner.items() if k not in ("seed", "prompt_sha256")},
                                    sort_keys=True)),
        }
        if seen:
            pair["seen"] = seen  # the first message of the dialogue the (trimmed) prompt still holds
        if turn is None:  # no joint rows to rebuild the dialogue from: the pair's own history, as sent
            pair["hist"] = [[0 if m["role"] == "user" else 1, strings(m["content"])]
                            for m in row["prompt"] if m["role"] != "system"]
        if judge is not None:
            pair.update({"jr": 1 if judge["retained"] else 0, "ce": errors(judge["chosen_error"] or "None"),
                         "re": errors(judge["rejected_error"] or "None"), "cx": strings(judge["chosen_explanation"]),
                         "rx": strings(judge["rejected_explanation"]), "jm": judge["model"]})
        pairs.append(pair)

    used = {p["d"] for p in pairs}
    stored_dialogues = {}
    for dialog_id in sorted(used):
        messages = []
        for role, content in dialogues.get(dialog_id, []):
            if role == "assistant":
                tag, text = parse_tagged(content)
                label = taxonomy.canonical(tag) if tag else None
                messages.append([1, strings(text if label else content), strategies(label)])
            else:
                messages.append([0, strings(content), -1])
        stored_dialogues[str(dialog_id)] = messages

    trim = manifest.get("trim") or {}
    return {
        "format": 1,
        "overview": _overview(manifest, root),
        "files": files,
        "configs": list(PAIR_CONFIGS),
        "retained_of": {k: v for k, v in RETAINED_OF.items() if k in files},
        "splits": list(PAIR_SPLITS),
        "strategies": strategies.items, "emotions": emotions.items, "problems": problems.items,
        "statuses": statuses.items, "labels": errors.items, "miners": [json.loads(m) for m in miners.items],
        "flags": [{"name": name, "help": text, "count": flag_counts[name]} for name, text in FLAGS],
        "systems": systems,
        "tokens": {"unit": lengths.unit, "tokenizer": lengths.tokenizer_name,
                   "trim": trim.get("tokens") if isinstance(trim, dict) else None, "trl_max_length": 1024},
        "sample": None if len(pairs) == of else {"n": len(pairs), "of": of, "seed": seed,
                                                 "annotate": annotate},
        # names the pairs this page shows (ids and replies): the key of its annotations in the browser's storage
        "fingerprint": hashlib.sha256("\n".join(f"{PAIR_CONFIGS[p['k']]}/{p['id']}/{p['h']}"
                                                 for p in pairs).encode()).hexdigest()[:16],
        "strings": strings.items,
        "dialogues": stored_dialogues,
        "pairs": pairs,
    }


# ------------------------------------------------------------------------------------------------------ the page


def _script_json(data: dict) -> str:
    """JSON that is safe inside a <script> element: no ``<``, ``>`` or ``&`` (written as \\u escapes), so no string
    can close the element or open a comment; U+2028/2029 escaped too."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return text


def _asset(name: str) -> str:
    return resources.files("ipm_prefdial.resources").joinpath("view", name).read_text(encoding="utf-8")


def render(data: dict, *, annotate: bool = False) -> str:
    """The HTML page for ``data`` (from `collect`)."""
    overview = data["overview"]
    title = f"{overview.get('name') or 'build'} {overview.get('version') or ''} ({overview['directory']})"
    parts = {"TITLE": _html_text(title), "CSS": _asset("view.css"), "JS": _asset("view.js"),
             "MODE": "annotate" if annotate else "browse", "DATA": _script_json(data)}
    # one pass, so nothing inserted (a build's name, a reply) is read again as a placeholder
    return re.sub(r"\{\{([A-Z]+)\}\}", lambda m: parts[m.group(1)], _asset("view.html"))


def _html_text(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def write_view(build_dir: str | Path, out: str | Path, *, sample: int | None = None, seed: int = 0,
               annotate: bool = False, tokenizer: str | None = "auto") -> ViewSummary:
    """Write the page for ``build_dir`` to ``out`` (a file outside the build: a build holds only its card, manifest
    and data). The file is written whole or not at all."""
    root, target = Path(build_dir), Path(out)
    if sample is not None and sample < 1:
        raise ConfigError(f"--sample must be at least 1, not {sample}")
    if target.is_dir():
        raise ConfigError(f"-o {target.name}: a directory; name the HTML file to write")
    if root.is_dir() and _inside(target, root):
        raise ConfigError(f"-o {target.name}: inside the build directory {root.name}/; write the page elsewhere "
                        "(a build holds only README.md, manifest.json and data/)")
    if not target.parent.is_dir():
        raise ConfigError(f"-o {out}: its folder does not exist")
    data = collect(root, sample=sample, seed=seed, annotate=annotate, tokenizer=tokenizer)
    page = render(data, annotate=annotate).encode("utf-8")
    write_bytes_atomic(target, page)
    counts = {f["name"]: f["count"] for f in data["flags"]}
    return ViewSummary(target, len(data["pairs"]), data["sample"]["of"] if data["sample"] else len(data["pairs"]),
                       len(data["dialogues"]), len(page), counts)
