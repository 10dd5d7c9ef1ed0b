"""``ipm eval``: strategy and reference metrics of a predictions JSONL (ours or anyone's), plus an optional judge.

The strategy labels are those of a taxonomy: ``--taxonomy`` (a built-in name or a YAML file) when given, else the
one the file records (``ipm infer`` writes the build's into every prediction's ``taxonomy`` field), else ESConv's
eight (predictions made elsewhere, and by builds from before taxonomies). The metrics name the one used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from ipm_prefdial.engines import EngineSpec
from ipm_prefdial.errors import InputError
from ipm_prefdial.evaluation.bootstrap import (
    GROUPS,
    RESAMPLES,
    SEED,
    DialogueSums,
    dialogues_of,
    draws,
    intervals,
    nest,
    paired,
)
from ipm_prefdial.evaluation.infer import PREDICTION_FIELDS, taxonomy_record
from ipm_prefdial.evaluation.reference import from_turns, reference_metrics, reference_turns
from ipm_prefdial.evaluation.strategy import MODES, match, strategy_metrics
from ipm_prefdial.jsonlines import json_objects
from ipm_prefdial.taxonomy import BUILTIN, Taxonomy, TaxonomyError, builtin, load_taxonomy, parse_taxonomy

TAXONOMY_FIELD = "taxonomy"


class PredictionsError(InputError):
    pass


def taxonomy_option(value: str) -> Taxonomy:
    """``--taxonomy``: a built-in name (esconv, extes, mesc, esc-pro) or a taxonomy YAML file. A name that is
    neither is a ``ConfigError``; a file that cannot be used a ``TaxonomyError`` naming it and its field."""
    from ipm_prefdial.errors import ConfigError

    if value in BUILTIN:
        return builtin(value)
    if not Path(value).is_file():
        raise ConfigError(f"--taxonomy {value}: neither a built-in taxonomy ({', '.join(BUILTIN)}) nor a taxonomy "
                          "YAML file")
    return load_taxonomy(value)


def recorded_taxonomy(value: object, where: str) -> Taxonomy:
    """The taxonomy a prediction's ``taxonomy`` field names: a built-in name, or a whole taxonomy (a mapping)."""
    if value is None:
        return builtin("esconv")
    if isinstance(value, str):
        if value not in BUILTIN:
            raise PredictionsError(f"{where}: field taxonomy {value!r} is not a built-in taxonomy ("
                                   f"{', '.join(BUILTIN)}); give its file with --taxonomy FILE.yaml")
        return builtin(value)
    try:
        return parse_taxonomy(value, f"{where}: field taxonomy")
    except TaxonomyError as exc:
        raise PredictionsError(str(exc)) from None


def read_predictions(path: str | Path, taxonomy: Taxonomy | None = None) -> list[dict]:
    """The lines of a predictions file, each checked for the required fields and types, the gold strategy against
    ``taxonomy`` (default: the one the file records, else ESConv's). Each row comes back with its gold strategy
    as the taxonomy names it and its ``taxonomy`` field naming the taxonomy it was checked with."""
    path = Path(path)
    if not path.is_file():
        raise PredictionsError(f"{path}: no such predictions file")
    rows, seen = [], {}
    first: tuple[int, object] | None = None  # (line, value) of the first line's taxonomy field
    record: str | dict = ""  # the taxonomy checked with, as the rows name it (set at the first line)
    for number, row in json_objects(path, PredictionsError):
        missing = [k for k in PREDICTION_FIELDS if k not in row]
        if missing:
            raise PredictionsError(f"{path}:{number} (id {row.get('id')!r}): missing field(s) {', '.join(missing)}")
        if first is None:
            first = (number, row.get(TAXONOMY_FIELD))
            if taxonomy is None:
                taxonomy = recorded_taxonomy(first[1], f"{path}:{number} (id {row['id']!r})")
            record = taxonomy_record(taxonomy)
        elif row.get(TAXONOMY_FIELD) != first[1]:
            raise PredictionsError(f"{path}:{number} (id {row['id']!r}): field taxonomy differs from line "
                                   f"{first[0]}'s (one file, one taxonomy)")
        gold = match(row["strategy"], taxonomy) if isinstance(row["strategy"], str) else None
        if gold is None:
            variant = next(iter(taxonomy.variants), None)
            raise PredictionsError(f"{path}:{number} (id {row['id']!r}): field strategy {row['strategy']!r} is "
                                   f"not one of the {len(taxonomy.labels)} strategies of the {taxonomy.name} "
                                   f"taxonomy ({', '.join(taxonomy.names)}; any case"
                                   + (f", or a spelling variant such as {variant!r})" if variant else ")"))
        row["strategy"] = gold
        row[TAXONOMY_FIELD] = record
        if not isinstance(row["response"], str):
            raise PredictionsError(f"{path}:{number} (id {row['id']!r}): field response must be a string")
        for field in ("predicted_strategy", "predicted_response"):
            if row[field] is not None and not isinstance(row[field], str):
                raise PredictionsError(f"{path}:{number} (id {row['id']!r}): field {field} must be a string "
                                       f"or null")
        if row["id"] in seen:
            raise PredictionsError(f"{path}:{number}: id {row['id']!r} repeats line {seen[row['id']]}")
        seen[row["id"]] = number
        rows.append(row)
    if not rows:
        raise PredictionsError(f"{path}: no predictions")
    return rows


