"""``ipm agreement``: how far to trust the LLM judge. Its error label of each reply is compared with the labels of
people (the annotation files ``ipm view`` exports) and of another judge (``--reference``): Cohen's kappa over the
four labels, over error vs no error and over the retained verdict of a pair, the confusion of labels, the pairs
the raters disagree on, and how often people prefer the gold reply (with a Wilson interval).

A kappa is the agreement of two raters beyond what their label frequencies give by chance. On a few dozen pairs it
is too noisy to act on, so comparisons of the judge with a person on fewer than 50 pairs carry a warning.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from rich.markup import escape
from rich.table import Table

from ipm_prefdial.jsonlines import json_objects
from ipm_prefdial.judging import ERROR_TYPES, JUDGED, JUDGED_CONFIGS, NO_ERROR
from ipm_prefdial.release.features import RETAINED_OF, data_file

LABELS = (NO_ERROR, *ERROR_TYPES)  # the order of the confusion matrices
REPLIES = ("chosen", "rejected")
PREFERENCES = ("chosen", "rejected", "tie")
SPLITS = ("train", "validation")
JUDGE = "judge"  # the rater name of the build's judge
Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval
MIN_PAIRS = 50
UNRELIABLE = f"fewer than {MIN_PAIRS} pairs: kappa is unreliable"
ONE_LABEL = "undefined: one label only"
NO_ITEMS = "no items"
SHARE_NOTE = ("share = chosen / (chosen + rejected): ties are left out of the share and of its interval; the pooled "
              "row counts each annotator's answer, so a pair several people answered counts more than once and "
              "its interval is narrower than that of as many independent pairs")

Item = tuple[str, str, str]  # (config, id, reply): one reply, the unit of the per-reply figures
PairKey = tuple[str, str]  # (config, id)


def pair_digest(chosen: str, rejected: str) -> str:
    """A short digest of a pair's two replies. `ipm view` writes it into each annotation, so labels given to one
    build's replies are never counted against another build whose pair has the same id."""
    return hashlib.sha256(f"{chosen}\0{rejected}".encode()).hexdigest()[:16]


class AgreementError(ValueError):
    """Bad input: one line naming the file, the line and the field."""


@dataclass
class Verdicts:
    """What the build says: the ids of each judged pair config and the judge's label of each judged reply."""

    directory: Path
    ids: dict[str, set[str]]  # config -> ids over both splits
    labels: dict[Item, str]  # the judge's labels; only pairs whose judge_status is "judged"
    status: dict[PairKey, str]  # judge_status of every pair
    digests: dict[PairKey, str] = field(default_factory=dict)  # pair_digest of every pair's replies


@dataclass
class Ratings:
    """Labels of raters other than the build's judge, as read from files."""

    labels: dict[str, dict[Item, str]] = field(default_factory=dict)  # rater -> reply -> label
    preferences: dict[str, dict[PairKey, str]] = field(default_factory=dict)  # annotator -> pair -> preference
    replaced: dict[str, int] = field(default_factory=dict)  # rater -> labellings replaced by a later one


# ---------------------------------------------------------------------------------------------------- reading


