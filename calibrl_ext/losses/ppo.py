"""The shared PPO token loss, verl's aggregation, and the masking helpers every method's loss uses (pure torch).

PPO: https://arxiv.org/abs/1707.06347; dual clip: https://arxiv.org/abs/1912.09729 (as in verl's
``compute_policy_loss_vanilla``, which ``tests/core/test_verl_glue.py`` pins this equal to).

Shapes: ``N`` rows, ``T`` response positions (right-padded).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = ["LOG_RATIO_CLAMP", "LOSS_AGG_MODES", "aggregate_loss", "part_token_mean", "ppo_clip_token_loss"]

#: Loss aggregation modes, identical to verl's ``agg_loss``.
LOSS_AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-sum-norm", "seq-mean-token-mean")

#: verl clamps the log-ratio to this range before ``exp`` (``compute_policy_loss_vanilla``); kept identical.
LOG_RATIO_CLAMP = 20.0


def _as_bool(x: torch.Tensor | Sequence[bool] | np.ndarray, n: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(torch.bool).reshape(-1)
    if t.numel() != n:
        raise ValueError(f"{name} must have one entry per row ([N]={n}), got {t.numel()}")
    return t



def _row_vector(x: torch.Tensor | Sequence, like: torch.Tensor, name: str) -> torch.Tensor:
    """Broadcast a per-row ``[N]`` or per-token ``[N, T]`` tensor against ``like`` ``[N, T]``."""
    t = torch.as_tensor(x, device=like.device)
    if t.ndim == 1:
        t = t.unsqueeze(-1)
    if t.shape[0] != like.shape[0]:
        raise ValueError(f"{name} has {t.shape[0]} rows, expected {like.shape[0]}")
    return t


def ppo_clip_token_loss(
    old_log_probs: torch.Tensor,
    log_probs: torch.Tensor,
    advantages: torch.Tensor,
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float = 3.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """verl's standard dual-clip PPO loss per token (§3), before aggregation.

    rho = exp(clamp(l - l^old, -20, 20)); L = max(-A rho, -A clip(rho, 1-eps_low, 1+eps_high)); where A < 0
    additionally min(L, -c A).

    Args:
        old_log_probs, log_probs, advantages: ``[N, T]`` (advantages may also be ``[N]``).
        clip_low, clip_high: eps_low, eps_high. clip_c: the dual-clip constant c (> 1).

    Returns:
        ``([N, T]`` loss, dict of ``[N, T]`` bool indicators ``clipped``, ``clipped_lower`` and the log-ratio).
    """
    if clip_c <= 1.0:
        raise ValueError(f"clip_c (dual-clip constant c) must be > 1, got {clip_c}")
    neg_advantages = -_row_vector(advantages, log_probs, "advantages").to(log_probs.dtype)
    log_ratio = torch.clamp(log_probs - old_log_probs, min=-LOG_RATIO_CLAMP, max=LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    unclipped = neg_advantages * ratio
    clipped = neg_advantages * torch.clamp(ratio, 1 - clip_low, 1 + clip_high)
    loss_clip = torch.maximum(unclipped, clipped)
    dual_bound = neg_advantages * clip_c
    negative = neg_advantages > 0  # A < 0
    loss = torch.where(negative, torch.minimum(dual_bound, loss_clip), loss_clip)
    stats = {
        "clipped": clipped > unclipped,
        "clipped_lower": (loss_clip > dual_bound) & negative,
        "log_ratio": log_ratio,
    }
    return loss, stats


def aggregate_loss(
    loss_mat: torch.Tensor,
    loss_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    dp_size: int = 1,
    batch_num_tokens: int | torch.Tensor | None = None,
    global_batch_size: int | torch.Tensor | None = None,
    loss_scale_factor: float | None = None,
) -> torch.Tensor:
    """Aggregate a ``[N, T]`` loss matrix to a scalar exactly as verl's ``agg_loss`` does.

    Pass verl's ``config.global_batch_info`` (dp_size, batch_num_tokens, global_batch_size, loss_scale_factor) so a
    micro-batch's loss sums to the mini-batch loss across micro-batches and data-parallel ranks. One difference,
    for robustness only: an all-zero mask without global counts gives 0 instead of verl's 0/0 = NaN.
    """
    if loss_agg_mode not in LOSS_AGG_MODES:
        raise ValueError(f"loss_agg_mode must be one of {LOSS_AGG_MODES}, got {loss_agg_mode!r}")
    # A select against a scalar zero (no [N, T] zeros tensor) and the float mask only where a count needs it: on CPU
    # each [N, T] pass is a noticeable share of the loss (bench/loss_overhead.py). Same values as before.
    masked = torch.where(loss_mask.bool(), loss_mat, 0.0)
    if loss_agg_mode == "token-mean":
        if batch_num_tokens is None:
            if dp_size > 1:
                raise ValueError("batch_num_tokens (global) is required when dp_size > 1")
            batch_num_tokens = loss_mask.to(loss_mat.dtype).sum().clamp(min=1)
        return masked.sum() / batch_num_tokens * dp_size
    if loss_agg_mode == "token-sum":
        return masked.sum() * dp_size
    seq_tokens = loss_mask.to(loss_mat.dtype).sum(dim=-1)
    seq_mask = (seq_tokens > 0).to(loss_mat.dtype)
    if loss_agg_mode == "seq-mean-token-mean":
        seq_losses = masked.sum(dim=-1) / (seq_tokens + 1e-8)
    else:
        seq_losses = masked.sum(dim=-1)
    if global_batch_size is None:
        if dp_size > 1:
            raise ValueError("global_batch_size is required when dp_size > 1")
        global_batch_size = seq_mask.sum().clamp(min=1)
    loss = (seq_losses * seq_mask).sum() / global_batch_size * dp_size
    if loss_agg_mode == "seq-mean-token-sum-norm":
        loss = loss / (loss_scale_factor if loss_scale_factor is not None else loss_mask.shape[-1])
    return loss


def part_token_mean(
    loss_mat: torch.Tensor,
    part_mask: torch.Tensor,
    token_share: float | torch.Tensor | None = None,
    dp_size: int = 1,
    batch_num_tokens: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Token mean of ONE part of the loss (e.g. the PPO part or the expert SFT part) over that part's own tokens.

    CHORD and HPT average each part over its own tokens and then mix the means (Trinity-RFT ``MIXCHORDPolicyLossFn``,
    Unify-Post-Training ``mix_actor.py``: one ``masked_mean`` per part). Under verl's micro-batching a micro-batch
    only sees its own rows, and verl passes the mini-batch's token count over every part (``batch_num_tokens``,
    summed over data-parallel ranks). The part's own mini-batch token count is taken as ``batch_num_tokens *
    token_share``, with ``token_share`` the part's share of the response tokens of the step's update batch (the
    driver computes it, where the whole batch is known): exact when a step's update is one mini-batch, whatever the
    micro-batch split and the data-parallel size; with several mini-batches each one uses the step's share.

    Args:
        loss_mat: ``[N, T]`` per-token loss (finite where ``part_mask`` is set).
        part_mask: ``[N, T]`` the part's tokens in this micro-batch.
        token_share: the part's share of the update batch's response tokens, in [0, 1]; only read with
            ``batch_num_tokens``.
        dp_size, batch_num_tokens: verl's ``config.global_batch_info``; without ``batch_num_tokens`` (a single
            batch, no micro-batching) the mean is over ``part_mask`` itself.

    Returns:
        scalar; 0 where the part has no tokens.
    """
    masked = torch.where(part_mask.bool(), loss_mat, torch.zeros_like(loss_mat)).sum()
    if batch_num_tokens is None:
        if dp_size > 1:
            raise ValueError("batch_num_tokens (global) is required when dp_size > 1")
        return masked / part_mask.bool().sum().clamp(min=1)
    share = float(token_share) if token_share is not None else 1.0
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"token_share must be in [0, 1], got {share}")
    if share == 0.0:  # the part has no token in the update batch: nothing to average
        return masked * 0.0
    return masked / (batch_num_tokens * share) * dp_size


