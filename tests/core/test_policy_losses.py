"""calibrl_policy_loss and the LUFFY / RL-PLUS baselines (METHOD §3, §5, §7.9), pure torch."""

import pytest
import torch
from calibrl_ext import core

MODES = list(core.LOSS_AGG_MODES)


def make_batch(seed=0, n_groups=2, n_on=3, T=6, dtype=torch.float32):
    """Groups of n_on on-policy rows + 1 expert row, ragged lengths, -inf past each row's end."""
    gen = torch.Generator().manual_seed(seed)
    n = n_groups * (n_on + 1)
    groups = [f"g{i // (n_on + 1)}" for i in range(n)]
    is_expert = torch.tensor([(i % (n_on + 1)) == n_on for i in range(n)])
    lengths = torch.randint(2, T + 1, (n,), generator=gen)
    mask = (torch.arange(T)[None, :] < lengths[:, None]).float()
    old = torch.randn(n, T, generator=gen) - 1.5
    new = old + 0.3 * torch.randn(n, T, generator=gen)
    old = torch.where(mask.bool(), old, torch.tensor(float("-inf")))
    new = torch.where(mask.bool(), new, torch.tensor(float("nan")))
    scores = torch.randint(0, 2, (n,), generator=gen).float() + 0.1
    adv_row = core.group_advantages(scores, groups, is_expert)
    advantages = adv_row.unsqueeze(-1) * mask
    baseline = core.expert_baseline(old, mask, groups, is_expert)
    passed = scores > 0.1
    return dict(
        old_log_probs=old.to(dtype), log_probs=new.to(dtype).requires_grad_(), advantages=advantages.to(dtype),
        response_mask=mask.to(dtype), baseline=baseline.to(dtype), passed=passed, is_expert=is_expert,
    )  # fmt: skip


def test_hand_computed_single_token_loss():
    """One on-policy token, one expert token: L = PPO + lambda * |A| * LeakyReLU(-s (l - b)), expert excluded."""
    old = torch.tensor([[-1.0], [-0.7]])
    new = torch.tensor([[-0.9], [-0.2]], requires_grad=True)
    adv = torch.tensor([[0.5], [0.3]])
    mask = torch.ones(2, 1)
    baseline = torch.tensor([[-0.7], [-0.7]])
    loss, metrics = core.calibrl_policy_loss(old, new, adv, mask, baseline, [True, True], [False, True])
    ratio = torch.exp(torch.tensor(0.1))
    pg = -0.5 * torch.minimum(ratio, torch.tensor(1.2))
    x = -(-0.9 + 0.7)  # = 0.2 > 0: full weight
    expected = pg + 0.1 * 0.5 * x
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert metrics["calibration_loss"].item() == pytest.approx(0.5 * x, rel=1e-6)
    loss.backward()
    assert new.grad[1].item() == 0.0  # expert row receives no gradient


@pytest.mark.parametrize("mode", MODES)
def test_ppo_part_and_aggregation_match_verl(mode):
    """The PPO part and aggregation are verl's: with lambda = 0 the loss equals verl's vanilla loss, and
    aggregate_loss equals verl's agg_loss with and without global batch info."""
    from verl.trainer.ppo.core_algos import agg_loss, compute_policy_loss_vanilla
    from verl.workers.config import ActorConfig

    b = make_batch()
    on = b["response_mask"] * (~b["is_expert"]).float().unsqueeze(-1)
    old = torch.where(on.bool(), b["old_log_probs"], torch.zeros(()))
    new = torch.where(on.bool(), b["log_probs"], torch.zeros(()))
    config = ActorConfig(
        strategy="fsdp", ppo_mini_batch_size=1, ppo_micro_batch_size_per_gpu=1, rollout_n=1, loss_agg_mode=mode
    )
    verl_loss, _ = compute_policy_loss_vanilla(old, new, b["advantages"], on, mode, config=config)
    ours, _ = core.calibrl_policy_loss(**b, lam=0.0, loss_agg_mode=mode)
    torch.testing.assert_close(ours, verl_loss)
    mat = torch.randn_like(on)
    torch.testing.assert_close(core.aggregate_loss(mat, on, mode), agg_loss(mat, on, mode))
    info = dict(dp_size=2, batch_num_tokens=37, global_batch_size=9, loss_scale_factor=4)
    torch.testing.assert_close(core.aggregate_loss(mat, on, mode, **info), agg_loss(mat, on, mode, **info))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("loss_name", ["calibrl", "luffy", "rlplus"])
