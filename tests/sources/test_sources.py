"""Dialogue sources and splits, through the public functions: load_source, split_ids, assign."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

from helpers import ESCONV_JSON, HUB_DIR
from ipm_prefdial.sources import Dialogue, LoadedSource, SourceError, Utterance, load_source
from ipm_prefdial.splits import assign, split_ids

ESCONV_STRATEGIES = (
    "Question", "Restatement or Paraphrasing", "Reflection of feelings", "Self-disclosure",
    "Affirmation and Reassurance", "Providing Suggestions", "Information", "Others",
)
# FailedESConv's non-ESConv labels (shared/data/esconv/README.md), written out here on purpose so that the
# test does not trust the package's own synonym table.
FAILED_SYNONYMS = {
    "Questions": "Question",
    "Other": "Others",
    "Restatement": "Restatement or Paraphrasing",
    "Approval and Reassurance": "Affirmation and Reassurance",
    "Direct Guidance": "Providing Suggestions",
}


# ----------------------------------------------------------------------------------------------- helpers


def _norm(text: str) -> str:
    return " ".join(text.split())


def _dialogue(*turns: tuple[str, str | None, str], **top) -> dict:
    """A small ESConv-style dialogue: turns are (speaker, strategy or None, content)."""
    dialog = [
        {"speaker": sp, "annotation": ({"strategy": st} if st else {}), "content": content}
        for sp, st, content in turns
    ]
    return {"emotion_type": "anxiety", "problem_type": "job crisis", **top, "dialog": dialog}


def _good(n: int) -> dict:
    return _dialogue(("seeker", None, f"hello {n}"), ("supporter", "Question", f"how are you {n}?"),
                     ("seeker", None, "not great"), ("supporter", "Others", "I see"))


def _write_list(path: Path, records: list[dict]) -> Path:
    path.write_text(json.dumps(records, indent=1), encoding="utf-8")
    return path


def _write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _source(ids: list[int]) -> LoadedSource:
    """A minimal in-memory source with these dialog ids."""
    dialogues = [Dialogue(i, (Utterance("hi", None), Utterance("hello", "Question"))) for i in ids]
    return LoadedSource(dialogues, {"source": "test"})


# ---------------------------------------------------------------------------------------------- ESConv


def test_esconv_json_loads_1300_dialogues_in_original_order(esconv, esconv_raw):
    assert len(esconv.dialogues) == 1300 == len(esconv_raw)
    assert [d.dialog_id for d in esconv.dialogues] == list(range(1300))
    assert esconv.given_split is None
    assert esconv.skipped == []
    assert esconv.info["layout"] == "json"
    for k in (0, 1, 617, 1299):
        raw, got = esconv_raw[k], esconv.dialogues[k]
        assert [u.text for u in got.utterances] == [_norm(t["content"]) for t in raw["dialog"]]
        assert [u.strategy for u in got.utterances] == [
            t["annotation"].get("strategy") if t["speaker"] == "supporter" else None for t in raw["dialog"]
        ]
        assert got.emotion_type == raw["emotion_type"]
        assert got.problem_type == raw["problem_type"]


def test_esconv_strategy_totals_match_upstream_statistics(esconv):
    counts = Counter(u.strategy for d in esconv.dialogues for u in d.utterances)
    assert counts[None] == 19989
    assert {s: counts[s] for s in ESCONV_STRATEGIES} == {
        "Question": 3801, "Others": 3341, "Providing Suggestions": 2954, "Affirmation and Reassurance": 2827,
        "Self-disclosure": 1713, "Reflection of feelings": 1436, "Information": 1215,
        "Restatement or Paraphrasing": 1089,
    }


def test_hub_layout_loads_the_same_dialogues_as_the_json(esconv, esconv_hub):
    assert len(esconv_hub.dialogues) == 1300
    assert esconv_hub.info["layout"] == "hub-split"
    assert esconv_hub.dialogues == esconv.dialogues


def test_hub_layout_dialog_ids_invert_the_seeded_shuffle(esconv_hub, esconv_raw):
    # Upstream: random.seed(13); shuffle; valid = [:195], test = [195:390], train = [390:].
    order = list(range(1300))
    random.Random(13).shuffle(order)  # the same sequence as random.seed(13); random.shuffle(...)
    assert esconv_hub.given_split == {"train": order[390:], "validation": order[:195], "test": order[195:390]}
    first_valid = json.loads((HUB_DIR / "valid.txt").read_text(encoding="utf-8").splitlines()[0])
    original = esconv_raw[order[0]]
    assert [t["text"] for t in first_valid["dialog"]] == [_norm(t["content"]) for t in original["dialog"]]
    assert [u.text for u in esconv_hub.dialogues[order[0]].utterances] == [t["text"] for t in first_valid["dialog"]]


def test_esconv_path_env_var_is_used_when_no_path_is_given(monkeypatch, esconv):
    monkeypatch.setenv("IPM_ESCONV_PATH", str(HUB_DIR))
    loaded = load_source("esconv")
    assert loaded.info["file"] == HUB_DIR.name  # a name, never a local path (it goes into the manifest)
    assert loaded.info["layout"] == "hub-split"
    assert "download" not in loaded.info
    assert loaded.dialogues == esconv.dialogues


def test_explicit_path_wins_over_env_var(monkeypatch, tmp_path):
    monkeypatch.setenv("IPM_ESCONV_PATH", str(HUB_DIR))
    small = _write_list(tmp_path / "small.json", [_good(0), _good(1)])
    assert len(load_source("esconv", small).dialogues) == 2


# ---------------------------------------------------------------------------------------------- FailedESConv


def test_failed_esconv_loads_196_dialogues(failed, failed_raw):
    assert len(failed.dialogues) == 196 == len(failed_raw)
    assert [d.dialog_id for d in failed.dialogues] == list(range(196))
    assert failed.skipped == []


def test_failed_esconv_speakers_are_mapped(failed, failed_raw):
    raw_speakers = Counter(t["speaker"] for d in failed_raw for t in d["dialog"])
    assert set(raw_speakers) == {"speaker", "listener"}
    roles = Counter("seeker" if u.strategy is None else "supporter" for d in failed.dialogues for u in d.utterances)
    assert roles == {"seeker": raw_speakers["speaker"], "supporter": raw_speakers["listener"]}
    assert roles == {"seeker": 2853, "supporter": 2377}
    for k in (0, 95, 195):
        raw, got = failed_raw[k], failed.dialogues[k]
        assert [u.strategy is None for u in got.utterances] == [t["speaker"] == "speaker" for t in raw["dialog"]]
        assert [u.text for u in got.utterances] == [_norm(t["content"]) for t in raw["dialog"]]


def test_failed_esconv_labels_are_mapped_through_synonyms(failed, failed_raw):
    raw_labels = Counter(t["annotation"]["strategy"] for d in failed_raw for t in d["dialog"]
                         if t["speaker"] == "listener")
    expected: Counter = Counter()
    for label, n in raw_labels.items():
        expected[FAILED_SYNONYMS.get(label, label)] += n
    got = Counter(u.strategy for d in failed.dialogues for u in d.utterances if u.strategy is not None)
    assert set(got) == set(ESCONV_STRATEGIES)
    assert got == expected
    assert got["Question"] == 520 + 8
    assert got["Others"] == 400
    assert got["Providing Suggestions"] == 392 + 11
    assert got["Affirmation and Reassurance"] == 334 + 7
    assert got["Restatement or Paraphrasing"] == 176 + 3


# ---------------------------------------------------------------------------------------------- generic JSON


def test_generic_jsonl_source(tmp_path):
    records = [_good(0), {"dialog": [{"speaker": "usr", "text": "  I  feel\tbad "},
                                     {"speaker": "sys", "strategy": "reflection of FEELINGS", "text": "That hurts."},
                                     {"speaker": "user", "content": "yes"},
                                     {"speaker": "assistant", "annotation": {"strategy": "Questions"},
                                      "content": "Why?"}]}]
    path = _write_jsonl(tmp_path / "corpus.jsonl", records)
    loaded = load_source("json", path)
    assert loaded.info["source"] == "json"
    assert loaded.given_split is None
    assert [d.dialog_id for d in loaded.dialogues] == [0, 1]
    first, second = loaded.dialogues
    assert first.utterances == (Utterance("hello 0", None), Utterance("how are you 0?", "Question"),
                                Utterance("not great", None), Utterance("I see", "Others"))
    assert (first.emotion_type, first.problem_type) == ("anxiety", "job crisis")
    assert second.utterances == (Utterance("I feel bad", None), Utterance("That hurts.", "Reflection of feelings"),
                                 Utterance("yes", None), Utterance("Why?", "Question"))
    assert (second.emotion_type, second.problem_type) == (None, None)


def test_generic_json_list_equals_jsonl(tmp_path):
    records = [_good(i) for i in range(3)]
    a = load_source("json", _write_list(tmp_path / "a.json", records))
    b = load_source("json", _write_jsonl(tmp_path / "b.jsonl", records))
    assert a.dialogues == b.dialogues
    assert len(a.dialogues) == 3


def test_json_source_needs_a_path():
    with pytest.raises(SourceError, match="--source-path"):
        load_source("json")


def test_unknown_source_is_rejected():
    with pytest.raises(SourceError, match="unknown source 'nope'"):
        load_source("nope", ESCONV_JSON)


def test_jsonl_with_unicode_line_separator_inside_a_string(tmp_path):
    record = _dialogue(("seeker", None, "first\u2028second"), ("supporter", "Question", "next\x85line?"))
    path = tmp_path / "u2028.jsonl"
    path.write_text(json.dumps(record, ensure_ascii=False) + "\n" + json.dumps(_good(1)) + "\n", encoding="utf-8")
    loaded = load_source("json", path)
    assert [u.text for u in loaded.dialogues[0].utterances] == ["first second", "next line?"]
    assert len(loaded.dialogues) == 2


# ---------------------------------------------------------------------------------------------- splits


def test_decoupledesc_split_equals_shared_lists(esconv, shared_lists):
    ids = split_ids("decoupledesc", esconv)
    assert ids["test"] == shared_lists["decoupledesc_test"]
    assert ids["validation"] == shared_lists["decoupledesc_val"]
    held_out = set(shared_lists["decoupledesc_test"]) | set(shared_lists["decoupledesc_val"])
    assert len(held_out) == 260
    assert sorted(ids["train"]) == sorted(set(range(1300)) - held_out)
    assert ids["train"] == shared_lists["decoupledesc_train_inferred"]


def test_decoupledesc_split_works_on_the_hub_layout_too(esconv_hub, shared_lists):
    ids = split_ids("decoupledesc", esconv_hub)
    assert ids["test"] == shared_lists["decoupledesc_test"]
    assert ids["validation"] == shared_lists["decoupledesc_val"]


@pytest.mark.parametrize("fixture", ["esconv", "esconv_hub"])
def test_hf_split_equals_shared_lists(request, fixture, shared_lists):
    ids = split_ids("hf", request.getfixturevalue(fixture))
    assert ids == {"train": shared_lists["hf_train"], "validation": shared_lists["hf_valid"],
                   "test": shared_lists["hf_test"]}


def test_random_split_is_seeded_disjoint_and_complete(esconv):
    a = split_ids("random", esconv, seed=7)
    assert a == split_ids("random", esconv, seed=7)
    assert a != split_ids("random", esconv, seed=8)
    assert [len(a[s]) for s in ("train", "validation", "test")] == [1040, 130, 130]
    members = [set(a[s]) for s in ("train", "validation", "test")]
    assert sum(len(m) for m in members) == 1300
    assert set().union(*members) == set(range(1300))
    b = split_ids("random", esconv, seed=7, fractions=(0.2, 0.05))
    assert [len(b[s]) for s in ("train", "validation", "test")] == [975, 260, 65]


def test_random_split_on_a_small_corpus():
    ids = split_ids("random", _source([10, 3, 7, 42, 5, 8, 9, 1, 2, 4]), seed=1, fractions=(0.2, 0.3))
    assert [len(ids[s]) for s in ("train", "validation", "test")] == [5, 2, 3]
    assert sorted(ids["train"] + ids["validation"] + ids["test"]) == [1, 2, 3, 4, 5, 7, 8, 9, 10, 42]


@pytest.mark.parametrize("method", ["decoupledesc", "hf", "random"])
def test_assign_puts_each_dialogue_in_one_split(esconv, method):
    parts = assign(esconv, split_ids(method, esconv, seed=3))
    seen = [d.dialog_id for s in ("train", "validation", "test") for d in parts[s]]
    assert len(seen) == len(set(seen)) == 1300


def test_assign_limit_takes_the_first_n_in_split_order(esconv, shared_lists):
    ids = split_ids("decoupledesc", esconv)
    parts = assign(esconv, ids, limit=5)
    assert [d.dialog_id for d in parts["test"]] == shared_lists["decoupledesc_test"][:5]
    assert [d.dialog_id for d in parts["validation"]] == shared_lists["decoupledesc_val"][:5]
    assert [d.dialog_id for d in parts["train"]] == shared_lists["decoupledesc_train_inferred"][:5]
    assert parts["test"][0] is esconv.dialogues[shared_lists["decoupledesc_test"][0]]
    full = assign(esconv, ids)
    assert [len(full[s]) for s in ("train", "validation", "test")] == [1040, 130, 130]
    assert [d.dialog_id for d in full["test"]] == shared_lists["decoupledesc_test"]


def test_assign_rejects_a_dialogue_in_two_splits():
    source = _source([0, 1, 2, 3])
    with pytest.raises(SourceError, match="dialogue 2 is in both train and test"):
        assign(source, {"train": [0, 2], "validation": [1], "test": [3, 2]})


def test_assign_limit_skips_dialogues_dropped_as_invalid(tmp_path):
    bad = _dialogue(("seeker", None, "hi"), ("supporter", "Nonsense", "ok"))
    path = _write_list(tmp_path / "mixed.json", [_good(0), bad, _good(2), _good(3)])
    loaded = load_source("json", path, on_invalid="skip")
    parts = assign(loaded, {"train": [1, 3, 2], "validation": [0], "test": []}, limit=2)
    assert [d.dialog_id for d in parts["train"]] == [3, 2]
    assert [d.dialog_id for d in parts["validation"]] == [0]
    assert parts["test"] == []


@pytest.mark.parametrize("method", ["decoupledesc", "hf"])
def test_esconv_only_splits_refuse_other_corpora(failed, method):
    with pytest.raises(SourceError) as err:
        split_ids(method, failed)
    message = str(err.value)
    assert f"--split {method}" in message
    assert "1300" in message and "196" in message
    assert "--split random" in message


def test_decoupledesc_refuses_a_small_generic_source(tmp_path):
    loaded = load_source("json", _write_jsonl(tmp_path / "c.jsonl", [_good(i) for i in range(4)]))
    with pytest.raises(SourceError, match="defined on ESConv's 1300 dialogues, but the source has 4"):
        split_ids("decoupledesc", loaded)


def test_unknown_split_method(esconv):
    with pytest.raises(SourceError, match="unknown split 'paper'"):
        split_ids("paper", esconv)


# ---------------------------------------------------------------------------------------------- bad inputs


def _error(path: Path, **kwargs) -> str:
    with pytest.raises(SourceError) as err:
        load_source("json", path, **kwargs)
    return str(err.value)


def test_malformed_json_list_names_the_dialogue(tmp_path):
    text = json.dumps([_good(0), _good(1)])[:-1]  # drop the closing ']'
    path = tmp_path / "broken.json"
    path.write_text(text + ', {"dialog": [{"speaker": "seeker", "content": "oops}]}\n]', encoding="utf-8")
    message = _error(path)
    assert str(path) in message
    assert "dialogue 2" in message
    assert "malformed JSON" in message


def test_malformed_json_list_missing_comma(tmp_path):
    path = tmp_path / "nocomma.json"
    path.write_text("[" + json.dumps(_good(0)) + "\n" + json.dumps(_good(1)) + "]", encoding="utf-8")
    message = _error(path)
    assert str(path) in message and "dialogue 1" in message and "malformed JSON at line 2" in message


def test_malformed_jsonl_names_the_dialogue_and_line(tmp_path):
    path = tmp_path / "broken.jsonl"
    lines = [json.dumps(_good(0)), "", json.dumps(_good(1)), json.dumps(_good(2))[:-3]]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    message = _error(path)
    assert str(path) in message
    assert "dialogue 2 (line 4)" in message
    assert "malformed JSON" in message


def test_empty_file(tmp_path):
    path = tmp_path / "empty.json"
    path.write_text(" \n", encoding="utf-8")
    message = _error(path)
    assert str(path) in message and "empty file" in message


def test_missing_dialog_field(tmp_path):
    record = _good(1)
    del record["dialog"]
    path = _write_list(tmp_path / "nodialog.json", [_good(0), record])
    message = _error(path)
    assert f"{path}: dialogue 1: missing field 'dialog'" == message


def test_unknown_strategy_lists_labels_with_counts(tmp_path):
    a = _dialogue(("seeker", None, "hi"), ("supporter", "Empathy", "I hear you"), ("supporter", "Empathy", "yes"))
    b = _dialogue(("seeker", None, "hi"), ("supporter", "Cheerleading", "you can do it"),
                  ("supporter", "Empathy", "sure"))
    path = _write_list(tmp_path / "labels.json", [_good(0), a, b])
    with pytest.raises(SourceError) as err:
        load_source("json", path)
    message = str(err.value)
    assert "unknown strategy labels: 'Empathy' (3), 'Cheerleading' (1)" in message
    assert f"{path}: dialogue 1: field 'dialog[1].annotation.strategy': unknown strategy 'Empathy'" in message
    assert f"{path}: dialogue 2: field 'dialog[1].annotation.strategy': unknown strategy 'Cheerleading'" in message
    assert "dialogue 0" not in message
    assert len(err.value.problems) == 5  # the summary and one line per bad utterance


def test_empty_utterance(tmp_path):
    bad = _dialogue(("seeker", None, "hi"), ("supporter", "Question", "   "))
    path = _write_jsonl(tmp_path / "blank.jsonl", [_good(0), bad])
    assert _error(path) == f"{path}: dialogue 1: field 'dialog[1].content': empty utterance"


def test_non_utf8_bytes_in_one_utterance(tmp_path):
    good = json.dumps(_good(0)).encode()
    bad = json.dumps(_dialogue(("seeker", None, "caf@"), ("supporter", "Question", "ok?"))).encode()
    bad = bad.replace(b"caf@", b"caf\xff")
    path = tmp_path / "latin.jsonl"
    path.write_bytes(good + b"\n" + good + b"\n" + bad + b"\n")
    message = _error(path)
    assert message == f"{path}: dialogue 2: field 'dialog[0].content': not valid UTF-8 (byte 0xff)"


def test_several_problems_are_reported_together(tmp_path):
    no_dialog = {"emotion_type": "fear"}
    blank = _dialogue(("seeker", None, "hi"), ("supporter", "Question", "\t"))
    path = _write_list(tmp_path / "many.json", [no_dialog, _good(1), blank])
    message = _error(path)
    assert message.startswith("2 problems in the source:")
    assert f"{path}: dialogue 0: missing field 'dialog'" in message
    assert f"{path}: dialogue 2: field 'dialog[1].content': empty utterance" in message


def test_skip_drops_bad_dialogues_and_records_them(tmp_path):
    no_dialog = {"emotion_type": "fear"}
    unknown = _dialogue(("seeker", None, "hi"), ("supporter", "Empathy", "I hear you"))
    blank = _dialogue(("seeker", None, "hi"), ("supporter", "Question", "   "))
    records = [_good(0), no_dialog, _good(2), unknown, blank, _good(5)]
    path = _write_list(tmp_path / "mixed.json", records)
    loaded = load_source("json", path, on_invalid="skip")
    assert [d.dialog_id for d in loaded.dialogues] == [0, 2, 5]
    assert [d.utterances[0].text for d in loaded.dialogues] == ["hello 0", "hello 2", "hello 5"]
    assert [s["dialog_id"] for s in loaded.skipped] == [1, 3, 4]
    # recorded in the manifest: the file by its name
    assert loaded.skipped[0]["problems"] == ["mixed.json: dialogue 1: missing field 'dialog'"]
    assert loaded.skipped[1]["problems"] == [
        "mixed.json: dialogue 3: field 'dialog[1].annotation.strategy': unknown strategy 'Empathy'"]
    assert loaded.skipped[2]["problems"] == ["mixed.json: dialogue 4: field 'dialog[1].content': empty utterance"]


def test_skip_also_drops_non_utf8_dialogues(tmp_path):
    bad = json.dumps(_dialogue(("seeker", None, "caf@"), ("supporter", "Question", "ok?"))).encode()
    path = tmp_path / "latin.jsonl"
    path.write_bytes(json.dumps(_good(0)).encode() + b"\n" + bad.replace(b"caf@", b"caf\xff") + b"\n")
    loaded = load_source("json", path, on_invalid="skip")
    assert [d.dialog_id for d in loaded.dialogues] == [0]
    assert loaded.skipped == [{"dialog_id": 1, "problems": [
        "latin.jsonl: dialogue 1: field 'dialog[0].content': not valid UTF-8 (byte 0xff)"]}]


def test_skip_does_not_hide_malformed_json(tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text(json.dumps(_good(0)) + "\n{not json\n", encoding="utf-8")
    message = _error(path, on_invalid="skip")
    assert str(path) in message and "dialogue 1 (line 2)" in message
