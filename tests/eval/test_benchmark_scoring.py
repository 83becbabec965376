"""The reward scores built benchmark rows by their answer spec, exactly as verl calls it in validation.

Each case: (benchmark, record id, text inside <answer>, expected accuracy). The row's ground truth and
extra_info come from the built parquet, so this checks adapters and reward together.
"""

import pytest

from calibrl_ext.reward import compute_score

CASES = [
    # MathVista: choice answered by letter or by option text (the gold is stored as the letter)
    ("mathvista", "3", "C", 1),
    ("mathvista", "3", "145°", 1),
    ("mathvista", "3", "(C) 145°", 1),
    ("mathvista", "3", "140°", 0),
    ("mathvista", "3", "B", 0),
    ("mathvista", "10", "E", 1),
    # MathVista: float with precision 1, integer
    ("mathvista", "1", "1.2", 1),
    ("mathvista", "1", "1.24", 1),
    ("mathvista", "1", "1.3", 0),
    ("mathvista", "2", "1000", 1),
    ("mathvista", "2", "1,000", 1),
    ("mathvista", "2", "999", 0),
    # MathVerse: inline options, units in a free-form gold
    ("mathverse", "1", "60°", 1),
    ("mathverse", "1", "B", 1),
    ("mathverse", "5", "B", 1),
    ("mathverse", "6", "4.4", 1),
    ("mathverse", "6", "4.4 m", 1),
    ("mathverse", "6", "4.5", 0),
    # MATH-V: letter gold accepts the option text (as the official scorer does)
    ("mathvision", "91", "E", 1),
    ("mathvision", "91", "12 m", 1),
    ("mathvision", "91", "10 m", 0),
    ("mathvision", "59", "C", 1),
    ("mathvision", "4", "6", 1),
    # We-Math: letter, or option text with commas
    ("wemath", "1", "C", 1),
    ("wemath", "1", "3000, 4000", 1),
    ("wemath", "1", "300, 400", 0),
    # LogicVista: letter sets exactly, numbered choices
    ("logicvista", "v1_1", "A, C", 1),
    ("logicvista", "v1_1", "C and A", 1),
    ("logicvista", "v1_1", "A", 0),
    ("logicvista", "v1_20", "3", 1),
    ("logicvista", "v1_19", "14", 1),
    # DynaMath: float within 0.001, inline choice
    ("dynamath", "1/1", "2.094", 1),
    ("dynamath", "1/1", "\\frac{2\\pi}{3}", 1),
    ("dynamath", "1/1", "2.1", 0),
    ("dynamath", "2/1", "3.142", 1),
    ("dynamath", "1/5", "no", 1),
    ("dynamath", "1/5", "(A) yes", 0),
    # MATH-500 and AMC: math-verify and numbers
    ("math500", "test/precalculus/807.json", "(3, \\frac{\\pi}{2})", 1),
    ("math500", "test/algebra/1.json", "\\sqrt{12}", 1),
    ("amc", "0", "142", 1),
    ("amc", "1", "5/2", 1),
]


@pytest.mark.parametrize(("benchmark", "record_id", "answer", "expected"), CASES,
                         ids=[f"{b}-{r}-{a}" for b, r, a, _ in CASES])  # fmt: skip
def test_built_row_is_scored_by_its_spec(built, benchmark, record_id, answer, expected):
    """compute_score(data_source, response, ground_truth, extra_info) on a built row gives the expected accuracy."""
    rows = {row["extra_info"]["record_id"]: row for row in built[benchmark][1]}
    row = rows[record_id]
    response = f"<think>reasoning</think><answer>{answer}</answer>"
    result = compute_score(row["data_source"], response, row["reward_model"]["ground_truth"], row["extra_info"])
    assert result["acc"] == expected, (row["reward_model"]["ground_truth"], row["extra_info"]["answer_spec"], result)
    assert result["eval_id"] == row["extra_info"]["eval_id"]


def test_accuracy_excludes_the_format_bonus(built):
    """In validation the accuracy key is 'acc' (format bonus excluded): a correct answer without the
    format scores acc 1.0, while 'score' carries the bonus only when formatted."""
    row = built["amc"][1][0]
    bare = compute_score(row["data_source"], "<answer>142</answer>", "142", row["extra_info"])
    formatted = compute_score(row["data_source"], "<think>x</think><answer>142</answer>", "142", row["extra_info"])
    assert bare["acc"] == formatted["acc"] == 1.0
    assert (bare["score"], formatted["score"]) == (1.0, pytest.approx(1.1))