def test_micro_batch_invariance_with_global_batch_info(mode, loss_name):
    """With verl's global batch info, the sum of micro-batch losses (and of their gradients) equals the loss of
    the whole mini-batch, whatever the split (what gradient accumulation relies on)."""
    b = make_batch(seed=3, n_groups=3)
    n = b["response_mask"].shape[0]
    tokens_mask = b["response_mask"].bool()
    if loss_name == "calibrl":
        tokens_mask = tokens_mask & ~b["is_expert"].unsqueeze(-1)
    info = dict(batch_num_tokens=int(tokens_mask.sum()), global_batch_size=int(tokens_mask.any(-1).sum()),
                loss_scale_factor=6)  # fmt: skip

    def loss_of(rows):
        part = {k: (v[rows] if isinstance(v, torch.Tensor) else v) for k, v in b.items()}
        if loss_name == "calibrl":
            return core.calibrl_policy_loss(**part, loss_agg_mode=mode, **info)[0]
        part.pop("baseline"), part.pop("passed")
        fn = core.luffy_policy_loss if loss_name == "luffy" else core.rlplus_policy_loss
        return fn(**part, loss_agg_mode=mode, **info)[0]

    whole = loss_of(torch.arange(n))
    (whole_grad,) = torch.autograd.grad(whole, b["log_probs"])
    for split in (2, 4):
        chunks = torch.arange(n).chunk(split)
        accumulated = sum(loss_of(rows) for rows in chunks)
        torch.testing.assert_close(accumulated, whole)
        (grad,) = torch.autograd.grad(accumulated, b["log_probs"])
        torch.testing.assert_close(torch.nan_to_num(grad), torch.nan_to_num(whole_grad))


def test_expert_rows_never_affect_the_calibrl_loss():
    """Expert rows contribute to no CalibRL loss term: changing their current log-probs changes nothing."""
    b = make_batch(seed=5)
    loss_a, _ = core.calibrl_policy_loss(**b)
    changed = b["log_probs"].detach().clone()
    changed[b["is_expert"]] += 3.0
    loss_b, _ = core.calibrl_policy_loss(**{**b, "log_probs": changed})
    torch.testing.assert_close(loss_a, loss_b)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("loss_name", ["calibrl", "luffy", "rlplus"])
def test_edge_cases_are_finite(dtype, loss_name):
    """Finite loss and gradient for: -inf/NaN at padding, a group with one on-policy row, all-equal groups,
    groups without an expert, and an all-zero mask; float32 and bfloat16."""
    cases = []
    b = make_batch(dtype=dtype)
    cases.append(b)
    single = make_batch(n_on=1, dtype=dtype)
    cases.append(single)
    equal = make_batch(dtype=dtype)
    equal["advantages"] = torch.zeros_like(equal["advantages"])
    cases.append(equal)
    no_expert = make_batch(dtype=dtype)
    no_expert["is_expert"] = torch.zeros_like(no_expert["is_expert"])
    no_expert["baseline"] = torch.zeros_like(no_expert["baseline"])
    cases.append(no_expert)
    empty = make_batch(dtype=dtype)
    empty["response_mask"] = torch.zeros_like(empty["response_mask"])
    cases.append(empty)
    for case in cases:
        case = dict(case, log_probs=case["log_probs"].detach().requires_grad_())
        if loss_name == "calibrl":
            loss, metrics = core.calibrl_policy_loss(**case)
        else:
            case.pop("baseline"), case.pop("passed")
            fn = core.luffy_policy_loss if loss_name == "luffy" else core.rlplus_policy_loss
            loss, metrics = fn(**case)
        loss.backward()
        assert torch.isfinite(loss.float()), loss_name
        assert torch.isfinite(case["log_probs"].grad.float()).all()
        assert all(torch.isfinite(torch.as_tensor(v).float()).all() for v in metrics.values())


