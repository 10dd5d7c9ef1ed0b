"""``OUT/report.md`` of ``ipm reproduce``: the four systems with intervals, the paired differences, the stages."""

from __future__ import annotations

from pathlib import Path

from ipm_prefdial.evaluation.report import ROWS as EVAL_ROWS
from ipm_prefdial.evaluation.report import comparisons_markdown, metric, with_ci

# the rows of the systems and comparisons tables: ipm eval's, these metrics
ROWS = tuple((title, key) for title, key in EVAL_ROWS if key in {
    "strategy.lenient.Q", "strategy.lenient.weighted_f1", "strategy.lenient.B", "strategy.lenient.dropped_ratio",
    "strategy.strict.Q", "strategy.strict.B", "reference.bleu-2", "reference.rouge-l", "reference.dist-2",
    "reference.f1", "reference.length"})


def write_report(results: dict, cfg, stages: dict, path: Path) -> None:
    systems = results["systems"]
    names = list(systems)
    first = next(iter(systems.values()))
    boot = first.get("bootstrap") or {}
    lines = ["# ipm reproduce report", "",
             f"Source {cfg.source}" + (f" (the first {cfg.limit} dialogue(s) of each split mined)" if cfg.limit else
                                       " (every dialogue mined)")
             + f"; policies and judge: {_engines(cfg)}; base model {cfg.train_config('d', 'm').base_model}"
             + (" (the --quick preset)" if cfg.quick else "") + ".", "",
             "## The four systems on the test turns", "",
             "| metric | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names),
             "| test turns (dialogues) | " + " | ".join(f"{r['turns']} ({(r.get('bootstrap') or {}).get('dialogues')})"
                                                      for r in systems.values()) + " |"]
    for title, key in ROWS:
        if any(metric(r, key) is not None for r in systems.values()):
            lines.append(f"| {title} | " + " | ".join(with_ci(r, key) for r in systems.values()) + " |")
    lines += ["", f"Brackets: 95% intervals from {boot.get('resamples')} bootstrap resamples of the test dialogues "
                  f"(seed {boot.get('seed')}).", "", "## Paired differences", "",
              "The paper's claim: decoupled DPO - joint DPO has a lower B (negative difference) and no lower Q.", "",
              *comparisons_markdown(results["comparisons"], ROWS), "", "## Stages", "",
              "| stage | status | seconds |", "|---|---|---:|"]
    for name, record in stages.items():
        status = "this stage" if name == "eval" and record.get("status") == "running" else record.get("status")
        lines.append(f"| {name} | {status} | {record.get('seconds', '-')} |")
    lines += ["", "Each stage's inputs and outputs by content hash: `stages.json`; every figure above: `results.json`."]
    if cfg.quick:
        lines += ["", "A `--quick` run proves the loop runs end to end on a laptop: a 135M model trained on a dozen "
                      "examples, pairs mined from a few dialogues, a couple of test dialogues. Its intervals are "
                      "wide and its differences say nothing about the method; the evidence needs the GPU "
                      "configuration (configs/reproduce_gpu.yaml)."]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _engines(cfg) -> str:
    build = cfg.build
    judge = build.get("judge_engine") or build.get("engine")
    model = build.get("judge_model")
    return f"{build.get('engine')} (the SFT models) and {judge}" + (f" ({model})" if model else "")
