"""Helpers of the tests of `ipm agreement` (tests/agreement/): a tiny synthetic build's pair rows, written as parquet
directly with made-up texts, and annotation lines."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq

from ipm_prefdial.release.features import PAIR_FEATURES, data_file

LE, EES, TR = "Lack Empathy", "Early Emotion Shift", "Template Response"

# The judge's (chosen, rejected) errors of five judged response pairs; None = no error.
JUDGE = {"10-1-s0": (None, LE), "10-3-s0": (None, TR), "11-1-s0": (None, None), "11-3-s0": (EES, LE),
         "12-1-s0": (None, EES)}


def pair_row(row_id: str, status: str, errors: tuple[str | None, str | None] | None) -> dict:
    dialog, turn = (int(x) for x in row_id.split("-")[:2])
    judge = None
    if errors is not None:
        judge = {"retained": errors[0] is None and errors[1] is not None, "chosen_error": errors[0],
                 "rejected_error": errors[1], "chosen_explanation": "made up", "rejected_explanation": "made up",
                 "model": "test-judge"}
    return {"id": row_id, "dialog_id": dialog, "turn_index": turn, "strategy": "Question", "emotion_type": "anxiety",
            "problem_type": "job crisis",
            "prompt": [{"role": "system", "content": "You are a supporter."},
                       {"role": "user", "content": f"A made-up worry number {row_id}."}],
            "chosen": [{"role": "assistant", "content": "That sounds hard. What happened next?"}],
            "rejected": [{"role": "assistant", "content": "Just try harder."}],
            "rejected_strategy": "Question",
            "miner": {"engine": "fake", "model": "fake", "temperature": 0.7, "top_p": 0.95, "seed": 1,
                      "prompt_sha256": "0" * 64},
            "judge": judge, "judge_status": status}


def write_config(out, config: str, split: str, rows: list[dict]) -> None:
    path = out / data_file(config, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=PAIR_FEATURES.arrow_schema), path)


def line(row_id, chosen, rejected, preference=None, annotator="alice", time="2026-11-28T10:00:00.000Z",
         config="response_pairs") -> str:
    obj = {"id": row_id, "config": config, "labels": {"chosen": chosen, "rejected": rejected},
           "preference": preference, "annotator": annotator, "time": time, "order": "chosen-first"}
    return json.dumps(obj)


def write_lines(path, lines) -> str:
    path.write_text("".join(f"{x}\n" for x in lines), encoding="utf-8")
    return str(path)
