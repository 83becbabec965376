"""CHORD: GRPO on on-policy rows mixed with a phi-weighted SFT loss on the expert row (pure torch, no verl import).

Paper: "On-Policy RL Meets Off-Policy Experts: Harmonizing Supervised Fine-Tuning and Reinforcement Learning via
Dynamic Weighting" (CHORD), https://arxiv.org/abs/2508.11408.

    L = (1 - mu) * L_GRPO + mu * L_SFT-phi,   L_SFT-phi = mean over expert tokens of -phi(p) * log p,  phi = p (1 - p)

with phi(p) detached (a per-token weight, not a gradient path) and mu on a linear warm-up then cosine decay. The
formula and every default below were read from the public reference implementation, Trinity-RFT
``trinity/algorithm/policy_loss_fn/chord_policy_loss.py`` (``mu_schedule_function``, ``phi_function``,
``SFTPhiLossFn``, ``MIXCHORDPolicyLossFn.default_args``: mu_warmup_steps 0, mu_decay_steps 0, mu_peak 0.1,
mu_valley 0.1, enable_phi_function True); no code was copied. Each part is averaged over its OWN tokens
(token-level ``masked_mean`` there), so mu is the share of the two parts whatever their token counts
(:func:`calibrl_ext.losses.hybrid.mix_policy_and_sft`).

On the switch as ``calibrl.mode=chord`` (verl loss ``chord``, :mod:`calibrl_ext.verl_losses`); its keys are the
``chord_*`` fields of :class:`calibrl_ext.config.CalibRLPolicyLossConfig`.

Shapes: ``N`` rows (on-policy rows and expert rows), ``T`` response positions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from calibrl_ext.losses.hybrid import mix_policy_and_sft
from calibrl_ext.losses.ppo import _masked_mean, _on_policy_mask, _row_vector, ppo_clip_token_loss

__all__ = ["CHORD_DEFAULTS", "chord_mu", "chord_expert_token_loss", "chord_policy_loss"]

#: Published defaults (Trinity-RFT ``MIXCHORDPolicyLossFn.default_args``): a constant mu = 0.1 and the phi weight on.
CHORD_DEFAULTS = {"mu_warmup_steps": 0, "mu_decay_steps": 0, "mu_peak": 0.1, "mu_valley": 0.1, "enable_phi": True}


def chord_mu(step: int, warmup_steps: int = 0, decay_steps: int = 0, peak: float = 0.1, valley: float = 0.1) -> float:
    """mu at training step ``step``: linear 0 -> ``peak`` over ``warmup_steps``, then cosine ``peak`` -> ``valley``
    over ``decay_steps``, then ``valley``. With both step counts 0 (the default) mu is ``valley`` throughout."""
    if warmup_steps < 0 or decay_steps < 0:
        raise ValueError(f"warmup_steps and decay_steps must be >= 0, got {warmup_steps}, {decay_steps}")
    if step < warmup_steps:
        return step / warmup_steps * peak
    if step >= warmup_steps + decay_steps:
        return valley
    progress = (step - warmup_steps) / decay_steps
    return valley + (peak - valley) * 0.5 * (1.0 + math.cos(math.pi * progress))


def chord_expert_token_loss(log_probs: torch.Tensor, enable_phi: bool = True) -> torch.Tensor:
    """Per-token SFT loss on expert tokens: -sg(phi(p)) * log p with phi(p) = p (1 - p); plain NLL -log p when
    ``enable_phi`` is False.

    Args:
        log_probs: ``[N, T]`` l(theta) (finite where the caller's mask is set).

    Returns:
        ``[N, T]`` per-token loss.
    """
    if not enable_phi:
        return -log_probs
    p = torch.exp(log_probs.detach())
    return -log_probs * (p * (1.0 - p))


def chord_policy_loss(
    old_log_probs: torch.Tensor,
    log_probs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    is_expert: torch.Tensor | Sequence[bool],
    mu: float = 0.1,
    enable_phi: bool = True,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float = 3.0,
    policy_token_share: float | None = None,
    expert_token_share: float | None = None,
    dp_size: int = 1,
    batch_num_tokens: int | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(1 - mu) * mean(PPO over on-policy tokens) + mu * mean(SFT-phi over expert tokens), token means per part.

    Args:
        old_log_probs, log_probs, advantages, response_mask: ``[N, T]`` (advantages may be ``[N]``; expert rows'
            advantages are unused).
        is_expert: ``[N]`` bool.
        mu: the mixing weight in [0, 1] (see :func:`chord_mu`).
        enable_phi: weight expert tokens by p (1 - p) (CHORD-phi) or not (CHORD with plain SFT).
        clip_low, clip_high, clip_c: the PPO part, as :func:`calibrl_ext.losses.ppo.ppo_clip_token_loss`.
        policy_token_share, expert_token_share, dp_size, batch_num_tokens: micro-batch normalisation, see
            :func:`calibrl_ext.losses.ppo.part_token_mean` (omit them for one batch).

    Returns:
        ``(loss, metrics)``: metrics ``pg_loss``, ``chord_expert_loss`` (each before its weight), ``chord_mu``,
        ``pg_clipfrac``, ``pg_clipfrac_lower``, ``ppo_kl`` over on-policy tokens.
    """
    if not 0.0 <= mu <= 1.0:
        raise ValueError(f"mu must be in [0, 1], got {mu}")
    on_mask = _on_policy_mask(response_mask, is_expert)
    expert_mask = response_mask.bool() & ~on_mask
    with torch.no_grad():
        safe_old = torch.where(on_mask, old_log_probs, 0.0)
    safe_new = torch.where(on_mask | expert_mask, log_probs, 0.0)
    advantages = _row_vector(advantages, log_probs, "advantages").expand_as(log_probs)
    pg_mat, stats = ppo_clip_token_loss(safe_old, safe_new, advantages, clip_low, clip_high, clip_c)
    sft_mat = chord_expert_token_loss(safe_new, enable_phi)
    loss, pg_loss, sft_loss = mix_policy_and_sft(
        pg_mat, sft_mat, on_mask, expert_mask, 1.0 - mu, mu, policy_token_share, expert_token_share, dp_size,
        batch_num_tokens,
    )  # fmt: skip
    metrics = {
        "pg_loss": pg_loss,
        "chord_expert_loss": sft_loss,
        "chord_mu": torch.tensor(float(mu)),
        "pg_clipfrac": _masked_mean(stats["clipped"], on_mask),
        "pg_clipfrac_lower": _masked_mean(stats["clipped_lower"], on_mask),
        "ppo_kl": _masked_mean(-stats["log_ratio"], on_mask),
    }
    return loss, metrics
