"""Scoring per answer type from the row's answer spec (extra_info["answer_spec"]), as benchmarks store it."""

import json

import pytest

from calibrl_ext.answers import AnswerSpec
from calibrl_ext.reward import compute_score

MATHVISTA_OPTIONS = ["145°", "35°", "55°", "125°"]

SPEC_CASES = [
    # choice with option texts (MathVista stores the text; the adapter turns it into letter + options)
    ("choice-letter", {"type": "choice", "options": MATHVISTA_OPTIONS}, "A", "A", 1),
    ("choice-option-text", {"type": "choice", "options": MATHVISTA_OPTIONS}, "A", "145°", 1),
    ("choice-option-text-no-degree", {"type": "choice", "options": MATHVISTA_OPTIONS}, "A", "145", 1),
    ("choice-option-text-latex-degree", {"type": "choice", "options": MATHVISTA_OPTIONS}, "A", "145^\\circ", 1),
    ("choice-letter-and-text", {"type": "choice", "options": MATHVISTA_OPTIONS}, "A", "(A) 145°", 1),
    ("choice-other-option-text", {"type": "choice", "options": MATHVISTA_OPTIONS}, "A", "35°", 0),
    ("choice-other-letter", {"type": "choice", "options": MATHVISTA_OPTIONS}, "A", "B", 0),
    ("choice-letter-decides-over-text", {"type": "choice", "options": MATHVISTA_OPTIONS}, "A", "B. 145°", 0),
    ("choice-numeric-option", {"type": "choice", "options": ["0.5", "2"]}, "A", "\\frac{1}{2}", 1),
    ("choice-options-in-image", {"type": "choice"}, "C", "C", 1),
    ("choice-options-in-image-text", {"type": "choice"}, "C", "12", 0),
    # integer
    ("integer-equal", {"type": "integer"}, "3", "3", 1),
    ("integer-decimal-form", {"type": "integer"}, "3", "3.0", 1),
    ("integer-not-whole", {"type": "integer"}, "3", "3.5", 0),
    ("integer-word", {"type": "integer"}, "3", "three", 0),
    # float with precision (MathVista: decimal places)
    ("float-precision-equal", {"type": "float", "precision": 1}, "1.2", "1.2", 1),
    ("float-precision-trailing-zero", {"type": "float", "precision": 1}, "1.2", "1.20", 1),
    ("float-precision-rounds", {"type": "float", "precision": 1}, "1.2", "1.23", 1),
    ("float-precision-wrong", {"type": "float", "precision": 1}, "1.2", "1.3", 0),
    ("float-precision-two", {"type": "float", "precision": 2}, "0.67", "0.666", 1),
    # float with tolerance (DynaMath: |pred - gt| <= 0.001)
    ("float-tolerance-three-decimals", {"type": "float", "tolerance": 0.001}, "2.0944", "2.094", 1),
    ("float-tolerance-outside", {"type": "float", "tolerance": 0.001}, "2.0944", "2.096", 0),
    ("float-tolerance-pi-multiple", {"type": "float", "tolerance": 0.001}, "2.0944", "0.6667π", 1),
    ("float-tolerance-expression", {"type": "float", "tolerance": 0.001}, "2.0944", "\\frac{2\\pi}{3}", 1),
    ("float-tolerance-wrong-expression", {"type": "float", "tolerance": 0.001}, "2.0944", "\\frac{\\pi}{3}", 0),
    ("float-exact-without-rule", {"type": "float"}, "0.25", "1/4", 1),
    # free text
    ("text-case", {"type": "text"}, "May", "may", 1),
    ("text-colon", {"type": "text"}, "5:0", "5:0", 1),
    ("text-wrong", {"type": "text"}, "May", "June", 0),
    ("text-no-symbolic", {"type": "text"}, "\\sqrt{12}", "2\\sqrt{3}", 0),
    # letter sets (LogicVista multi-select), gold "B, D"
    ("letters-exact", {"type": "letters"}, "B, D", "D, B", 1),
    ("letters-missing-one", {"type": "letters"}, "B, D", "B", 0),
    ("letters-single-gold", {"type": "letters"}, "B", "B", 1),
    # math (explicit): same steps as training
    ("math-symbolic", {"type": "math"}, "\\sqrt{12}", "2\\sqrt{3}", 1),
]


@pytest.mark.parametrize(
    ("spec", "gold", "answer", "expected_acc"), [c[1:] for c in SPEC_CASES], ids=[c[0] for c in SPEC_CASES]
)
def test_answer_spec_case(respond, spec, gold, answer, expected_acc):
    """compute_score reads the spec from extra_info (as the JSON string the parquet holds) and scores by it."""
    extra_info = {"answer_spec": json.dumps(spec)}
    assert compute_score("bench", respond(answer), gold, extra_info)["acc"] == expected_acc


def test_spec_as_dict_equals_spec_as_json(respond):
    """A spec given as a dict scores the same as its JSON string."""
    spec = {"type": "choice", "options": MATHVISTA_OPTIONS}
    as_dict = compute_score("b", respond("145°"), "A", {"answer_spec": spec})
    as_json = compute_score("b", respond("145°"), "A", {"answer_spec": json.dumps(spec)})
    assert as_dict == as_json and as_dict["acc"] == 1.0


def test_spec_round_trips_through_json():
    """AnswerSpec.to_json and from_value are inverse (the adapters write what the reward reads)."""
    for spec in (
        AnswerSpec("choice", options=("a", "b")),
        AnswerSpec("float", precision=2),
        AnswerSpec("float", tolerance=0.001),
        AnswerSpec("letters"),
    ):
        assert AnswerSpec.from_value(spec.to_json()) == spec


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"type": "multiple"}, "answer_spec.type must be one of"),
        ({"type": "float", "precision": -1}, "precision must be a non-negative integer"),
        ({"type": "float", "precision": 1, "tolerance": 0.1}, "precision OR tolerance"),
        ({"type": "integer", "precision": 1}, "need type 'float'"),
        ({"type": "text", "options": ["a"]}, "only meaningful for type 'choice'"),
        ({"type": "choice", "options": "A. 1; B. 2"}, "options must be a list of strings"),
        ({"type": "choice", "choices": ["a"]}, "unknown keys ['choices']"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_spec_is_rejected_with_its_field(value, message):
    """A malformed spec raises ValueError naming the offending field."""
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("[", r"\[")):
        AnswerSpec.from_value(value)


@pytest.mark.parametrize(
    ("spec", "gold", "message"),
    [
        (AnswerSpec("choice", options=("x", "y")), "C", "has no option text"),
        (AnswerSpec("choice"), "12", "one letter"),
        (AnswerSpec("letters"), "A or C", "letters separated by commas"),
        (AnswerSpec("integer"), "2.5", "whole number"),
        (AnswerSpec("float"), "about two", "must be a number"),
        (AnswerSpec("text"), "  ", "non-empty"),
    ],
)
def test_check_gold_names_the_problem(spec, gold, message):
    """AnswerSpec.check_gold (run by the adapters per row) rejects golds the spec cannot score."""
    with pytest.raises(ValueError, match=message):
        spec.check_gold(gold)


def test_mathvista_float_precision_typed_as_float_is_accepted():
    """HF may type MathVista's precision as float (1.0): it is read as the integer 1."""
    assert AnswerSpec.from_value({"type": "float", "precision": 1.0}).precision == 1
