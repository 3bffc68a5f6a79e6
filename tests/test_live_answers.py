"""The one answer extractor and normaliser shared by live episodes and collection."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mlflow_autotts.live.answers import (
    NO_ANSWER,
    boxed_contents,
    extract_answer,
    normalize_answer,
    probe_answer,
)

# answers as models write them: digits, signs, fractions, words, TeX
answer_text = st.lists(st.sampled_from(
    [*"0123456789+-=.,/ $\\{}()xabc^_", "\\frac", "\\text", "\\sqrt", "\\pi", "\\boxed", "minutes"]),
    max_size=20).map("".join)
balanced = st.recursive(
    st.text(alphabet=st.sampled_from(list("0123456789+-x ,.")), max_size=6),
    lambda inner: st.builds(lambda a, b, c: f"{a}\\frac{{{b}}}{{{c}}}", inner, inner, inner),
    max_leaves=6)


@given(answer_text)
def test_normalisation_is_idempotent(a):
    assert normalize_answer(normalize_answer(a)) == normalize_answer(a)


@given(answer_text)
def test_normalised_answers_are_never_empty_and_carry_no_outer_whitespace(a):
    n = normalize_answer(a)
    assert n and n == n.strip()


@given(balanced, st.text(alphabet=st.sampled_from(list("abc .")), max_size=20))
def test_the_last_box_wins_and_nested_braces_are_kept(inner, prose):
    text = f"{prose} \\boxed{{wrong}} {prose} \\boxed{{{inner}}} {prose}"
    assert boxed_contents(text)[-1] == inner
    assert extract_answer(text) == normalize_answer(inner)


@given(balanced)
def test_a_probe_answer_is_what_the_box_closes_on(inner):
    assert probe_answer(inner + "}\\] more text") == normalize_answer(inner)


def test_text_without_a_closed_box_answers_ERR():
    assert extract_answer("so the answer is 12") == NO_ANSWER
    assert extract_answer("\\boxed{12") == NO_ANSWER
    assert probe_answer("12 and then") == NO_ANSWER
    assert probe_answer("}") == NO_ANSWER


@pytest.mark.parametrize("raw, normal", [
    (" 18 ", "18"), ("$18$", "18"), ("\\text{18}", "18"), ("18.", "18"), ("1,234", "1234"), ("2.50", "2.5"),
    ("6 x 3 = 18", "18"), ("x = -4", "-4"), ("+7", "7"), ("\\(5\\)", "5"), ("\\frac{1}{2}", "\\frac{1}{2}"),
    ("2025 + 286", "2025 + 286"), ("", NO_ANSWER),
])
def test_normalisation_removes_only_wrapping_that_keeps_the_value(raw, normal):
    assert normalize_answer(raw) == normal


def test_normalising_the_published_answers_changes_no_comparison_with_a_gold_answer(data_dir):
    for model in ("Qwen3-0.6B", "Qwen3-1.7B", "Qwen3-4B", "Qwen3-8B"):
        for prob in json.loads((data_dir / model / "aime24.json").read_text()):
            gold = prob["gold_answer"]
            assert normalize_answer(gold) == gold
            for probes, _, final in prob["each_branch"]:
                for a in [*probes, final]:
                    assert (normalize_answer(a) == gold) == (a == gold)
