"""Strategy taxonomies: the four that ship, spellings, and taxonomy files that are refused with their place."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ipm_prefdial.prompts import Prompts
from ipm_prefdial.strategies import STRATEGIES, SYNONYMS
from ipm_prefdial.taxonomy import TaxonomyError, builtin, from_manifest, load_taxonomy, parse_taxonomy

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"

ESCONV_LINES = (
    '- Question: ask something that helps the seeker say more about their situation or feelings.',
    '- Restatement or Paraphrasing: say back, briefly and in other words, what the seeker has told you, '
    'so they see it more clearly.',
    '- Reflection of feelings: name the emotion the seeker seems to feel and show that you understand it.',
    '- Self-disclosure: share a short, relevant experience or feeling of your own to show you have been there too.',
    "- Affirmation and Reassurance: recognise the seeker's strengths, effort or worth, and offer encouragement.",
    '- Providing Suggestions: propose a concrete thing the seeker could try, without imposing it.',
    "- Information: give useful facts, resources or explanations related to the seeker's problem.",
    '- Others: anything else, such as greetings, thanks, small talk or closing the conversation.',
)
EXTES = ["Reflective Statements", "Clarification", "Emotional Validation", "Empathetic Statements", "Affirmation",
         "Offer Hope", "Avoid Judgment And Criticism", "Suggest Options", "Collaborative Planning",
         "Provide Different Perspectives", "Reframe Negative Thoughts", "Share Information", "Normalize Experiences",
         "Promote Self-Care Practices", "Stress Management", "Others"]
MESC = ["Open questions", "Approval", "Self-disclosure", "Restatement", "Interpretation", "Communication Skills",
        "Advisement", "Structuring the therapy", "Guiding the Pace and Depth of the Conversation", "Others"]


def test_esconv_is_the_eight_the_prompts_list():
    esconv = builtin("esconv")
    assert esconv.names == ("Question", "Restatement or Paraphrasing", "Reflection of feelings", "Self-disclosure",
                            "Affirmation and Reassurance", "Providing Suggestions", "Information", "Others")
    assert esconv.names == STRATEGIES and esconv.empty == "error"
    # the lines the system prompts listed before taxonomies (prompts/_strategies.j2 of commit bdeec12), and the
    # prompts rendered from the taxonomy hash as they did then: every ESConv build's prompts stay byte-identical
    assert esconv.listing() == "\n".join(ESCONV_LINES)
    assert Prompts().hashes() == {
        "sp_system": "3475d099561249ead6cdb94f22566b526d4d6bbede876679abbd1a391b23d0ff",
        "rg_system": "5ecb0e69558f81774acd3fac553618b92b9aa94d155c081194db7ba3204da819",
        "vm_system": "e8f498816cfe03c6f3718070ed75db513bb74fbba8de92f1fa918db3ca33c87d",
        "rg_instruction": "8a4bc51f5d81fbd337bc0633f6af4fd1e8292a3aa6461e7df204ee7f6b827602",
        "judge_system": "8dadb585efb0e2652bef8ebc0b56c31af04665138b157b7da75aaf94f6f4585a",
        "judge_user": "9516a2edd7836c16c72d057e126fa28558a56105dc8d6c55b588843e908ec1eb"}
    assert {k.lower(): v for k, v in esconv.variants.items()} == SYNONYMS
    assert esconv.canonical("reflection of FEELINGS") == "Reflection of feelings"
    assert esconv.canonical("  Direct   guidance ") == "Providing Suggestions"
    assert esconv.canonical("Hugging") is None


def test_the_other_corpora():
    extes, mesc, pro = builtin("extes"), builtin("mesc"), builtin("esc-pro")
    assert list(extes.names) == EXTES and extes.empty == "skip"
    assert extes.canonical("avoid judgment and criticism") == "Avoid Judgment And Criticism"
    assert list(mesc.names) == MESC
    assert mesc.canonical("Open question") == "Open questions" and mesc.canonical("OTHERS") == "Others"
    assert len(pro.names) == 8 and all(extes.canonical(name) for name in pro.names)


def test_an_unknown_label_names_where_it_is():
    with pytest.raises(TaxonomyError) as caught:
        builtin("esc-pro").require("Hugging", "corpus.json: dialogue 3: field messages[2].strategy")
    assert str(caught.value) == (
        "corpus.json: dialogue 3: field messages[2].strategy: unknown strategy 'Hugging' (the esc-pro taxonomy has 8: "
        "Emotional Validation, Affirmation, Collaborative Planning, Empathetic Statements, Avoid Judgment and "
        "Criticism, Provide Different Perspectives, Reframe Negative Thoughts, Share Information)")


GOOD = {"name": "mine", "empty": "skip",
        "labels": [{"name": "Ask", "definition": "ask more."}, {"name": "Tell", "definition": "tell something."}],
        "variants": {"Asking": "Ask"}}


@pytest.mark.parametrize(("change", "message"), [
    ({"name": ""}, "t.yaml: field name: must be a non-empty string"),
    ({"labels": [{"name": "Ask", "definition": "ask."}]}, "t.yaml: field labels: a list of at least two"),
    ({"labels": [{"name": "Ask", "definition": "a"}, {"name": "ask ", "definition": "b"}]},
     "t.yaml: labels[1].name: 'ask' repeats labels[0]"),
    ({"labels": [{"name": "Ask", "definition": "a"}, {"name": "Tell", "definition": "one\ntwo"}]},
     "t.yaml: labels[1].definition: must be one line"),
    ({"labels": [{"name": "Ask", "definition": "a"}, {"name": "Tell [more]", "definition": "b"}]},
     "t.yaml: labels[1].name: 'Tell [more]' has a bracket, parenthesis, '|' or ':'"),
    ({"labels": [{"name": "Ask", "definition": "a"}, {"name": "Tell | probe", "definition": "b"}]},
     "t.yaml: labels[1].name: 'Tell | probe' has a bracket, parenthesis, '|' or ':'"),
    ({"labels": [{"name": "Ask", "definition": "a"}, {"name": "Tell: more", "definition": "b"}]},
     "t.yaml: labels[1].name: 'Tell: more' has a bracket"),
    ({"labels": [{"name": "Ask", "definition": "a"}, {"name": "Tell"}]},
     "t.yaml: labels[1]: expected exactly name and definition"),
    ({"variants": {"Asking": "Query"}}, "t.yaml: variants['Asking']: 'Query' is not one of the labels"),
    ({"variants": {"tell": "Ask"}}, "t.yaml: variants['tell']: 'tell' is itself a label; it cannot also mean 'Ask'"),
    ({"empty": "ignore"}, "t.yaml: field empty: 'ignore' (one of error, skip)"),
    ({"colour": "red"}, "t.yaml: unknown field 'colour'"),
])
def test_a_bad_taxonomy_file_names_the_field(tmp_path, change, message):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump({**GOOD, **change}), encoding="utf-8")
    with pytest.raises(TaxonomyError) as caught:
        load_taxonomy(path)
    assert str(caught.value).startswith(message), str(caught.value)


def test_a_good_taxonomy_file(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text(yaml.safe_dump(GOOD), encoding="utf-8")
    mine = load_taxonomy(path)
    assert mine.names == ("Ask", "Tell") and mine.canonical("ASKING") == "Ask" and mine.empty == "skip"
    assert mine.listing() == "- Ask: ask more.\n- Tell: tell something."
    with pytest.raises(TaxonomyError, match="not-there.yaml: no such file"):
        load_taxonomy(tmp_path / "not-there.yaml")
    with pytest.raises(TaxonomyError, match="expected a mapping"):
        parse_taxonomy(["Ask", "Tell"], "list.yaml")


def test_prompts_list_the_taxonomy_they_are_given():
    extes = Prompts(taxonomy=builtin("extes"))
    sp = extes.sp_system.split("\n")
    listed = [line.split(":")[0][2:] for line in sp if line.startswith("- ")]
    assert listed == EXTES
    assert "- Clarification: ask about something unclear so that you understand the seeker's situation correctly." in sp
    assert "Question" not in extes.sp_system and "Reflection of feelings" not in extes.rg_system
    assert ('then your message, for example "[Clarification] What has been on your mind lately?". Use exactly'
            in extes.vm_system)
    assert '"(Clarification) What has been on your mind lately?"' in extes.cso_system
    # a taxonomy without an example: the format is stated without one
    bare = parse_taxonomy({"name": "two", "labels": [{"name": "Ask", "definition": "ask."},
                                                      {"name": "Tell", "definition": "tell."}]}, "two.yaml")
    vm = Prompts(taxonomy=bare).vm_system
    assert "- Ask: ask.\n- Tell: tell." in vm
    assert "then your message. Use exactly one strategy name" in vm and "for example" not in vm


def test_a_taxonomy_goes_into_the_manifest_and_back():
    mesc = builtin("mesc")
    assert from_manifest({"taxonomy": mesc.as_dict()}) == mesc
    assert from_manifest({}) == builtin("esconv")  # builds from before taxonomies
    recorded = builtin("esc-pro").as_dict()
    assert recorded["labels"][0] == {"name": "Emotional Validation", "definition": "acknowledge the seeker's feelings "
                                     "as real and understandable, without judging them."}
    assert recorded["empty"] == "error" and recorded["name"] == "esc-pro"
    broken = {**recorded, "labels": recorded["labels"][:1]}
    with pytest.raises(TaxonomyError, match=r"^manifest.json: taxonomy: field labels: a list of at least two"):
        from_manifest({"taxonomy": broken})


@pytest.mark.parametrize(("example", "message"), [
    ("[Hugging] There, there.", "must be '\\[<one of the labels>\\] <a message>'"),
    ("[Ask]", "must be"),
    ("Ask: how are you?", "must be"),
])
def test_an_example_must_use_a_label(example, message):
    data = {"name": "two", "example": example, "labels": [{"name": "Ask", "definition": "ask."},
                                                           {"name": "Tell", "definition": "tell."}]}
    with pytest.raises(TaxonomyError, match=r"^two.yaml: field example: .*" + message):
        parse_taxonomy(data, "two.yaml")
