"""Whole builds of the other corpora's layouts (ExTES, MESC, ESC-Pro) from the tiny invented files of
tests/helpers/corpora.py: literal rows, the taxonomy in every prompt and in the constrained SP choice sent, the
card, the manifest's counts, `ipm validate`, ESC-Pro's own pairs (`--stage import`), unknown labels refused with
their place, and one `--stage all --limit 2` on the embedded engine with the real small model."""

from __future__ import annotations

import json
import random

import pyarrow.parquet as pq

from helpers import corpora
from helpers.corpora import invoke
from ipm_prefdial.testing.fake_llm import FakeLLM

EXTES = ["Reflective Statements", "Clarification", "Emotional Validation", "Empathetic Statements", "Affirmation",
         "Offer Hope", "Avoid Judgment And Criticism", "Suggest Options", "Collaborative Planning",
         "Provide Different Perspectives", "Reframe Negative Thoughts", "Share Information", "Normalize Experiences",
         "Promote Self-Care Practices", "Stress Management", "Others"]
EXTES_CLARIFICATION = ("- Clarification: ask about something unclear so that you understand the seeker's situation "
                       "correctly.")


def rows(out, config, split="train"):
    return pq.read_table(out / "data" / config / f"{split}-00000-of-00001.parquet").to_pylist()


def test_extes_rows_are_the_labelled_supporter_turns(extes):
    out = extes["out"]
    joint = rows(out, "joint_sft")
    # dialogue 0: content[1] and content[7] are greetings with an empty label (history, no row); content[5] is spelled
    # as a variant; dialogue 1's first item holds both a User and an AI, which become utterances 0 and 1
    assert [(r["id"], r["strategy"], r["problem_type"]) for r in joint] == [
        ("0-4", "Reflective Statements", "Work-related Stress and Burnout"),
        ("0-5", "Avoid Judgment And Criticism", "Work-related Stress and Burnout"),
        ("1-1", "Empathetic Statements", "Dealing with the Loss of a Pet"),
        ("1-3", "Offer Hope", "Dealing with the Loss of a Pet")]
    second = joint[1]
    assert second["prompt"][1:] == [
        {"role": "user", "content": "Hello, is anyone around to talk?"},
        {"role": "assistant", "content": "Hi there, I am here. What is on your mind?"},  # the greeting, untagged
        {"role": "user", "content": "My team lead keeps adding tasks on Friday evenings.\n"
                                    "I have not had a free weekend in a month."},
        {"role": "assistant", "content": "[Reflective Statements] So the extra work keeps landing right before your "
                                         "time off."},
        {"role": "user", "content": " "}]
    assert second["completion"] == [{"role": "assistant", "content": "[Avoid Judgment And Criticism] It is fair to "
                                                                     "feel worn down by that."}]
    sp = rows(out, "strategy_sft")[0]
    assert sp["prompt"][1]["content"] == ("seeker: Hello, is anyone around to talk?\n"
                                          "supporter: Hi there, I am here. What is on your mind?\n"
                                          "seeker: My team lead keeps adding tasks on Friday evenings. I have not had "
                                          "a free weekend in a month.")
    assert sp["completion"] == [{"role": "assistant", "content": "Reflective Statements"}]
    rg = rows(out, "response_sft")[3]
    assert rg["prompt"][-1]["content"] == ("The flat is so quiet now.\n\n"
                                           "(Respond as the supporter using the strategy: Offer Hope)")
    assert rg["completion"] == [{"role": "assistant", "content": "The quiet will feel less heavy with time."}]


def test_extes_prompts_and_the_sp_choice_name_its_strategies(extes):
    systems = {r["prompt"][0]["content"] for c in ("strategy_sft", "response_sft", "joint_sft")
               for r in rows(extes["out"], c)}
    assert len(systems) == 3
    for system in systems:
        listed = [line[2:].split(":")[0] for line in system.split("\n") if line.startswith("- ")]
        assert listed == EXTES and EXTES_CLARIFICATION in system.split("\n")
        assert "Reflection of feelings" not in system and "Providing Suggestions" not in system
    sp_requests = [b for b in extes["bodies"] if b["messages"][0]["content"].startswith("You are the planning half")]
    assert len(sp_requests) == 4
    for body in sp_requests:  # the constrained choice as sent: the 16 ExTES labels, in order
        assert body["response_format"]["json_schema"]["schema"]["properties"]["answer"]["enum"] == EXTES
    predicted = [r["rejected"][0]["content"] for r in rows(extes["out"], "strategy_pairs")]
    assert predicted and all(p in EXTES for p in predicted)


