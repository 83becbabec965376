"""Driver-side pieces of the trainer on hand-made batches: schedule, calibration fields, metrics."""

import numpy as np
import pytest
import torch
from recipe.calibrl.calibration_fields import calibration_metrics, compute_calibration_fields
from recipe.calibrl.schedule import ExpertSchedule, experts_outside_pass_rate_window, groups_in_pass_rate_window
from recipe.calibrl.settings import CalibRLRecipeSettings

SOLUTIONS = ["<think>a</think><answer>1</answer>", "", "<think>b</think><answer>2</answer>", "  "]


def test_warmup_and_grpo_mode_give_no_expert_rows():
    """GRPO-only warm-up steps and calibrl.mode=grpo schedule no expert row at all."""
    warm = ExpertSchedule(CalibRLRecipeSettings(grpo_warmup_steps=2))
    assert not warm.expert_rows_for_batch(SOLUTIONS, 1).any() and not warm.expert_rows_for_batch(SOLUTIONS, 2).any()
    assert warm.expert_rows_for_batch(SOLUTIONS, 3).tolist() == [True, False, True, False]
    assert not ExpertSchedule(CalibRLRecipeSettings(mode="grpo")).expert_rows_for_batch(SOLUTIONS, 5).any()


def test_keep_probability_is_seeded_per_step_and_roughly_right():
    """Keep decisions are a deterministic function of (seed, step): a resumed run repeats them; their rate follows
    calibrl.expert_keep_prob; prompts without a solution are never kept."""
    schedule = ExpertSchedule(CalibRLRecipeSettings(expert_keep_prob=0.3, schedule_seed=7))
    many = ["<answer>x</answer>"] * 4000
    first = schedule.expert_rows_for_batch(many, 11)
    assert np.array_equal(first, schedule.expert_rows_for_batch(many, 11))
    assert not np.array_equal(first, schedule.expert_rows_for_batch(many, 12))
    assert 0.27 < first.mean() < 0.33
    assert not ExpertSchedule(CalibRLRecipeSettings(expert_keep_prob=1.0)).expert_rows_for_batch([""], 1).any()
    assert not ExpertSchedule(CalibRLRecipeSettings(expert_keep_prob=0.0)).expert_rows_for_batch(many, 1).any()


def test_pass_rate_window_counts_on_policy_rows_only():
    """The group pass rate uses on-policy rows only (not the expert or pads); the window is inclusive."""
    passed = torch.tensor([True, False, False, True, True, True])
    codes = torch.tensor([0, 0, 0, 0, 1, 1])
    on_policy = torch.tensor([True, True, True, False, True, False])  # row 3 expert, row 5 pad
    rate, inside = groups_in_pass_rate_window(passed, codes, on_policy, (0.0, 0.5))
    assert rate.tolist() == pytest.approx([1 / 3] * 4 + [1.0] * 2)
    assert inside.tolist() == [True] * 4 + [False] * 2


def _batch():
    """Group a: 2 rollouts + expert (3 tokens); group b: 2 rollouts, no expert; one pad row."""
    old = torch.tensor(
        [[-1.0, -1.0, -1.0, -1.0], [-3.0, -3.0, 0.0, 0.0], [-2.0, -0.5, -4.0, 0.0],
         [-1.0, -1.0, 0.0, 0.0], [-2.0, -2.0, -2.0, -2.0], [-9.0, 0.0, 0.0, 0.0]]
    )  # fmt: skip
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]]).float()
    scores = torch.tensor([1.1, 0.1, 1.1, 0.0, 1.1, 0.0])
    uids = np.array(["a", "a", "a", "b", "b", "pad0"], dtype=object)
    is_expert = torch.tensor([False, False, True, False, False, False])
    is_pad = torch.tensor([False, False, False, False, False, True])
    return old, mask, scores, uids, is_expert, is_pad


@pytest.mark.parametrize("beyond_expert", ["zero_baseline", "drop"])
def test_calibration_fields_on_a_hand_made_batch(beyond_expert):
    """Every row of group a gets the expert's old log-probs by position (0 past its 3 tokens); group b and the pad
    get b = 0 and no calibration; the expert row itself is never calibrated; s_i = r_i > 0.1."""
    old, mask, scores, uids, is_expert, is_pad = _batch()
    fields = compute_calibration_fields(old, mask, scores, uids, is_expert, is_pad, 0.1, beyond_expert)
    expected_b = torch.tensor([-2.0, -0.5, -4.0, 0.0])
    for row in (0, 1, 2):
        assert torch.equal(fields.baseline[row], expected_b)
    assert torch.equal(fields.baseline[3:], torch.zeros(3, 4))
    tail = 0.0 if beyond_expert == "drop" else 1.0
    assert fields.calibration_mask[0].tolist() == [1, 1, 1, tail]
    assert fields.calibration_mask[1].tolist() == [1, 1, 0, 0]
    assert fields.calibration_mask[2:].sum() == 0
    assert fields.passed.tolist() == [True, False, True, False, True, False]
    assert fields.group_has_expert.tolist() == [True, True, True, False, False, False]