def test_expert_advantage_blow_up_is_guarded():
    """METHOD §7.9: with norm_by_std an all-equal group gives A_e ~ 1e6; LUFFY/RL-PLUS clamp |A_e| so the loss
    stays bounded; the clamp is a setting (None keeps the raw value)."""
    groups = ["g"] * 4
    is_expert = torch.tensor([False, False, False, True])
    adv_row = core.group_advantages(torch.tensor([1.0, 1.0, 1.0, 0.0]), groups, is_expert, norm_by_std=True)
    assert abs(adv_row[3]) > 1e5
    mask = torch.ones(4, 3)
    advantages = adv_row.unsqueeze(-1) * mask
    old = torch.full((4, 3), -1.0)
    new = torch.full((4, 3), -1.0, requires_grad=True)
    for fn in (core.luffy_policy_loss, core.rlplus_policy_loss):
        guarded, _ = fn(old, new, advantages, mask, is_expert, expert_adv_clip=5.0)
        assert abs(guarded.item()) <= 5.0
        raw, _ = fn(old, new, advantages, mask, is_expert, expert_adv_clip=None)
        assert abs(raw.item()) > 1e4


def test_luffy_and_rlplus_expert_token_formulas():
    """Expert-token losses equal their §5 formulas: -A p/(p+gamma) and -A 2p/(p_old + 0.5(p_old+1)) (1-p)^0.5."""
    l = torch.log(torch.tensor([[0.3, 0.8]]))
    l_old = torch.log(torch.tensor([[0.4, 0.5]]))
    adv = torch.tensor([0.7])
    p, p_old = torch.exp(l), torch.exp(l_old)
    torch.testing.assert_close(core.luffy_expert_token_loss(l, adv, gamma=0.1), -0.7 * p / (p + 0.1))
    expected = -0.7 * 2 * p / (p_old + 0.5 * (p_old + 1)) * (1 - p) ** 0.5
    torch.testing.assert_close(core.rlplus_expert_token_loss(l, l_old, adv), expected)


def test_luffy_trains_expert_rows_and_calibrl_does_not():
    """LUFFY puts gradient on expert tokens (towards the expert when A_e > 0); CalibRL puts none there."""
    b = make_batch(seed=2)
    b["advantages"] = b["advantages"].abs() + b["response_mask"] * 0.5
    luffy_in = {k: v for k, v in b.items() if k not in ("baseline", "passed")}
    loss, _ = core.luffy_policy_loss(**luffy_in)
    (grad,) = torch.autograd.grad(loss, b["log_probs"])
    expert_tokens = b["response_mask"].bool() & b["is_expert"].unsqueeze(-1)
    assert (grad[expert_tokens] < 0).all()  # descent raises the expert tokens' log-probs
    loss_c, _ = core.calibrl_policy_loss(**b)
    (grad_c,) = torch.autograd.grad(loss_c, b["log_probs"])
    assert grad_c[b["is_expert"]].abs().sum() == 0


def test_lambda_zero_and_metrics_split():
    """lambda = 0 gives exactly the PPO part; metrics report PPO and calibration parts separately."""
    b = make_batch(seed=4)
    loss0, m0 = core.calibrl_policy_loss(**b, lam=0.0)
    assert loss0.item() == pytest.approx(m0["pg_loss"].item())
    loss1, m1 = core.calibrl_policy_loss(**b, lam=0.1)
    assert loss1.item() == pytest.approx(m1["pg_loss"].item() + 0.1 * m1["calibration_loss"].item(), rel=1e-6)
    for key in ("pg_clipfrac", "ppo_kl", "above_baseline_passed", "below_baseline_failed"):
        assert key in m1
