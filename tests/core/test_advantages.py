"""group_advantages (METHOD §1): on-policy statistics only, released Dr.GRPO default."""

import numpy as np
import pytest
import torch
from calibrl_ext.core import group_advantages


def test_hand_computed_drgrpo_and_grpo():
    """A_i = r_i - mean(on-policy r); with norm_by_std, divided by the unbiased on-policy std + eps."""
    scores = torch.tensor([1.1, 0.1, 1.1, 0.0, 1.1])  # rows 0-2 on-policy, row 3 expert (group a); row 4 group b
    groups = ["a", "a", "a", "a", "b"]
    expert = [False, False, False, True, False]
    mu = (1.1 + 0.1 + 1.1) / 3
    expected = torch.tensor([1.1 - mu, 0.1 - mu, 1.1 - mu, 0.0 - mu, 1.1])  # single-row group b: mu = 0
    torch.testing.assert_close(group_advantages(scores, groups, expert), expected)
    sigma = torch.tensor([1.1, 0.1, 1.1]).std()
    normed = group_advantages(scores, groups, expert, norm_by_std=True)
    torch.testing.assert_close(normed[:4], (scores[:4] - mu) / (sigma + 1e-6))
    assert normed[4].item() == pytest.approx(1.1 / (1.0 + 1e-6))  # single on-policy row: sigma = 1


def test_expert_row_does_not_move_group_statistics():
    """Changing the expert's reward changes only the expert's own advantage."""
    groups = [7, 7, 7, 7]
    expert = torch.tensor([False, False, False, True])
    base = group_advantages(torch.tensor([1.0, 0.0, 0.0, 0.0]), groups, expert)
    moved = group_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), groups, expert)
    torch.testing.assert_close(base[:3], moved[:3])
    assert moved[3] - base[3] == pytest.approx(1.0)


def test_all_equal_group_and_groups_without_expert_are_finite():
    """All-equal on-policy rewards give A = 0 on-policy; with norm_by_std the expert's A_e is the released
    (r_e - mu)/eps (large but finite); groups without an expert are plain groups."""
    scores = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0, 1.0])
    groups = np.array(["x", "x", "x", "x", "y", "y"], dtype=object)
    expert = [False, False, False, True, False, False]
    adv = group_advantages(scores, groups, expert, norm_by_std=True)
    assert torch.isfinite(adv).all()
    assert torch.equal(adv[:3], torch.zeros(3))
    assert adv[3].item() == pytest.approx(-1.0 / 1e-6, rel=1e-4)
    assert adv[4].item() == pytest.approx(-0.5 / (2**0.5 / 2 + 1e-6), rel=1e-5)


def test_matches_verl_grpo_without_expert_rows():
    """With no expert rows the result equals verl's own GRPO / Dr.GRPO estimator on the same batch."""
    from verl.trainer.ppo.core_algos import compute_grpo_outcome_advantage

    gen = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 2, (12,), generator=gen).float() + 0.1 * torch.randint(0, 2, (12,), generator=gen)
    index = np.array([f"u{i // 4}" for i in range(12)] + [], dtype=object)
    rewards = torch.zeros(12, 5)
    rewards[:, -1] = scores
    mask = torch.ones(12, 5)
    for norm in (True, False):
        verl_adv, _ = compute_grpo_outcome_advantage(rewards, mask, index, norm_adv_by_std_in_grpo=norm)
        ours = group_advantages(scores, index, torch.zeros(12, dtype=torch.bool), norm_by_std=norm)
        torch.testing.assert_close(ours.unsqueeze(-1) * mask, verl_adv)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dtypes_and_empty_batch(dtype):
    """float32 and bfloat16 scores keep their dtype and stay finite; an empty batch returns an empty tensor."""
    adv = group_advantages(torch.tensor([1.0, 0.0, 1.0], dtype=dtype), ["g"] * 3, [False, False, True])
    assert adv.dtype == dtype and torch.isfinite(adv.float()).all()
    assert group_advantages(torch.zeros(0), [], torch.zeros(0, dtype=torch.bool)).numel() == 0


def test_bad_inputs_name_the_argument():
    """Length mismatches and unorderable ids raise ValueError naming what is wrong."""
    with pytest.raises(ValueError, match="is_expert"):
        group_advantages(torch.zeros(3), ["a"] * 3, [False, True])
    with pytest.raises(ValueError, match="group_ids"):
        group_advantages(torch.zeros(2), ["a"], [False, False])
    with pytest.raises(ValueError, match="mutually comparable"):
        group_advantages(torch.zeros(2), ["a", 1], [False, False])
