"""The figures as console tables, JSON and markdown."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable

from rich.markup import escape
from rich.table import Table

from ipm_prefdial.agreement.figures import ONE_LABEL
from ipm_prefdial.agreement.read import JUDGE, LABELS

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
