"""``ipm reproduce``: the DecoupledESC loop as one resumable command.

Stages, each recorded in ``OUT/stages.json`` (``book.Book``) and skipped on a rerun when nothing it reads or is told
changed (a build is read and recorded by its data files, ``<build>/data``: its manifest also holds timings, which
would make a build redone from the cache look changed):

1. ``data``: the SFT configs of the whole corpus (``ipm build --stage sft``) -> ``OUT/data``.
2. ``sft-sp``, ``sft-rg``, ``sft-vm``: SFT of each model from the base -> ``OUT/models/<m>/sft`` (merged) and
   ``sft-lora`` (the adapter on the base).
3. ``mine``: the build that mines with the SFT models as policies, each its own task (SP strategies, RG replies,
   VM joint outputs), no judge -> ``OUT/mined``. Its requests go through ``OUT/cache``: a killed mining resumes from
   the answers already there.
4. ``judge``: the same build with the judge (the policies' answers come from the cache) -> ``OUT/pairs``.
5. ``dpo-sp``, ``dpo-rg``, ``dpo-vm``: DPO of each SFT model on its pairs (SP: strategy pairs; RG: the retained
   response pairs; VM: the joint pairs) -> ``OUT/models/<m>/dpo``.
6. ``infer-<system>-<stage>``: decoupled (SP then RG) and joint (VM) after SFT and after DPO on the test turns ->
   ``OUT/predictions/<system>-<stage>.jsonl``.
7. ``eval``: every system's metrics with 95% intervals and the paired comparisons -> ``OUT/results.json``,
   ``OUT/report.md``.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from ipm_prefdial.errors import IncompleteError
from ipm_prefdial.release.files import write_bytes_atomic
from ipm_prefdial.reproduce.book import Book, fingerprint
from ipm_prefdial.reproduce.config import ReproduceConfig

TASKS = ("sp", "rg", "vm")
SYSTEMS = (("decoupled", "sft"), ("joint", "sft"), ("decoupled", "dpo"), ("joint", "dpo"))
ARM_TASKS = {"decoupled": ("sp", "rg"), "joint": ("vm",)}
# TrainConfig options that do not change an SFT model / a DPO model (so changing them does not retrain it)
NOT_SFT = ("dpo", "beta", "pairs", "min_retained", "heldout_pairs", "test_turns", "eval_max_tokens",
           "eval_batch_size", "report_to", "arms", "data", "out")
NOT_DPO = ("sft", "test_turns", "eval_max_tokens", "report_to", "arms", "data", "out")


@dataclass
class Stage:
    name: str
    settings: dict
    reads: dict[str, Path]
    writes: dict[str, Path]
    run: Callable[[], dict | None]


class Loop:
    def __init__(self, cfg: ReproduceConfig, log: Callable[[str], None] = print, cache_dir: str | None = None):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.log = log
        self.cache_dir = cache_dir  # where the bundled base model is dequantised (default: the user cache)
        self.requests = str(self.out / "cache")  # the request cache of the mining, the judge and the inference
        self.book = Book(self.out)

    # -- paths --------------------------------------------------------------------------------------------------
    def model(self, task: str, stage: str) -> Path:
        return self.out / "models" / task / stage

    def predictions(self, arm: str, stage: str) -> Path:
        return self.out / "predictions" / f"{arm}-{stage}.jsonl"

    # -- the stages ---------------------------------------------------------------------------------------------
    def stages(self) -> list[Stage]:
        cfg, out = self.cfg, self.out
        train = self.cfg.train_config(str(out / "data"), str(out / "models")).as_dict()
        source = {"source": cfg.source, "source_path": cfg.source_path, "split": cfg.split,
                  "source_file": self._source_file()}
        stages = [Stage("data", {**source, "build": self._build_settings("sft")},
                        self._source_reads(), {"data": out / "data" / "data"}, self._data)]
        sft_settings = {k: v for k, v in train.items() if k not in NOT_SFT}
        for task in TASKS:
            stages.append(Stage(f"sft-{task}", {"task": task, "train": sft_settings}, {"data": out / "data" / "data"},
                                {"model": self.model(task, "sft"), "adapter": self.model(task, "sft-lora")}
                                if train["lora"] else {"model": self.model(task, "sft")},
                                lambda task=task: self._sft(task)))
        mine = {**source, "limit": cfg.limit, "build": self._build_settings("all")}
        stages.append(Stage("mine", mine, {t: Path(self._policy(t)) for t in TASKS},
                            {"pairs": out / "mined" / "data"}, self._mine))
        stages.append(Stage("judge", mine, {"mined": out / "mined" / "data"}, {"pairs": out / "pairs" / "data"},
                            self._judge))
        dpo_settings = {k: v for k, v in train.items() if k not in NOT_DPO}
        for task in TASKS:
            stages.append(Stage(f"dpo-{task}", {"task": task, "train": dpo_settings},
                                {"pairs": out / "pairs" / "data", "sft": self.model(task, "sft")},
                                {"model": self.model(task, "dpo")}, lambda task=task: self._dpo(task)))
        infer = {k: train[k] for k in ("test_turns", "eval_max_tokens", "eval_batch_size", "max_length")}
        for arm, stage in SYSTEMS:
            stages.append(Stage(f"infer-{arm}-{stage}", {"arm": arm, "stage": stage, "infer": infer,
                                                         "engine": cfg.infer_engine},
                                {"data": out / "data" / "data", **{t: self.model(t, stage) for t in ARM_TASKS[arm]}},
                                {"predictions": self.predictions(arm, stage)},
                                lambda arm=arm, stage=stage: self._infer(arm, stage)))
        stages.append(Stage("eval", {"bootstrap": cfg.bootstrap, "seed": cfg.seed},
                            {f"{a}-{s}": self.predictions(a, s) for a, s in SYSTEMS},
                            {"results": out / "results.json", "report": out / "report.md"}, self._eval))
        return stages

    def run(self) -> dict:
        """Every stage in order, skipping the fresh ones; the summary of each (``stages.json``'s records)."""
        if self.book.stages.get("judge", {}).get("status") != "done":
            # a judge behind a dead endpoint stops the loop now, not after hours of training (EngineStop, exit 75)
            from ipm_prefdial.mining.run import preflight

            preflight(self.cfg.build_config(str(self.out / "pairs"), self.requests, "all"))
        self.out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        ran = []
        for stage in self.stages():
            read = {key: self.book.digest(path) for key, path in stage.reads.items()}
            print_ = fingerprint(stage.settings, read)
            if self.book.fresh(stage.name, print_, stage.writes):
                self.log(f"{stage.name}: up to date, skipped")
                continue
            self.log(f"{stage.name}: running")
            self.book.start(stage.name, print_, read, stage.settings)
            began = time.perf_counter()
            try:
                summary = stage.run()
            except BaseException as exc:
                self.book.fail(stage.name, f"{type(exc).__name__}: {exc}".strip(), time.perf_counter() - began)
                raise
            seconds = time.perf_counter() - began
            self.book.finish(stage.name, stage.writes, seconds, summary)
            ran.append(stage.name)
            self.log(f"{stage.name}: done in {seconds:.0f} s")
        return {"ran": ran, "seconds": round(time.perf_counter() - started, 1), "stages": self.book.stages}

    # -- what each stage does -----------------------------------------------------------------------------------
    def _data(self) -> dict:
        from ipm_prefdial.build import build

        result = build(self.cfg.build_config(str(self.out / "data"), self.requests, "sft"))
        return {"rows": {k: v for k, v in result.manifest.get("counts", {}).items() if k.endswith("_sft")}}

    def _sft(self, task: str) -> dict:
        import torch

        from ipm_prefdial.engines.checkpoint import resolve_base
        from ipm_prefdial.training.recipe import run_sft

        cfg = self.cfg.train_config(str(self.out / "data"), str(self.out / "models"))
        torch.manual_seed(cfg.seed)
        base = resolve_base(cfg.base_model, self.cache_dir, self.log)
        metrics = run_sft(task, base, cfg, self.out / "models", self.log)
        metrics.pop("log_history")
        return metrics

    def _policy(self, task: str) -> str:
        """The SFT model a mining policy loads: vLLM serves the adapter on the base (one instance for all three);
        the transformers engine the merged checkpoint."""
        lora = self.cfg.train_config("data", "models").lora
        adapter = self.cfg.build.get("engine") == "vllm" and lora
        return str(self.model(task, "sft-lora" if adapter else "sft"))

    def _mining_build(self, out: Path, judge: bool) -> dict:
        from ipm_prefdial.build import build
        from ipm_prefdial.release.manifest import incomplete_line

        cfg = self.cfg.build_config(str(out), self.requests, "all", no_judge=not judge,
                                    **{f"{t}_model": self._policy(t) for t in TASKS})
        result = build(cfg)
        if not result.complete:
            raise IncompleteError(incomplete_line(result.manifest).replace("Run the same command",
                                                                           "Run the same ipm reproduce command"))
        m = result.manifest
        return {"counts": {k: v for k, v in m.get("counts", {}).items() if "pairs" in k},
                "judge_status": m.get("judge_status")}

    def _mine(self) -> dict:
        return self._mining_build(self.out / "mined", judge=False)

    def _judge(self) -> dict:
        return self._mining_build(self.out / "pairs", judge=True)

    def _dpo(self, task: str) -> dict:
        import torch

        from ipm_prefdial.training.recipe import run_dpo

        cfg = self.cfg.train_config(str(self.out / "pairs"), str(self.out / "models"))
        torch.manual_seed(cfg.seed)
        metrics = run_dpo(task, str(self.model(task, "sft")), cfg, self.out / "models", self.log)
        metrics.pop("log_history")
        return metrics

    def _infer(self, arm: str, stage: str) -> dict:
        from ipm_prefdial.evaluation.infer import InferConfig, infer

        cfg = self.cfg.train_config(str(self.out / "data"), str(self.out / "models"))
        models = {f"{t}_model": str(self.model(t, stage)) for t in ARM_TASKS[arm]}
        summary = infer(InferConfig(data=str(self.out / "data"), system=arm, out=str(self.predictions(arm, stage)),
                                    engine=self.cfg.infer_engine, limit=cfg.test_turns,
                                    concurrency=cfg.eval_batch_size, cache_dir=self.requests,
                                    rg_max_tokens=cfg.eval_max_tokens, vm_max_tokens=cfg.eval_max_tokens + 8,
                                    context_tokens=cfg.max_length, **models))
        return {"rows": summary["rows"]}

    def _eval(self) -> dict:
        from ipm_prefdial.evaluation.evaluate import score_file
        from ipm_prefdial.reproduce.report import write_report
        from ipm_prefdial.training.data import build_taxonomy
        from ipm_prefdial.training.run import comparisons, system_name

        taxonomy = build_taxonomy(str(self.out / "data"))
        scored = {(a, s): score_file(self.predictions(a, s), taxonomy, resamples=self.cfg.bootstrap,
                                     seed=self.cfg.seed) for a, s in SYSTEMS}
        results = {"systems": {system_name(*key): s.result for key, s in scored.items()},
                   "comparisons": comparisons(scored, self.cfg.bootstrap, self.cfg.seed),
                   "bootstrap": {"resamples": self.cfg.bootstrap, "unit": "dialogue", "seed": self.cfg.seed}}
        write_bytes_atomic(self.out / "results.json",
                           (json.dumps(results, indent=2, ensure_ascii=False) + "\n").encode())
        write_report(results, self.cfg, self.book.stages, self.out / "report.md")
        lenient = {name: r["strategy"]["lenient"] for name, r in results["systems"].items()}
        return {name: {"Q": round(m["Q"], 2), "B": round(m["B"], 3)} for name, m in lenient.items()}

    # -- settings -----------------------------------------------------------------------------------------------
    def _build_settings(self, stage: str) -> dict:
        cfg = self.cfg.build_config(str(self.out / ("data" if stage == "sft" else "mined")), self.requests, stage)
        values = asdict(cfg)
        for key in ("out", "cache_dir", "no_judge"):
            values.pop(key, None)
        return values

    def _source_file(self) -> str | None:
        path = self.cfg.source_path or (os.environ.get("IPM_ESCONV_PATH") if self.cfg.source == "esconv" else None)
        return str(Path(path).resolve()) if path else None

    def _source_reads(self) -> dict[str, Path]:
        path = self._source_file()
        return {"source": Path(path)} if path else {}
