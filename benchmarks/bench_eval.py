"""Benchmark: `ipm eval`'s strategy and reference metrics on all 1,792 test turns of the paper's split.

The predictions are synthetic but realistic in size: each turn's predicted reply is the gold reply of another
test turn and its predicted strategy a seeded random pick (a tenth of them outside the 8 names, to exercise
lenient and strict). Prints the time to read, check and evaluate the file (goal: under 10 s), then with 95%
intervals (1,000 dialogue resamples) and with a second such file as a paired baseline.

    IPM_ESCONV_PATH=../shared/data/esconv/ESConv.reconstructed.json python benchmarks/bench_eval.py
"""

from __future__ import annotations

import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from ipm_prefdial.build import build
from ipm_prefdial.config import BuildConfig
from ipm_prefdial.evaluation.evaluate import evaluate, evaluate_files, read_predictions
from ipm_prefdial.strategies import STRATEGIES


def main() -> None:
    path = os.environ.get("IPM_ESCONV_PATH")
    if not path:
        sys.exit("set IPM_ESCONV_PATH to ESConv.json (e.g. ../shared/data/esconv/ESConv.reconstructed.json)")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "ipm_prefdial"
        build(BuildConfig(stage="sft", source_path=path, out=str(out), cache_dir=tmp))
        rows = pq.read_table(out / "data/response_sft/test-00000-of-00001.parquet").to_pylist()
        rng = random.Random(0)
        replies = [r["completion"][0]["content"] for r in rows]
        rng.shuffle(replies)
        files = []
        for seed in (0, 1):  # two systems: the second is the first's baseline
            rng = random.Random(seed)
            replies = [r["completion"][0]["content"] for r in rows]
            rng.shuffle(replies)
            path = Path(tmp) / f"predictions-{seed}.jsonl"
            with path.open("w") as f:
                for r, reply in zip(rows, replies, strict=True):
                    label = rng.choice(STRATEGIES) if rng.random() > 0.1 else "Comforting"
                    f.write(json.dumps({"id": r["id"], "dialog_id": r["dialog_id"], "turn_index": r["turn_index"],
                                        "strategy": r["strategy"], "predicted_strategy": label,
                                        "response": r["completion"][0]["content"],
                                        "predicted_response": reply}) + "\n")
            files.append(path)
        started = time.perf_counter()
        metrics = evaluate(read_predictions(files[0]))
        seconds = time.perf_counter() - started
        started = time.perf_counter()
        [with_ci] = evaluate_files(files[:1], resamples=1000).values()
        intervals = time.perf_counter() - started
        started = time.perf_counter()
        compared = evaluate_files(files[:1], baseline=files[1], resamples=1000)
        paired = time.perf_counter() - started
    lenient = metrics["strategy"]["lenient"]
    print(f"ipm eval on {metrics['turns']:,} test turns: {seconds:.2f} s (goal < 10 s); lenient Q "
          f"{lenient['Q']:.2f}, B {lenient['B']:.3f}, dropped {lenient['dropped_ratio']:.3f}; BLEU-2 "
          f"{metrics['reference']['bleu-2']:.2f}, ROUGE-L {metrics['reference']['rouge-l']:.2f}")
    ci = with_ci["strategy"]["lenient"]["ci95"]["Q"]
    diff = next(iter(compared.values()))["compare"]["strategy"]["lenient"]["Q"]
    print(f"with 95% intervals (1,000 resamples of {with_ci['bootstrap']['dialogues']} dialogues): {intervals:.2f} s "
          f"(Q [{ci[0]:.2f}, {ci[1]:.2f}]); with a baseline, paired: {paired:.2f} s (Q difference "
          f"{diff['diff']:+.2f} [{diff['ci95'][0]:.2f}, {diff['ci95'][1]:.2f}], p {diff['p']:.3f})")


if __name__ == "__main__":
    main()
