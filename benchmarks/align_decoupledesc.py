"""Turn the DecoupledESC repository's released SFT test outputs into `ipm eval` predictions files.

The DecoupledESC repository (github.com/Zc0812/DecoupledESC) publishes one sampled output of its SFT joint model
for every test turn: `data/Statistic/Statistic_SFT_Qwen2.5.json` and `..._llama3.1.json`, a list of
`{"user_input", "strategy", "response": "[Strategy] reply", ...}` with no turn id. A record is aligned to a test
turn of a build (its `joint_sft` test split) by its `user_input`: the seeker message the turn answers, compared
lower-cased with whitespace collapsed. Only messages that occur once among the test turns and once in the file
are aligned (a seeker message answered by two supporter turns in a row, or a greeting such as "hi", is left out);
the counts are printed. The gold strategy and reply are the build's (the reply without its tag); the predicted
strategy is the record's `strategy` (Llama's replies carry no tag; Qwen's `[...]` tag says the same), the predicted
reply its `response` without a leading `[...]` tag.

    ipm build --stage sft --out /tmp/sft
    python benchmarks/align_decoupledesc.py --data /tmp/sft --out /tmp/desc Statistic_SFT_Qwen2.5.json \
        Statistic_SFT_llama3.1.json
    ipm eval --predictions /tmp/desc/Statistic_SFT_Qwen2.5.jsonl --baseline /tmp/desc/Statistic_SFT_llama3.1.jsonl

Nothing from ESConv or the released outputs is kept in this repository; the files are written where `--out` says.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from ipm_prefdial.convert import parse_tagged
from ipm_prefdial.evaluation.infer import load_test_rows


def key(text: str) -> str:
    return " ".join(text.split()).lower()


def seeker_message(prompt: list[dict]) -> str | None:
    """The message a test turn answers: the prompt's last message when the seeker wrote it (None when the supporter
    spoke last: the turn continues the supporter's own message)."""
    last = prompt[-1]
    return last["content"] if last["role"] == "user" else None


def align(turns: list[dict], records: list[dict]) -> tuple[list[dict], dict]:
    by_turn = Counter(key(m) for m in (seeker_message(t["prompt"]) for t in turns) if m is not None)
    by_record = Counter(key(r["user_input"]) for r in records)
    record_of = {key(r["user_input"]): r for r in records if by_record[key(r["user_input"])] == 1}
    rows = []
    for t in turns:
        message = seeker_message(t["prompt"])
        if message is None or by_turn[key(message)] != 1 or key(message) not in record_of:
            continue
        record = record_of[key(message)]
        tag, reply = parse_tagged(record["response"])
        strategy = record.get("strategy") or tag
        rows.append({"id": t["id"], "dialog_id": t["dialog_id"], "turn_index": t["turn_index"],
                     "strategy": t["strategy"], "predicted_strategy": strategy,
                     "response": parse_tagged(t["completion"][0]["content"])[1], "predicted_response": reply,
                     "taxonomy": "esconv"})
    counts = {"test_turns": len(turns), "records": len(records), "aligned": len(rows),
              "dialogues": len({r["dialog_id"] for r in rows})}
    return rows, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path, help="Statistic_SFT_*.json files")
    parser.add_argument("--data", required=True, help="a build with the joint_sft config (ipm build --stage sft)")
    parser.add_argument("--out", required=True, type=Path, help="directory for the predictions JSONL files")
    args = parser.parse_args()
    turns = load_test_rows(args.data, "joint_sft")
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.files:
        records = json.loads(path.read_text(encoding="utf-8"))
        rows, counts = align(turns, records)
        target = args.out / f"{path.stem}.jsonl"
        with target.open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        print(f"{path.name}: {counts['records']} records, {counts['aligned']} aligned to {counts['test_turns']} test "
              f"turns ({counts['dialogues']} dialogues) -> {target}")


if __name__ == "__main__":
    main()
