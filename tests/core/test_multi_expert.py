"""Several expert rows per group: the combined baseline and mask (calibrl_ext/losses/multi_expert.py)."""

import math

import pytest
import torch

from calibrl_ext import core
from recipe.calibrl.calibration_fields import compute_calibration_fields

# Group "a": rollouts r0, r1 and experts e0 (3 tokens), e1 (2 tokens). Group "b": rollout r2 and ONE expert e2.
# Group "c": rollout r3, no expert.
UIDS = ["a", "a", "a", "a", "b", "b", "c"]
IS_EXPERT = torch.tensor([False, False, True, True, False, True, False])
OLD = torch.tensor(
    [
        [-1.0, -1.0, -1.0, -1.0],
        [-2.0, -2.0, -2.0, -2.0],
        [-0.5, -1.5, -2.5, -9.0],  # e0: 3 tokens (position 3 is padding)
        [-1.0, -0.5, -7.0, -9.0],  # e1: 2 tokens
        [-3.0, -3.0, -3.0, -3.0],
        [-0.2, -0.4, -9.0, -9.0],  # e2: 2 tokens
        [-1.0, -1.0, -1.0, -1.0],
    ]
)
MASK = torch.tensor(
    [
        [1, 1, 1, 1],
        [1, 1, 1, 0],
        [1, 1, 1, 0],
        [1, 1, 0, 0],
        [1, 1, 1, 1],
        [1, 1, 0, 0],
        [1, 1, 1, 1],
    ],
    dtype=torch.float32,
)


def _baseline(rule, passed=None):
    return core.combined_expert_baseline(OLD, MASK, UIDS, IS_EXPERT, combine=rule, expert_passed=passed)


def test_max_and_mean_by_hand_with_different_lengths():
    """By position over the experts covering it: t0 max(-0.5,-1)=-0.5 mean -0.75; t1 max -0.5 mean -1.0; t2 only e0
    covers (-2.5); t3 no expert covers -> 0. A one-expert group gets its expert; a group without one gets 0."""
    b_max, b_mean = _baseline("max"), _baseline("mean")
    assert b_max[0].tolist() == [-0.5, -0.5, -2.5, 0.0]
    assert b_mean[0].tolist() == [-0.75, -1.0, -2.5, 0.0]
    assert torch.equal(b_max[1], b_max[0]) and torch.equal(b_mean[2], b_mean[0])
    assert b_max[4].tolist() == pytest.approx([-0.2, -0.4, 0.0, 0.0]) and torch.equal(b_max[4], b_mean[4])
    assert b_max[6].tolist() == [0.0] * 4


def test_logmeanexp_lies_between_mean_and_max():
    """log of the mean probability: t0 = log((e^-0.5 + e^-1) / 2); mean <= logmeanexp <= max everywhere."""
    b = _baseline("logmeanexp")
    assert b[0, 0].item() == pytest.approx(math.log((math.exp(-0.5) + math.exp(-1.0)) / 2))
    assert bool((_baseline("mean") <= b + 1e-6).all()) and bool((b <= _baseline("max") + 1e-6).all())


def test_passing_mean_uses_passing_experts_and_falls_back_to_all():
    """Only e1 passed in group a: its values (and 0 past its end); with no passing expert, the mean of all."""
    passed = torch.tensor([True, False, False, True, False, False, False])
    b = _baseline("passing_mean", passed)
    assert b[0].tolist() == [-1.0, -0.5, 0.0, 0.0]
    assert b[4].tolist() == pytest.approx([-0.2, -0.4, 0.0, 0.0])  # group b: e2 failed, fallback = all experts
    none_passed = _baseline("passing_mean", torch.zeros(7, dtype=torch.bool))
    assert torch.equal(none_passed, _baseline("mean"))
    with pytest.raises(ValueError, match="expert_passed"):
        _baseline("passing_mean")


@pytest.mark.parametrize("rule", core.EXPERT_COMBINE_RULES)
def test_one_expert_per_group_is_the_released_baseline_bit_for_bit(rule):
    """With one expert per group every rule equals expert_baseline exactly (and the mask equals calibration_mask)."""
    keep = [0, 1, 2, 4, 5, 6]  # drop e1: one expert per group
    old, mask, uids, expert = OLD[keep], MASK[keep], [UIDS[i] for i in keep], IS_EXPERT[keep]
    passed = torch.tensor([True, False, True, False, False, True])
    combined = core.combined_expert_baseline(old, mask, uids, expert, combine=rule, expert_passed=passed)
    assert torch.equal(combined, core.expert_baseline(old, mask, uids, expert))
    for beyond in core.BEYOND_EXPERT_MODES:
        assert torch.equal(
            core.multi_expert_calibration_mask(mask, uids, expert, beyond),
            core.calibration_mask(mask, uids, expert, beyond),
        )


def test_drop_mask_stops_past_the_longest_expert():
    """beyond_expert=drop: the term applies where some expert of the group covers t (group a: up to 3 tokens)."""
    mask = core.multi_expert_calibration_mask(MASK, UIDS, IS_EXPERT, "drop")
    assert mask[0].tolist() == [1, 1, 1, 0] and mask[4].tolist() == [1, 1, 0, 0]
    assert mask[2].sum() == 0 and mask[6].sum() == 0  # expert rows and the group without an expert


def test_driver_fields_combine_several_experts_and_count_groups():
    """compute_calibration_fields uses the selected rule with several experts (it used to raise 'at most one
    expert'), and the metrics count groups, not expert rows."""
    from recipe.calibrl.calibration_fields import calibration_metrics

    scores = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    is_pad = torch.zeros(7, dtype=torch.bool)
    fields = compute_calibration_fields(OLD, MASK, scores, UIDS, IS_EXPERT, is_pad, 0.1, "zero_baseline", "max")
    assert torch.equal(fields.baseline, _baseline("max"))
    metrics = calibration_metrics(
        fields, OLD, torch.zeros_like(OLD), MASK, IS_EXPERT, is_pad, torch.zeros(7, dtype=torch.bool), 2, 2
    )
    assert metrics["calibrl/expert_rows"] == 3 and metrics["calibrl/expert_groups"] == 2
    assert metrics["calibrl/groups_without_expert"] == 1
