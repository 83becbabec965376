"""Format check (METHOD Notation) and answer extraction (METHOD §7.5)."""

import pytest

from calibrl_ext.answers import extract_boxed, extract_prediction
from calibrl_ext.reward import compute_score, extract_answer, is_well_formatted

FORMAT_CASES = [
    ("minimal", "<think>a</think><answer>b</answer>", True),
    ("text-between-think-and-answer", "<think>a</think>\n\nSo:\n<answer>b</answer>", True),
    ("multiline-think", "<think>line 1\nline 2\n</think><answer>b</answer>", True),
    ("empty-think-and-answer", "<think></think><answer></answer>", True),
    ("answer-containing-less-than", "<think>a</think><answer>x<3</answer>", True),
    ("two-answer-tags", "<think>a</think><answer>1</answer><answer>2</answer>", True),
    ("leading-space", " <think>a</think><answer>b</answer>", False),
    ("trailing-newline", "<think>a</think><answer>b</answer>\n", False),
    ("trailing-eos-string", "<think>a</think><answer>b</answer><|im_end|>", False),
    ("text-after-answer", "<think>a</think><answer>b</answer> done", False),
    ("no-think", "<answer>b</answer>", False),
    ("no-answer", "<think>a</think> b", False),
    ("answer-before-think", "<answer>b</answer><think>a</think>", False),
    ("unclosed-answer", "<think>a</think><answer>b", False),
    ("preamble-before-think", "Sure! <think>a</think><answer>b</answer>", False),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in FORMAT_CASES], ids=[c[0] for c in FORMAT_CASES])
def test_format(text, expected):
    """is_well_formatted is a full match of ^<think>.*?</think>.*?<answer>.*?</answer>$ on the raw text."""
    assert is_well_formatted(text) is expected


def test_strip_whitespace_forgives_only_surrounding_whitespace():
    """strip_whitespace=True accepts surrounding whitespace but still rejects an EOS string or extra text."""
    assert is_well_formatted("  <think>a</think><answer>b</answer>\n", strip_whitespace=True)
    assert not is_well_formatted("<think>a</think><answer>b</answer><|im_end|>", strip_whitespace=True)
    assert not is_well_formatted("x<think>a</think><answer>b</answer>", strip_whitespace=True)


def test_format_weight_follows_format_kwarg():
    """The format_strip_whitespace reward kwarg reaches the format check."""
    text = "<think>a</think><answer>5</answer>\n"
    assert compute_score("t", text, "5")["format"] == 0.0
    assert compute_score("t", text, "5", format_strip_whitespace=True)["format"] == 1.0


EXTRACT_CASES = [
    ("simple", "<answer>5</answer>", "5"),
    ("stripped", "<answer>\n  5 \n</answer>", "5"),
    ("less-than-inside", "<answer>a<b</answer>", "a<b"),
    ("html-like-inside", "<answer>x <= 3 and y > 2</answer>", "x <= 3 and y > 2"),
    ("last-pair-wins", "<answer>1</answer> then <answer>2</answer>", "2"),
    ("tag-quoted-in-think", "<think>I will write <answer> tags</think><answer>7</answer>", "7"),
    ("multiline", "<answer>line1\nline2</answer>", "line1\nline2"),
    ("empty", "<answer></answer>", ""),
    ("no-tags", "the answer is 5", None),
    ("unclosed", "<answer>5", None),
    ("close-without-open", "5</answer>", None),
]


@pytest.mark.parametrize(("text", "expected"), [c[1:] for c in EXTRACT_CASES], ids=[c[0] for c in EXTRACT_CASES])
def test_extract_answer(text, expected):
    """extract_answer returns the stripped content of the last complete <answer>…</answer>, or None."""
    assert extract_answer(text) == expected


def test_extract_boxed_balances_braces():
    """extract_boxed takes the last \\boxed{} with nested braces intact; an unclosed box gives None."""
    assert extract_boxed("so \\boxed{1} and finally \\boxed{\\frac{1}{2}}.") == "\\frac{1}{2}"
    assert extract_boxed("\\boxed{\\frac{1}{2}") is None
    assert extract_boxed("no box") is None


def test_boxed_fallback_extractor_is_opt_in():
    """A response with only \\boxed{} scores 0 under the default extractor and 1 under answer_tag_or_boxed;
    an answer tag still wins over a box when both exist."""
    response = "The result is \\boxed{12}."
    assert compute_score("t", response, "12")["acc"] == 0.0
    assert compute_score("t", response, "12", answer_extractor="answer_tag_or_boxed")["acc"] == 1.0
    assert extract_prediction("\\boxed{1}<answer>2</answer>", "answer_tag_or_boxed") == "2"