def test_extes_manifest_card_and_validate(extes):
    out = extes["out"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["taxonomy"]["name"] == "extes" and len(manifest["taxonomy"]["labels"]) == 16
    assert manifest["source"]["counts"] == {"dialogues": 2, "supporter_turns": 4, "empty_labels_skipped": 2,
                                            "same_speaker_runs": 2, "dialogues_without_labelled_turns": 0,
                                            "ai_objects": 2}
    assert manifest["split"]["method"] == "random"
    assert manifest["strategy_distribution"]["train"]["Offer Hope"] == 1
    assert manifest["strategy_distribution"]["train"]["Clarification"] == 0
    card = (out / "README.md").read_text()
    assert "built from ExTES by" in card and "picks one of 16 support strategies" in card
    assert ("| Clarification | ask about something unclear so that you understand the seeker's situation correctly. "
            "| 0 | 0 |") in card
    # Offer Hope: one gold turn, and one pair in each of the three pair configs
    assert "| Offer Hope | help the seeker see that things can get better. | 1 | 3 |" in card
    assert "2 supporter turns of the source have an empty label" in card
    assert "ESConv is released under" not in card and "This build is derived from ExTES" in card
    result, text = invoke("validate", out)
    assert result.exit_code == 0, text


def test_an_unknown_label_is_refused_with_its_place(tmp_path):
    records = corpora.extes_records()
    records[1]["content"][2] = {"AI Strategy": "Hugging", "AI": "Come here."}
    source = corpora.write_extes(tmp_path / "corpus", records)
    result, text = invoke("build", "--source", "extes", "--source-path", source, "--stage", "sft",
                          "--out", tmp_path / "out")
    assert result.exit_code == 1, text
    assert "unknown strategy labels: 'Hugging' (1)" in text
    assert "ExTES.json: dialogue 1: field 'content[2].AI Strategy': unknown strategy 'Hugging'" in text
    assert not (tmp_path / "out").exists()
    # an ExTES label read with ESConv's taxonomy is unknown too
    result, text = invoke("build", "--source", "extes", "--taxonomy", "esconv", "--source-path",
                          corpora.write_extes(tmp_path / "again"), "--stage", "sft", "--out", tmp_path / "out")
    assert result.exit_code == 1 and "unknown strategy 'Reflective Statements'" in text, text


def test_esc_pro_import_makes_pairs_of_its_own_replies(tmp_path):
    source = corpora.write_json(tmp_path / "corpus" / "ESC-Pro.json", corpora.esc_pro_records())
    out = tmp_path / "out"
    result, text = invoke("build", "--source", "esc-pro", "--source-path", source, "--stage", "import",
                          "--out", out, "--trim-tokenizer", "none")
    assert result.exit_code == 0, text
    pairs = rows(out, "joint_pairs")
    assert [(r["id"], r["strategy"], r["chosen"][0]["content"], r["rejected"][0]["content"], r["rejected_strategy"])
            for r in pairs] == [
        ("0-1-n0", "Emotional Validation", "[Emotional Validation] Six years is a long time; of course it keeps "
         "coming back.", "[Share Information] Have you tried dating apps?", "Share Information"),
        ("0-1-n1", "Emotional Validation", "[Emotional Validation] Six years is a long time; of course it keeps "
         "coming back.", "[Affirmation] You will be fine, cheer up.", "Affirmation"),
        ("1-1-n0", "Empathetic Statements", "[Empathetic Statements] That feedback must have stung after all your "
         "work.", "[Provide Different Perspectives] Supervisors are often harsh.", "Provide Different Perspectives")]
    for r in pairs:  # marked with their origin: no sampling, no seed
        digest = r["miner"].pop("prompt_sha256")
        assert r["miner"] == {"engine": "import", "model": "esc-pro", "temperature": None, "top_p": None, "seed": None}
        assert len(digest) == 64
    assert all(r["judge"] is None and r["judge_status"] == "skipped" for r in pairs)
    assert [r["id"] for r in rows(out, "joint_sft")] == ["0-1", "0-3", "1-1"]
    assert pairs[0]["prompt"] == rows(out, "joint_sft")[0]["prompt"]
    assert not (out / "data" / "strategy_pairs").exists()  # nothing was mined
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["imported"] == {"origin": "esc-pro", "config": "joint_pairs", "miner_engine": "import",
                                    "pairs": {"train": 3, "validation": 0}, "dropped_same_as_gold": 0}
    assert manifest["source"]["counts"]["negatives"] == 3
    assert "The source holds pairs of its own: 3 (train), 0 (validation) in `joint_pairs`" in \
        " ".join((out / "README.md").read_text().split())
    result, text = invoke("validate", out)
    assert result.exit_code == 0, text
    # a source without pairs of its own has nothing to import
    result, text = invoke("build", "--source", "extes", "--source-path", corpora.write_extes(tmp_path / "x"),
                          "--stage", "import", "--out", tmp_path / "out2")
    assert result.exit_code == 2 and "--stage import: the extes source holds no pairs of its own" in text, text


def test_esc_pro_mined_and_imported_pairs_side_by_side(tmp_path):
    source = corpora.write_json(tmp_path / "ESC-Pro.json", corpora.esc_pro_records())
    out = tmp_path / "out"
    with FakeLLM() as url:
        result, text = invoke("build", "--source", "esc-pro", "--source-path", source, "--engine", "openai",
                              "--base-url", url, "--out", out, "--cache-dir", tmp_path / "cache",
                              "--trim-tokenizer", "none")
    assert result.exit_code == 0, text
    pairs = rows(out, "joint_pairs")
    mined = [r["id"] for r in pairs if r["miner"]["engine"] != "import"]
    assert [r["id"] for r in pairs if r["miner"]["engine"] == "import"] == ["0-1-n0", "0-1-n1", "1-1-n0"]
    assert mined == ["0-1-s0", "0-3-s0", "1-1-s0"]  # the fake policy never copies the gold reply
    manifest = json.loads((out / "manifest.json").read_text())
    # the judge saw the mined pairs only; the imported ones are counted as skipped next to them
    assert manifest["judge"]["joint_pairs"]["pairs"] == 3
    assert manifest["judge_status"]["joint_pairs"] == {"judged": 3, "skipped": 3}
    assert manifest["pairs_by_strategy"]["Emotional Validation"]["joint_pairs"] == 3  # 1 mined + 2 imported
    if (out / "data" / "joint_pairs_retained").exists():  # never an imported pair: they are not judged
        assert not [r["id"] for r in rows(out, "joint_pairs_retained") if "-n" in r["id"]]
    card = " ".join((out / "README.md").read_text().split())
    assert "`joint_pairs` | judged 3, skipped 3 |" in card
    assert "next to the mined pairs (ids `-n<k>` instead of `-s<k>`)" in card
    result, text = invoke("validate", out)
    assert result.exit_code == 0, text
    # a manifest whose judge status counts leave the imported rows out no longer matches its rows
    manifest["judge_status"]["joint_pairs"] = {"judged": 3}
    (out / "manifest.json").write_text(json.dumps(manifest))
    result, text = invoke("validate", out)
    assert result.exit_code == 1
    assert ("manifest.json: judge_status.joint_pairs = {'judged': 3}, but the rows say {'judged': 3, 'skipped': 3}"
            in text)


def test_a_card_of_a_build_from_before_taxonomies_renders(extes):
    """`ipm publish` renders the card again: an older manifest (no taxonomy, no source counts, no imported) must
    still give one, with ESConv's labels."""
    from ipm_prefdial.release.card import render_card

    manifest = json.loads((extes["out"] / "manifest.json").read_text())
    for key in ("taxonomy", "imported"):
        del manifest[key]
    del manifest["source"]["counts"]
    manifest["source"]["source"] = "esconv"
    esconv = ("Question", "Restatement or Paraphrasing", "Reflection of feelings", "Self-disclosure",
              "Affirmation and Reassurance", "Providing Suggestions", "Information", "Others")
    manifest["strategy_distribution"] = {s: {name: int(name == "Question") for name in esconv}
                                         for s in manifest["strategy_distribution"]}
    manifest["pairs_by_strategy"] = {name: {"joint_pairs": 2 * (name == "Question")} for name in esconv}
    card = render_card(manifest, "old")
    assert "| Question | ask something that helps the seeker say more about their situation or feelings. | 3 | 2 |" \
        in card
    assert "built from ESConv by" in card


def test_prompt_templates_that_list_other_strategies_are_refused(tmp_path):
    from ipm_prefdial.prompts import default_prompts_dir

    (tmp_path / "prompts").mkdir()
    for template in default_prompts_dir().glob("*.j2"):
        (tmp_path / "prompts" / template.name).write_text(template.read_text())
    # an older --prompts-dir whose list of strategies is written out (ESConv's), not rendered from the taxonomy
    (tmp_path / "prompts" / "_strategies.j2").write_text("- Question: ask.\n- Others: anything else.\n")
    result, text = invoke("build", "--source", "extes", "--source-path", corpora.write_extes(tmp_path / "c"),
                          "--stage", "sft", "--prompts-dir", tmp_path / "prompts", "--out", tmp_path / "out")
    assert result.exit_code == 1, text
    assert "sp_system.j2: does not list the extes strategies Reflective Statements, Clarification, Emotional " \
           "Validation, Empathetic Statements ..." in text


def test_mesc_from_its_split_files(tmp_path):
    out = tmp_path / "out"
    result, text = invoke("build", "--source", "mesc", "--source-path", corpora.write_mesc(tmp_path / "MESC"),
                          "--split", "hf", "--stage", "sft", "--out", out, "--trim-tokenizer", "none")
    assert result.exit_code == 0, text
    train = rows(out, "joint_sft")
    # --split hf: the upstream split, here MESC's own split files; the glued video descriptions are gone (MESC.csv's
    # clean text)
    assert [(r["id"], r["strategy"], r["completion"][0]["content"]) for r in train] == [
        ("0-2", "Open questions", "[Open questions] What went wrong this time?"),
        ("0-4", "Approval", "[Approval] You kept going back, that takes grit."),
        ("1-1", "Restatement", "[Restatement] She has gone quiet on you.")]
    assert train[1]["prompt"][1]["content"] == "I failed the driving test again.\nThird time this year."
    assert [(r["id"], r["strategy"]) for r in rows(out, "joint_sft", "validation")] == [
        ("2-1", "Structuring the therapy")]
    assert [(r["id"], r["strategy"]) for r in rows(out, "joint_sft", "test")] == [("3-1", "Others")]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["taxonomy"]["name"] == "mesc" and manifest["source"]["counts"]["dialogues"] == 4
    result, text = invoke("validate", out)
    assert result.exit_code == 0, text


def test_a_taxonomy_file_for_an_esconv_style_corpus(tmp_path):
    (tmp_path / "two.yaml").write_text("name: two\nempty: skip\nlabels:\n"
                                       "  - {name: Ask, definition: ask the seeker something.}\n"
                                       "  - {name: Comfort, definition: say something kind.}\n"
                                       "variants: {asking: Ask}\n")
    dialog = [{"speaker": "seeker", "content": "I lost my keys again."},
              {"speaker": "supporter", "content": "Hello!", "strategy": ""},
              {"speaker": "supporter", "content": "Where did you last see them?", "strategy": "asking"},
              {"speaker": "seeker", "content": "At work."},
              {"speaker": "supporter", "content": "That is annoying, I am sorry.", "strategy": "Comfort"}]
    corpora.write_json(tmp_path / "mine.json", [{"dialog": dialog, "problem_type": "keys"}])
    out = tmp_path / "out"
    result, text = invoke("build", "--source", "json", "--source-path", tmp_path / "mine.json", "--taxonomy",
                          tmp_path / "two.yaml", "--stage", "sft", "--out", out, "--trim-tokenizer", "none")
    assert result.exit_code == 0, text
    sp = rows(out, "strategy_sft")
    assert [(r["id"], r["strategy"]) for r in sp] == [("0-2", "Ask"), ("0-4", "Comfort")]
    assert "The strategies:\n- Ask: ask the seeker something.\n- Comfort: say something kind.\n\nAnswer" in \
        sp[0]["prompt"][0]["content"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["build_config"]["taxonomy"] == "two.yaml"  # a name, never the building machine's path
    assert manifest["taxonomy"]["variants"] == {"asking": "Ask"}
    result, text = invoke("validate", out)
    assert result.exit_code == 0, text
    (tmp_path / "bad.yaml").write_text("name: bad\nlabels:\n  - {name: Ask, definition: ask.}\n")
    result, text = invoke("build", "--source", "json", "--source-path", tmp_path / "mine.json", "--taxonomy",
                          tmp_path / "bad.yaml", "--stage", "sft", "--out", tmp_path / "o3")
    assert result.exit_code == 1 and "bad.yaml: field labels: a list of at least two" in text, text
    result, text = invoke("build", "--source", "json", "--source-path", tmp_path / "mine.json", "--taxonomy",
                          "nope", "--stage", "sft", "--out", tmp_path / "o4")
    assert result.exit_code == 2 and "--taxonomy nope: neither a built-in taxonomy" in text, text


def _extes_like(n: int) -> list[dict]:
    """``n`` short invented dialogues in ExTES's layout: a greeting with an empty label, two labelled turns."""
    rng = random.Random(7)
    worries = ("my exams", "my landlord", "a friend who stopped calling", "my new job", "my brother's illness")
    out = []
    for k in range(n):
        worry = worries[k % len(worries)]
        first, second = rng.sample(EXTES, 2)
        out.append({"scene": "Invented", "description": f"Worried about {worry}.", "content": [
            {"User": f"Hi. I keep worrying about {worry}."},
            {"AI Strategy": "", "AI": "Hello, I am glad you reached out."},
            {"User": "It has kept me up for a week."},
            {"AI Strategy": first, "AI": "A week without sleep is exhausting."},
            {"User": "I do not know what to do."},
            {"AI Strategy": second, "AI": "We could look at one small step together."}]})
    return out


def test_extes_layout_end_to_end_on_the_embedded_engine(tmp_path, smollm2):
    """The real small model on the default engine: `--stage all --limit 2` of an ExTES-layout file, then validate."""
    source = corpora.write_extes(tmp_path / "corpus", _extes_like(10))  # random split: 8 / 1 / 1
    out = tmp_path / "out"
    result, text = invoke("build", "--source", "extes", "--source-path", source, "--stage", "all", "--limit", "2",
                          "--sp-max-tokens", "8", "--rg-max-tokens", "24", "--vm-max-tokens", "32",
                          "--judge-max-tokens", "160", "--out", out, "--cache-dir", tmp_path / "cache")
    assert result.exit_code == 0, text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["split"]["dialogues"] == {"train": 2, "validation": 1, "test": 1}
    assert manifest["models"]["sp"]["engine"] == "local"
    assert manifest["mining"]["sp"]["turns"] == 6  # 3 mined dialogues x 2 labelled turns
    assert manifest["complete"] is True and manifest["taxonomy"]["name"] == "extes"
    joint = sum(manifest["counts"]["joint_pairs"].values())
    assert joint > 0 and manifest["judge"]["joint_pairs"]["pairs"] == joint  # the model never copies all six
    sp = rows(out, "strategy_sft")
    assert len(sp) == 4 and all(r["strategy"] in EXTES for r in sp)
    for config in ("strategy_pairs", "joint_pairs"):
        path = out / "data" / config / "train-00000-of-00001.parquet"
        if path.exists():
            assert all(r["rejected_strategy"] in (*EXTES, None) for r in rows(out, config))
    result, text = invoke("validate", out)
    assert result.exit_code == 0, text
