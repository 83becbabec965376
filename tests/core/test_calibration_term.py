"""calibration_term (METHOD §3, §4): direction and strength of the expert-calibrated push."""

import math

import pytest
import torch
from calibrl_ext.core import ACTIVATIONS, calibration_term

ALPHA = 0.5
BASELINE = -1.0


def _gradient_step(passed: bool, log_prob: float, activation="leaky_relu", alpha=ALPHA, abs_adv=1.0):
    """-dG/dl for one token: the change gradient descent on +G makes to the token's log-prob (per unit lr)."""
    l = torch.tensor([[log_prob]], requires_grad=True)
    g = calibration_term(l, torch.tensor([[BASELINE]]), torch.tensor([abs_adv]), torch.tensor([passed]),
                         activation=activation, alpha=alpha)  # fmt: skip
    g.sum().backward()
    return -l.grad.item()


# passed, log-prob relative to the baseline, expected direction of the update, expected weight (1 or alpha)
DIRECTION_TABLE = [
    pytest.param(True, BASELINE + 0.5, +1, ALPHA, id="correct token above expert: pushed up with weight alpha"),
    pytest.param(True, BASELINE - 0.5, +1, 1.0, id="correct token below expert: pushed up with full weight"),
    pytest.param(False, BASELINE + 0.5, -1, 1.0, id="wrong token above expert (overconfident): full push down"),
    pytest.param(False, BASELINE - 0.5, -1, ALPHA, id="wrong token below expert: pushed down with weight alpha"),
]


@pytest.mark.parametrize("passed,log_prob,direction,weight", DIRECTION_TABLE)
def test_gradient_direction_table(passed, log_prob, direction, weight):
    """d(lambda G)/dl = -lambda |A| s w: the sign always follows the outcome s; w is 1 where x = -s(l-b) > 0
    and alpha where x < 0 (the paper's table of the four cases)."""
    step = _gradient_step(passed, log_prob)
    assert math.copysign(1, step) == direction
    assert abs(step) == pytest.approx(weight)


@pytest.mark.parametrize("passed,log_prob,direction,weight", DIRECTION_TABLE)
def test_abs_advantage_scales_the_push(passed, log_prob, direction, weight):
    """The push is proportional to |A_i| (distribution-aware weighting): a rare outcome moves more."""
    assert _gradient_step(passed, log_prob, abs_adv=0.25) == pytest.approx(0.25 * direction * weight)


@pytest.mark.parametrize("activation", ["relu", "sigmoid", "tanh"])
def test_monotone_activations_never_reverse_the_outcome_direction(activation):
    """ReLU, sigmoid and tanh have non-negative slope: the update never goes against s."""
    for passed in (True, False):
        for offset in (-2.0, -0.3, 0.3, 2.0):
            step = _gradient_step(passed, BASELINE + offset, activation=activation)
            assert step * (1 if passed else -1) >= 0


def test_huber_reverses_direction_for_negative_x():
    """Symmetric Huber pulls a confident correct token (x < 0) back down towards the expert (§4)."""
    assert _gradient_step(True, BASELINE + 0.5, activation="huber") < 0
    assert _gradient_step(True, BASELINE - 0.5, activation="huber") > 0


def test_hand_computed_values():
    """G = |A| * phi(-s (l - b)) for a small table of tokens, every activation."""
    l = torch.tensor([[-0.5, -2.0], [-0.5, -2.0]])
    b = torch.tensor([[-1.0, -1.0], [-1.0, -1.0]])
    adv = torch.tensor([0.4, -0.8])
    passed = torch.tensor([True, False])
    x = torch.tensor([[-0.5, 1.0], [0.5, -1.0]])  # -s (l - b)
    w = torch.tensor([[0.4], [0.8]])
    expected = {
        "leaky_relu": torch.where(x >= 0, x, 0.5 * x),
        "relu": x.clamp(min=0),
        "sigmoid": torch.sigmoid(x),
        "tanh": torch.tanh(x),
        "huber": torch.where(x.abs() <= 1.0, 0.5 * x * x, x.abs() - 0.5),
    }
    for activation in ACTIVATIONS:
        got = calibration_term(l, b, adv, passed, activation=activation, alpha=0.5, huber_delta=1.0)
        torch.testing.assert_close(got, w * expected[activation], msg=activation)
    unweighted = calibration_term(l, b, adv, passed, weight_by_abs_advantage=False)
    torch.testing.assert_close(unweighted, expected["leaky_relu"])


def test_masked_padding_with_inf_and_nan_stays_finite_including_gradient():
    """-inf / NaN log-probs at masked (padding) positions give exactly 0 and a finite, zero gradient there."""
    l = torch.tensor([[-1.0, float("-inf"), float("nan")]], requires_grad=True)
    b = torch.tensor([[-2.0, float("-inf"), 0.0]])
    mask = torch.tensor([[1, 0, 0]])
    g = calibration_term(l, b, torch.tensor([1.0]), torch.tensor([True]), mask=mask)
    g.sum().backward()
    assert torch.isfinite(g).all() and g[0, 1:].eq(0).all()
    assert torch.isfinite(l.grad).all() and l.grad[0, 1:].eq(0).all()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dtypes(dtype):
    """float32 and bfloat16 inputs give a finite result of the same dtype."""
    l = torch.randn(3, 4, dtype=dtype) - 1
    g = calibration_term(l, torch.zeros(3, 4, dtype=dtype), torch.ones(3, dtype=dtype), torch.tensor([1, 0, 1]))
    assert g.dtype == dtype and torch.isfinite(g.float()).all()


def test_unknown_activation_is_rejected():
    """An unknown activation name raises, listing the valid ones."""
    with pytest.raises(ValueError, match="leaky_relu"):
        calibration_term(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1), torch.ones(1), activation="gelu")