def test_pass_rate_window_selects_the_expert_rows_to_remove():
    """An expert row is removed (its calibration term switched off, METHOD §7.3) exactly when its group's on-policy
    pass rate is outside the window; rollouts and groups without an expert are never selected."""
    scores = torch.tensor([1.1, 0.1, 1.1, 1.1, 0.0, 0.0, 1.1])
    uids = np.array(["a", "a", "a", "b", "b", "b", "c"], dtype=object)
    is_expert = torch.tensor([False, False, True, False, False, True, False])
    # group a passes 1/2, group b 1/2, group c (no expert) 1/1
    assert experts_outside_pass_rate_window(scores, uids, is_expert, 0.1, (0.0, 1.0)).sum() == 0
    assert experts_outside_pass_rate_window(scores, uids, is_expert, 0.1, (0.0, 0.4)).tolist() == [
        False, False, True, False, False, True, False]  # fmt: skip
    assert experts_outside_pass_rate_window(scores, uids, is_expert, 0.1, (0.5, 0.5)).sum() == 0


def test_metrics_on_a_hand_made_batch():
    """Step metrics: on-policy entropy excludes expert and pad rows; expert entropy, log-prob and pass rate are the
    expert row's; above/below-baseline fractions are over calibrated tokens of passed / failed rows."""
    old, mask, scores, uids, is_expert, is_pad = _batch()
    fields = compute_calibration_fields(old, mask, scores, uids, is_expert, is_pad, 0.1, "zero_baseline")
    entropy = torch.full((6, 4), 1.0)
    entropy[2] = 5.0  # expert row
    entropy[5] = 9.0  # pad row
    m = calibration_metrics(fields, old, entropy, mask, is_expert, is_pad, torch.tensor([False, False, True] + [False] * 3),
                            groups_offered_expert=1, groups_with_solution=2)  # fmt: skip
    assert m["calibrl/entropy_on_policy"] == pytest.approx(1.0)
    assert m["calibrl/expert_entropy"] == pytest.approx(5.0)
    assert m["calibrl/expert_log_prob"] == pytest.approx((-2.0 - 0.5 - 4.0) / 3)
    assert m["calibrl/expert_pass_rate"] == 1.0 and m["calibrl/expert_truncated_frac"] == 1.0
    assert m["calibrl/expert_kept_rate"] == 0.5 and m["calibrl/groups_without_expert"] == 1.0
    # row 0 (passed): l = -1 vs b = [-2, -0.5, -4, 0]: above, below, above, below
    assert m["calibrl/frac_above_baseline_passed"] == pytest.approx(0.5)
    # row 1 (failed): l = -3 vs b = [-2, -0.5]: below, below
    assert m["calibrl/frac_below_baseline_failed"] == pytest.approx(1.0)
    assert m["calibrl/calibrated_token_frac"] == pytest.approx(6 / 12)  # rows 0, 1 of 0, 1, 3, 4


def test_rollout_correction_metrics_leave_the_expert_row_out():
    """The expert row's rollout log-probs are the agent loop's zeros: over all rows verl's rollout_corr/kl is 1/3
    with one expert row among three (and rollout_rs masks the expert row); over the on-policy rows it is 0 and
    nothing is rejected."""
    from omegaconf import OmegaConf
    from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_rejection_mask

    from recipe.calibrl.calibration_fields import on_policy_rollout_corr_metrics

    old = torch.full((3, 4), -1.0)
    rollout = old.clone()
    rollout[2] = 0.0  # the expert row
    mask = torch.ones(3, 4)
    config = OmegaConf.create({"rollout_is": None, "rollout_rs": "seq_mean_k1", "rollout_rs_threshold": "0.9_1.1"})
    _, rejected_mask, all_rows = compute_rollout_correction_and_rejection_mask(
        old_log_prob=old, rollout_log_prob=rollout, response_mask=mask, rollout_is=None, rollout_is_threshold=2.0,
        rollout_is_batch_normalize=False, rollout_rs="seq_mean_k1", rollout_rs_threshold="0.9_1.1",
    )  # fmt: skip
    assert float(all_rows["rollout_corr/kl"]) == pytest.approx(1 / 3) and rejected_mask[2].sum() == 0
    ours = on_policy_rollout_corr_metrics(old, rollout, mask, torch.tensor([True, True, False]), config)
    assert ours["rollout_corr/kl"] == 0.0 and ours["rollout_corr/rollout_rs_masked_fraction"] == 0.0
    assert on_policy_rollout_corr_metrics(old, rollout, mask, torch.zeros(3, dtype=torch.bool), config) == {}


def test_expert_row_metrics_keep_only_per_row_statistics_under_their_own_names():
    """verl's data metrics over expert rows are renamed calibrl/expert_<name>; throughput/timing are not copied."""
    from recipe.calibrl.calibration_fields import expert_row_metrics, prompt_count_metrics

    renamed = expert_row_metrics({"critic/score/mean": 1.0, "response_length/mean": 7.0, "perf/throughput": 3.0,
                                  "training/global_step": 1})  # fmt: skip
    assert renamed == {"calibrl/expert_critic/score/mean": 1.0, "calibrl/expert_response_length/mean": 7.0}
    assert prompt_count_metrics(3, 4) == {"calibrl/expert_kept_rate": 0.75, "calibrl/groups_with_expert_solution": 4.0}