def evaluate(rows: list[dict], taxonomy: Taxonomy | None = None, replies: list[dict] | None = None) -> dict:
    """{"turns", "taxonomy", "strategy": {"lenient": ..., "strict": ...}, "reference": ...} of one predictions
    file, the strategy metrics over the labels of ``taxonomy`` (default: the one the rows name, as
    ``read_predictions`` leaves them, else ESConv's); ``replies``: the rows' ``reference_turns`` if at hand."""
    if taxonomy is None:
        taxonomy = recorded_taxonomy(rows[0].get(TAXONOMY_FIELD), f"prediction {rows[0].get('id')!r}") if rows \
            else builtin("esconv")
    gold = [r["strategy"] for r in rows]
    predicted = [r["predicted_strategy"] for r in rows]
    return {
        "turns": len(rows),
        "taxonomy": taxonomy.name,
        "strategy": {mode: strategy_metrics(gold, predicted, mode, taxonomy) for mode in MODES},
        "reference": from_turns(replies) if replies is not None else
        reference_metrics([r["predicted_response"] for r in rows], [r["response"] for r in rows]),
    }


def evaluate_files(files: Sequence[str | Path], taxonomy: Taxonomy | None = None, judge: EngineSpec | None = None,
                   cache_dir: str | None = None, console: Console | None = None, *,
                   baseline: str | Path | None = None, resamples: int = RESAMPLES,
                   seed: int = SEED) -> dict[str, dict]:
    """``ipm eval``: the metrics of each predictions file, keyed by a column name (``label_of``), with the judge's
    scores when a judge engine is given (its progress shown on ``console``), each measurement's 95% interval from
    ``resamples`` dialogue resamples (none when 0), and with a ``baseline`` file, its own column (last) and a
    ``compare`` block in every other system's object (``compare_systems``)."""
    systems: dict[str, Scored] = {}
    results: dict[str, dict] = {}
    paths = [*files, *([baseline] if baseline is not None else [])]
    for n, path in enumerate(paths):
        scored = score_file(path, taxonomy, judge, cache_dir, console, resamples=resamples, seed=seed)
        label = label_of(path, scored.rows)
        if baseline is not None and n == len(paths) - 1:
            label = f"baseline: {label}"
        if label in results:
            label = f"{label} [{len(results)}]"
        results[label], systems[label] = scored.result, scored
    if baseline is not None:
        base = list(results)[-1]
        for label in list(results)[:-1]:
            results[label]["compare"] = compare_systems(systems[label], systems[base], base, resamples, seed)
    return results


@dataclass
class Scored:
    """One predictions file scored: its metrics (``result``) and what a paired comparison reads again."""

    result: dict
    rows: list[dict]
    judged: list[dict] | None  # per turn, {dimension: score or None}
    replies: list[dict]  # per turn, ``reference_turns``


