"""``ipm eval``: strategy and reference metrics of a predictions JSONL (ours or anyone's), plus an optional judge."""

from __future__ import annotations

from pathlib import Path

from ipm_prefdial.evaluation.infer import PREDICTION_FIELDS
from ipm_prefdial.evaluation.reference import reference_metrics
from ipm_prefdial.evaluation.strategy import MODES, match, strategy_metrics
from ipm_prefdial.jsonlines import json_objects
from ipm_prefdial.strategies import STRATEGIES


class PredictionsError(ValueError):
    pass


def read_predictions(path: str | Path) -> list[dict]:
    """The lines of a predictions file, each checked for the required fields and types."""
    path = Path(path)
    if not path.is_file():
        raise PredictionsError(f"{path}: no such predictions file")
    rows, seen = [], {}
    for number, row in json_objects(path, PredictionsError):
        missing = [k for k in PREDICTION_FIELDS if k not in row]
        if missing:
            raise PredictionsError(f"{path}:{number} (id {row.get('id')!r}): missing field(s) {', '.join(missing)}")
        gold = match(row["strategy"])
        if gold is None:
            raise PredictionsError(f"{path}:{number} (id {row['id']!r}): field strategy {row['strategy']!r} is "
                                   f"not one of the 8 ESConv strategies ({', '.join(STRATEGIES)}; any case, "
                                   f"or a synonym such as 'Questions')")
        row["strategy"] = gold
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


def evaluate(rows: list[dict]) -> dict:
    """{"strategy": {"lenient": ..., "strict": ...}, "reference": ...} of one predictions file."""
    gold = [r["strategy"] for r in rows]
    predicted = [r["predicted_strategy"] for r in rows]
    return {
        "turns": len(rows),
        "strategy": {mode: strategy_metrics(gold, predicted, mode) for mode in MODES},
        "reference": reference_metrics([r["predicted_response"] for r in rows], [r["response"] for r in rows]),
    }


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
