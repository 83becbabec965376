"""CHORD (arXiv 2508.11408) pinned by hand-computed values: the mu schedule, the phi-weighted expert NLL and the mix
(1 - mu) * PPO + mu * SFT-phi, each part averaged over its own tokens."""

import math

import pytest
import torch
from calibrl_ext.losses.chord import CHORD_DEFAULTS, chord_expert_token_loss, chord_mu, chord_policy_loss


def test_mu_schedule_hand_values():
    """Linear warm-up to the peak, cosine decay to the valley, valley afterwards; the defaults give mu = 0.1."""
    assert chord_mu(5, warmup_steps=10, decay_steps=20, peak=0.5, valley=0.1) == pytest.approx(0.25)
    assert chord_mu(10, warmup_steps=10, decay_steps=20, peak=0.5, valley=0.1) == pytest.approx(0.5)
    assert chord_mu(20, warmup_steps=10, decay_steps=20, peak=0.5, valley=0.1) == pytest.approx(0.3)
    assert chord_mu(30, warmup_steps=10, decay_steps=20, peak=0.5, valley=0.1) == pytest.approx(0.1)
    defaults = {k: v for k, v in CHORD_DEFAULTS.items() if k.startswith("mu_")}
    kwargs = {"warmup_steps": defaults["mu_warmup_steps"], "decay_steps": defaults["mu_decay_steps"],
              "peak": defaults["mu_peak"], "valley": defaults["mu_valley"]}  # fmt: skip
    assert all(chord_mu(s, **kwargs) == pytest.approx(0.1) for s in (0, 1, 100))


def test_phi_weighted_expert_nll_value_and_gradient():
    """-p(1-p) log p per token with p(1-p) detached: at p = 0.5 the loss is 0.25 ln 2 and d/dl = -0.25."""
    log_p = torch.tensor([[math.log(0.5), math.log(0.9)]], requires_grad=True)
    loss = chord_expert_token_loss(log_p)
    torch.testing.assert_close(loss.detach(), torch.tensor([[0.25 * math.log(2), -0.09 * math.log(0.9)]]))
    loss.sum().backward()
    torch.testing.assert_close(log_p.grad, torch.tensor([[-0.25, -0.09]]))
    torch.testing.assert_close(chord_expert_token_loss(log_p.detach(), enable_phi=False), -log_p.detach())


def test_mix_hand_computed():
    """Two on-policy rows (one token each, ratio 1) and one expert row (two tokens): with mu = 0.25 the loss is
    0.75 * mean(-A) + 0.25 * mean(-p(1-p) log p), the padding of row 0 ignored."""
    old = torch.tensor([[-1.0, float("-inf")], [-2.0, -2.0], [math.log(0.5), math.log(0.5)]])
    new = old.clone()
    mask = torch.tensor([[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    adv = torch.tensor([1.0, -0.5, 7.0])
    loss, metrics = chord_policy_loss(old, new, adv, mask, torch.tensor([False, False, True]), mu=0.25)
    expected_pg = (-1.0 + 0.5) / 2
    expected_sft = 0.25 * math.log(2)
    torch.testing.assert_close(metrics["pg_loss"], torch.tensor(expected_pg))
    torch.testing.assert_close(metrics["chord_expert_loss"], torch.tensor(expected_sft))
    torch.testing.assert_close(loss, torch.tensor(0.75 * expected_pg + 0.25 * expected_sft))
    with pytest.raises(ValueError, match="mu"):
        chord_policy_loss(old, new, adv, mask, torch.tensor([False, False, True]), mu=1.5)


def _reference_mix_chord(old, new, mask, adv, is_expert, mu):
    """Trinity-RFT ``MIXCHORDPolicyLossFn`` with one micro-batch per mini-batch (its per-micro-batch weights are then
    1), restated: ``(1 - mu) * grpo_loss + mu * sft_loss`` with grpo_loss the token ``masked_mean`` of the clipped PPO
    loss over the usual rows and sft_loss (``SFTPhiLossFn``) the token ``masked_mean`` of
    ``-log p * sg(p (1 - p))`` over the expert rows."""
    on, off = ~is_expert, is_expert
    ratio = torch.exp(new[on] - old[on])
    a = adv[on].unsqueeze(-1)
    grpo = (torch.maximum(-a * ratio, -a * ratio.clamp(0.8, 1.2)) * mask[on]).sum() / mask[on].sum()
    p = torch.exp(new[off]).detach()
    sft = (-new[off] * p * (1 - p) * mask[off]).sum() / mask[off].sum()
    return (1 - mu) * grpo + mu * sft


def test_equals_trinity_formula_on_random_rows_and_micro_batches_add_up():
    """On random rows the loss equals the restated Trinity-RFT formula (loss and gradient); with verl's global token
    count and each part's token share, two micro-batches (expert rows in one only) add up to the same loss."""
    gen = torch.Generator().manual_seed(1)
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    old = -torch.rand(4, 3, generator=gen) - 0.1
    new = (old + 0.2 * torch.randn(4, 3, generator=gen)).requires_grad_()
    adv = torch.randn(4, generator=gen)
    is_expert = torch.tensor([False, True, False, False])
    loss, _ = chord_policy_loss(old, new, adv, mask, is_expert, mu=0.3)
    reference = _reference_mix_chord(old, new, mask, adv, is_expert, 0.3)
    torch.testing.assert_close(loss, reference)
    torch.testing.assert_close(torch.autograd.grad(loss, new)[0], torch.autograd.grad(reference, new)[0])
    total = int(mask.sum())
    shares = {"policy_token_share": 6 / total, "expert_token_share": 3 / total, "batch_num_tokens": total}
    split = sum(chord_policy_loss(old[i], new[i], adv[i], mask[i], is_expert[i], mu=0.3, **shares)[0]
                for i in ([0, 1], [2, 3]))  # fmt: skip
    torch.testing.assert_close(split, loss)
