"""Mining and judging as pure functions: requests per turn, pair rows and outcomes, the judge's blind order and
the mapping of its verdict back to chosen/rejected (METHOD.md section 3)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from ipm_prefdial.convert import Message, Turn, rg_prompt, tagged
from ipm_prefdial.engines.requests import ChatResult, Choice, JsonSchema, failure
from ipm_prefdial.mining.judge import VERDICT_SCHEMA, judge_request, rejected_first, verdict
from ipm_prefdial.mining.policy import PolicySampling, make_pair, policy_requests, trim_to_sentence
from ipm_prefdial.prompts import Prompts
from ipm_prefdial.strategies import STRATEGIES

PROMPTS = Prompts()
GOLD = "It sounds like losing that job really shook you."
HISTORY = (Message("user", "Hi"), Message("assistant", "Hello, how are you today?", "Question"),
           Message("user", "Not good. I lost my job last week."))
TURN = Turn(7, 3, "Reflection of feelings", GOLD, HISTORY, "anxiety", "job crisis")
MINER = {"engine": "local", "model": "test.gguf@0123456789ab"}
POLICY = PolicySampling(samples=3)


def answer(text: str, parsed=None) -> ChatResult:
    return ChatResult(text=text, parsed=text.strip() if parsed is None else parsed, finish_reason="stop")


def pair(task: str, result: ChatResult, sample: int = 0):
    request = policy_requests(task, TURN, PROMPTS, POLICY)[sample]
    return make_pair(task, TURN, request, result, MINER, "sha256:test")


def test_requests_per_turn_samples_seeds_and_groups():
    for task in ("sp", "rg", "vm"):
        requests = policy_requests(task, TURN, PROMPTS, POLICY)
        assert [r.sample for r in requests] == [0, 1, 2]
        assert {r.group for r in requests} == {f"{task}:7"}  # one dialogue, one stream
        assert len({r.seed("m") for r in requests}) == 3  # a seed per request, derived from its key
        assert requests[0].seed("m") == policy_requests(task, TURN, PROMPTS, POLICY)[0].seed("m")
        assert requests[0].sampling.temperature == 0.7 and requests[0].sampling.top_p == 0.95
    sp = policy_requests("sp", TURN, PROMPTS, POLICY)[0]
    assert isinstance(sp.output, Choice) and sp.output.labels == STRATEGIES
    assert sp.sampling.max_tokens == 32
    assert policy_requests("rg", TURN, PROMPTS, POLICY)[0].message_dicts() == rg_prompt(TURN, PROMPTS)
    assert policy_requests("rg", TURN, PROMPTS, POLICY)[0].output is None


def test_sp_pair_and_agreement():
    row, outcome = pair("sp", answer("Question"), sample=2)
    assert outcome == "pair"
    assert row["id"] == "7-3-s2" and row["strategy"] == "Reflection of feelings"
    assert row["chosen"] == [{"role": "assistant", "content": "Reflection of feelings"}]
    assert row["rejected"] == [{"role": "assistant", "content": "Question"}]
    assert row["rejected_strategy"] == "Question" and row["judge"] is None
    assert row["miner"]["model"] == MINER["model"] and row["miner"]["temperature"] == 0.7
    assert len(row["miner"]["prompt_sha256"]) == 64
    assert pair("sp", answer("Reflection of feelings")) == (None, "agree")


def test_rg_pair_drops_empty_and_gold_copies():
    row, outcome = pair("rg", answer("Have you thought about applying elsewhere?"))
    assert outcome == "pair" and row["chosen"][0]["content"] == GOLD
    assert row["rejected"][0]["content"] == "Have you thought about applying elsewhere?"
    assert row["rejected_strategy"] == "Reflection of feelings"  # RG writes under the gold strategy
    assert pair("rg", answer("  it sounds like LOSING that job   really shook you. "))[1] == "same_as_gold"
    assert pair("rg", answer("   "))[1] == "empty"


def test_vm_pair_parses_the_strategy_or_counts_it_unparsed():
    row, outcome = pair("vm", answer("[Question] What happened at work?"))
    assert outcome == "pair" and row["rejected_strategy"] == "Question"
    assert row["chosen"][0]["content"] == tagged("Reflection of feelings", GOLD)
    row, outcome = pair("vm", answer("What happened at work?"))
    assert outcome == "pair_unparsed_strategy" and row["rejected_strategy"] is None
    row, outcome = pair("vm", answer("[Made-up strategy] What happened?"))
    assert outcome == "pair_unparsed_strategy" and row["rejected_strategy"] is None
    assert pair("vm", answer(tagged("Reflection of feelings", GOLD)))[1] == "same_as_gold"


def test_vm_near_copies_of_the_gold_answer_are_not_pairs():
    """A joint output is a copy when its canonical strategy and its reply (whitespace collapsed, case-insensitive)
    equal the gold ones, however the tag is spaced or cased."""
    for text in ("[Reflection of feelings]It sounds like losing that job really shook you.",
                 "[reflection of Feelings]   it sounds like losing that job\nreally shook you.",
                 " [ Reflection of feelings ] It sounds like losing that job really shook you. "):
        assert pair("vm", answer(text)) == (None, "same_as_gold"), text
    # a different strategy with the gold words is a real (strategy-level) difference
    row, outcome = pair("vm", answer("[Question] It sounds like losing that job really shook you."))
    assert outcome == "pair" and row["rejected_strategy"] == "Question"


def test_an_empty_tag_parses_to_no_strategy():
    from ipm_prefdial.convert import parse_tagged

    assert parse_tagged("[]x") == (None, "x")
    assert parse_tagged("[ ] Hello there.") == (None, "Hello there.")
    row, outcome = pair("vm", answer("[]What happened at work?"))
    assert outcome == "pair_unparsed_strategy" and row["rejected_strategy"] is None


def test_failures_give_no_pair_and_truncated_replies_are_trimmed():
    assert pair("rg", failure("timeout", "slow")) == (None, "failed:timeout")
    assert pair("sp", failure("invalid_output", "x", text="Hmm")) == (None, "failed:invalid_output")
    cut = failure("truncated", "stopped", text="I hear you. That must be hard! Have you tried to",
                  finish_reason="length")
    row, outcome = pair("rg", cut)
    assert outcome == "pair_trimmed" and row["rejected"][0]["content"] == "I hear you. That must be hard!"
    assert pair("rg", failure("truncated", "stopped", text="no sentence ends here and"))[1] == "failed:truncated"
    row, outcome = pair("vm", failure("truncated", "s", text="[Question] Why? Tell me about"))
    assert outcome == "pair_trimmed" and row["rejected"][0]["content"] == "[Question] Why?"


@pytest.mark.parametrize("text,expected", [
    ("One. Two! Three? Four", "One. Two! Three?"),
    ('She said "stop." And', 'She said "stop."'),
    ("Version 3.5 is out and", ""),
    ("Done.", "Done."),
    ("", ""),
])
def test_trim_to_sentence(text, expected):
    assert trim_to_sentence(text) == expected


def rg_row(row_id: str) -> dict:
    return {"id": row_id, "chosen": [{"role": "assistant", "content": "ALPHA reply"}],
            "rejected": [{"role": "assistant", "content": "BETA reply"}]}


def test_judge_request_is_blind_and_dialogue_first():
    order = Counter(rejected_first("response_pairs", f"7-{i}-s0") for i in range(200))
    assert 80 < order[True] < 120  # a fair coin per pair ...
    assert rejected_first("response_pairs", "7-3-s0") == rejected_first("response_pairs", "7-3-s0")  # ... fixed
    request = judge_request("response_pairs", rg_row("7-3-s0"), TURN, PROMPTS, PolicySampling().sampling("rg"))
    system, user = (content for _, content in request.messages)
    assert "gold" not in (system + user).lower() and "chosen" not in (system + user).lower()
    first, second = ("BETA", "ALPHA") if rejected_first("response_pairs", "7-3-s0") else ("ALPHA", "BETA")
    assert user.index(f"Reply 1: {first}") < user.index(f"Reply 2: {second}")
    assert user.index("Hello, how are you today?") < user.index("I lost my job") < user.index("Reply 1:")
    assert user.rstrip().endswith("reply")  # the replies come last
    assert isinstance(request.output, JsonSchema) and request.output.schema == VERDICT_SCHEMA
    assert request.group == "judge:response_pairs:7"


def test_joint_replies_are_judged_without_their_tag():
    row = {"id": "7-3-s0", "chosen": [{"role": "assistant", "content": "[Reflection of feelings] ALPHA reply"}],
           "rejected": [{"role": "assistant", "content": "[Question] BETA reply"}]}
    user = judge_request("joint_pairs", row, TURN, PROMPTS, PolicySampling().sampling("vm")).messages[1][1]
    assert "[Question]" not in user and "BETA reply" in user and "ALPHA reply" in user


def verdict_for(row_id: str, rejected: str, chosen: str) -> dict:
    one, two = (rejected, chosen) if rejected_first("response_pairs", row_id) else (chosen, rejected)
    parsed = {"reply_1_error": one, "reply_1_explanation": f" why {one} ", "reply_2_error": two,
              "reply_2_explanation": f"why {two}"}
    return verdict("response_pairs", row_id, ChatResult(text="{}", parsed=parsed), "judge-model")


@pytest.mark.parametrize("row_id", ["7-3-s0", "7-5-s0", "8-1-s0", "9-9-s1"])  # both display orders occur
def test_verdict_maps_back_to_chosen_and_rejected(row_id):
    v = verdict_for(row_id, rejected="Template Response", chosen="None")
    assert v == {"retained": True, "chosen_error": None, "rejected_error": "Template Response",
                 "chosen_explanation": "why None", "rejected_explanation": "why Template Response",
                 "model": "judge-model"}
    assert verdict_for(row_id, rejected="None", chosen="None")["retained"] is False
    both = verdict_for(row_id, rejected="Lack Empathy", chosen="Early Emotion Shift")
    assert both["retained"] is False and both["chosen_error"] == "Early Emotion Shift"
    assert verdict("response_pairs", row_id, failure("truncated", "cut"), "m") is None


def test_both_display_orders_are_exercised():
    assert {rejected_first("response_pairs", r) for r in ["7-3-s0", "7-5-s0", "8-1-s0", "9-9-s1"]} == {True, False}


def test_long_explanations_are_cut_never_thrown_away():
    """The sent schema has no maxLength (servers that ignore it made good verdicts invalid, strict APIs may refuse
    it); the prompt states the limit and the code cuts a longer explanation."""
    from ipm_prefdial.engines.checks import check_output

    request = judge_request("response_pairs", rg_row("7-3-s0"), TURN, PROMPTS, PolicySampling().sampling("rg"))
    assert "maxLength" not in request.output.schema_json
    from ipm_prefdial.engines.openai_http import OpenAIEngine

    for mode in ("json_schema", "grammar", "none"):  # servers whose handling of maxLength we do not know
        assert "maxLength" not in json.dumps(OpenAIEngine("http://x/v1", "m", structured=mode).body(request))
    # llguidance (the embedded engine) and vLLM's grammar backends enforce the bound exactly: part of decoding there
    assert '"maxLength": 120' in OpenAIEngine("http://x/v1", "m", structured="llguidance").body(request)["grammar"]
    vllm = OpenAIEngine("http://x/v1", "m", structured="vllm").body(request)["structured_outputs"]
    assert vllm["json"]["properties"]["reply_1_explanation"] == {"type": "string", "maxLength": 120}
    assert vllm["disable_any_whitespace"] is True
    assert "at most 120 characters" in PROMPTS.judge_system
    long_why = "The reply talks about the weather and never mentions the job loss, " * 5  # 340 characters
    text = json.dumps({"reply_1_error": "None", "reply_1_explanation": long_why, "reply_2_error": "Lack Empathy",
                       "reply_2_explanation": long_why})
    result = check_output(request, text, "stop")
    assert result.ok
    v = verdict("response_pairs", "7-3-s0", result, "judge-model")
    for why in (v["chosen_explanation"], v["rejected_explanation"]):
        assert len(why) <= 120 and why.endswith("…")
        assert why == "The reply talks about the weather and never mentions the job loss, The reply talks about " \
                      "the weather and never…"
