"""HPT (arXiv 2509.04419) pinned by hand-computed values and by the released switch rule: per group, SFT on the
expert row where the on-policy pass rate is <= gamma, GRPO on the rollouts elsewhere; each part a token mean over its
own tokens, mixed as pg + sft_coef * sft."""

import math

import pytest
import torch
from calibrl_ext.core import HPT_DEFAULTS, encode_groups, hpt_policy_loss, hpt_sft_groups, part_token_mean


def test_switch_hand_values():
    """Group a: rollouts fail, fail (rate 0); group b: pass, fail (rate 0.5); the expert rows (which pass) never count.
    gamma 0 (released default) switches a only; gamma 0.5 switches both."""
    codes = encode_groups(["a", "a", "a", "b", "b", "b"])
    passed = torch.tensor([False, False, True, True, False, True])
    on_policy = torch.tensor([True, True, False, True, True, False])
    rate, sft = hpt_sft_groups(passed, codes, on_policy, HPT_DEFAULTS["gamma"])
    torch.testing.assert_close(rate, torch.tensor([0.0, 0.0, 0.0, 0.5, 0.5, 0.5]))
    assert sft.tolist() == [True, True, True, False, False, False]
    assert hpt_sft_groups(passed, codes, on_policy, 0.5)[1].all()
    with pytest.raises(ValueError, match="gamma"):
        hpt_sft_groups(passed, codes, on_policy, 1.0)


@pytest.mark.parametrize("gate", range(8))
def test_switch_equals_the_released_solved_count_gate(gate):
    """Unify-Post-Training's ``select_on_off_ada_balance`` (unify_strategy=switch): a group with ``solved <=
    switch_gate`` of its n = 8 rollouts trains with SFT. gamma = gate / 8 gives the same decision for every solved
    count 0..8 (the released Qwen script uses gate 0, the LLaMA one gate 2)."""
    n = 8
    codes = torch.arange(n + 1).repeat_interleave(n)  # group k has k solved rollouts
    passed = (torch.arange(n).repeat(n + 1) < codes).bool()
    _, sft = hpt_sft_groups(passed, codes, torch.ones_like(passed), gate / n)
    released = [solved <= gate for solved in range(n + 1)]
    assert sft.view(n + 1, n)[:, 0].tolist() == released


def _batch():
    """Rows 0-1: rollouts of SFT group a (advantages +-5 must not train); row 2: a's expert row (two tokens, p = 0.5
    and p = 0.25); rows 3-4: rollouts of RL group b (one and two tokens, A = +1 and -0.5, ratio 1)."""
    old = torch.tensor(
        [[-1.0, -1.0], [-1.0, -1.0], [math.log(0.5), math.log(0.25)], [-2.0, float("-inf")], [-1.5, -1.5]]
    )
    new = torch.where(torch.isfinite(old), old, torch.zeros_like(old)).requires_grad_()
    mask = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    adv = torch.tensor([5.0, -5.0, 0.0, 1.0, -0.5])
    is_expert = torch.tensor([False, False, True, False, False])
    sft_group = torch.tensor([True, True, True, False, False])
    return old, new, mask, adv, is_expert, sft_group


def test_loss_hand_computed_with_gradient():
    """PPO part over b's 3 tokens at ratio 1: mean(-A) = (-1 + 0.5 + 0.5) / 3 = 0; SFT part: mean(ln 2, ln 4) =
    1.5 ln 2; loss = 0 + 0.5 * 1.5 ln 2 with sft_coef 0.5. Gradient: a's rollouts get none, each expert token
    -sft_coef / 2 = -0.25, each b token -A / 3."""
    old, new, mask, adv, is_expert, sft_group = _batch()
    loss, metrics = hpt_policy_loss(old, new, adv, mask, is_expert, sft_group, sft_coef=0.5)
    torch.testing.assert_close(metrics["pg_loss"], torch.tensor(0.0))
    torch.testing.assert_close(metrics["hpt_sft_loss"], torch.tensor(1.5 * math.log(2)))
    torch.testing.assert_close(loss, torch.tensor(0.5 * 1.5 * math.log(2)))
    (grad,) = torch.autograd.grad(loss, new)
    expected = torch.tensor([[0.0, 0.0], [0.0, 0.0], [-0.25, -0.25], [-1 / 3, 0.0], [0.5 / 3, 0.5 / 3]])
    torch.testing.assert_close(grad, expected)


