"""What the commands print when they end: the summary of a build or a dry run, of predictions, of metrics, of a
training run, of an engine check, of a validation."""

from __future__ import annotations

import json

from rich.console import Console
from rich.table import Table

from ipm_prefdial.errors import IncompleteError
from ipm_prefdial.release.manifest import incomplete_line


def accounting(acc: dict) -> str:
    """Where every request of a run went: requests = cached + failures replayed + sent + repeats."""
    parts = [f"{acc['cache_hits']} cached"]
    if acc.get("replayed_failures"):
        parts.append(f"{acc['replayed_failures']} failures replayed")
    parts.append(f"{acc['sent']} sent")
    if acc.get("merged"):
        parts.append(f"{acc['merged']} repeats of another request")
    return f"{acc['requests']} requests ({', '.join(parts)})"


def per_worker(workers: list[dict]) -> str:
    """Answers and rate of each Ray worker."""
    return "; ".join(f"worker {k}: {w['answered']} answers" + (f" at {w['requests_per_s']}/s" if w["requests_per_s"]
                                                              else "")
                     + (f", {w['deaths']} restarts" if w["deaths"] else "") for k, w in enumerate(workers))


def build_summary(out: Console, result) -> None:
    """The configs' row counts, the split, mining and judge figures, Ray workers; ``IncompleteError`` when requests
    are left failed (exit 3: the build is written, a rerun completes it)."""
    m = result.manifest
    table = Table(title=f"IPM-PrefDial {m['version']} -> {result.out}", title_justify="left")
    table.add_column("config")
    for s in ("train", "validation", "test"):
        table.add_column(s, justify="right")
    for name, counts in m["counts"].items():
        table.add_row(name, *(f"{counts.get(s, 0):,}" if s in counts else "-" for s in ("train", "validation", "test")))
    out.print(table)
    skipped = m["split"]["skipped_invalid"]
    extra = f"; {len(skipped)} invalid dialogues skipped (see manifest.json)" if skipped else ""
    dialogues = m["split"]["dialogues"]
    out.print(f"split {m['split']['method']}: {dialogues['train']} / {dialogues['validation']} / {dialogues['test']} "
              f"dialogues{extra}; built in {result.seconds:.1f} s")
    if m.get("mining"):
        parts = []
        for task, info in m["mining"].items():
            acc = info["accounting"]
            pairs = sum(info["pairs"].values())
            trimmed = sum(v for k, v in info["outcomes"].items() if k.endswith("_trimmed"))
            lost = sum(v for k, v in info["outcomes"].items() if k.startswith("failed:"))
            parts.append(f"{task.upper()}: {accounting(acc)}, {pairs} pairs ({trimmed} trimmed at max_tokens), "
                         f"{lost} failed")
        out.print("mining " + "; ".join(parts))
    for config, info in (m.get("judge") or {}).items():
        out.print(f"judge {config}: {accounting(info['accounting'])}, {info['retained']} of {info['judged']} "
                  f"retained ({info['judge_failures']} judge failures)")
    pools: dict[str, tuple[list[str], dict]] = {}  # one Ray pool may serve several roles
    for role, d in (m.get("models") or {}).items():
        if "per_worker" in d:
            pools.setdefault(json.dumps(d["per_worker"]), ([], d))[0].append(role.upper())
    for roles, d in pools.values():
        out.print(f"ray {'+'.join(roles)} ({d['workers']} workers): {per_worker(d['per_worker'])}")
    spend = m.get("spend")
    if spend:
        roles = "; ".join(f"{role} {mode} {t['usd']:.4f} USD ({t['requests']:,} answers)"
                          for role, modes in spend["by_role"].items() for mode, t in modes.items())
        cap = f"; cap {spend['max_spend']:g} USD" if spend["max_spend"] is not None else ""
        out.print(f"spend {spend['usd']:.4f} USD ({spend['usd_this_run']:.4f} in this run)"
                  f"{': ' + roles if roles else ''}{cap}")
    if not result.complete:
        raise IncompleteError(incomplete_line(m))


