"""The settings of ``ipm reproduce``: one YAML with the source, the mining build's options (``build:``, any option of
``ipm build``), the training recipe's (``train:``, any option of ``ipm train``'s config) and the evaluation's.

Two presets: ``quick()`` for a 2-core CPU with the bundled SmolLM2-135M (about 16 minutes here: one dialogue of each
split mined through the transformers engine with the SFT models, the embedded llama.cpp judge, ``ipm train
--quick``'s caps), and the defaults, for one GPU (``configs/reproduce_gpu.yaml``: a 7B base, LoRA, vLLM mining).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ipm_prefdial.config import BuildConfig
from ipm_prefdial.errors import ConfigError
from ipm_prefdial.options import check_type, declared, read_mapping
from ipm_prefdial.training.config import TrainConfig, TrainConfigError

# options of the mining builds that ipm reproduce sets itself
OWN_BUILD_OPTIONS = frozenset({"stage", "out", "cache_dir", "source", "source_path", "split", "limit", "no_judge",
                               "sp_model", "rg_model", "vm_model", "dry_run", "batch_export"})


@dataclass
class ReproduceConfig:
    out: str = "runs/reproduce"
    source: str = "esconv"
    source_path: str | None = None  # default: IPM_ESCONV_PATH, else the pinned upstream download
    split: str | None = None  # the build's default: decoupledesc for ESConv
    limit: int | None = None  # dialogues of each split mined (the SFT data and the test turns are always whole)
    build: dict = field(default_factory=lambda: {"engine": "vllm"})  # ipm build options of the mining builds
    train: dict = field(default_factory=dict)  # ipm train config options (over TrainConfig's defaults)
    quick: bool = False  # train over TrainConfig.quick() instead of the defaults
    infer_engine: str = "transformers"  # the engine of the test-turn inference (the trained checkpoints)
    bootstrap: int = 1000  # resamples of the test dialogues behind each interval
    seed: int = 0  # seed of the resampling

    @classmethod
    def quick_preset(cls) -> ReproduceConfig:
        # Sized from measured speeds (SPEEDS.md; a 2-core CPU): transformers generates ~30 tokens/s on one stream and
        # several times that in batches of 8, the 135M model trains at ~100-230 tokens/s. One dialogue of each split
        # mined (~40 turns, 3 tasks) with short answers and prompts cut to 512 tokens (the models were trained on 384;
        # a CPU prefills long histories slowly), the judge on the embedded llama.cpp engine, and ipm train --quick's
        # caps (12 SFT examples, 8 DPO pairs, 24 test turns).
        return cls(out="runs/reproduce-quick", limit=1, quick=True,
                   build={"engine": "transformers", "judge_engine": "local", "concurrency": 8, "rg_max_tokens": 48,
                          "vm_max_tokens": 56, "judge_max_tokens": 200, "trim_tokenizer": "none",
                          "context_tokens": 512},
                   train={"test_turns": 24})

    @classmethod
    def load(cls, path: str | Path | None, quick: bool = False, **overrides) -> ReproduceConfig:
        cfg = cls.quick_preset() if quick else cls()
        data = asdict(cfg)
        if path:
            p = Path(path)
            for key, value in read_mapping(p).items():
                if key not in data:
                    raise ConfigError(f"{p}: unknown option {key!r}; known: {', '.join(sorted(data))}")
                data[key] = {**data[key], **value} if key in ("build", "train") and isinstance(value, dict) else value
        data.update({k: v for k, v in overrides.items() if v is not None})
        out = cls(**data)
        out.check(str(path) if path else "ipm reproduce")
        return out

    def check(self, where: str) -> None:
        if not isinstance(self.build, dict) or not isinstance(self.train, dict):
            raise ConfigError(f"{where}: build and train must be mappings of options")
        options = {o.name: o for o in declared(BuildConfig)}
        for key, value in self.build.items():
            name = str(key).replace("-", "_")
            if name in OWN_BUILD_OPTIONS:
                raise ConfigError(f"{where}: build.{key} is set by ipm reproduce itself (the source, limit and out "
                                  "are top-level options)")
            if name not in options:
                raise ConfigError(f"{where}: build.{key}: not an option of ipm build")
            check_type(options[name], value, f"{where}: build.{key}")
        if self.build.get("engine", "local") not in ("transformers", "vllm"):
            raise ConfigError(f"{where}: build.engine {self.build.get('engine')!r}: mining with the trained models "
                              "needs transformers or vllm")
        try:
            self.train_config("data", "models")
        except (TrainConfigError, TypeError) as exc:
            raise ConfigError(f"{where}: train: {exc}") from None
        for name in ("bootstrap", "seed", "limit"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(f"{where}: {name} {value!r}: expected a whole number, at least 0")
        if self.bootstrap < 1:
            raise ConfigError(f"{where}: bootstrap {self.bootstrap}: the comparisons need at least 1 resample")
        if self.infer_engine not in ("transformers", "vllm"):
            raise ConfigError(f"{where}: infer_engine {self.infer_engine!r}: choose transformers or vllm")

    def train_config(self, data: str, out: str) -> TrainConfig:
        base = TrainConfig.quick() if self.quick else TrainConfig()
        return base.updated(**{**self.train, "data": data, "out": out})

    def build_config(self, out: str, cache_dir: str, stage: str, **extra) -> BuildConfig:
        values = {k.replace("-", "_"): v for k, v in self.build.items()}
        if stage == "sft":  # the SFT data: no engine involved, and the whole corpus
            values = {k: v for k, v in values.items() if k in ("taxonomy", "trim_tokens", "trim_tokenizer",
                                                                 "prompts_dir", "on_invalid", "seed")}
        cfg = BuildConfig(**{**values, "stage": stage, "out": out, "cache_dir": cache_dir, "source": self.source,
                             "source_path": self.source_path, "split": self.split,
                             "limit": self.limit if stage != "sft" else None, **extra})
        cfg.check()
        return cfg

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}
