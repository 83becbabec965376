"""expert_baseline and calibration_mask (METHOD §2, §7.4, §7.7)."""

import pytest
import torch
from calibrl_ext.core import calibration_mask, expert_baseline

NEG_INF = float("-inf")


def _batch():
    # group "a": rows 0, 1 on-policy, row 2 expert (2 tokens); group "b": rows 3, 4 on-policy, no expert
    old = torch.tensor(
        [
            [-1.0, -2.0, -3.0, -4.0],
            [-0.5, -0.6, NEG_INF, NEG_INF],
            [-0.1, -0.2, NEG_INF, float("nan")],
            [-9.0, -9.0, -9.0, -9.0],
            [-8.0, -8.0, -8.0, -8.0],
        ]
    )
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 1, 1, 1]])
    groups = ["a", "a", "a", "b", "b"]
    expert = [False, False, True, False, False]
    return old, mask, groups, expert


def test_baseline_is_the_experts_old_log_prob_by_position():
    """Every row of a group gets the expert's l^old at the same position; 0 past its length; 0 without expert;
    padding -inf/NaN of the expert row never leaks."""
    old, mask, groups, expert = _batch()
    b = expert_baseline(old, mask, groups, expert)
    expected_a = torch.tensor([-0.1, -0.2, 0.0, 0.0])
    for row in (0, 1, 2):
        torch.testing.assert_close(b[row], expected_a)
    assert torch.equal(b[3:], torch.zeros(2, 4))
    assert not b.requires_grad


def test_calibration_mask_switches_term_off_where_it_must():
    """The term applies to on-policy tokens of groups with an expert; never to expert rows nor groups without
    one; with beyond_expert='drop' not past the expert's length either."""
    _, mask, groups, expert = _batch()
    keep = calibration_mask(mask, groups, expert)
    assert keep[0].tolist() == [1, 1, 1, 1] and keep[1].tolist() == [1, 1, 0, 0]
    assert keep[2].sum() == 0 and keep[3:].sum() == 0
    drop = calibration_mask(mask, groups, expert, beyond_expert="drop")
    assert drop[0].tolist() == [1, 1, 0, 0]
    with pytest.raises(ValueError, match="beyond_expert"):
        calibration_mask(mask, groups, expert, beyond_expert="truncate")


def test_two_expert_rows_in_one_group_is_an_error():
    """At most one expert trajectory per group: a duplicate is reported, not silently used."""
    old, mask, groups, _ = _batch()
    with pytest.raises(ValueError, match="2 expert rows"):
        expert_baseline(old, mask, groups, [True, False, True, False, False])


def test_all_zero_mask_gives_zero_baseline():
    """An all-zero response mask (e.g. a pad row) gives a zero, finite baseline."""
    old = torch.full((2, 3), NEG_INF)
    b = expert_baseline(old, torch.zeros(2, 3), ["g", "g"], [False, True])
    assert torch.equal(b, torch.zeros(2, 3))