def _reference_hpt(old, new, mask, adv, is_expert, sft_group, sft_coef):
    """The released formula restated (Unify-Post-Training ``mix_actor.py``, offline_loss_type=sft, with the
    switch already applied: the batch holds RL groups' rollouts and SFT groups' expert rows):
    ``sft_loss * sft_loss_coef + pg_loss``, sft_loss = masked_mean(-log p) over the off-policy rows, pg_loss =
    masked_mean of the clipped PPO loss over the on-policy rows."""
    keep = (is_expert & sft_group) | (~is_expert & ~sft_group)
    old, new, mask, adv, is_expert = old[keep], new[keep], mask[keep], adv[keep], is_expert[keep]
    off, on = is_expert, ~is_expert
    sft = (-new[off] * mask[off]).sum() / mask[off].sum()
    ratio = torch.exp(new[on] - old[on].nan_to_num(neginf=0.0))
    a = adv[on].unsqueeze(-1)
    pg_mat = torch.maximum(-a * ratio, -a * ratio.clamp(0.8, 1.2))
    pg = (pg_mat * mask[on]).sum() / mask[on].sum()
    return sft * sft_coef + pg


def test_equals_the_released_formula_on_random_rows():
    """Off ratio 1 (random old / new log-probs, advantages within the dual-clip bound) the loss equals the released
    formula on the rows the released switch keeps."""
    gen = torch.Generator().manual_seed(0)
    old, _, mask, _, is_expert, sft_group = _batch()
    old = torch.where(torch.isfinite(old), old, torch.zeros_like(old)) - torch.rand(5, 2, generator=gen)
    new = (old + 0.3 * torch.randn(5, 2, generator=gen)).requires_grad_()
    adv = torch.randn(5, generator=gen)
    loss, _ = hpt_policy_loss(old, new, adv, mask, is_expert, sft_group, sft_coef=1.0)
    torch.testing.assert_close(loss, _reference_hpt(old, new, mask, adv, is_expert, sft_group, 1.0))


def test_micro_batches_with_token_shares_add_up_to_the_whole_batch():
    """With verl's global token count and each part's token share of the batch, two micro-batches (the expert row
    in the first only) add up to the whole batch's per-part means: loss and gradient."""
    old, new, mask, adv, is_expert, sft_group = _batch()
    total = int(mask.sum())
    shares = {"policy_token_share": 3 / total, "expert_token_share": 2 / total, "batch_num_tokens": total}
    whole, _ = hpt_policy_loss(old, new, adv, mask, is_expert, sft_group, sft_coef=0.5)
    (whole_grad,) = torch.autograd.grad(whole, new)
    split = sum(
        hpt_policy_loss(old[i], new[i], adv[i], mask[i], is_expert[i], sft_group[i], sft_coef=0.5, **shares)[0]
        for i in ([0, 1, 2], [3, 4])
    )
    (split_grad,) = torch.autograd.grad(split, new)
    torch.testing.assert_close(split, whole)
    torch.testing.assert_close(split_grad, whole_grad)


def test_part_token_mean_hand_values():
    """Local: sum / own count. Global: sum / (batch_num_tokens * share) * dp; share 0 gives 0; a share outside [0, 1]
    is refused."""
    values = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    part = torch.tensor([[True, False], [True, True]])
    torch.testing.assert_close(part_token_mean(values, part), torch.tensor(8.0 / 3))
    torch.testing.assert_close(part_token_mean(values, part, 0.5, dp_size=2, batch_num_tokens=8), torch.tensor(4.0))
    torch.testing.assert_close(part_token_mean(values, part, 0.0, batch_num_tokens=8), torch.tensor(0.0))
    with pytest.raises(ValueError, match="token_share"):
        part_token_mean(values, part, 1.5, batch_num_tokens=8)
