"""The fork path's calibrl_policy_loss aggregates PPO + calibration terms ONCE (issue 9 item 8): pinned equal, in
loss, gradient and metrics, to the former two-aggregation formula agg(L_pg) + lambda * agg(G)."""

import pytest
import torch
from calibrl_ext import core
from calibrl_ext.losses.ppo import _on_policy_mask, _sanitize

from tests.core.test_policy_losses import make_batch


def two_aggregation_reference(b, lam, loss_agg_mode, calibration_token_mask=None):
    """The pre-fix formula: PPO and calibration term aggregated separately and summed."""
    on_mask = _on_policy_mask(b["response_mask"], b["is_expert"])
    old = _sanitize(b["old_log_probs"], on_mask)
    new = _sanitize(b["log_probs"], on_mask)
    pg_mat, _ = core.ppo_clip_token_loss(old, new, b["advantages"])
    calib_mask = on_mask if calibration_token_mask is None else on_mask & calibration_token_mask.bool()
    calib_mat = core.calibration_term(new, b["baseline"], b["advantages"], b["passed"], mask=calib_mask)
    pg = core.aggregate_loss(pg_mat, on_mask, loss_agg_mode)
    calibration = core.aggregate_loss(calib_mat, on_mask, loss_agg_mode)
    return pg + lam * calibration, pg, calibration


@pytest.mark.parametrize("loss_agg_mode", core.LOSS_AGG_MODES)
@pytest.mark.parametrize("lam", [0.0, 0.1, 2.0])
def test_single_aggregation_equals_two_aggregations(loss_agg_mode, lam):
    """Loss, gradient w.r.t. the log-probs and the pg_loss / calibration_loss metrics equal the two-aggregation
    formula for every aggregation mode, with and without a calibration token mask."""
    for seed, token_mask in ((0, None), (3, "half")):
        b = make_batch(seed=seed)
        calib_token_mask = None
        if token_mask == "half":
            calib_token_mask = torch.zeros_like(b["response_mask"])
            calib_token_mask[:, ::2] = 1.0
        new_a = b["log_probs"].detach().clone().requires_grad_()
        loss, metrics = core.calibrl_policy_loss(
            **dict(b, log_probs=new_a), lam=lam, loss_agg_mode=loss_agg_mode, calibration_token_mask=calib_token_mask
        )
        loss.backward()
        new_b = b["log_probs"].detach().clone().requires_grad_()
        ref, ref_pg, ref_calibration = two_aggregation_reference(
            dict(b, log_probs=new_b), lam, loss_agg_mode, calib_token_mask
        )
        ref.backward()
        torch.testing.assert_close(loss, ref)
        torch.testing.assert_close(new_a.grad, new_b.grad)
        torch.testing.assert_close(metrics["pg_loss"], ref_pg.detach())
        torch.testing.assert_close(metrics["calibration_loss"], ref_calibration.detach())


def test_metrics_carry_no_gradient():
    """Only the loss is on the autograd graph: every metric is detached (they are aggregated without gradient)."""
    loss, metrics = core.calibrl_policy_loss(**make_batch(seed=1))
    assert loss.requires_grad
    assert not any(torch.as_tensor(v).requires_grad for v in metrics.values())