DRY_RUN_COLUMNS = (("requests", "requests"), ("cached", "cached"), ("send", "to send"),
                   ("prompt_tokens", "prompt tokens to send (est.)"),
                   ("completion_tokens_max", "completion tokens (max)"))


def dry_run(out: Console, estimate: dict) -> None:
    table = Table(title="dry run: nothing sent, nothing written", title_justify="left")
    table.add_column("task", no_wrap=True, min_width=max((len(t) for t in estimate), default=5))
    for _, title in DRY_RUN_COLUMNS:
        table.add_column(title, justify="right")
    for task, e in estimate.items():
        table.add_row(task, *(f"{e[k]:,}" for k, _ in DRY_RUN_COLUMNS))
    if estimate:
        table.add_row("total", *(f"{sum(e[k] for e in estimate.values()):,}" for k, _ in DRY_RUN_COLUMNS))
    out.print(table)
    if any(task.startswith("judge:") for task in estimate):
        out.print("Judge requests are known for the pairs whose policy answers are cached; for the answers still to "
                  "come, at most one each is counted.", soft_wrap=True)
    if any("usd_online" in e for e in estimate.values()):
        total = {mode: sum(e[f"usd_{mode}"] for e in estimate.values()) for mode in ("online", "batch")}
        tasks = "; ".join(f"{task} {e['usd_online']:,.2f} / {e['usd_batch']:,.2f}" for task, e in estimate.items())
        out.print(f"US dollars to send it, at most: {total['online']:,.2f} online, {total['batch']:,.2f} as batches "
                  f"(online / batch: {tasks}). An upper bound: every prompt token at the input price, every answer "
                  "at its max tokens.", soft_wrap=True, highlight=False)


def infer_summary(out: Console, summary: dict) -> None:
    """The predictions written, per task accounting, Ray workers; ``IncompleteError`` when requests are left
    failed."""
    from ipm_prefdial.engines.runner import transient_left

    models = ", ".join(f"{k.upper()} {v}" for k, v in summary["models"].items())
    out.print(f"{summary['rows']} predictions ({summary['trimmed']} trimmed at max_tokens to their last sentence, "
              f"{summary['failed']} without a reply) -> {summary['out']}; {models}; strategy taxonomy "
              f"{summary['taxonomy']}")
    for task, acc in summary["accounting"].items():
        out.print(f"{task.upper()}: {accounting(acc)}, {acc['completion_tokens']} completion tokens, "
                  f"{acc['wall_s']:.1f} s")
    for pool in summary["ray"]:
        out.print(f"ray {'+'.join(t.upper() for t in pool['tasks'])} ({len(pool['per_worker'])} workers): "
                  + per_worker(pool["per_worker"]))
    left = transient_left(summary["accounting"].values())
    if left:
        raise IncompleteError(f"{sum(left.values())} requests ended in transient failures "
                              f"({', '.join(f'{k} {v}' for k, v in left.items())}): their predictions have no reply. "
                              "Run the same command again to send them again.")


def eval_table(out: Console, results: dict[str, dict], seconds: float) -> None:
    from ipm_prefdial.evaluation.report import compare_rows, table_rows

    taxonomies = ", ".join(dict.fromkeys(r["taxonomy"] for r in results.values()))
    table = Table(title=f"ipm eval ({seconds:.1f} s; strategy taxonomy {taxonomies})", title_justify="left")
    table.add_column("metric")
    for label in results:
        table.add_column(label, justify="right")
    for title, values in table_rows(results):
        table.add_row(title, *values)
    out.print(table)
    boot = next((r["bootstrap"] for r in results.values() if r.get("bootstrap")), None)
    if boot:
        out.print(f"[brackets: 95% intervals, {boot['resamples']} resamples of the dialogues, seed {boot['seed']}]",
                  highlight=False, markup=False)
    for label, result in results.items():
        if "compare" not in result:
            continue
        c = result["compare"]
        table = Table(title=f"{label} (A) - {c['baseline']}: paired over {c['matched']} turns, {c['dialogues']} "
                            f"dialogues (unmatched: {c['unmatched']['predictions']} of A, "
                            f"{c['unmatched']['baseline']} of the baseline)", title_justify="left")
        for column in ("metric", "A - B [95% CI]", "p", "better", "reading"):
            table.add_column(column, justify="right" if column in ("A - B [95% CI]", "p") else "left")
        for row in compare_rows(result):
            table.add_row(*row)
        out.print(table)