def _masked_mean(values: torch.Tensor, mask: torch.Tensor, count: torch.Tensor | None = None) -> torch.Tensor:
    """Detached float32 mean of ``values`` over ``mask`` (both ``[N, T]``); 0 for an empty mask.

    ``count``: ``mask.sum().clamp(min=1).float()`` when the caller already has it (several metrics share one mask).
    """
    with torch.no_grad():
        mask = mask.bool()
        if count is None:
            count = mask.sum().clamp(min=1).float()
        if values.dtype == torch.bool:  # indicator metrics: a logical and is far cheaper than a float select
            return (values & mask).sum().float() / count
        return torch.where(mask, values.float(), 0.0).sum() / count


def _all_finite(*tensors: torch.Tensor) -> bool:
    """True when every entry of every tensor is finite, from one read-only sum per tensor and one host sync.

    A sum is non-finite whenever an entry is (NaN, or an infinity: +inf - inf is NaN), and also when finite entries
    overflow it; a False answer therefore only means "take the safe path", never a wrong result. Half-precision
    tensors are summed in float32 so that a large batch does not overflow float16; the per-tensor sums are added in
    float32 (every accelerator has it; an overflow there again only selects the safe path).
    """
    with torch.no_grad():
        total = torch.zeros((), dtype=torch.float32, device=tensors[0].device)
        for t in tensors:
            low_precision = t.dtype in (torch.float16, torch.bfloat16)
            total = total + (t.detach().sum(dtype=torch.float32) if low_precision else t.detach().sum()).float()
        return bool(torch.isfinite(total))


def _on_policy_mask(response_mask: torch.Tensor, is_expert: torch.Tensor | Sequence[bool]) -> torch.Tensor:
    expert = _as_bool(is_expert, response_mask.shape[0], "is_expert")
    return response_mask.bool() & ~expert.to(response_mask.device).unsqueeze(-1)


def _sanitize(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero entries outside ``mask`` (and non-finite ones inside), keeping the gradient path for the rest."""
    keep = mask & torch.isfinite(x)
    return torch.where(keep, x, torch.zeros_like(x))

