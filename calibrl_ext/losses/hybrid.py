"""Shared frame of the losses that TRAIN the expert row (LUFFY, RL-PLUS, CHORD, HPT): PPO on on-policy tokens plus a
method-specific per-token loss on the expert row's tokens, aggregated once (pure torch, no verl import).

CalibRL METHOD §5 (https://arxiv.org/abs/2602.20197) describes the LUFFY / RL-PLUS baselines this frame serves.

Shapes: ``N`` rows (on-policy and expert), ``T`` response positions.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from calibrl_ext.losses.ppo import (
    _masked_mean,
    _on_policy_mask,
    _row_vector,
    _sanitize,
    aggregate_loss,
    part_token_mean,
    ppo_clip_token_loss,
)

__all__ = ["ExpertTokenLoss", "guard_expert_advantage", "hybrid_policy_loss", "mix_policy_and_sft"]

#: ``(log_probs [N, T], old_log_probs [N, T], expert_advantages [N, T]) -> [N, T]`` per-token expert loss.
ExpertTokenLoss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def guard_expert_advantage(advantages: torch.Tensor, expert_adv_clip: float | None) -> torch.Tensor:
    """Guard against the norm_by_std blow-up of A_e (§7.9): clamp |A_e| and drop non-finite values."""
    advantages = torch.nan_to_num(advantages, nan=0.0)
    if expert_adv_clip is None:
        return torch.nan_to_num(advantages, posinf=0.0, neginf=0.0)
    return advantages.clamp(min=-expert_adv_clip, max=expert_adv_clip)


def hybrid_policy_loss(
    expert_loss: str,
    expert_token_loss: ExpertTokenLoss,
    old_log_probs: torch.Tensor,
    log_probs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    is_expert: torch.Tensor | Sequence[bool],
    clip_low: float,
    clip_high: float,
    clip_c: float,
    loss_agg_mode: str,
    expert_adv_clip: float | None,
    global_batch_info: dict,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """agg over all response tokens of [PPO on on-policy tokens | ``expert_token_loss`` on expert tokens].

    Args:
        expert_loss: the method's name, used for the metric ``{expert_loss}_expert_loss``.
        expert_token_loss: see :data:`ExpertTokenLoss`; receives sanitized ``[N, T]`` inputs and the guarded A_e.
        old_log_probs, log_probs, advantages, response_mask: ``[N, T]`` (advantages hold A_e on expert rows).
        is_expert: ``[N]`` bool.
        clip_low, clip_high, clip_c, loss_agg_mode, global_batch_info: as ``calibrl_policy_loss``.
        expert_adv_clip: bound on |A_e| (None: only drop inf/NaN).

    Returns:
        ``(loss, metrics)``; metrics ``pg_loss``, ``{expert_loss}_expert_loss``, ``pg_clipfrac``,
        ``pg_clipfrac_lower``, ``ppo_kl`` (on-policy tokens only) and ``expert_token_fraction``.
    """
    on_mask = _on_policy_mask(response_mask, is_expert)
    expert_mask = response_mask.bool() & ~on_mask
    all_mask = on_mask | expert_mask
    safe_old = _sanitize(old_log_probs, all_mask)
    safe_new = _sanitize(log_probs, all_mask)
    advantages = _row_vector(advantages, log_probs, "advantages").expand_as(log_probs)
    pg_mat, stats = ppo_clip_token_loss(safe_old, safe_new, advantages, clip_low, clip_high, clip_c)
    expert_adv = guard_expert_advantage(torch.where(expert_mask, advantages, torch.zeros_like(advantages)), expert_adv_clip)
    off_mat = expert_token_loss(safe_new, safe_old, expert_adv)
    # One aggregation of the combined per-token loss over on-policy and expert tokens (as LUFFY trains them);
    # the two parts are aggregated separately only for the metrics.
    combined = torch.where(expert_mask, off_mat, pg_mat)
    total = aggregate_loss(combined, all_mask, loss_agg_mode, **global_batch_info)
    on_part = aggregate_loss(pg_mat, on_mask, loss_agg_mode, **global_batch_info)
    off_part = aggregate_loss(off_mat, expert_mask, loss_agg_mode, **global_batch_info)
    metrics = {
        "pg_loss": on_part.detach(),
        f"{expert_loss}_expert_loss": off_part.detach(),
        "pg_clipfrac": _masked_mean(stats["clipped"], on_mask),
        "pg_clipfrac_lower": _masked_mean(stats["clipped_lower"], on_mask),
        "ppo_kl": _masked_mean(-stats["log_ratio"], on_mask),
        "expert_token_fraction": _masked_mean(expert_mask, all_mask),
    }
    return total, metrics


def mix_policy_and_sft(
    pg_mat: torch.Tensor,
    sft_mat: torch.Tensor,
    policy_mask: torch.Tensor,
    expert_mask: torch.Tensor,
    policy_weight: float,
    expert_weight: float,
    policy_token_share: float | torch.Tensor | None = None,
    expert_token_share: float | torch.Tensor | None = None,
    dp_size: int = 1,
    batch_num_tokens: int | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``policy_weight * mean(pg over policy tokens) + expert_weight * mean(sft over expert tokens)``, each mean over
    its part's own tokens (:func:`calibrl_ext.losses.ppo.part_token_mean`): the frame of CHORD and HPT, whose
    reference code averages the policy-gradient and SFT parts separately before mixing them.

    Args:
        pg_mat, sft_mat: ``[N, T]`` per-token PPO loss and expert SFT loss.
        policy_mask, expert_mask: ``[N, T]`` the tokens each part trains (disjoint).
        policy_weight, expert_weight: the mix (CHORD: 1 - mu, mu; HPT: 1, sft_coef).
        policy_token_share, expert_token_share, dp_size, batch_num_tokens: see :func:`part_token_mean`.

    Returns:
        ``(loss, pg_part, sft_part)``: the parts before their weights, detached.
    """
    pg_part = part_token_mean(pg_mat, policy_mask, policy_token_share, dp_size, batch_num_tokens)
    sft_part = part_token_mean(sft_mat, expert_mask, expert_token_share, dp_size, batch_num_tokens)
    return policy_weight * pg_part + expert_weight * sft_part, pg_part.detach(), sft_part.detach()
