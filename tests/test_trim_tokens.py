"""`--trim-tokens N`: every prompt of a build (SFT rows, mining requests, pair prompts) loses its oldest history
until prompt + answer fit N tokens of the trim tokenizer (default: the bundled SmolLM2's), keeping the system
prompt and the current turn; the manifest and card record it, `ipm validate` checks it, and every card shows the
measured prompt lengths. Token counts here come from transformers directly, not from the code under test."""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.parquet as pq
from typer.testing import CliRunner

from helpers import fake_build_args
from helpers.trim_tokens import N
from ipm_prefdial.cli import app
from ipm_prefdial.release.features import FEATURES
from ipm_prefdial.release.files import sha256_file
from ipm_prefdial.validate import validate

runner = CliRunner()
MAX_TOKENS = {"strategy": 32, "response": 160, "joint": 192}  # the build's default --*-max-tokens


def prompt_tokens(tok, prompt) -> int:
    return len(tok.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=False))


def reserve(tok, kind: str, answer: str) -> int:
    """The answer a prompt must leave room for: the longer of the gold answer and the task's max_tokens, plus the
    two tokens that end a turn."""
    return max(len(tok(answer, add_special_tokens=False)["input_ids"]), MAX_TOKENS[kind]) + 2


def rows(out, config, split="train"):
    return pq.read_table(out / f"data/{config}/{split}-00000-of-00001.parquet").to_pylist()


def test_every_trimmed_prompt_fits_and_keeps_its_system_prompt_and_current_turn(builds, tok):
    shortened, over = 0, {}
    for kind in ("strategy", "response", "joint"):
        config = f"{kind}_sft"
        for split in ("train", "validation", "test"):
            for full, cut in zip(rows(builds["full"], config, split), rows(builds["trimmed"], config, split),
                                 strict=True):
                answer = cut["completion"][0]["content"]
                if prompt_tokens(tok, cut["prompt"]) + reserve(tok, kind, answer) > N:
                    # only when nothing more may go: the system prompt and the current turn alone are too long
                    assert len(cut["prompt"]) == 2 and (kind != "strategy" or "\n" not in cut["prompt"][1]["content"])
                    over[config] = over.get(config, 0) + 1
                assert cut["prompt"][0] == full["prompt"][0]  # the system prompt
                if kind == "strategy":  # the dialogue as lines: the current seeker line stays
                    assert full["prompt"][1]["content"].endswith(cut["prompt"][1]["content"])
                    assert cut["prompt"][1]["content"].split("\n")[-1] == full["prompt"][1]["content"].split("\n")[-1]
                else:  # whole exchanges go, oldest first; the current turn stays
                    assert cut["prompt"][-1] == full["prompt"][-1]
                    assert cut["prompt"][1:] == full["prompt"][len(full["prompt"]) - len(cut["prompt"]) + 1:]
                    assert cut["prompt"][1]["role"] == "user"
                if cut["prompt"] != full["prompt"]:
                    shortened += 1
                    assert prompt_tokens(tok, full["prompt"]) + reserve(tok, kind, answer) > N
    assert shortened > 0
    m = json.loads((builds["trimmed"] / "manifest.json").read_text())
    assert m["trim"]["tokens"] == N and m["trim"]["tokenizer"].startswith("SmolLM2-135M-Instruct")
    assert sum(m["trim"]["shortened"].values()) == shortened
    assert {c: n for c, n in m["trim"]["over_budget"].items() if n} == over
    assert m["build_config"]["trim_tokens"] == N
    assert f"--trim-tokens {N}" in (builds["trimmed"] / "README.md").read_text()
    assert validate(builds["trimmed"]).ok, validate(builds["trimmed"]).lines()


def test_validate_reads_the_bound_from_the_manifest(builds, tmp_path):
    ds = tmp_path / "ds"
    shutil.copytree(builds["trimmed"], ds)
    rel = "data/joint_sft/train-00000-of-00001.parquet"
    cut, full = rows(ds, "joint_sft"), rows(builds["full"], "joint_sft")
    k = next(i for i, (a, b) in enumerate(zip(cut, full, strict=True)) if a["prompt"] != b["prompt"])
    cut[k] = full[k]  # an untrimmed row slipped in
    pq.write_table(pa.Table.from_pylist(cut, schema=FEATURES["joint_sft"].arrow_schema), ds / rel)
    m = json.loads((ds / "manifest.json").read_text())
    m["files"][rel]["sha256"] = sha256_file(ds / rel)
    (ds / "manifest.json").write_text(json.dumps(m))
    lines = validate(ds).lines()
    assert any(line.startswith(f"prompt + answer over the build's --trim-tokens {N}") and cut[k]["id"] in line
               for line in lines), lines


def test_every_card_shows_the_measured_prompt_lengths(builds, tok):
    m = json.loads((builds["full"] / "manifest.json").read_text())
    lengths = sorted(prompt_tokens(tok, r["prompt"]) for split in ("train", "validation", "test")
                     for r in rows(builds["full"], "joint_sft", split))
    stats = m["prompt_tokens"]["joint_sft"]
    assert stats["max"] == lengths[-1] and stats["rows"] == len(lengths)
    assert stats["over_1024"] == sum(n > 1024 for n in lengths)
    card = (builds["full"] / "README.md").read_text()
    assert "## Prompt length" in card and "max_length" in card and "--trim-tokens" in card
    assert f"| `joint_sft` | {stats['p50']} | {stats['p90']} |" in card


def test_mining_requests_and_pair_prompts_are_trimmed_the_same_way(fake_llm, tmp_path, tok):
    from ipm_prefdial.testing.fake_llm import FakeLLM

    server = FakeLLM(keep_bodies=True).start()
    out = tmp_path / "ds"
    try:
        result = runner.invoke(app, [*fake_build_args(server.url, "--no-judge", "--trim-tokens", "700"),
                                     "--out", str(out), "--cache-dir", str(tmp_path / "cache")])
    finally:
        server.stop()
    assert result.exit_code == 0, result.output
    assert validate(out).ok, validate(out).lines()  # pair prompts equal the (trimmed) SFT prompts
    sent = [body["messages"] for body in server.bodies]
    for config in ("strategy_pairs", "response_pairs", "joint_pairs"):
        for row in rows(out, config):
            assert row["prompt"] in sent  # the policy saw the trimmed prompt
            assert prompt_tokens(tok, row["prompt"]) <= 700
