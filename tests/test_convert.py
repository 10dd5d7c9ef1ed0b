"""The conversion rule of METHOD.md section 2, on hand-made dialogues and against the paper's own samples."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
import pytest

from helpers import ESCONV_DIR
from ipm_prefdial.convert import parse_tagged, sft_rows, sp_history_text, tagged, turns
from ipm_prefdial.prompts import Prompts
from ipm_prefdial.sources import Dialogue, Utterance

PROMPTS = Prompts()


def dialogue(*utts: tuple[str, str | None]) -> Dialogue:
    return Dialogue(7, tuple(Utterance(text, strategy) for text, strategy in utts), "anxiety", "job crisis")


def chat(rows: dict, config: str) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in rows[config]["prompt"]]


def test_supporter_first_gets_hi_and_consecutive_supporters_get_a_filler():
    d = dialogue(("Hello!", "Others"), ("How are you?", "Question"), ("Not great.", None), ("Work.", None),
                 ("Tell me more.", "Question"))
    ts = list(turns(d))
    assert [t.turn_index for t in ts] == [0, 1, 4]
    assert [t.id for t in ts] == ["7-0", "7-1", "7-4"]
    rows = sft_rows(ts[2], PROMPTS)
    assert chat(rows, "joint_sft")[1:] == [
        ("user", "Hi"), ("assistant", "[Others] Hello!"), ("user", " "), ("assistant", "[Question] How are you?"),
        ("user", "Not great.\nWork."),
    ]
    assert rows["joint_sft"]["completion"] == [{"role": "assistant", "content": "[Question] Tell me more."}]
    # the RG history carries no tags; the strategy instruction comes after the last seeker message
    rg = chat(rows, "response_sft")
    assert rg[1:5] == [("user", "Hi"), ("assistant", "Hello!"), ("user", " "), ("assistant", "How are you?")]
    assert rg[5] == ("user", "Not great.\nWork.\n\n(Respond as the supporter using the strategy: Question)")
    assert PROMPTS.parse_rg_instruction(rg[5][1]) == "Question"
    assert rows["response_sft"]["completion"][0]["content"] == "Tell me more."
    assert rows["strategy_sft"]["completion"][0]["content"] == "Question"
    # the very first turn: only the inserted opening
    assert chat(sft_rows(ts[0], PROMPTS), "joint_sft")[1:] == [("user", "Hi")]
    assert chat(sft_rows(ts[1], PROMPTS), "joint_sft")[1:] == [("user", "Hi"), ("assistant", "[Others] Hello!"),
                                                              ("user", " ")]


def test_rg_instruction_follows_a_blank_line_for_each_kind_of_last_user_message():
    """The last user message of an RG prompt is the seeker's words (or the inserted "Hi", or the " " filler),
    unchanged, then a blank line, then the instruction (METHOD.md section 2)."""
    d = dialogue(("Hello!", "Others"), ("How are you?", "Question"), ("I lost my job.", None),
                 ("It hurts.", None), ("I am sorry.", "Reflection of feelings"))
    first, second, third = (sft_rows(t, PROMPTS)["response_sft"]["prompt"][-1] for t in turns(d))
    assert first == {"role": "user", "content": "Hi\n\n(Respond as the supporter using the strategy: Others)"}
    assert second == {"role": "user", "content": " \n\n(Respond as the supporter using the strategy: Question)"}
    assert third == {"role": "user", "content": "I lost my job.\nIt hurts.\n\n"
                                                "(Respond as the supporter using the strategy: Reflection of feelings)"}
    assert [PROMPTS.parse_rg_instruction(m["content"]) for m in (first, second, third)] == [
        "Others", "Question", "Reflection of feelings"]
    # glued to the seeker's words (the 0.1 defect) is not an instruction
    assert PROMPTS.parse_rg_instruction("It hurts.(Respond as the supporter using the strategy: Question)") is None


def check_rg_rows(build) -> None:
    """The RG user message is the joint model's (untagged) user message, a blank line, the instruction naming the
    gold strategy."""
    for split in ("train", "validation", "test"):
        rg = pq.read_table(build / f"data/response_sft/{split}-00000-of-00001.parquet").to_pylist()
        vm = pq.read_table(build / f"data/joint_sft/{split}-00000-of-00001.parquet").to_pylist()
        assert [r["id"] for r in rg] == [r["id"] for r in vm]
        for r, v in zip(rg, vm, strict=True):
            expected = v["prompt"][-1]["content"] + (
                "\n\n(Respond as the supporter using the strategy: " + r["strategy"] + ")")
            assert r["prompt"][-1] == {"role": "user", "content": expected}, r["id"]


def test_every_response_sft_row_ends_with_a_blank_line_and_the_gold_strategy(esconv_build):
    check_rg_rows(esconv_build)  # the full build


def test_every_response_sft_row_of_a_small_build_ends_with_the_gold_strategy(sft_build):
    check_rg_rows(sft_build)


def test_sp_text_matches_the_method_example():
    d = dialogue(("Hello!", "Others"), ("How are you?", "Question"), ("Not great.\nWork.", None), ("Ok.", "Others"))
    # the source loader normalises whitespace; build the Utterance directly to keep the inner newline
    last = list(turns(d))[-1]
    assert sp_history_text(last.history) == (
        "seeker: Hi\nsupporter: Hello!\nseeker:\nsupporter: How are you?\nseeker: Not great. Work."
    )
    rows = sft_rows(last, PROMPTS)
    assert [m["role"] for m in rows["strategy_sft"]["prompt"]] == ["system", "user"]
    assert rows["strategy_sft"]["prompt"][1]["content"] == sp_history_text(last.history)


def test_seekers_merge_and_trailing_seekers_make_no_sample():
    d = dialogue(("I feel low.", None), ("Since May.", None), ("I'm sorry.", "Reflection of feelings"),
                 ("Thanks.", None), ("Bye.", None))
    ts = list(turns(d))
    assert len(ts) == 1
    assert [(m.role, m.content) for m in ts[0].history] == [("user", "I feel low.\nSince May.")]


def test_parse_tagged():
    assert parse_tagged(tagged("Question", "Why?")) == ("Question", "Why?")
    assert parse_tagged("[Others]Bye") == ("Others", "Bye")
    assert parse_tagged("no tag here") == (None, "no tag here")
    assert parse_tagged("[unclosed tag") == (None, "[unclosed tag")


def _fingerprint(row: dict) -> str:
    def norm(text: str) -> str:
        return " ".join(text.split())

    obj = [[[m["role"], norm(m["content"])] for m in row["prompt"] if m["role"] != "system"],
           [["assistant", norm(row["completion"][0]["content"])]]]
    return hashlib.sha256(json.dumps(obj).encode()).hexdigest()[:16]


def test_reproduces_the_papers_joint_sft_samples(esconv_build):
    expected = json.loads((ESCONV_DIR / "paper_joint_sft_fingerprints_sample.json").read_text())
    checked = 0
    for split in ("test", "validation"):
        rows = pq.read_table(esconv_build / f"data/joint_sft/{split}-00000-of-00001.parquet").to_pylist()
        by_dialog: dict[int, list[dict]] = {}
        for row in rows:
            by_dialog.setdefault(row["dialog_id"], []).append(row)
        for dialog_id, fingerprints in expected[split].items():
            got = [_fingerprint(r) for r in sorted(by_dialog[int(dialog_id)], key=lambda r: r["turn_index"])]
            assert got == fingerprints, f"dialogue {dialog_id}"
            checked += len(got)
    assert checked == 289


@pytest.mark.parametrize("name", ["sp_system", "rg_system", "vm_system"])
def test_system_prompts_name_every_strategy(name):
    from ipm_prefdial.strategies import STRATEGIES

    text = getattr(PROMPTS, name)
    assert all(s in text for s in STRATEGIES)