def train_summary(out: Console, cfg, metrics: dict) -> None:
    table = Table(title=f"ipm train -> {cfg.out} ({metrics['seconds']:.0f} s)", title_justify="left")
    for col in ("model", "SFT loss first -> last", "DPO pairs", "held-out pref. acc. before -> after"):
        table.add_column(col)
    for task in cfg.tasks:
        s, d = metrics[task]["sft"], metrics[task]["dpo"]
        table.add_row(task.upper(), f"{s['train_loss_first']:.3f} -> {s['train_loss_last']:.3f}",
                      f"{d['pairs_used']} ({d['pairs_source']})",
                      f"{d['heldout_pref_accuracy_before']:.3f} -> {d['heldout_pref_accuracy_after']:.3f}")
    out.print(table)
    for arm in cfg.arms:
        for stage in ("sft", "dpo"):
            lenient = metrics[arm]["test"][stage]["strategy"]["lenient"]
            out.print(f"{arm} {stage.upper()}: Q {lenient['Q']:.2f}, B {lenient['B']:.3f} "
                      f"({metrics[arm]['test'][stage]['turns']} test turns)")


def reproduce_summary(out: Console, cfg, summary: dict) -> None:
    ran = summary["ran"]
    table = Table(title=f"ipm reproduce -> {cfg.out} ({summary['seconds']:.0f} s; ran {len(ran)} of "
                        f"{len(summary['stages'])} stages)", title_justify="left")
    for column in ("stage", "status", "seconds", "this run"):
        table.add_column(column)
    for name, record in summary["stages"].items():
        table.add_row(name, record["status"], str(record.get("seconds", "-")), "ran" if name in ran else "skipped")
    out.print(table)
    results = summary["stages"].get("eval", {}).get("summary") or {}
    for name, m in results.items():
        out.print(f"{name}: Q {m['Q']:.2f}, B {m['B']:.3f} (intervals and comparisons: {cfg.out}/report.md)",
                  highlight=False)


def engine_check(out: Console, engine, stats, startup: float) -> None:
    wall = max(stats.wall_s, 1e-9)
    out.print(f"engine {engine.name} ({engine.display_name}), concurrency {engine.concurrency}, startup "
              f"{startup:.1f} s")
    out.print(f"requests/s: {stats.requests / wall:.2f}")
    out.print(f"output tokens/s: {stats.completion_tokens / wall:.1f}")
    table = Table(title="accounting", title_justify="left", show_header=False)
    for key, value in stats.as_dict().items():
        table.add_row(key, ", ".join(f"{k}: {v}" for k, v in value.items()) or "0" if isinstance(value, dict)
                      else str(value))
    out.print(table)


def validation(out: Console, err: Console, directory, report) -> bool:
    """The notes and problems of ``ipm validate`` (on stderr), or the table of what is valid; whether it is."""
    for note in report.notes:
        err.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)
    if not report.ok:
        err.print(f"[bold red]{directory}: {len(report.lines())} problem(s)[/]")
        for line in report.lines():
            err.print(f"  - {line}", highlight=False, markup=False, soft_wrap=True)
        return False
    table = Table(title=f"{directory}: valid", title_justify="left")
    for col, justify in (("config", "left"), ("split", "left"), ("rows", "right"), ("dialogues", "right")):
        table.add_column(col, justify=justify)
    for config, split, rows, dialogs in report.summary:
        table.add_row(config, split, f"{rows:,}", f"{dialogs:,}")
    out.print(table)
    return True
