"""compute_score's contract with verl and with CalibRL: weights, kwargs, returned keys, the pass threshold."""

import pytest

from calibrl_ext.reward import RewardConfig, compute_score

RETURNED_KEYS = {"score": float, "acc": float, "format": float, "timeout": float, "pred": str, "eval_id": str}


def test_default_score_is_accuracy_plus_tenth_of_format(respond):
    """score = 1.0 * acc + 0.1 * format for all four (acc, format) combinations."""
    assert compute_score("t", respond("5"), "5")["score"] == pytest.approx(1.1)
    assert compute_score("t", respond("4"), "5")["score"] == pytest.approx(0.1)
    assert compute_score("t", "<answer>5</answer>", "5")["score"] == pytest.approx(1.0)
    assert compute_score("t", "<answer>4</answer>", "5")["score"] == pytest.approx(0.0)


def test_weights_are_configurable(respond):
    """acc_weight and format_weight reach the score (as verl's reward_kwargs)."""
    result = compute_score("t", respond("5"), "5", acc_weight=2.0, format_weight=0.5)
    assert result["score"] == pytest.approx(2.5)
    assert (result["acc"], result["format"]) == (1.0, 1.0)


def test_passed_threshold_separates_correct_from_wrong_with_defaults(respond):
    """CalibRL's s_i = +1 iff score > 0.1 (METHOD Notation): with the default weights that is exactly
    'the answer is correct', whether or not the format bonus is earned (METHOD §7.8)."""
    responses = [respond("5"), respond("4"), "<answer>5</answer>", "<answer>4</answer>"]
    for response in responses:
        result = compute_score("t", response, "5")
        assert (result["score"] > 0.1) == (result["acc"] == 1.0), (response, result)


@pytest.mark.parametrize(
    "response",
    [
        "<think>x</think><answer>5</answer>",  # exact path
        "<think>x</think><answer>2\\sqrt{3}</answer>",  # symbolic path
        "no tags at all",  # no answer
        "<think>x</think><answer>(B)</answer>",  # choice path
    ],
)
def test_returned_keys_and_types_never_vary(response):
    """Every call returns the same keys with the same types (verl stacks reward_extra_info by the first
    row's keys: a key missing from one row would fail the whole batch)."""
    result = compute_score("t", response, "\\sqrt{12}", {"eval_id": "bench/3"})
    assert set(result) == set(RETURNED_KEYS)
    assert all(isinstance(result[key], kind) for key, kind in RETURNED_KEYS.items())
    assert result["eval_id"] == "bench/3"


def test_unknown_kwarg_is_rejected_with_valid_names(respond):
    """A typo in reward_kwargs raises TypeError naming it and listing the valid names."""
    with pytest.raises(TypeError, match=r"unknown reward_kwargs \['format_wieght'\].*format_weight"):
        compute_score("t", respond("5"), "5", format_wieght=0.2)


def test_verl_injected_kwargs_are_accepted(respond):
    """Keywords that verl's reward managers add themselves do not count as typos."""
    result = compute_score("t", respond("5"), "5", reward_router_address=None, reward_model_tokenizer=None)
    assert result["acc"] == 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"acc_weight": 0}, "acc_weight must be > 0"),
        ({"format_weight": -0.1}, "format_weight must be >= 0"),
        ({"symbolic_timeout_s": 0}, r"symbolic_timeout_s must be in \(0, 600\]"),
        ({"symbolic_timeout_s": "3"}, "symbolic_timeout_s must be a number"),
        ({"symbolic_workers": 0}, "symbolic_workers must be a positive integer"),
        ({"symbolic_check": "yes"}, "symbolic_check must be true or false"),
        ({"answer_extractor": "boxed"}, "answer_extractor must be one of"),
    ],
)
def test_bad_config_values_name_the_key(kwargs, message):
    """Out-of-range reward_kwargs raise ValueError naming the key."""
    with pytest.raises(ValueError, match=message):
        RewardConfig.from_kwargs(kwargs)


def test_symbolic_check_can_be_switched_off(respond):
    """symbolic_check=False keeps the exact and numeric steps and skips math-verify."""
    assert compute_score("t", respond("0.5"), "\\frac{1}{2}", symbolic_check=False)["acc"] == 1.0
    assert compute_score("t", respond("2\\sqrt{3}"), "\\sqrt{12}", symbolic_check=False)["acc"] == 0.0
    assert compute_score("t", respond("2\\sqrt{3}"), "\\sqrt{12}")["acc"] == 1.0


def test_numeric_ground_truth_is_scored_as_text(respond):
    """A gold stored as a number (AMC's 142.0 in some parquet copies) is scored, not crashed on."""
    assert compute_score("t", respond("142"), 142.0)["acc"] == 1.0


def test_pred_is_the_extracted_answer(respond):
    """'pred' carries the extracted answer (verl's maj@k votes on it); '' when there is none."""
    assert compute_score("t", respond(" 12 cm "), "12")["pred"] == "12 cm"
    assert compute_score("t", "nothing", "12")["pred"] == ""
