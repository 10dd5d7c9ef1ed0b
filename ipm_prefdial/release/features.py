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

MINER = {
    "engine": Value("string"),
    "model": Value("string"),
    "temperature": Value("float64"),
    "top_p": Value("float64"),
    "seed": Value("int64"),
    "prompt_sha256": Value("string"),
}
JUDGE = {
    "retained": Value("bool"),
    "chosen_error": Value("string"),
    "rejected_error": Value("string"),
    "chosen_explanation": Value("string"),
    "rejected_explanation": Value("string"),
    "model": Value("string"),
}
PAIR_FEATURES = Features({
    **COMMON,
    "prompt": List(MESSAGE),
    "chosen": List(MESSAGE),
    "rejected": List(MESSAGE),
    "rejected_strategy": Value("string"),
    "miner": MINER,
    "judge": JUDGE,  # the verdict; null unless judge_status is "judged"
    "judge_status": Value("string"),  # judged | failed:<kind> | skipped (--no-judge) | not_applicable (strategy)
})

SFT_CONFIGS = ("strategy_sft", "response_sft", "joint_sft")
PAIR_CONFIGS = ("strategy_pairs", "response_pairs", "joint_pairs")
# The judge-retained rows of a judged pair config (the paper's filtered DPO data), same columns; built when the
# judge ran.
RETAINED_OF = {"response_pairs_retained": "response_pairs", "joint_pairs_retained": "joint_pairs"}
CONFIG_SPLITS = {
    **{name: ("train", "validation", "test") for name in SFT_CONFIGS},
    **{name: ("train", "validation") for name in (*PAIR_CONFIGS, *RETAINED_OF)},
}
FEATURES: dict[str, Features] = {  # also the order of the configs on the card
    **{name: SFT_FEATURES for name in SFT_CONFIGS},
    **{name: PAIR_FEATURES for name in (*PAIR_CONFIGS, *RETAINED_OF)},
}
# The task (SP, RG, VM) behind each config.
TASK_OF = {"strategy_sft": "sp", "response_sft": "rg", "joint_sft": "vm",
           "strategy_pairs": "sp", "response_pairs": "rg", "joint_pairs": "vm",
           "response_pairs_retained": "rg", "joint_pairs_retained": "vm"}


def is_retained(row: dict) -> bool:
    return row["judge"] is not None and bool(row["judge"]["retained"])


def data_file(config: str, split: str) -> str:
    """Path of a config's split inside a build directory."""
    return f"data/{config}/{split}-00000-of-00001.parquet"
