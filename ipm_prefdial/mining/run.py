"""Stage ``all`` of a build: run the policy over every supporter turn of the mined splits, make the pairs, and put
the response-level pairs in front of the judge. Engines are made by ``mining.plan`` and injected into the runner;
``mining.policy`` and ``mining.judge`` stay pure."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from rich.console import Console

from ipm_prefdial.config import BuildConfig
from ipm_prefdial.convert import Turn, turn_count
from ipm_prefdial.engines import make_engine
from ipm_prefdial.engines.base import Engine
from ipm_prefdial.engines.breaker import EngineStop
from ipm_prefdial.engines.cache import RequestCache
from ipm_prefdial.engines.requests import ChatResult, Sampling
from ipm_prefdial.engines.runner import Stats, run_coroutine, run_requests, transient_left
from ipm_prefdial.mining.judge import ERROR_TYPES, JUDGED_CONFIGS, judge_request, judge_status, verdict
from ipm_prefdial.mining.plan import (
    Job,
    host_groups,
    make_budget,
    make_engines,
    metered,
    open_cache,
    policy_jobs,
    policy_sampling,
)
from ipm_prefdial.mining.policy import MINED_SPLITS, PAIR_CONFIG, TASKS, PolicySampling, make_pair
from ipm_prefdial.progress import progress_bar
from ipm_prefdial.prompts import Prompts
from ipm_prefdial.release.features import RETAINED_OF, is_retained
from ipm_prefdial.sources import Dialogue
from ipm_prefdial.tokens import Trimmer

JUDGE_PART = 8192  # judge requests made and run at a time


@dataclass
class MiningOutput:
    rows: dict[str, dict[str, list[dict]]]
    mining: dict  # manifest section: per task accounting and outcomes
    judge: dict | None  # manifest section, None with --no-judge
    models: dict
    sampling: dict
    by_strategy: dict = field(default_factory=dict)
    judge_status: dict = field(default_factory=dict)  # config -> judge_status -> rows
    transient: dict = field(default_factory=dict)  # failure kind -> requests left failed by retries that ran out
    spend: dict | None = None  # manifest section: tokens and dollars by role and mode (None: nothing priced)
    exported: list = field(default_factory=list)  # batch files written by --batch-export


@dataclass
class Estimate:
    """Says once, after a build's first answers, how many requests are left and how long they will take at the
    rate measured so far (a bare ``ipm build`` on a laptop mines for more than a day: the user should know)."""

    console: Console
    judge_max: int  # judge requests still to come: at most one per RG and VM answer
    said: bool = False

    def hook(self, later: int):
        """The ``on_first`` callback of a batch; ``later`` counts the policy requests of the batches after it."""
        if self.said:
            return None

        def report(answered: int, seconds: float, left: int) -> None:
            self.said = True
            rate = answered / max(seconds, 1e-6)
            total = left + later + self.judge_max
            self.console.print(f"after {answered} answers: {total:,} requests left ({left + later:,} policy, up to "
                               f"{self.judge_max:,} judge), about {duration(total / rate)} more at {rate:.2f} "
                               "requests/s", highlight=False, soft_wrap=True)
        return report


def batched(engine: Engine) -> bool:
    """Whether the engine answers through batches (or batch files): no rate to estimate from, no parts."""
    return hasattr(engine, "book")


def duration(seconds: float) -> str:
    if seconds < 120:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 120 else f"{minutes // 60} h {minutes % 60:02d} min"


def preflight(cfg: BuildConfig) -> None:
    """Ask every HTTP endpoint of a build ``GET /models`` before any other work (reading the source, loading a
    tokenizer): an endpoint that is unreachable, fails TLS or refuses the key stops the build in seconds
    (``EngineStop``). Ray workers ask their own (the endpoint may be reachable from the cluster only)."""
    if cfg.executor != "local" or cfg.dry_run or cfg.batch_export:  # an export sends nothing
        return
    seen = set()
    for spec in cfg.engine_specs().values():
        if spec.name != "openai" or spec.key in seen:
            continue
        seen.add(spec.key)
        engine = make_engine(spec)

        async def ask(engine: Engine = engine) -> None:
            try:
                await engine.start()
            finally:
                await engine.close()

        run_coroutine(ask())


def mine(per_split: dict[str, list[Dialogue]], prompts: Prompts, cfg: BuildConfig, console: Console,
         trim: Trimmer | None = None) -> MiningOutput:
    return run_coroutine(_mine(per_split, prompts, cfg, console, trim))


async def _mine(per_split: dict[str, list[Dialogue]], prompts: Prompts, cfg: BuildConfig,
                console: Console, trim: Trimmer | None) -> MiningOutput:
    instances, engines = make_engines(cfg)
    cache = open_cache(cfg)
    budget = make_budget(cfg)
    instances, engines = metered(instances, engines, cfg, cache, budget)
    _warn_of_live_batches(cache, cfg, console)
    policy = policy_sampling(cfg)
    rows: dict[str, dict[str, list[dict]]] = {c: {s: [] for s in MINED_SPLITS} for c in PAIR_CONFIG.values()}
    turn_of: dict[str, Turn] = {}
    mining: dict[str, dict] = {}
    judge_report: dict | None = None
    by_strategy: dict[str, Counter] = defaultdict(Counter)
    try:
        with progress_bar(console) as progress:
            for engine in instances.values():  # the Ray executor shows a line per worker
                getattr(engine, "attach_progress", lambda _: None)(progress)
            jobs = policy_jobs(per_split, prompts, policy, trim)
            estimate = Estimate(console, judge_max=0 if cfg.no_judge else len(jobs["rg"]) + len(jobs["vm"]))
            results_by, stats_by = await _run_policy(instances, engines, jobs, cache, cfg, progress, estimate)
            turns = sum(turn_count(d) for split in MINED_SPLITS for d in per_split[split])
            for task in TASKS:
                # the task's requests and answers are let go once its pairs are made (the judge asks anew)
                figures = _make_pairs(task, jobs.pop(task), results_by.pop(task), engines[task], prompts, rows,
                                      turn_of, by_strategy)
                mining[task] = {"accounting": stats_by.get(task, Stats()).as_dict(), "turns": turns,
                                "samples": policy.samples, **figures}
            if "judge" in engines:
                judge_report = await _judge(engines["judge"], rows, turn_of, prompts, cfg, cache, progress,
                                            by_strategy, estimate)
    except EngineStop as stop:
        stop.kept = cache.new_answers if cache is not None else 0  # what the one-line message reports
        raise
    finally:
        for engine in instances.values():
            await engine.close()
        if cache is not None:
            cache.close()
    output = _output(rows, mining, judge_report, engines, policy, cfg, prompts, by_strategy)
    if cfg.priced or cfg.max_spend is not None or cfg.batch or cfg.judge_batch:
        output.spend = budget.report()
    output.exported = sorted({str(p) for e in instances.values() for p in getattr(e, "exported", [])})
    return output


def _warn_of_live_batches(cache: RequestCache | None, cfg: BuildConfig, console: Console) -> None:
    """A build run without batches while batches of an earlier one still run would pay for their lines twice: say
    so (a rerun with --batch / --judge-batch collects them instead)."""
    if cache is None or (cfg.batch and cfg.judge_batch) or cfg.batch_export:
        return
    from ipm_prefdial.engines.batch_book import LIVE

    marks = ",".join("?" * len(LIVE))
    (lines,) = cache.sql(f"SELECT COALESCE(SUM(lines), 0) FROM batch_parts WHERE status IN ({marks})", LIVE)[0]
    if lines:
        console.print(f"[bold yellow]warning:[/] {lines:,} requests are in batches still running at the provider "
                      "(ipm batches list); a role run without --batch / --judge-batch sends its ones again online: "
                      "run with them to collect the batches, or cancel them (ipm batches cancel)", soft_wrap=True)


async def _run_policy(instances: dict, engines: dict[str, Engine], jobs: dict[str, list[Job]],
                      cache: RequestCache | None, cfg: BuildConfig, progress, estimate: Estimate
                      ) -> tuple[dict[str, list[ChatResult]], dict[str, Stats]]:
    """Every task's answers (in the order of its jobs) and accounting. The tasks that share an engine run as one
    batch: every slot busy, each dialogue of each task on its own stream in turn order. Engines of one host (LoRA
    adapters of one vLLM instance) run at the same time; different hosts (e.g. other --sp-model bases) one after the
    other, each closed (its memory given back) before the next starts, unless the judge still needs it."""
    stats_by: dict[str, Stats] = {}
    results_by: dict[str, list[ChatResult]] = {}
    groups = host_groups(instances.values(), engines)
    for k, group in enumerate(groups):
        later = sum(len(jobs[task]) for rest in groups[k + 1:] for _, tasks in rest for task in tasks)

        async def run(engine: Engine, tasks: list[str], first: bool, later: int = later) -> list:
            batch = [(task, r) for task in tasks for _, _, r in jobs[task]]
            return await run_requests(engine, [r for _, r in batch], cache=cache,
                                      retry_failed=cfg.retry_failed, progress=progress,
                                      description="mining " + "+".join(t.upper() for t in tasks),
                                      labels=[task for task, _ in batch], stats_by=stats_by,
                                      on_first=estimate.hook(later) if first and not batched(engine) else None)

        outputs = await asyncio.gather(*(run(engine, tasks, i == 0) for i, (engine, tasks) in enumerate(group)))
        for (_, tasks), results in zip(group, outputs, strict=True):
            offset = 0
            for task in tasks:
                results_by[task] = results[offset: offset + len(jobs[task])]
                offset += len(jobs[task])
        if "judge" not in engines or engines["judge"].host() is not group[0][0].host():
            for engine, _ in group:
                await engine.close()
    return results_by, stats_by


def _make_pairs(task: str, jobs: list[Job], results: list[ChatResult], engine: Engine, prompts: Prompts,
                rows: dict, turn_of: dict[str, Turn], by_strategy: dict[str, Counter]) -> dict:
    """The task's pairs into ``rows``; its manifest figures (outcomes, pairs per split, SP's agreement rate)."""
    outcomes: Counter = Counter()
    miner = {"engine": engine.name, "model": engine.display_name}
    config = PAIR_CONFIG[task]
    for (split, turn, request), result in zip(jobs, results, strict=True):
        sent = engine.fit(request)[0]  # what the policy was asked: its seed and sha256 go in the row
        row, outcome = make_pair(task, turn, request, result, miner, engine.identity, sent, prompts.taxonomy)
        outcomes[outcome] += 1
        if row is not None:
            rows[config][split].append(row)
            turn_of[row["id"]] = turn
            by_strategy[config][turn.strategy] += 1
    figures: dict = {"outcomes": dict(sorted(outcomes.items())),
                     "pairs": {s: len(rows[config][s]) for s in MINED_SPLITS}}
    if task == "sp":
        answered = outcomes["agree"] + outcomes["pair"]
        figures["agreement"] = {"agree": outcomes["agree"], "answered": answered,
                                "rate": round(outcomes["agree"] / answered, 4) if answered else None}
    return figures


def _output(rows: dict, mining: dict, judge_report: dict | None, engines: dict[str, Engine], policy: PolicySampling,
            cfg: BuildConfig, prompts: Prompts, by_strategy: dict[str, Counter]) -> MiningOutput:
    models = {role: engine.describe() for role, engine in engines.items()}
    sampling = {"policy": {"samples": policy.samples, "temperature": policy.temperature, "top_p": policy.top_p,
                           "max_tokens": dict(policy.max_tokens)}}
    if not cfg.no_judge:
        sampling["judge"] = {"temperature": cfg.judge_temperature, "max_tokens": cfg.judge_max_tokens}
    table = {s: {c: by_strategy[c][s] for c in sorted(by_strategy)} for s in prompts.taxonomy.names}
    status = {config: dict(sorted(Counter(r["judge_status"] for split in MINED_SPLITS
                                          for r in rows[config][split]).items())) for config in rows}
    if judge_report is not None:  # the paper's filtered sets, as configs of their own
        for retained, parent in RETAINED_OF.items():
            rows[retained] = {split: [r for r in rows[parent][split] if is_retained(r)] for split in MINED_SPLITS}
    # transient failures still in this build: a rerun sends those requests again
    left = transient_left(info["accounting"] for section in (mining, judge_report or {}) for info in section.values())
    return MiningOutput(rows, mining, judge_report, models, sampling, table, status, left)


async def _judge(engine: Engine, rows: dict, turn_of: dict[str, Turn], prompts: Prompts, cfg: BuildConfig,
                 cache: RequestCache | None, progress, by_strategy: dict[str, Counter], estimate: Estimate) -> dict:
    """The judge's verdict on every response-level pair, in parts of ``JUDGE_PART`` requests: a part's requests
    and answers are let go once its rows hold their verdicts, so memory does not grow with the build."""
    sampling = Sampling(cfg.judge_temperature, 1.0, cfg.judge_max_tokens)
    report: dict[str, dict] = {}
    targets = {config: [row for split in MINED_SPLITS for row in rows[config][split]] for config in JUDGED_CONFIGS}
    batch = [(config, row) for config in JUDGED_CONFIGS for row in targets[config]]
    stats_by: dict[str, Stats] = {}
    estimate.judge_max = 0  # the judge's own requests are counted now (the engine starts when one must be sent)
    bar = progress.add_task("judging", total=len(batch)) if progress else None
    size = max(1, len(batch)) if batched(engine) else JUDGE_PART  # batches: all at once, not part by part
    for start in range(0, len(batch), size):
        part = batch[start: start + size]
        requests = [judge_request(config, row, turn_of[row["id"]], prompts, sampling) for config, row in part]
        results = await run_requests(engine, requests, cache=cache, retry_failed=cfg.retry_failed,
                                     progress=progress, progress_task=bar, labels=[config for config, _ in part],
                                     stats_by=stats_by, on_first=None if batched(engine) else estimate.hook(0))
        for (config, row), result in zip(part, results, strict=True):
            row["judge"] = verdict(config, row["id"], result, engine.display_name)
            row["judge_status"] = judge_status(result)
    for config in JUDGED_CONFIGS:
        report[config] = _judge_figures(targets[config], stats_by.get(config, Stats()), by_strategy, config)
    return report


def _judge_figures(rows: list[dict], stats: Stats, by_strategy: dict[str, Counter], config: str) -> dict:
    """A judged config's manifest section: accounting, verdicts, the errors the judge named."""
    chosen_errors: Counter = Counter()
    rejected_errors: Counter = Counter()
    retained = failed = 0
    status: Counter = Counter()
    for row in rows:
        status[row["judge_status"]] += 1
        if row["judge"] is None:
            failed += 1
            continue
        chosen_errors[row["judge"]["chosen_error"] or "None"] += 1
        rejected_errors[row["judge"]["rejected_error"] or "None"] += 1
        if row["judge"]["retained"]:
            retained += 1
            by_strategy[f"{config}:retained"][row["strategy"]] += 1
    judged = len(rows) - failed
    return {
        "accounting": stats.as_dict(), "pairs": len(rows), "judged": judged, "judge_failures": failed,
        "status": dict(sorted(status.items())),
        "retained": retained, "retained_fraction": round(retained / judged, 4) if judged else None,
        "chosen_error": {k: chosen_errors[k] for k in ("None", *ERROR_TYPES)},
        "rejected_error": {k: rejected_errors[k] for k in ("None", *ERROR_TYPES)},
    }
