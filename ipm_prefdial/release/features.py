"""Column types of every config (PRODUCT.md); the single source for the parquet schema, the card and validate."""

from __future__ import annotations

from datasets import Features, List, Value

MESSAGE = {"role": Value("string"), "content": Value("string")}
COMMON = {
    "id": Value("string"),
    "dialog_id": Value("int64"),
    "turn_index": Value("int64"),
    "strategy": Value("string"),
    "emotion_type": Value("string"),
    "problem_type": Value("string"),
}
SFT_FEATURES = Features({**COMMON, "prompt": List(MESSAGE), "completion": List(MESSAGE)})

SFT_CONFIGS = ("strategy_sft", "response_sft", "joint_sft")
CONFIG_SPLITS = {name: ("train", "validation", "test") for name in SFT_CONFIGS}
FEATURES: dict[str, Features] = {name: SFT_FEATURES for name in SFT_CONFIGS}


def data_file(config: str, split: str) -> str:
    """Path of a config's split inside a build directory."""
    return f"data/{config}/{split}-00000-of-00001.parquet"
