"""The figures: Cohen's kappas, confusion of labels, disagreements and the preference for the gold reply."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from ipm_prefdial.agreement.read import (
    JUDGE,
    LABELS,
    REPLIES,
    Item,
    PairKey,
    Ratings,
    Verdicts,
    read_annotations,
    read_build,
    read_references,
)
from ipm_prefdial.mining.judge import NO_ERROR

Z95 = 1.959963984540054  # the normal quantile of a two-sided 95% interval
MIN_PAIRS = 50
UNRELIABLE = f"fewer than {MIN_PAIRS} pairs: kappa is unreliable"
ONE_LABEL = "undefined: one label only"
NO_ITEMS = "no items"
SHARE_NOTE = ("share = chosen / (chosen + rejected): ties are left out of the share and of its interval; the pooled "
              "row counts each annotator's answer, so a pair several people answered counts more than once and "
              "its interval is narrower than that of as many independent pairs")


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
