"""The fork path's finite-input fast path (issue 9 item 8): ``core.calibrl_policy_loss`` skips its padding selects
when every log-prob and baseline entry is finite. Pinned here: the same loss, gradient and metrics as the select
path, and the same loss and gradient as the registered verl loss, on batches with the edge cases a fork produces
(a group without an expert row, an all-masked row, expert rows, a calibration mask ending inside a row)."""

import pytest
import torch
from calibrl_ext import core, verl_losses
from calibrl_ext.losses.ppo import _all_finite
from verl.trainer.ppo.core_algos import get_policy_loss_fn

from tests.core.conftest import build_actor_config

GROUPS, ON_POLICY_ROWS, T = 4, 3, 9


def edge_case_batch(seed: int, padding: str = "zero"):
    """``GROUPS`` groups of ``ON_POLICY_ROWS`` on-policy rows + an expert row; group 1 has no expert row (its expert
    is an on-policy row here), row 2 is all-masked, the calibration mask stops two tokens before the expert's end.

    ``padding``: the value past each row's end: ``zero`` (verl's padding), ``garbage`` (finite, not zero) or
    ``nonfinite`` (-inf old log-probs, NaN new log-probs, and a NaN baseline wherever the calibration term is off:
    forces the select path)."""
    gen = torch.Generator().manual_seed(seed)
    rows = GROUPS * (ON_POLICY_ROWS + 1)
    groups = [f"g{i // (ON_POLICY_ROWS + 1)}" for i in range(rows)]
    is_expert = torch.tensor([i % (ON_POLICY_ROWS + 1) == ON_POLICY_ROWS for i in range(rows)])
    is_expert[2 * (ON_POLICY_ROWS + 1) - 1] = False  # group 1: no expert row
    lengths = torch.randint(1, T + 1, (rows,), generator=gen)
    lengths[2] = 0  # an all-masked on-policy row
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    old = torch.randn(rows, T, generator=gen) - 1.0
    new = old + 0.3 * torch.randn(rows, T, generator=gen)
    scores = torch.randint(0, 2, (rows,), generator=gen).float()
    advantages = core.group_advantages(scores, groups, is_expert, norm_by_std=True).unsqueeze(-1) * mask
    baseline = core.expert_baseline(old, mask, groups, is_expert)
    calibration = core.calibration_mask(mask, groups, is_expert, beyond_expert="drop")
    calibration[:, -2:] = 0.0
    pad = {"zero": (0.0, 0.0), "garbage": (-7.5, 3.25), "nonfinite": (float("-inf"), float("nan"))}[padding]
    valid = mask.bool()
    old = torch.where(valid, old, torch.tensor(pad[0]))
    new = torch.where(valid, new, torch.tensor(pad[1]))
    if padding == "nonfinite":
        baseline = torch.where(calibration.bool(), baseline, torch.tensor(float("nan")))
    return {
        "old_log_probs": old,
        "log_probs": new,
        "advantages": advantages,
        "response_mask": mask,
        "baseline": baseline,
        "passed": scores > 0.5,
        "is_expert": is_expert,
        "calibration_token_mask": calibration,
    }


def fork_loss(batch, loss_agg_mode, **global_batch_info):
    log_probs = batch["log_probs"].detach().clone().requires_grad_()
    loss, metrics = core.calibrl_policy_loss(
        **dict(batch, log_probs=log_probs), loss_agg_mode=loss_agg_mode, **global_batch_info
    )
    (grad,) = torch.autograd.grad(loss, log_probs)
    return loss.detach(), grad, metrics


def registered_loss(batch, loss_agg_mode, **global_batch_info):
    """The registered ``calibrl`` loss called as verl's ``ppo_loss`` calls it (bool mask, per-row fields)."""
    config = build_actor_config(loss_agg_mode=loss_agg_mode)
    config.global_batch_info.update(global_batch_info)
    log_probs = batch["log_probs"].detach().clone().requires_grad_()
    extras = {
        verl_losses.EXPERT_BASELINE: batch["baseline"],
        verl_losses.CALIBRATION_MASK: batch["calibration_token_mask"],
        verl_losses.PASSED: batch["passed"],
        verl_losses.IS_EXPERT: batch["is_expert"],
    }
    with verl_losses.micro_batch_extras(**extras) as parts:
        loss, _ = get_policy_loss_fn("calibrl")(
            old_log_prob=batch["old_log_probs"],
            log_prob=log_probs,
            advantages=batch["advantages"],
            response_mask=batch["response_mask"].bool(),
            loss_agg_mode=loss_agg_mode,
            config=config,
        )
    (grad,) = torch.autograd.grad(loss, log_probs)
    return loss.detach(), grad, parts


def _global_info(batch):
    on_policy = batch["response_mask"].bool() & ~batch["is_expert"][:, None]
    return {
        "dp_size": 1,
        "batch_num_tokens": int(on_policy.sum()),
        "global_batch_size": int(on_policy.any(-1).sum()),
    }


@pytest.mark.parametrize("loss_agg_mode", core.LOSS_AGG_MODES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fork_path_equals_registered_loss_and_gradient(loss_agg_mode, seed):
    """On verl-padded (finite) inputs the fork path and the registered loss give the same loss, gradient w.r.t. the
    log-probs and calibration part to 1e-6, with a group without an expert row and an all-masked row."""
    batch = edge_case_batch(seed)
    info = _global_info(batch)
    loss, grad, metrics = fork_loss(batch, loss_agg_mode, **info)
    ref_loss, ref_grad, parts = registered_loss(batch, loss_agg_mode, **info)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(metrics["calibration_loss"], parts["calibration_loss"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(metrics["pg_loss"], parts["pg_loss"], rtol=1e-6, atol=1e-6)
    assert bool(grad[2].eq(0).all()), "the all-masked row must receive no gradient"
    assert bool(grad[batch["is_expert"]].eq(0).all()), "expert rows must receive no gradient"


@pytest.mark.parametrize("loss_agg_mode", core.LOSS_AGG_MODES)
@pytest.mark.parametrize("padding", ["zero", "garbage"])
def test_fast_path_equals_select_path(loss_agg_mode, padding):
    """Finite inputs (fast path) give exactly the loss, metrics and gradient of the same batch with -inf / NaN
    padding (select path): what lies outside the masks cannot reach the result either way."""
    info = _global_info(edge_case_batch(0))
    fast = fork_loss(edge_case_batch(0, padding), loss_agg_mode, **info)
    safe = fork_loss(edge_case_batch(0, "nonfinite"), loss_agg_mode, **info)
    assert torch.equal(fast[0], safe[0])
    assert torch.equal(fast[1], safe[1])
    assert fast[2].keys() == safe[2].keys()
    for name in fast[2]:
        assert torch.equal(torch.as_tensor(fast[2][name]), torch.as_tensor(safe[2][name])), name


def test_all_finite_detects_nonfinite_entries_and_does_not_overflow_half_precision():
    """_all_finite is False for any NaN / +-inf entry, True for finite tensors, also for a float16 tensor whose
    float16 sum would overflow (it sums half precision in float32)."""
    finite = torch.randn(4, 6)
    assert _all_finite(finite, finite.double())
    for bad in (float("nan"), float("inf"), float("-inf")):
        broken = finite.clone()
        broken[3, 5] = bad
        assert not _all_finite(finite, broken)
    assert _all_finite(torch.full((70_000,), -1.0, dtype=torch.float16))
    assert _all_finite(torch.full((70_000,), -1.0, dtype=torch.bfloat16))
