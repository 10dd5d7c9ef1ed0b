"""The ExTES, MESC and ESC-Pro readers (ipm_prefdial.sources.layouts) on tiny invented corpora
(tests/helpers/corpora.py): every expected value is written out here, never computed with the code under test."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from helpers.corpora import (
    esc_pro_records,
    extes_records,
    mesc_records,
    write_esc_pro,
    write_extes,
    write_extes_zip,
    write_json,
    write_mesc,
)
from ipm_prefdial.sources import SourceError
from ipm_prefdial.sources.layouts import LAYOUTS, load_layout
from ipm_prefdial.taxonomy import builtin, parse_taxonomy

EXTES_KNOWN = ("Reflective Statements, Clarification, Emotional Validation, Empathetic Statements, Affirmation, "
               "Offer Hope, Avoid Judgment And Criticism, Suggest Options, Collaborative Planning, "
               "Provide Different Perspectives, Reframe Negative Thoughts, Share Information, Normalize Experiences, "
               "Promote Self-Care Practices, Stress Management, Others")
EXTES_DIALOGUES = [
    [("Hello, is anyone around to talk?", None),
     ("Hi there, I am here. What is on your mind?", ""),
     ("My team lead keeps adding tasks on Friday evenings.", None),
     ("I have not had a free weekend in a month.", None),
     ("So the extra work keeps landing right before your time off.", "Reflective Statements"),
     ("It is fair to feel worn down by that.", "Avoid Judgment And Criticism"),
     ("Thanks, that helps.", None),
     ("Take care!", "")],
    [("My old cat died on Sunday.", None),
     ("I am so sorry about your cat.", "Empathetic Statements"),
     ("The flat is so quiet now.", None),
     ("The quiet will feel less heavy with time.", "Offer Hope")],
]
EXTES_COUNTS = {"dialogues": 2, "supporter_turns": 4, "empty_labels_skipped": 2, "same_speaker_runs": 2,
                "dialogues_without_labelled_turns": 0,
                "ai_objects": 2}


def _turns(dialogue) -> list[tuple[str, str | None]]:
    return [(u.text, u.strategy) for u in dialogue.utterances]


def _error(layout: str, path: Path, taxonomy=None, **kw) -> SourceError:
    with pytest.raises(SourceError) as caught:
        load_layout(layout, path, taxonomy or builtin(layout), **kw)
    return caught.value


# ---------------------------------------------------------------------------------------------------- ExTES


def test_extes_json_gives_dialogues_in_order_with_greetings_kept_as_history(tmp_path):
    path = write_extes(tmp_path)
    loaded = load_layout("extes", path, builtin("extes"))
    assert [d.dialog_id for d in loaded.dialogues] == [0, 1]
    assert [_turns(d) for d in loaded.dialogues] == EXTES_DIALOGUES
    assert [d.problem_type for d in loaded.dialogues] == ["Work-related Stress and Burnout",
                                                          "Dealing with the Loss of a Pet"]
    assert [d.emotion_type for d in loaded.dialogues] == [None, None]
    assert all(u.negatives == () for d in loaded.dialogues for u in d.utterances)
    assert loaded.counts == EXTES_COUNTS
    assert loaded.info == {"source": "extes", "file": "ExTES.json", "layout": "extes",
                           "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    assert loaded.given_split is None and loaded.skipped == []


def test_extes_directory_finds_its_file(tmp_path):
    write_extes(tmp_path)
    loaded = load_layout("extes", tmp_path, builtin("extes"))
    assert [_turns(d) for d in loaded.dialogues] == EXTES_DIALOGUES and loaded.info["file"] == "ExTES.json"


def test_extes_zip_reads_its_member_in_any_folder(tmp_path):
    path = write_extes_zip(tmp_path / "z", member="data/inner/ExTES.json")
    for given in (path, path.parent):  # the zip, or the directory holding only the zip
        loaded = load_layout("extes", given, builtin("extes"))
        assert [_turns(d) for d in loaded.dialogues] == EXTES_DIALOGUES
        assert loaded.counts == EXTES_COUNTS
        assert loaded.info["file"] == "ExTES.zip" and loaded.info["member"] == "data/inner/ExTES.json"
        assert loaded.info["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        with zipfile.ZipFile(path) as archive:
            assert loaded.info["member_sha256"] == hashlib.sha256(archive.read("data/inner/ExTES.json")).hexdigest()


def test_extes_zip_without_the_member_is_refused(tmp_path):
    path = write_extes_zip(tmp_path, member="data/other.json")
    assert str(_error("extes", path)) == f"{path}: no ExTES.json inside the zip"


def test_extes_problems_in_the_zip_name_the_member(tmp_path):
    records = extes_records()
    records[1]["content"][2]["AI Strategy"] = "Foo"
    path = write_extes_zip(tmp_path, records=records)
    assert _error("extes", path).problems[1] == (
        f"{path}:ExTES/ExTES.json: dialogue 1: field 'content[2].AI Strategy': unknown strategy 'Foo'")
    skipped = load_layout("extes", path, builtin("extes"), on_invalid="skip").skipped
    assert skipped == [{"dialog_id": 1, "problems": [
        "ExTES.zip:ExTES/ExTES.json: dialogue 1: field 'content[2].AI Strategy': unknown strategy 'Foo'"]}]


def test_extes_unknown_labels_are_refused_with_their_location_and_a_summary(tmp_path):
    records = extes_records()
    records[0]["content"][4]["AI Strategy"] = "Foo"
    records[1]["content"][2]["AI Strategy"] = "Foo"
    records[1]["content"][0]["AI Strategy"] = "Bar"
    path = write_extes(tmp_path, records)
    error = _error("extes", path)
    assert error.problems == [
        f"unknown strategy labels: 'Foo' (2), 'Bar' (1). Known: {EXTES_KNOWN} (case-insensitive; variants in the "
        "extes taxonomy; --taxonomy FILE.yaml for another)",
        f"{path}: dialogue 0: field 'content[4].AI Strategy': unknown strategy 'Foo'",
        f"{path}: dialogue 1: field 'content[0].AI Strategy': unknown strategy 'Bar'",
        f"{path}: dialogue 1: field 'content[2].AI Strategy': unknown strategy 'Foo'",
    ]
    assert str(error).startswith("4 problems in the source:\n  - unknown strategy labels: 'Foo' (2), 'Bar' (1).")


def test_extes_skip_drops_the_bad_dialogue_and_records_it(tmp_path):
    records = extes_records()
    records[0]["content"][4]["AI Strategy"] = "Foo"
    loaded = load_layout("extes", write_extes(tmp_path, records), builtin("extes"), on_invalid="skip")
    assert [d.dialog_id for d in loaded.dialogues] == [1]
    assert [_turns(d) for d in loaded.dialogues] == EXTES_DIALOGUES[1:]
    assert loaded.skipped == [{"dialog_id": 0, "problems": [
        "ExTES.json: dialogue 0: field 'content[4].AI Strategy': unknown strategy 'Foo'"]}]
    assert loaded.counts == {"dialogues": 1, "supporter_turns": 2, "empty_labels_skipped": 0, "same_speaker_runs": 0,
                             "dialogues_without_labelled_turns": 0,
                             "ai_objects": 1}


def test_extes_ai_object_without_a_reply_names_file_dialogue_and_field(tmp_path):
    records = extes_records()
    records[0]["content"][5]["AI"] = {"Answer": "x"}
    path = write_extes(tmp_path, records)
    assert str(_error("extes", path)) == (
        f"{path}: dialogue 0: field 'content[5].AI': an object without a 'Response' or 'AI' text (keys: Answer)")


def test_extes_ai_object_may_carry_its_strategy(tmp_path):
    records = extes_records()
    records[1]["content"][2] = {"AI": {"AI Strategy": "Clarification", "Response": "What  changed this week?"}}
    loaded = load_layout("extes", write_extes(tmp_path, records), builtin("extes"))
    assert _turns(loaded.dialogues[1])[3] == ("What changed this week?", "Clarification")
    assert loaded.counts["ai_objects"] == 3


def test_extes_wrong_types_empty_texts_and_strange_items(tmp_path):
    records = extes_records()
    records[0]["content"][0]["User"] = 5
    records[0]["content"][6]["User"] = "   "
    records[1]["content"][1] = {"Seeker": "hi"}
    records[1]["scene"] = ["a", "list"]
    records.append({"scene": "Loneliness", "content": "not a list"})
    records.append("just a string")
    path = write_extes(tmp_path, records)
    assert _error("extes", path).problems == [
        f"{path}: dialogue 0: field 'content[0].User': expected a string, got int",
        f"{path}: dialogue 0: field 'content[6].User': empty utterance",
        f"{path}: dialogue 1: field 'content[1]': neither 'User' nor 'AI' (keys: Seeker)",
        f"{path}: dialogue 1: field 'scene': expected a string, got list",
        f"{path}: dialogue 2: field 'content': expected a list of utterances, got str",
        f"{path}: dialogue 3: expected a JSON object, got str",
    ]


def test_extes_dialogue_of_greetings_only_has_no_turn_to_mine(tmp_path):
    # the taxonomy allows empty labels: such a dialogue is dropped and counted; the others are read
    records = [{"scene": "Loneliness", "content": [{"User": "Hi."}, {"AI Strategy": "", "AI": "Hello!"}]},
               *extes_records()]
    loaded = load_layout("extes", write_extes(tmp_path, records), builtin("extes"))
    assert [d.dialog_id for d in loaded.dialogues] == [1, 2]
    assert loaded.counts["dialogues_without_labelled_turns"] == 1 and loaded.counts["dialogues"] == 2
    # where an empty label is an error (a taxonomy without `empty: skip`), it is one, named
    strict = parse_taxonomy({**builtin("extes").as_dict(), "empty": "error"}, "strict.yaml")
    with pytest.raises(SourceError) as caught:
        load_layout("extes", tmp_path / "ExTES.json", strict)
    assert caught.value.problems[0] == (f"{tmp_path / 'ExTES.json'}: dialogue 0: field 'content[1].AI Strategy': "
                                        "supporter utterance without a strategy")


def test_extes_empty_label_is_a_problem_where_the_taxonomy_says_error(tmp_path):
    strict = dataclasses.replace(builtin("extes"), empty="error")
    path = write_extes(tmp_path)
    assert _error("extes", path, strict).problems == [
        f"{path}: dialogue 0: field 'content[1].AI Strategy': supporter utterance without a strategy",
        f"{path}: dialogue 0: field 'content[7].AI Strategy': supporter utterance without a strategy",
    ]


def test_bad_json_names_the_file_and_the_dialogue(tmp_path):
    path = tmp_path / "ExTES.json"
    path.write_text('[{"scene": "a", "content": []}, {"scene": ]', encoding="utf-8")
    assert str(_error("extes", path)) == f"{path}: dialogue 1: malformed JSON at line 1, column 43: Expecting value"


def test_missing_files_and_directories_are_named(tmp_path):
    assert str(_error("extes", tmp_path / "nowhere.json")) == f"{tmp_path / 'nowhere.json'}: no such file"
    assert str(_error("extes", tmp_path)) == f"{tmp_path}: a directory without ExTES.json or ExTES.zip"
    assert str(_error("mesc", tmp_path)) == (f"{tmp_path}: a directory without MESC's train.json, val.json and "
                                             "test.json (missing: train.json, val.json, test.json) or MESC.json")
    assert str(_error("esc-pro", tmp_path)) == (f"{tmp_path}: a directory with no JSON files; point --source-path at "
                                                "the ESC-Pro file")
    with pytest.raises(SourceError, match="unknown layout 'extesv2'; choose one of extes, mesc, esc-pro"):
        load_layout("extesv2", tmp_path, builtin("extes"))
    assert LAYOUTS == ("extes", "mesc", "esc-pro")


# ----------------------------------------------------------------------------------------------------- MESC

MESC_WITH_CSV = [
    [("I failed the driving test again.", None), ("Third time this year.", None),
     ("What went wrong this time?", "Open questions"), ("I panicked at the roundabout", None),
     ("You kept going back, that takes grit.", "Approval")],
    [("My sister stopped calling me.", None), ("She has gone quiet on you.", "Restatement")],
    [("Work is fine, I guess.", None), ("Let us start with how your week went.", "Structuring the therapy")],
    [("I could not sleep before the interview.", None), ("Mm.", "Others")],
]


def test_mesc_split_files_give_the_split_and_take_clean_text_from_the_csv(tmp_path):
    loaded = load_layout("mesc", write_mesc(tmp_path / "MESC"), builtin("mesc"))
    assert [d.dialog_id for d in loaded.dialogues] == [0, 1, 2, 3]
    assert loaded.given_split == {"train": [0, 1], "validation": [2], "test": [3]}
    assert [_turns(d) for d in loaded.dialogues] == MESC_WITH_CSV
    assert [d.problem_type for d in loaded.dialogues] == ["Academic Stress", "Family Conflict", "Job Stress",
                                                          "Anxiety"]
    assert [d.emotion_type for d in loaded.dialogues] == [None, None, None, None]
    assert loaded.counts == {"dialogues": 4, "supporter_turns": 5, "empty_labels_skipped": 0, "same_speaker_runs": 1,
                             "dialogues_without_labelled_turns": 0,
                             "descriptions_stripped": 11, "csv_matched": 3, "csv_unmatched": 1}
    info = loaded.info
    assert (info["file"], info["files"], info["layout"]) == ("MESC", ["train.json", "val.json", "test.json"], "mesc")
    assert sorted(info["sha256"]) == ["test.json", "train.json", "val.json"]
    assert info["csv"]["file"] == "MESC.csv"
    assert not any("/" in str(v) for v in (info["file"], *info["files"]))


def test_mesc_without_the_csv_strips_the_glued_descriptions(tmp_path):
    loaded = load_layout("mesc", write_mesc(tmp_path, ext="txt", with_csv=False), builtin("mesc"))
    assert loaded.given_split == {"train": [0, 1], "validation": [2], "test": [3]}
    assert _turns(loaded.dialogues[0]) == [
        ("I failed the driving test again.", None), ("Third time this year.", None),
        ("What went wrong this time?", "Open questions"), ("I panicked at the roundabout,", None),
        ("You kept going back, that takes grit.", "Approval")]
    assert [_turns(d) for d in loaded.dialogues[1:]] == MESC_WITH_CSV[1:]
    assert loaded.counts == {"dialogues": 4, "supporter_turns": 5, "empty_labels_skipped": 0, "same_speaker_runs": 1,
                             "dialogues_without_labelled_turns": 0,
                             "descriptions_stripped": 11, "csv_matched": 0, "csv_unmatched": 0}
    assert loaded.info["files"] == ["train.txt", "val.txt", "test.txt"] and "csv" not in loaded.info


def test_mesc_single_file_has_no_split_and_uses_the_csv_beside_it(tmp_path):
    write_mesc(tmp_path)
    loaded = load_layout("mesc", tmp_path / "val.json", builtin("mesc"))
    assert loaded.given_split is None
    assert [d.dialog_id for d in loaded.dialogues] == [0]
    assert [_turns(d) for d in loaded.dialogues] == [MESC_WITH_CSV[2]]
    assert loaded.info["file"] == "val.json" and loaded.counts["csv_matched"] == 1


def test_mesc_unknown_label_names_the_split_file(tmp_path):
    write_mesc(tmp_path)
    records = mesc_records("train")
    records[1]["dialog"][1]["strategy"] = "Hugging"
    records[0]["dialog"][1]["speaker"] = "client"
    write_json(tmp_path / "train.json", records)
    error = _error("mesc", tmp_path)
    assert error.problems[1:] == [
        f"{tmp_path / 'train.json'}: dialogue 0: field 'dialog[1].speaker': unknown speaker 'client'",
        f"{tmp_path / 'train.json'}: dialogue 1: field 'dialog[1].strategy': unknown strategy 'Hugging'",
    ]
    assert error.problems[0].startswith("unknown strategy labels: 'Hugging' (1). Known: Open questions, Approval,")
    loaded = load_layout("mesc", tmp_path, builtin("mesc"), on_invalid="skip")
    assert [d.dialog_id for d in loaded.dialogues] == [2, 3]
    assert [s["dialog_id"] for s in loaded.skipped] == [0, 1]
    assert loaded.skipped[1]["problems"] == ["train.json: dialogue 1: field 'dialog[1].strategy': unknown strategy "
                                             "'Hugging'"]


def test_mesc_missing_strategy_on_a_therapist_turn_is_a_problem(tmp_path):
    records = mesc_records("test")
    del records[0]["dialog"][1]["strategy"]
    path = write_json(tmp_path / "test.json", records)
    assert str(_error("mesc", path)) == (
        f"{path}: dialogue 0: field 'dialog[1].strategy': supporter utterance without a strategy")


def test_mesc_csv_without_its_columns_is_refused(tmp_path):
    write_mesc(tmp_path, with_csv=False)
    (tmp_path / "MESC.csv").write_text("Text,Who\nhello,Client\n", encoding="utf-8")
    assert str(_error("mesc", tmp_path)) == (
        f"{tmp_path / 'MESC.csv'}: missing column 'Utterance', 'Speaker', 'Dialogue_ID' (MESC.csv has Utterance, "
        "Speaker, Emotion, Strategy, Dialogue_ID, Utterance_ID, ...)")


# -------------------------------------------------------------------------------------------------- ESC-Pro


def test_esc_pro_keeps_the_non_preferred_replies_on_their_turn(tmp_path):
    path = write_esc_pro(tmp_path / "ESC-Pro.json")
    for given in (path, tmp_path):
        loaded = load_layout("esc-pro", given, builtin("esc-pro"))
        assert [d.dialog_id for d in loaded.dialogues] == [0, 1]
        assert [_turns(d) for d in loaded.dialogues] == [
            [("We broke up after six years and I keep replaying it.", None),
             ("Six years is a long time; of course it keeps coming back.", "Emotional Validation"),
             ("I just want to stop thinking about it.", None),
             ("Could we pick one evening routine to try this week?", "Collaborative Planning")],
            [("My thesis draft got torn apart by my supervisor.", None),
             ("That feedback must have stung after all your work.", "Empathetic Statements")],
        ]
        assert [[u.negatives for u in d.utterances] for d in loaded.dialogues] == [
            [(), (("Have you tried dating apps?", "Share Information"), ("You will be fine, cheer up.", "Affirmation")),
             (), ()],
            [(), (("Supervisors are often harsh.", "Provide Different Perspectives"),)],
        ]
        assert [d.problem_type for d in loaded.dialogues] == ["Breakups or Divorce", "Academic Stress"]
        assert loaded.counts == {"dialogues": 2, "supporter_turns": 3, "empty_labels_skipped": 0,
                                 "same_speaker_runs": 0, "dialogues_without_labelled_turns": 0, "negatives": 3}
        assert loaded.info == {"source": "esc-pro", "file": "ESC-Pro.json", "layout": "esc-pro",
                               "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def test_esc_pro_json_lines_read_the_same(tmp_path):
    path = tmp_path / "pro.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in esc_pro_records()), encoding="utf-8")
    loaded = load_layout("esc-pro", tmp_path, builtin("esc-pro"))
    assert loaded.info["file"] == "pro.jsonl" and loaded.counts["negatives"] == 3


def test_esc_pro_problems_in_negatives_and_roles(tmp_path):
    records = esc_pro_records()
    records[0]["messages"][1]["negative"][1]["strategy"] = "Hugging"
    records[0]["messages"][3]["negative"] = [{"content": "", "strategy": "Affirmation"}]
    records[1]["messages"][0]["negative"] = [{"content": "x", "strategy": "Affirmation"}]
    records[1]["messages"][1]["role"] = "supporter-bot"
    path = write_esc_pro(tmp_path / "ESC-Pro.json", records)
    assert _error("esc-pro", path).problems[1:] == [
        f"{path}: dialogue 0: field 'messages[1].negative[1].strategy': unknown strategy 'Hugging'",
        f"{path}: dialogue 0: field 'messages[3].negative[0].content': empty utterance",
        f"{path}: dialogue 1: field 'messages[0].negative': non-preferred replies on a user message",
        f"{path}: dialogue 1: field 'messages[1].role': unknown role 'supporter-bot'",
    ]
