"""Strategy taxonomies: the four that ship, spellings, and taxonomy files that are refused with their place."""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
import yaml

from ipm_prefdial.strategies import STRATEGIES, SYNONYMS
from ipm_prefdial.taxonomy import TaxonomyError, builtin, load_taxonomy, parse_taxonomy

PROMPTS = Path(__file__).resolve().parents[1] / "prompts"

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
    # the same lines the system prompts include today (prompts/_strategies.j2), so prompts can be rendered from it
    template = jinja2.Environment(loader=jinja2.FileSystemLoader(str(PROMPTS))).get_template("_strategies.j2")
    assert esconv.listing() == template.render().strip("\n")
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
     "t.yaml: labels[1].name: 'Tell [more]' has a bracket"),
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