def score_file(path: str | Path, taxonomy: Taxonomy | None = None, judge: EngineSpec | None = None,
               cache_dir: str | None = None, console: Console | None = None, *, resamples: int = RESAMPLES,
               seed: int = SEED) -> Scored:
    """One predictions file's metrics, judge scores (with a judge engine) and 95% intervals (``resamples`` > 0)."""
    rows = read_predictions(path, taxonomy)
    replies = reference_turns([r["predicted_response"] for r in rows], [r["response"] for r in rows])
    result = evaluate(rows, taxonomy, replies)
    judged = None
    if judge is not None:
        from ipm_prefdial.evaluation.judge_scores import judge_scores
        from ipm_prefdial.progress import progress_bar

        with progress_bar(console or Console(stderr=True)) as progress:
            answers = judge_scores(rows, judge, cache_dir=cache_dir, progress=progress)
        judged = answers.pop("per_turn")
        result["judge"] = answers["scores"]
        result["judge_details"] = {k: v for k, v in answers.items() if k != "scores"}
    if resamples:
        with_intervals(result, rows, judged, resamples, seed, replies)
    return Scored(result, rows, judged, replies)


def with_intervals(result: dict, rows: list[dict], judged: list[dict] | None, resamples: int, seed: int,
                   replies: list[dict] | None = None) -> None:
    """Add ``ci95`` to every metric group of ``result`` (``evaluate``'s, for ``rows``) and ``bootstrap`` at the top."""
    taxonomy = recorded_taxonomy(rows[0].get(TAXONOMY_FIELD), f"prediction {rows[0].get('id')!r}")
    dialogues = dialogues_of(rows)
    sums = DialogueSums(rows, taxonomy, dialogues, judged, replies)
    ci = intervals(sums, draws(len(dialogues), resamples, seed))
    for group in GROUPS:
        node = _group(result, group)
        if node is not None:
            node["ci95"] = nest(ci, group)
    result["bootstrap"] = {"resamples": resamples, "unit": "dialogue", "seed": seed, "dialogues": len(dialogues)}


def compare_systems(a: Scored, b: Scored, baseline: str, resamples: int = RESAMPLES, seed: int = SEED) -> dict:
    """A against the baseline B over the turns both hold (matched by ``id``): each measurement's difference
    A - B with its interval and two-sided p from a paired bootstrap over their dialogues, mirroring the metric
    groups."""
    rows_a, judged_a, replies_a = a.rows, a.judged, a.replies
    rows_b, judged_b, replies_b = b.rows, b.judged, b.replies
    if rows_a[0].get(TAXONOMY_FIELD) != rows_b[0].get(TAXONOMY_FIELD):
        raise PredictionsError(f"--baseline {baseline}: scored with another strategy taxonomy than the predictions; "
                               "give both the same one with --taxonomy")
    at_b = {r["id"]: n for n, r in enumerate(rows_b)}
    common = [n for n, r in enumerate(rows_a) if r["id"] in at_b]
    if not common:
        raise PredictionsError(f"--baseline {baseline}: no turn id in common with the predictions")
    taxonomy = recorded_taxonomy(rows_a[0].get(TAXONOMY_FIELD), f"prediction {rows_a[0].get('id')!r}")
    pick_a = [rows_a[n] for n in common]
    pick_b = [{**rows_b[at_b[r["id"]]], "dialog_id": r["dialog_id"]} for r in pick_a]  # A's dialogues are the unit
    dialogues = dialogues_of(pick_a)
    judge_a = [judged_a[n] for n in common] if judged_a is not None else None
    judge_b = [judged_b[at_b[rows_a[n]["id"]]] for n in common] if judged_b is not None else None
    sums_a = DialogueSums(pick_a, taxonomy, dialogues, judge_a, [replies_a[n] for n in common])
    sums_b = DialogueSums(pick_b, taxonomy, dialogues, judge_b, [replies_b[at_b[rows_a[n]["id"]]] for n in common])
    diffs = paired(sums_a, sums_b, draws(len(dialogues), resamples, seed))
    out: dict = {"baseline": baseline, "matched": len(common),
                 "unmatched": {"predictions": len(rows_a) - len(common), "baseline": len(rows_b) - len(common)},
                 "dialogues": len(dialogues)}
    for group in GROUPS:
        nested = nest(diffs, group)
        if nested:
            node = out
            for key in group[:-1]:
                node = node.setdefault(key, {})
            node[group[-1]] = nested
    return out


def _group(result: dict, group: tuple[str, ...]) -> dict | None:
    node = result
    for key in group:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def label_of(path: str | Path, rows: list[dict]) -> str:
    """A column name for a file: its system (from ipm infer) and stem."""
    system = rows[0].get("system")
    stem = Path(path).stem
    return stem if not system or system in stem else f"{system} ({stem})"


def flatten(obj: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in obj.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out
