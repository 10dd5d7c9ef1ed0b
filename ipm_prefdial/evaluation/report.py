"""The report of ``ipm eval --report DIR``: a markdown table (systems side by side) and a PNG bar chart of the
preference p of each strategy for each system (the picture ESC papers use for preference bias).

The strategies are those the metrics list (their taxonomy's labels, in its order), never a fixed set: ESConv's
eight, ExTES's sixteen, ... Systems scored with different taxonomies share one table, "-" where a strategy is not
one of a system's."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

ROWS = [
    ("Q (macro-F1, lenient)", "strategy.lenient.Q"), ("weighted F1 (lenient)", "strategy.lenient.weighted_f1"),
    ("B (bias, lenient)", "strategy.lenient.B"), ("dropped ratio (lenient)", "strategy.lenient.dropped_ratio"),
    ("Q (macro-F1, strict)", "strategy.strict.Q"), ("weighted F1 (strict)", "strategy.strict.weighted_f1"),
    ("B (bias, strict)", "strategy.strict.B"),
    ("BLEU-1", "reference.bleu-1"), ("BLEU-2", "reference.bleu-2"), ("BLEU-3", "reference.bleu-3"),
    ("BLEU-4", "reference.bleu-4"), ("Distinct-1", "reference.dist-1"), ("Distinct-2", "reference.dist-2"),
    ("Distinct-3", "reference.dist-3"), ("corpus Distinct-2", "reference.corpus-dist-2"),
    ("ROUGE-L", "reference.rouge-l"), ("F1", "reference.f1"), ("length (tokens)", "reference.length"),
    ("judge: fluency", "judge.fluency"), ("judge: professionalism", "judge.professionalism"),
    ("judge: empathy", "judge.empathy"), ("judge: helpfulness", "judge.helpfulness"),
]


def metric(obj: dict, dotted: str):
    """The value at a dotted path of a metrics object (None where it has none)."""
    for part in dotted.split("."):
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def fmt(value) -> str:
    """A metric as the tables show it: three decimals below 1, two above."""
    if value is None:
        return "-"
    return f"{value:.3f}" if abs(value) < 1 and value != 0 else f"{value:.2f}"


def ci_key(dotted: str) -> str:
    """Where the interval of a metric is: ``strategy.lenient.Q`` -> ``strategy.lenient.ci95.Q``,
    ``reference.bleu-1`` -> ``reference.ci95.bleu-1``."""
    parts = dotted.split(".")
    cut = 2 if parts[0] == "strategy" else 1
    return ".".join([*parts[:cut], "ci95", *parts[cut:]])


def with_ci(result: dict, dotted: str) -> str:
    """A metric and its interval where it has one: ``22.96 [20.45, 25.44]``."""
    value, ci = metric(result, dotted), metric(result, ci_key(dotted))
    if value is None or not isinstance(ci, list):
        return fmt(value)
    return f"{fmt(value)} [{fmt(ci[0])}, {fmt(ci[1])}]"


def table_rows(results: dict[str, dict]) -> list[tuple[str, list[str]]]:
    """The console table's rows: each metric any system has, with every system's value (and interval)."""
    rows = []
    for title, key in ROWS:
        if any(metric(r, key) is not None for r in results.values()):
            rows.append((title, [with_ci(r, key) for r in results.values()]))
    return rows


# Fewer dialogues than this and no difference is called distinguishable: with n dialogues a resample is one of only
# (2n-1 choose n) multisets, and when every dialogue leans the same way (likely with two or three) every resample
# does, so the bootstrap's p hits its floor whatever the effect. The figures are still given.
MIN_DIALOGUES = 10

# which way is better, for the comparisons (None: neither; a reply length is better the closer it is to the gold's)
LOWER = frozenset({"B", "dropped_ratio"})
NEITHER = frozenset({"length"})


def better(dotted: str) -> str | None:
    last = dotted.rsplit(".", 1)[-1]
    return None if last in NEITHER else "lower" if last in LOWER else "higher"


def compare_rows(result: dict) -> list[tuple[str, str, str, str, str]]:
    """The comparison of a system with the baseline: (metric, A - B [interval], p, better, reading) per metric.
    A difference is distinguishable from zero when its 95% interval leaves out 0."""
    rows = []
    compare = result.get("compare") or {}
    few = compare.get("dialogues", 0) < MIN_DIALOGUES
    for title, key in ROWS:
        entry = metric(compare, key)
        if not isinstance(entry, dict) or entry.get("diff") is None:
            continue
        diff, ci, p = entry["diff"], entry.get("ci95"), entry.get("p")
        direction = better(key)
        if few:
            reading = f"too few dialogues ({compare['dialogues']}) to tell"
        elif not ci or ci[0] <= 0 <= ci[1]:
            reading = "not distinguishable from 0"
        elif direction is None:
            reading = "differs"
        else:
            wins = (diff > 0) == (direction == "higher")
            reading = "A better" if wins else "baseline better"
        rows.append((title, _diff_ci(entry), "-" if p is None else f"{p:.3f}", direction or "-", reading))
    return rows


def _diff_ci(entry: dict) -> str:
    """A difference, signed, and its interval: ``+1.06 [-1.68, 3.67]``."""
    diff, ci = entry["diff"], entry.get("ci95")
    cell = f"{diff:+.3f}" if abs(diff) < 1 and diff != 0 else f"{diff:+.2f}"
    return cell + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")


def diff_cell(entry: dict | None, few: bool = False) -> str:
    """A difference as the comparison tables show it: ``+1.06 [-1.68, 3.67], p 0.448``, starred when its interval
    leaves 0 out (never when it rests on too ``few`` dialogues)."""
    if not isinstance(entry, dict) or entry.get("diff") is None:
        return "-"
    ci, p = entry.get("ci95"), entry.get("p")
    cell = _diff_ci(entry)
    if p is not None:
        cell += f", p {p:.3f}"
    return cell + (" *" if ci and not ci[0] <= 0 <= ci[1] and not few else "")


def comparisons_markdown(comparisons: dict[str, dict], keys: Sequence[tuple[str, str]] | None = None) -> list[str]:
    """One table of several paired comparisons (columns: ``name -> compare block``), rows ``keys`` (default: the
    report's metrics); a legend says how to read it."""
    if not comparisons:
        return []
    keys = keys or ROWS
    names = list(comparisons)
    lines = ["| metric (better) | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for title, key in keys:
        cells = [diff_cell(metric(c, key), c.get("dialogues", 0) < MIN_DIALOGUES) for c in comparisons.values()]
        if all(cell == "-" for cell in cells):
            continue
        lines.append(f"| {title} ({better(key) or 'neither'}) | " + " | ".join(cells) + " |")
    first = next(iter(comparisons.values()))
    lines += ["", f"Each cell: A - B on the turns both hold ({first['matched']} turns, {first['dialogues']} dialogues "
                  "in the first), its 95% interval and two-sided p from a paired bootstrap over dialogues; * where "
                  "the interval leaves 0 out (distinguishable from no difference)."]
    few = min(c.get("dialogues", 0) for c in comparisons.values())
    if few < MIN_DIALOGUES:
        lines += ["", f"Only {few} dialogue(s): nothing is starred. With so few, every resample can lean the same way "
                      f"and p falls to its floor whatever the effect; the intervals need at least {MIN_DIALOGUES} "
                      "dialogues to mean much."]
    return lines


def compare_markdown(results: dict[str, dict]) -> list[str]:
    lines: list[str] = []
    for name, result in results.items():
        compare = result.get("compare")
        if not compare:
            continue
        unmatched = compare["unmatched"]
        lines += ["", f"## {name} (A) against {compare['baseline']}", "",
                  f"Paired over the {compare['matched']} turns both files hold ({compare['dialogues']} dialogues; "
                  f"unmatched: {unmatched['predictions']} of A, {unmatched['baseline']} of the baseline). "
                  f"A - B with its 95% interval and two-sided p from a paired bootstrap over dialogues "
                  f"({result['bootstrap']['resamples']} resamples, seed {result['bootstrap']['seed']}); a "
                  "difference is distinguishable from 0 when its interval leaves 0 out.", "",
                  "| metric | A - B [95% CI] | p | better | reading |", "|---|---:|---:|---|---|"]
        lines += [f"| {t} | {d} | {p} | {b} | {r} |" for t, d, p, b, r in compare_rows(result)]
    return lines


def labels_of(results: dict[str, dict], mode: str = "lenient") -> list[str]:
    """The strategies of the systems' metrics, in their taxonomy's order (the union, first seen first)."""
    labels: list[str] = []
    for result in results.values():
        for s in metric(result, f"strategy.{mode}.preference") or {}:
            if s not in labels:
                labels.append(s)
    return labels


def _taxonomies(results: dict[str, dict]) -> list[str]:
    names: list[str] = []
    for result in results.values():
        name = result.get("taxonomy")
        if name and name not in names:
            names.append(name)
    return names


def markdown(results: dict[str, dict]) -> str:
    names = list(results)
    labels = labels_of(results)
    sizes = {len(metric(results[n], "strategy.lenient.preference") or {}) for n in names}
    total = f"the {min(sizes)} values sum to {min(sizes)}" if len(sizes) == 1 else \
        "each system's values sum to its number of strategies"
    lines = ["| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for title, values in table_rows(results):
        lines.append(f"| {title} | " + " | ".join(values) + " |")
    lines += ["", f"Preference p per strategy (lenient; 1 = no preference, {total}):", "",
              "| strategy | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for s in labels:
        lines.append(f"| {s} | " + " | ".join(_preference_cell(results[n], s) for n in names) + " |")
    taxonomies = _taxonomies(results)
    if len(taxonomies) == 1:
        lines += ["", f"Strategy taxonomy: {taxonomies[0]} ({len(labels)} strategies)."]
    elif taxonomies:
        lines += ["", f"Strategy taxonomies: {', '.join(taxonomies)} (each system is scored with its own)."]
    boot = next((r["bootstrap"] for r in results.values() if r.get("bootstrap")), None)
    if boot:
        lines += ["", f"Brackets: 95% intervals from {boot['resamples']} bootstrap resamples of the dialogues (seed "
                      f"{boot['seed']}; the turns of a dialogue are resampled together)."]
    if any("rg-gold" in n for n in names):
        lines += ["", "rg-gold is given the gold strategy: its strategy metrics are perfect by construction; it is "
                      "the upper reference for the reply metrics."]
    lines += compare_markdown(results)
    return "\n".join(lines) + "\n"


def _preference_cell(result: dict, strategy: str) -> str:
    value = (metric(result, "strategy.lenient.preference") or {}).get(strategy)
    ci = (metric(result, "strategy.lenient.ci95.preference") or {}).get(strategy)
    return fmt(value) if value is None or not ci else f"{fmt(value)} [{fmt(ci[0])}, {fmt(ci[1])}]"


def preference_chart(results: dict[str, dict], path: Path, mode: str = "lenient") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    labels = labels_of(results, mode)
    width = 0.8 / max(len(names), 1)
    # ten inches hold ESConv's eight strategies; more (ExTES's sixteen) get wider
    fig, ax = plt.subplots(figsize=(max(10.0, 1.0 * len(labels)), 4.8), dpi=120)
    for k, name in enumerate(names):
        p = results[name]["strategy"][mode]["preference"]
        b = results[name]["strategy"][mode]["B"]
        xs = [i + (k - (len(names) - 1) / 2) * width for i, s in enumerate(labels) if s in p]
        ax.bar(xs, [p[s] for s in labels if s in p], width=width, label=f"{name} (B = {b:.2f})")
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([textwrap.fill(s, 13) for s in labels], fontsize=8)
    ax.set_ylabel("preference p")
    ax.set_title(f"Strategy preference ({mode}); dashed line: no preference")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_report(results: dict[str, dict], directory: str | Path) -> dict[str, Path]:
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    md, png = out / "report.md", out / "preference.png"
    md.write_text("# Evaluation\n\n" + markdown(results) + "\n![preference](preference.png)\n", encoding="utf-8")
    preference_chart(results, png)
    return {"markdown": md, "chart": png}