def read_build(directory: str | Path) -> Verdicts:
    """The judged pair configs of a build (both splits): their ids, and the judge's labels where it gave some."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AgreementError(f"{directory}: no such build directory")
    ids: dict[str, set[str]] = {}
    labels: dict[Item, str] = {}
    status: dict[PairKey, str] = {}
    digests: dict[PairKey, str] = {}
    for config in JUDGED_CONFIGS:
        for split in SPLITS:
            path = directory / data_file(config, split)
            if not path.is_file():
                continue
            for row in _parquet_rows(path):
                ids.setdefault(config, set()).add(row["id"])
                if row.get("chosen") and row.get("rejected"):
                    digests[(config, row["id"])] = pair_digest(row["chosen"][0]["content"],
                                                               row["rejected"][0]["content"])
                state = row["judge_status"]
                status[(config, row["id"])] = state
                if state == JUDGED and row["judge"] is not None:
                    for reply in REPLIES:
                        labels[(config, row["id"], reply)] = row["judge"][f"{reply}_error"] or NO_ERROR
    if not ids:
        wanted = " or ".join(data_file(c, "train") for c in JUDGED_CONFIGS)
        raise AgreementError(f"{directory}: no judged pair data ({wanted}); build it with ipm build --stage all")
    return Verdicts(directory, ids, labels, status, digests)


def _parquet_rows(path: Path) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        names = set(pq.read_schema(path).names)
        missing = [c for c in ("id", "judge") if c not in names]
        if missing:
            raise AgreementError(f"{path}: no column {', '.join(missing)} (not a pair config of ipm build)")
        columns = ["id", "judge", *(c for c in ("judge_status", "chosen", "rejected") if c in names)]
        rows = pq.read_table(path, columns=columns).to_pylist()
    except (pa.ArrowException, OSError) as exc:
        raise AgreementError(f"{path}: cannot read the parquet file ({exc})") from None
    for row in rows:  # a build from before judge_status: a verdict is there or not
        row.setdefault("judge_status", JUDGED if row["judge"] is not None else "missing")
    return rows


def _field(obj: dict, name: str, where: str) -> object:
    if name not in obj:
        raise AgreementError(f"{where}: missing field {name}")
    return obj[name]


def _text(obj: dict, name: str, where: str) -> str:
    value = _field(obj, name, where)
    if not isinstance(value, str) or not value:
        raise AgreementError(f"{where}: field {name} must be a non-empty string, not {value!r}")
    return value


def _label(value: object, name: str, where: str) -> str:
    if value not in LABELS:
        raise AgreementError(f"{where}: field {name}: unknown label {value!r} (expected one of "
                             f"{', '.join(LABELS)})")
    return value  # type: ignore[return-value]


def _pair(obj: dict, verdicts: Verdicts, where: str) -> PairKey:
    """The (config, id) a line names, a *_retained config read as its parent; both must be in the build."""
    config = _text(obj, "config", where)
    parent = RETAINED_OF.get(config, config)
    if parent not in JUDGED_CONFIGS:
        known = ", ".join((*JUDGED_CONFIGS, *RETAINED_OF))
        raise AgreementError(f"{where}: field config: unknown config {config!r} (expected one of {known})")
    if parent not in verdicts.ids:
        raise AgreementError(f"{where}: field config: {config!r} is not in the build {verdicts.directory} (it has "
                             f"{', '.join(sorted(verdicts.ids))})")
    row_id = _text(obj, "id", where)
    if row_id not in verdicts.ids[parent]:
        raise AgreementError(f"{where}: field id: {row_id!r} is not a pair of {parent} in {verdicts.directory}")
    return parent, row_id


def _time(obj: dict, where: str) -> datetime | None:
    value = obj.get("time")
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        raise AgreementError(f"{where}: field time: {value!r} is not an ISO 8601 time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def read_annotations(paths: Iterable[str | Path], verdicts: Verdicts) -> Ratings:
    """People's labels and preferences, from annotation files (one line per annotated pair, any annotators).

    When an annotator labelled a pair more than once, the line with the latest ``time`` is kept (among equal or
    missing times, the later line, files in the order given); ``replaced`` counts the others. A reply label that
    is null or absent means the reply was not labelled; a null or absent preference means none was given."""
    records: dict[tuple[str, PairKey], list[tuple[tuple, dict[str, str], str | None]]] = {}
    seq = 0
    for path in map(Path, paths):
        for number, obj in json_objects(path, AgreementError):
            where = f"{path}:{number}"
            pair = _pair(obj, verdicts, where)
            digest = obj.get("pair_sha256")
            if digest is not None and verdicts.digests.get(pair) not in (None, digest):
                raise AgreementError(f"{where}: field pair_sha256: the replies annotated are not those of "
                                     f"{pair[0]}/{pair[1]} in this build (an annotation of another build?)")
            annotator = _text(obj, "annotator", where)
            if annotator == JUDGE:
                raise AgreementError(f"{where}: field annotator: {JUDGE!r} names the build's judge; give the "
                                     "person another name")
            labels = _field(obj, "labels", where)
            if not isinstance(labels, dict):
                raise AgreementError(f"{where}: field labels must be an object with chosen and rejected")
            extra = sorted(set(labels) - set(REPLIES))
            if extra:
                raise AgreementError(f"{where}: field labels: unknown reply {extra[0]!r} (expected chosen, "
                                     "rejected)")
            given = {reply: _label(labels[reply], f"labels.{reply}", where)
                     for reply in REPLIES if labels.get(reply) is not None}
            preference = obj.get("preference")
            if preference is not None and preference not in PREFERENCES:
                raise AgreementError(f"{where}: field preference: unknown preference {preference!r} (expected "
                                     f"{', '.join(PREFERENCES)} or null)")
            moment = _time(obj, where)
            seq += 1
            key = (moment is not None, moment or datetime.min.replace(tzinfo=timezone.utc), seq)
            records.setdefault((annotator, pair), []).append((key, given, preference))
    ratings = Ratings()
    for (annotator, pair), versions in sorted(records.items()):
        _, given, preference = max(versions, key=lambda v: v[0])
        labels_of = ratings.labels.setdefault(annotator, {})
        for reply, label in given.items():
            labels_of[(*pair, reply)] = label
        prefs = ratings.preferences.setdefault(annotator, {})
        if preference is not None:
            prefs[pair] = preference
        ratings.replaced[annotator] = ratings.replaced.get(annotator, 0) + len(versions) - 1
    return ratings


def read_references(paths: Iterable[str | Path], verdicts: Verdicts, annotators: Iterable[str] = ()) -> Ratings:
    """Per-reply labels of other judges. A file is one rater named by its stem (gpt4o.jsonl: gpt4o) unless its
    lines carry a ``rater`` field. A JSON null ``error`` means no error, as in the build. When a reply is
    labelled twice by one rater, the later line is kept and counted in ``replaced``."""
    taken = set(annotators)
    ratings = Ratings()
    for path in map(Path, paths):
        for number, obj in json_objects(path, AgreementError):
            where = f"{path}:{number}"
            pair = _pair(obj, verdicts, where)
            rater = _text(obj, "rater", where) if "rater" in obj else path.stem
            if rater == JUDGE or rater in taken:
                whose = "the build's judge" if rater == JUDGE else "an annotator"
                named = "field rater" if "rater" in obj else "the file's name"
                raise AgreementError(f"{where}: {named}: rater {rater!r} is already {whose}; give the reference "
                                     "lines a \"rater\" field with another name")
            reply = _text(obj, "reply", where)
            if reply not in REPLIES:
                raise AgreementError(f"{where}: field reply: unknown reply {reply!r} (expected chosen, rejected)")
            error = _field(obj, "error", where)
            label = NO_ERROR if error is None else _label(error, "error", where)
            labels_of = ratings.labels.setdefault(rater, {})
            if (*pair, reply) in labels_of:
                ratings.replaced[rater] = ratings.replaced.get(rater, 0) + 1
            labels_of[(*pair, reply)] = label
            ratings.replaced.setdefault(rater, 0)
    return ratings


# ---------------------------------------------------------------------------------------------------- figures


def cohen_kappa(pairs: Iterable[tuple[str, str]]) -> dict:
    """Cohen's kappa of two raters over the items both labelled, given as (first's label, second's label).

    kappa = (p_o - p_e) / (1 - p_e), p_o the observed agreement, p_e the chance agreement from the two raters'
    label frequencies. It is null with no items, and null when p_e = 1 (both raters gave one and the same label
    to everything: agreement beyond chance is then not defined)."""
    pairs = list(pairs)
    n = len(pairs)
    if n == 0:
        return {"kappa": None, "agreement": None, "expected": None, "n": 0, "note": NO_ITEMS}
    agree = sum(a == b for a, b in pairs)
    first, second = Counter(a for a, _ in pairs), Counter(b for _, b in pairs)
    chance = sum(count * second[label] for label, count in first.items())  # n^2 * p_e
    result = {"agreement": agree / n, "expected": chance / (n * n), "n": n, "note": None}
    if chance == n * n:
        return {**result, "kappa": None, "note": ONE_LABEL}
    return {**result, "kappa": (agree * n - chance) / (n * n - chance)}  # the same fraction, in whole numbers


def wilson_interval(successes: int, n: int, z: float = Z95) -> list[float] | None:
    """The Wilson score interval of a proportion successes / n ([low, high]); null when n is 0."""
    if n == 0:
        return None
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return [max(0.0, centre - half), min(1.0, centre + half)]


def preference_figures(preferences: Iterable[str]) -> dict:
    """Counts of chosen, rejected and tie, and the share of the gold (chosen) reply with its 95% interval."""
    counts = Counter(preferences)
    decided = counts["chosen"] + counts["rejected"]
    return {"chosen": counts["chosen"], "rejected": counts["rejected"], "tie": counts["tie"], "decided": decided,
            "share": counts["chosen"] / decided if decided else None,
            "wilson_95": wilson_interval(counts["chosen"], decided)}


def _retained(labels: dict[Item, str], pair: PairKey) -> bool:
    return labels[(*pair, "chosen")] == NO_ERROR and labels[(*pair, "rejected")] != NO_ERROR


def compare(first: str, a: dict[Item, str], second: str, b: dict[Item, str]) -> dict:
    """Every figure of two raters over what both labelled: kappas per reply (four labels; error or not), kappa
    per pair on the retained verdict (pairs whose two replies both raters labelled), confusion, disagreements."""
    common = sorted(set(a) & set(b))
    pairs = sorted({(config, row_id) for config, row_id, _ in common})
    complete = [p for p in pairs if all((*p, r) in a and (*p, r) in b for r in REPLIES)]
    confusion = [[0] * len(LABELS) for _ in LABELS]
    for item in common:
        confusion[LABELS.index(a[item])][LABELS.index(b[item])] += 1
    return {
        "raters": [first, second],
        "pairs": len(pairs),
        "kappa_4": cohen_kappa((a[i], b[i]) for i in common),
        "kappa_error": cohen_kappa((_is_error(a[i]), _is_error(b[i])) for i in common),
        "kappa_retained": cohen_kappa((_verdict(_retained(a, p)), _verdict(_retained(b, p))) for p in complete),
        "confusion": {"labels": list(LABELS), "rows": first, "columns": second, "matrix": confusion},
        "disagreements": sorted({f"{c}/{i}" for c, i, r in common if a[(c, i, r)] != b[(c, i, r)]}),
        "warning": None,
    }


def _is_error(label: str) -> str:
    return "no error" if label == NO_ERROR else "error"


def _verdict(retained: bool) -> str:
    return "retained" if retained else "not retained"


def rater_figures(kind: str, labels: dict[Item, str]) -> dict:
    """How much one rater labelled: pairs (with at least one reply labelled), pairs with both, replies, labels."""
    pairs = Counter((config, row_id) for config, row_id, _ in labels)
    counts = Counter(labels.values())
    return {"kind": kind, "pairs": len(pairs), "pairs_both_replies": sum(1 for n in pairs.values() if n == 2),
            "replies": len(labels), "labels": {label: counts[label] for label in LABELS}}


def compute_agreement(verdicts: Verdicts, annotations: Ratings, references: Ratings,
                      inputs: dict | None = None) -> dict:
    """All figures, as the JSON ``ipm agreement --json`` writes (see ``to_json``)."""
    people = sorted(annotations.labels.keys() | annotations.preferences.keys())
    others = [*people, *sorted(references.labels)]
    labels_of = {**{p: annotations.labels.get(p, {}) for p in people}, **references.labels}
    annotated = sorted({(c, i) for name in others for c, i, _ in labels_of[name]})
    missing = Counter(verdicts.status[p] for p in annotated if (*p, "chosen") not in verdicts.labels)
    # The judge labelled every judged pair of the build; its figures cover the pairs someone else labelled.
    seen = set(annotated)
    judge = {item: label for item, label in verdicts.labels.items() if item[:2] in seen}
    labels_of = {JUDGE: judge, **labels_of}
    raters = {JUDGE: rater_figures("judge", judge)}
    raters.update({p: rater_figures("annotator", labels_of[p]) for p in people})
    raters.update({r: rater_figures("reference", labels_of[r]) for r in sorted(references.labels)})

    warnings, notes = [], []
    comparisons = []
    for name in others:
        comparison = compare(JUDGE, judge, name, labels_of[name])
        if name in people and comparison["pairs"] < MIN_PAIRS:
            comparison["warning"] = UNRELIABLE
            warnings.append(f"judge vs {name}: {comparison['pairs']} pairs, {UNRELIABLE}")
        comparisons.append(comparison)
    for k, first in enumerate(others):
        for second in others[k + 1:]:
            comparisons.append(compare(first, labels_of[first], second, labels_of[second]))

    replaced = {name: n for name, n in {**annotations.replaced, **references.replaced}.items() if n}
    for name, n in sorted(replaced.items()):
        notes.append(f"{name}: {n} earlier labelling(s) of a pair or reply replaced by a later one")
    if missing:
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(missing.items()))
        notes.append(f"{sum(missing.values())} annotated pair(s) have no judge verdict ({kinds}): left out of "
                     "the judge's comparisons, kept among the other raters")
    notes.append("the judge's counts cover the pairs some other rater labelled")
    return {
        "inputs": inputs or {},
        "labels": list(LABELS),
        "build": {"directory": str(verdicts.directory),
                  "pairs": sum(len(ids) for ids in verdicts.ids.values()),
                  "judged_pairs": len({item[:2] for item in verdicts.labels})},
        "annotated_pairs": len(annotated),
        "judge_missing": {"pairs": sum(missing.values()), "statuses": dict(sorted(missing.items()))},
        "raters": raters,
        "comparisons": comparisons,
        "preference": {
            "annotators": {p: preference_figures(annotations.preferences.get(p, {}).values()) for p in people},
            "pooled": preference_figures(v for p in people for v in annotations.preferences.get(p, {}).values()),
            "note": SHARE_NOTE,
        },
        "replaced": dict(sorted(replaced.items())),
        "warnings": warnings,
        "notes": notes,
    }


def agreement(build: str | Path, annotation_files: Iterable[str | Path] = (),
              reference_files: Iterable[str | Path] = ()) -> dict:
    """Read a build, annotation files and reference files, and compute every figure (raises AgreementError)."""
    annotation_files, reference_files = list(annotation_files), list(reference_files)
    verdicts = read_build(build)
    annotations = read_annotations(annotation_files, verdicts)
    references = read_references(reference_files, verdicts, annotations.labels.keys() |
                                 annotations.preferences.keys())
    inputs = {"annotations": [str(p) for p in annotation_files], "references": [str(p) for p in reference_files]}
    return compute_agreement(verdicts, annotations, references, inputs)


# ---------------------------------------------------------------------------------------------------- output


def to_json(result: dict) -> str:
    return json.dumps(result, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _kappa(figure: dict) -> str:
    return _number(figure["kappa"]) if figure["kappa"] is not None else figure["note"]


def _interval(interval: list[float] | None) -> str:
    return "-" if interval is None else f"{interval[0]:.3f} to {interval[1]:.3f}"


COMPARISON_COLUMNS = ("first", "second", "pairs", "replies", "kappa_4", "agreement_4", "kappa_error",
                      "agreement_error", "pairs (both replies)", "kappa_retained", "agreement_retained",
                      "disagreeing pairs", "warning")
RATER_COLUMNS = ("rater", "kind", "pairs", "pairs (both replies)", "replies", *LABELS)
PREFERENCE_COLUMNS = ("annotator", "chosen", "rejected", "tie", "share of chosen", "95% Wilson interval")


def _comparison_cells(c: dict) -> list[str]:
    k4, ke, kr = c["kappa_4"], c["kappa_error"], c["kappa_retained"]
    return [*c["raters"], str(c["pairs"]), str(k4["n"]), _kappa(k4), _number(k4["agreement"]), _kappa(ke),
            _number(ke["agreement"]), str(kr["n"]), _kappa(kr), _number(kr["agreement"]),
            str(len(c["disagreements"])), c["warning"] or ""]


CONSOLE_COMPARISON_COLUMNS = ("raters", "pairs", "kappa, 4 labels", "kappa, error or not", "kappa, retained",
                              "disagreeing pairs")


def _console_comparison_cells(c: dict) -> list[str]:
    def cell(figure: dict) -> str:
        return f"{_kappa(figure)} ({_number(figure['agreement'])}, {figure['n']})"

    return [" vs ".join(c["raters"]), str(c["pairs"]), cell(c["kappa_4"]), cell(c["kappa_error"]),
            cell(c["kappa_retained"]), str(len(c["disagreements"]))]


def _rater_cells(name: str, r: dict) -> list[str]:
    return [name, r["kind"], str(r["pairs"]), str(r["pairs_both_replies"]), str(r["replies"]),
            *(str(r["labels"][label]) for label in LABELS)]


def _preference_cells(name: str, p: dict) -> list[str]:
    return [name, str(p["chosen"]), str(p["rejected"]), str(p["tie"]), _number(p["share"]),
            _interval(p["wilson_95"])]


def _blocks(result: dict) -> list[tuple[str, list[dict]]]:
    judge = [c for c in result["comparisons"] if c["raters"][0] == JUDGE]
    rest = [c for c in result["comparisons"] if c["raters"][0] != JUDGE]
    return [(title, block) for title, block in (("judge vs the other raters", judge),
                                                ("the other raters among themselves", rest)) if block]


def summary_line(result: dict) -> str:
    kinds = Counter(r["kind"] for r in result["raters"].values())
    missing = result["judge_missing"]["pairs"]
    return (f"{kinds['annotator']} annotator(s) and {kinds['reference']} reference rater(s) on "
            f"{result['annotated_pairs']} pair(s) ({missing} without a judge verdict); "
            f"{len(result['comparisons'])} comparison(s), {len(result['warnings'])} warning(s)")


def tables(result: dict) -> list[Table]:
    """The console view: raters, one table per block of comparisons, the confusion of each comparison,
    preferences."""
    shown: list[Table] = []
    raters = Table(title="raters (labels per reply)", title_justify="left")
    for k, col in enumerate(RATER_COLUMNS):
        raters.add_column(col, justify="left" if k < 2 else "right")
    for name, figures in result["raters"].items():
        raters.add_row(*map(escape, _rater_cells(name, figures)))
    shown.append(raters)
    for title, block in _blocks(result):  # narrower than the markdown table: each kappa with its agreement and n
        table = Table(title=title, title_justify="left",
                      caption="kappa (observed agreement, items); warnings below", caption_justify="left")
        for k, col in enumerate(CONSOLE_COMPARISON_COLUMNS):
            table.add_column(col, justify="left" if k == 0 else "right")
        for c in block:
            table.add_row(*map(escape, _console_comparison_cells(c)))
        shown.append(table)
    for c in result["comparisons"]:
        first, second = c["raters"]
        table = Table(title=f"confusion: {escape(first)} (rows) vs {escape(second)} (columns)", title_justify="left")
        table.add_column("")
        for label in LABELS:
            table.add_column(label, justify="right")
        for label, row in zip(LABELS, c["confusion"]["matrix"], strict=True):
            table.add_row(label, *map(str, row))
        shown.append(table)
    if result["preference"]["annotators"]:
        table = Table(title="preference for the gold (chosen) reply", title_justify="left",
                      caption=result["preference"]["note"], caption_justify="left")
        for k, col in enumerate(PREFERENCE_COLUMNS):
            table.add_column(col, justify="left" if k == 0 else "right")
        for name, figures in result["preference"]["annotators"].items():
            table.add_row(*map(escape, _preference_cells(name, figures)))
        table.add_row(*_preference_cells("all annotators", result["preference"]["pooled"]))
        shown.append(table)
    return shown


def _md_row(cells: Iterable[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _md_table(columns: Iterable[str], rows: Iterable[Iterable[str]], left: int = 1) -> list[str]:
    columns = list(columns)
    return [_md_row(columns), "|" + "|".join("---" if k < left else "---:" for k in range(len(columns))) + "|",
            *(_md_row(r) for r in rows)]


def to_markdown(result: dict) -> str:
    """The same figures as markdown tables."""
    lines = ["# Agreement with the LLM judge", "", summary_line(result) + ".", "",
             f"Labels: {', '.join(LABELS)}. Kappas are Cohen's; {ONE_LABEL} means both raters gave one and the "
             "same label to everything.", "", "## Raters", ""]
    lines += _md_table(RATER_COLUMNS, (_rater_cells(n, r) for n, r in result["raters"].items()), left=2)
    for title, block in _blocks(result):
        lines += ["", f"## Comparisons: {title}", ""]
        lines += _md_table(COMPARISON_COLUMNS[:-1], (_comparison_cells(c)[:-1] for c in block), left=2)
    for c in result["comparisons"]:
        first, second = c["raters"]
        lines += ["", f"### Confusion: {first} (rows) vs {second} (columns)", ""]
        lines += _md_table([f"{first} \\ {second}", *LABELS],
                           ([label, *map(str, row)] for label, row in zip(LABELS, c["confusion"]["matrix"],
                                                                          strict=True)))
        if c["disagreements"]:
            lines += ["", "Disagreeing pairs: " + ", ".join(f"`{key}`" for key in c["disagreements"])]
    preference = result["preference"]
    if preference["annotators"]:
        lines += ["", "## Preference for the gold (chosen) reply", ""]
        rows = [_preference_cells(n, p) for n, p in preference["annotators"].items()]
        lines += _md_table(PREFERENCE_COLUMNS, [*rows, _preference_cells("all annotators", preference["pooled"])])
        lines += ["", preference["note"] + "."]
    if result["warnings"]:
        lines += ["", "## Warnings", "", *(f"- {w}" for w in result["warnings"])]
    if result["notes"]:
        lines += ["", "## Notes", "", *(f"- {n}" for n in result["notes"])]
    return "\n".join(lines) + "\n"
