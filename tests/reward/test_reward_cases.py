"""The reward case table: one readable row per behaviour of the training reward (no answer spec).

Each row: (case id, text inside <answer>, gold answer, expected accuracy). Every response is
well formatted, so the expected score is accuracy + 0.1.
"""

import pytest

from calibrl_ext.reward import compute_score

CASES = [
    # plain numbers
    ("integer-equal", "5", "5", 1),
    ("integer-wrong", "6", "5", 0),
    ("decimal-trailing-zero", "2.50", "2.5", 1),
    ("float-gold-integer-answer", "142", "142.0", 1),
    ("unicode-minus", "−3", "-3", 1),
    ("decimal-vs-fraction", "0.5", "\\frac{1}{2}", 1),
    ("slash-fraction-vs-decimal", "1/2", "0.5", 1),
    ("rounded-is-not-equal", "0.33", "1/3", 0),
    ("latex-dollars", "$\\frac{1}{2}$", "0.5", 1),
    ("dfrac-is-frac", "\\dfrac{3}{4}", "\\frac{3}{4}", 1),
    # multiple choice, gold a letter (METHOD §7.5: the released substring test matched "AB" to A)
    ("choice-bare-letter", "B", "B", 1),
    ("choice-parenthesised", "(B)", "B", 1),
    ("choice-letter-dot-text", "B. 12", "B", 1),
    ("choice-parenthesised-text", "(B) 12", "B", 1),
    ("choice-letter-colon-text", "B: 12", "B", 1),
    ("choice-lower-case", "b", "B", 1),
    ("choice-boxed", "\\boxed{B}", "B", 1),
    ("choice-answer-prefix", "Answer: B", "B", 1),
    ("choice-sentence-prefix", "The correct option is (B)", "B", 1),
    ("choice-fullwidth-brackets", "（B）", "B", 1),
    ("choice-other-letter", "C", "B", 0),
    ("choice-two-letters-glued", "AB", "B", 0),
    ("choice-two-letters-listed", "A, B", "B", 0),
    ("choice-other-letter-with-text", "C. 12", "B", 0),
    ("choice-text-without-options", "12", "B", 0),
    ("choice-article-is-not-a-letter", "A triangle", "B", 0),
    # letter sets (LogicVista multi-select): exact set equality
    ("letters-same-order", "A, C", "A, C", 1),
    ("letters-other-order", "C, A", "A, C", 1),
    ("letters-with-and", "A and C", "A, C", 1),
    ("letters-glued", "AC", "A, C", 1),
    ("letters-subset", "A", "A, C", 0),
    ("letters-superset", "A, B, C", "A, C", 0),
    # answers containing "<" (METHOD §7.5: the released regex [^<]+? could not read them)
    ("less-than", "x<3", "x<3", 1),
    ("less-than-spaced", "x < 3", "x<3", 1),
    ("less-than-wrong", "x<4", "x<3", 0),
    # degrees, percent, thousands separators, units, currency
    ("degree-sign", "30°", "30", 1),
    ("degree-latex", "30^\\circ", "30°", 1),
    ("degree-latex-braced", "30^{\\circ}", "30", 1),
    ("degree-word", "30 degrees", "30", 1),
    ("percent-sign", "50%", "50", 1),
    ("percent-latex", "50\\%", "50%", 1),
    ("thousands-comma", "1,000", "1000", 1),
    ("thousands-latex-comma", "1{,}000", "1000", 1),
    ("thousands-with-decimals", "12,345.5", "12345.5", 1),
    ("comma-pair-is-not-thousands", "1,2", "12", 0),
    ("unit-metres", "4.4 m", "4.4", 1),
    ("unit-text-command", "4.4\\text{ m}", "4.4 m", 1),
    ("unit-area-caret", "12 cm^2", "12", 1),
    ("unit-area-superscript", "12 cm²", "12", 1),
    ("currency-dollar", "\\$5", "5", 1),
    # symbolic (math-verify, in a worker process)
    ("symbolic-radicals", "2\\sqrt{3}", "\\sqrt{12}", 1),
    ("symbolic-pi-fraction", "\\pi/2", "\\frac{\\pi}{2}", 1),
    ("symbolic-equation-rhs", "x=5", "5", 1),
    ("symbolic-polynomial", "(x+1)^2", "x^2+2x+1", 1),
    ("symbolic-sqrt-fraction", "\\sqrt{3}/2", "\\frac{\\sqrt{3}}{2}", 1),
    ("symbolic-wrong", "\\sqrt{2}", "\\sqrt{3}", 0),
    ("tuple-spacing", "(1, 2)", "(1,2)", 1),
    # text
    ("text-case-insensitive", "May", "may", 1),
    ("boxed-inside-answer-tag", "\\boxed{7}", "7", 1),
    ("empty-answer", "", "7", 0),
]


@pytest.mark.parametrize(("answer", "gold", "expected_acc"), [case[1:] for case in CASES], ids=[c[0] for c in CASES])
def test_reward_case(respond, answer, gold, expected_acc):
    """The accuracy of each table row is as listed, and score = accuracy + 0.1 (well formatted)."""
    result = compute_score("case_table", respond(answer), gold)
    assert result["acc"] == expected_acc, result
    assert result["format"] == 1.0
    assert result["score"] == pytest.approx(expected_acc + 0.1)
    assert result["timeout"] == 0.0


def test_table_has_at_least_forty_distinct_cases():
    """The table keeps its size (issue 2 asks for at least 40 reward cases) and its ids are unique."""
    ids = [case[0] for case in CASES]
    assert len(ids) >= 40 and len(set(ids)) == len(ids)


def test_no_answer_tag_scores_zero_accuracy():
    """A response without <answer> tags has no answer: accuracy 0, format 0, pred ''."""
    result = compute_score("t", "The answer is 7.", "7")
    assert (result["acc"], result["format"], result["score"], result["pred"]) == (0.0, 0.0, 0.0, "")


def test_last_answer_tag_is_scored(respond):
    """With two answer tags, the last one is the answer (a draft in <think> is not)."""
    response = "<think>draft: <answer>3</answer></think><answer>5</answer>"
    assert compute_score("t", response, "5")["acc"] == 1.0
    assert compute_score("t", response, "3")["acc"] == 0.0
