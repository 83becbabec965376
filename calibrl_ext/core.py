"""CalibRL's maths as plain torch functions (no verl import).

Paper: "Controllable Exploration in Hybrid-Policy RLVR for Multi-Modal Reasoning" (CalibRL),
https://arxiv.org/abs/2602.20197. "§n" and "METHOD §n" refer to ``docs/method.md``. With default arguments
every function reproduces the authors' released numerics.

Shapes: ``N`` rows (on-policy rollouts and expert rows of several groups), ``T`` response positions
(right-padded; position ``t`` of every row is the ``t``-th generated token).

Symbols:
  r_i     scalar reward of row i (``scores``)
  A_i     advantage (``advantages``), |A_i| the "distribution-aware" weight
  s_i     +1 if row i passed (answer correct), else -1 (``passed``)
  l_{i,t} log pi_theta of token t of row i (``log_probs``); l^old under pi_old (``old_log_probs``)
  b_t     expert baseline: the expert row's l^old at position t (``baseline``)
  x_{i,t} = -s_i (l_{i,t} - b_t); G_{i,t} = |A_i| * phi(x_{i,t}), phi the activation (LeakyReLU_alpha)
  L       = agg(L_pg) + lambda * agg(G) over on-policy tokens (§3)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Hashable, Literal

import numpy as np
import torch

__all__ = [
    "ACTIVATIONS",
    "BEYOND_EXPERT_MODES",
    "LOSS_AGG_MODES",
    "aggregate_loss",
    "calibration_mask",
    "calibration_term",
    "calibration_diagnostics",
    "calibrl_policy_loss",
    "encode_groups",
    "expert_baseline",
    "group_advantages",
    "guard_expert_advantage",
    "luffy_expert_token_loss",
    "luffy_policy_loss",
    "ppo_clip_token_loss",
    "rlplus_expert_token_loss",
    "rlplus_policy_loss",
]

#: Activations phi applied to x = -s (l - b) (paper Table: ablation of the shaping function, §4).
ACTIVATIONS = ("leaky_relu", "relu", "sigmoid", "tanh", "huber")

#: What the calibration term does past the expert's length (§7.7).
#: ``zero_baseline``: b_t = 0 there (log-prob of 1), as released. ``drop``: no calibration term there.
BEYOND_EXPERT_MODES = ("zero_baseline", "drop")

#: Loss aggregation modes, identical to verl's ``agg_loss``.
LOSS_AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-sum-norm", "seq-mean-token-mean")

#: verl clamps the log-ratio to this range before ``exp`` (``compute_policy_loss_vanilla``); kept identical.
LOG_RATIO_CLAMP = 20.0

Activation = Literal["leaky_relu", "relu", "sigmoid", "tanh", "huber"]


# --------------------------------------------------------------------------------------------------------------------
# Groups and advantages (§1)
# --------------------------------------------------------------------------------------------------------------------
def encode_groups(group_ids: Sequence[Hashable] | np.ndarray | torch.Tensor) -> torch.Tensor:
    """Map arbitrary hashable group ids (verl's ``uid`` strings) to dense codes ``0..G-1``.

    Args:
        group_ids: ``[N]`` ids; equal ids mean the same prompt group. Must be mutually orderable (all str or all
            numbers), as verl's uuids are.

    Returns:
        ``[N]`` int64 codes.
    """
    if isinstance(group_ids, torch.Tensor):
        return torch.unique(group_ids, return_inverse=True)[1].long()
    ids = np.asarray(group_ids, dtype=object)
    if ids.ndim != 1:
        raise ValueError(f"group_ids must be one-dimensional [N], got shape {ids.shape}")
    try:
        _, inverse = np.unique(ids, return_inverse=True)
    except TypeError as exc:
        raise ValueError(
            "group_ids must be mutually comparable (e.g. all str like verl's uids, or all int); "
            f"got mixed types {sorted({type(g).__name__ for g in ids})}"
        ) from exc
    return torch.as_tensor(inverse.reshape(-1), dtype=torch.long)


def _as_bool(x: torch.Tensor | Sequence[bool] | np.ndarray, n: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(torch.bool).reshape(-1)
    if t.numel() != n:
        raise ValueError(f"{name} must have one entry per row ([N]={n}), got {t.numel()}")
    return t


def _group_statistics(
    values: torch.Tensor, codes: torch.Tensor, include: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-group count, mean and unbiased std of ``values`` over rows where ``include`` is True.

    Returns ``[G]`` tensors. Groups with fewer than two included rows get mean 0 and std 1 (§1: a group with a
    single on-policy row uses mu = 0, sigma = 1; a group with none is treated the same way).
    """
    num_groups = int(codes.max().item()) + 1 if codes.numel() else 0
    weights = include.to(values.dtype)
    count = torch.zeros(num_groups, dtype=values.dtype).index_add_(0, codes, weights)
    total = torch.zeros(num_groups, dtype=values.dtype).index_add_(0, codes, values * weights)
    mean = total / count.clamp(min=1)
    deviation = (values - mean[codes]) * weights
    sum_sq = torch.zeros(num_groups, dtype=values.dtype).index_add_(0, codes, deviation * deviation)
    std = torch.sqrt(sum_sq / (count - 1).clamp(min=1))
    small = count < 2
    mean = torch.where(small, torch.zeros_like(mean), mean)
    std = torch.where(small, torch.ones_like(std), std)
    return count, mean, std


def group_advantages(
    scores: torch.Tensor,
    group_ids: Sequence[Hashable] | np.ndarray | torch.Tensor,
    is_expert: torch.Tensor | Sequence[bool] | np.ndarray,
    norm_by_std: bool = False,
    eps: float = 1e-6,
) -> torch.Tensor:
    """Outcome advantage per row with group statistics over ON-POLICY rows only (§1).

    mu, sigma = mean and unbiased std of r over the group's on-policy rows (the expert row is excluded).
    A_i = r_i - mu (default, Dr.GRPO style as released) or (r_i - mu) / (sigma + eps) with ``norm_by_std``.
    The expert row gets A_e = r_e - mu (or its normalised form) too; only LUFFY / RL-PLUS use it. With
    ``norm_by_std`` and an all-equal group, A_e ~ (r_e - mu) / eps (§7.9): that is the released number; the
    expert losses below clamp it (``expert_adv_clip``).

    Args:
        scores: ``[N]`` float rewards r_i.
        group_ids: ``[N]`` hashable prompt ids (verl's ``uid``).
        is_expert: ``[N]`` bool, True for expert rows.
        norm_by_std: divide by the group's on-policy std (GRPO) or not (Dr.GRPO, released default).
        eps: added to sigma before dividing.

    Returns:
        ``[N]`` advantages, same dtype as ``scores`` (computed in float32 for half-precision inputs).
    """
    scores = torch.as_tensor(scores)
    if scores.ndim != 1:
        raise ValueError(f"scores must be [N], got shape {tuple(scores.shape)}")
    n = scores.shape[0]
    expert = _as_bool(is_expert, n, "is_expert")
    codes = encode_groups(group_ids)
    if codes.numel() != n:
        raise ValueError(f"group_ids must have one entry per row ([N]={n}), got {codes.numel()}")
    if n == 0:
        return scores.clone()
    work = scores.float() if scores.dtype in (torch.float16, torch.bfloat16) else scores
    work = torch.nan_to_num(work.detach(), nan=0.0)
    _, mean, std = _group_statistics(work, codes, ~expert)
    advantages = work - mean[codes]
    if norm_by_std:
        advantages = advantages / (std[codes] + eps)
    return advantages.to(scores.dtype)


# --------------------------------------------------------------------------------------------------------------------
# Expert baseline (§2)
# --------------------------------------------------------------------------------------------------------------------
def _expert_row_of_group(codes: torch.Tensor, expert: torch.Tensor) -> torch.Tensor:
    """``[N]`` index of the expert row of each row's group, or -1 where the group has no expert."""
    num_groups = int(codes.max().item()) + 1 if codes.numel() else 0
    experts_per_group = torch.zeros(num_groups, dtype=torch.long).index_add_(0, codes, expert.long())
    if bool((experts_per_group > 1).any()):
        bad = int((experts_per_group > 1).nonzero()[0, 0])
        raise ValueError(
            f"group {bad} has {int(experts_per_group[bad])} expert rows; CalibRL uses at most one expert "
            "trajectory per prompt group (check that expert rows are not duplicated)"
        )
    row_index = torch.arange(codes.numel())
    expert_of_group = torch.full((num_groups,), -1, dtype=torch.long)
    expert_of_group.scatter_(0, codes[expert], row_index[expert])
    return expert_of_group[codes]


def expert_baseline(
    old_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: Sequence[Hashable] | np.ndarray | torch.Tensor,
    is_expert: torch.Tensor | Sequence[bool] | np.ndarray,
) -> torch.Tensor:
    """b_t: the expert row's old log-prob at each response position, copied onto every row of its group (§2).

    Comparison is by POSITION, as released: on-policy token t is compared with expert token t. Past the expert's
    length b_t = 0, and rows of groups without an expert get b = 0 everywhere (see :func:`calibration_mask` for
    where the term applies). Padding values of the expert row (``-inf``/NaN) never leak: they are masked to 0.

    Args:
        old_log_probs: ``[N, T]`` l^old, computed in the same old-log-prob pass for on-policy and expert rows.
        response_mask: ``[N, T]`` 1 on response tokens.
        group_ids: ``[N]`` prompt ids.
        is_expert: ``[N]`` bool.

    Returns:
        ``[N, T]`` detached baseline, dtype of ``old_log_probs``.
    """
    if old_log_probs.shape != response_mask.shape or old_log_probs.ndim != 2:
        raise ValueError(
            f"old_log_probs {tuple(old_log_probs.shape)} and response_mask {tuple(response_mask.shape)} "
            "must both be [N, T]"
        )
    n = old_log_probs.shape[0]
    expert = _as_bool(is_expert, n, "is_expert")
    codes = encode_groups(group_ids)
    valid = response_mask.bool()
    safe = torch.where(valid, old_log_probs.detach(), torch.zeros_like(old_log_probs))
    source = _expert_row_of_group(codes, expert)
    has_expert = (source >= 0).unsqueeze(-1)
    gathered = safe[source.clamp(min=0)]
    return torch.where(has_expert, gathered, torch.zeros_like(gathered))


def calibration_mask(
    response_mask: torch.Tensor,
    group_ids: Sequence[Hashable] | np.ndarray | torch.Tensor,
    is_expert: torch.Tensor | Sequence[bool] | np.ndarray,
    beyond_expert: str = "zero_baseline",
) -> torch.Tensor:
    """Where the calibration term applies: on-policy tokens of groups that have an expert row.

    Expert rows never carry the term (§3). Groups without an expert train as plain GRPO (§7.4). With
    ``beyond_expert="drop"`` positions past the expert's length carry no term (§7.7); the default
    ``"zero_baseline"`` keeps them with b_t = 0, as released.

    Args:
        response_mask: ``[N, T]``.
        group_ids: ``[N]``.
        is_expert: ``[N]`` bool.
        beyond_expert: one of :data:`BEYOND_EXPERT_MODES`.

    Returns:
        ``[N, T]`` float mask (dtype of ``response_mask`` if floating, else float32).
    """
    if beyond_expert not in BEYOND_EXPERT_MODES:
        raise ValueError(f"beyond_expert must be one of {BEYOND_EXPERT_MODES}, got {beyond_expert!r}")
    n = response_mask.shape[0]
    expert = _as_bool(is_expert, n, "is_expert")
    codes = encode_groups(group_ids)
    source = _expert_row_of_group(codes, expert)
    applies = ((source >= 0) & ~expert).unsqueeze(-1) & response_mask.bool()
    if beyond_expert == "drop":
        expert_tokens = response_mask.bool()[source.clamp(min=0)]
        applies = applies & expert_tokens
    dtype = response_mask.dtype if response_mask.is_floating_point() else torch.float32
    return applies.to(dtype)


# --------------------------------------------------------------------------------------------------------------------
# Calibration term (§3, §4)
# --------------------------------------------------------------------------------------------------------------------
def _activation(x: torch.Tensor, activation: str, alpha: float, huber_delta: float) -> torch.Tensor:
    if activation == "leaky_relu":
        return torch.nn.functional.leaky_relu(x, negative_slope=alpha)
    if activation == "relu":
        return torch.relu(x)
    if activation == "sigmoid":
        return torch.sigmoid(x)
    if activation == "tanh":
        return torch.tanh(x)
    if activation == "huber":
        # Symmetric Huber of x: its gradient reverses sign for x < 0 (pulls confident correct tokens back
        # towards the expert level), which is why it scores worst in the paper's ablation.
        magnitude = x.abs()
        return torch.where(magnitude <= huber_delta, 0.5 * x * x, huber_delta * (magnitude - 0.5 * huber_delta))
    raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")


#: Activations with phi(0) != 0: their output must be masked explicitly (the others give 0 on zeroed inputs).
_NONZERO_AT_ZERO = ("sigmoid",)


def _row_vector(x: torch.Tensor | Sequence, like: torch.Tensor, name: str) -> torch.Tensor:
    """Broadcast a per-row ``[N]`` or per-token ``[N, T]`` tensor against ``like`` ``[N, T]``."""
    t = torch.as_tensor(x, device=like.device)
    if t.ndim == 1:
        t = t.unsqueeze(-1)
    if t.shape[0] != like.shape[0]:
        raise ValueError(f"{name} has {t.shape[0]} rows, expected {like.shape[0]}")
    return t


def calibration_term(
    log_probs: torch.Tensor,
    baseline: torch.Tensor,
    advantages: torch.Tensor,
    passed: torch.Tensor | Sequence[bool],
    activation: Activation = "leaky_relu",
    alpha: float = 0.5,
    huber_delta: float = 1.0,
    weight_by_abs_advantage: bool = True,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token calibration ("guided") term G_{i,t} = |A_i| * phi(x_{i,t}), x = -s_i (l_{i,t} - b_t) (§3).

    Gradient of lambda * G: -lambda |A| s w grad(l), with w = 1 where x > 0 and alpha where x < 0 (LeakyReLU):
    it never reverses the direction the outcome implies; it modulates its strength by the expert baseline.

    Args:
        log_probs: ``[N, T]`` l_{i,t}(theta), with gradient.
        baseline: ``[N, T]`` b_t (detached).
        advantages: ``[N]`` or ``[N, T]`` A_i; only |A| is used (unless ``weight_by_abs_advantage`` is False).
        passed: ``[N]`` bool, s_i = +1 if True else -1.
        activation: one of :data:`ACTIVATIONS`.
        alpha: LeakyReLU negative slope (paper: 0.5).
        huber_delta: Huber transition point (only for ``huber``).
        weight_by_abs_advantage: multiply by |A_i| (paper: on). Off gives weight 1 per token.
        mask: optional ``[N, T]``; positions where it is 0 return exactly 0 and may hold any value (``-inf``/NaN
            log-probs at padding produce no NaN, also not in the gradient). Non-finite values INSIDE the mask are
            a caller bug and propagate.

    Returns:
        ``[N, T]`` per-token term, dtype of ``log_probs``.
    """
    if log_probs.shape != baseline.shape:
        raise ValueError(f"log_probs {tuple(log_probs.shape)} and baseline {tuple(baseline.shape)} must match")
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    sign = torch.where(_row_vector(passed, log_probs, "passed").bool(), 1.0, -1.0).to(log_probs.dtype)
    x = (baseline.detach().to(log_probs.dtype) - log_probs) * sign
    if mask is not None:
        # One select on x makes masked positions exactly 0 in the forward pass; the backward of the subtraction and
        # the product above is value-independent, so -inf/NaN padding cannot leak into the gradient either.
        valid = mask.bool()
        x = torch.where(valid, x, torch.zeros((), dtype=x.dtype))
    shaped = _activation(x, activation, alpha, huber_delta)
    if weight_by_abs_advantage:
        shaped = shaped * _row_vector(advantages, log_probs, "advantages").detach().abs().to(log_probs.dtype)
    if mask is not None and activation in _NONZERO_AT_ZERO:
        shaped = shaped * valid
    return shaped


# --------------------------------------------------------------------------------------------------------------------
# PPO part and aggregation (identical to verl's vanilla loss and agg_loss)
# --------------------------------------------------------------------------------------------------------------------
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
    mask = loss_mask.to(loss_mat.dtype)
    masked = torch.where(loss_mask.bool(), loss_mat, torch.zeros_like(loss_mat))
    if loss_agg_mode == "token-mean":
        if batch_num_tokens is None:
            if dp_size > 1:
                raise ValueError("batch_num_tokens (global) is required when dp_size > 1")
            batch_num_tokens = mask.sum().clamp(min=1)
        return masked.sum() / batch_num_tokens * dp_size
    if loss_agg_mode == "token-sum":
        return masked.sum() * dp_size
    seq_tokens = mask.sum(dim=-1)
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


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(torch.float32)
    return (torch.where(mask.bool(), values.float(), torch.zeros_like(mask)).sum() / mask.sum().clamp(min=1)).detach()


def _on_policy_mask(response_mask: torch.Tensor, is_expert: torch.Tensor | Sequence[bool]) -> torch.Tensor:
    expert = _as_bool(is_expert, response_mask.shape[0], "is_expert")
    return response_mask.bool() & ~expert.to(response_mask.device).unsqueeze(-1)


def _sanitize(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero entries outside ``mask`` (and non-finite ones inside), keeping the gradient path for the rest."""
    keep = mask & torch.isfinite(x)
    return torch.where(keep, x, torch.zeros_like(x))


def calibration_diagnostics(
    log_probs: torch.Tensor, baseline: torch.Tensor, passed: torch.Tensor, mask: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Fractions of calibrated tokens above/below the expert baseline, split by passed / failed rows.

    Args:
        log_probs, baseline, mask: ``[N, T]``; passed: ``[N]`` bool.

    Returns:
        scalar tensors ``above_baseline_passed``, ``below_baseline_passed``, ``above_baseline_failed``,
        ``below_baseline_failed`` (fractions of the calibrated tokens of that kind of row) and the token counts.
    """
    passed_rows = _row_vector(passed, log_probs, "passed").bool().expand_as(log_probs)
    mask = mask.bool()
    above = log_probs.detach() > baseline
    out = {}
    for tag, rows in (("passed", passed_rows), ("failed", ~passed_rows)):
        selected = mask & rows
        count = selected.sum()
        out[f"above_baseline_{tag}"] = (above & selected).sum() / count.clamp(min=1)
        out[f"below_baseline_{tag}"] = (~above & selected).sum() / count.clamp(min=1)
        out[f"tokens_{tag}"] = count
    return out


# --------------------------------------------------------------------------------------------------------------------
# The CalibRL loss (§3)
# --------------------------------------------------------------------------------------------------------------------
def calibrl_policy_loss(
    old_log_probs: torch.Tensor,
    log_probs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    baseline: torch.Tensor,
    passed: torch.Tensor | Sequence[bool],
    is_expert: torch.Tensor | Sequence[bool],
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float = 3.0,
    alpha: float = 0.5,
    lam: float = 0.1,
    activation: Activation = "leaky_relu",
    loss_agg_mode: str = "token-mean",
    huber_delta: float = 1.0,
    weight_by_abs_advantage: bool = True,
    calibration_token_mask: torch.Tensor | None = None,
    **global_batch_info,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L = agg(L_pg) + lambda * agg(G) over on-policy tokens; expert rows are excluded from every term (§3).

    Args:
        old_log_probs, log_probs: ``[N, T]`` l^old and l(theta).
        advantages: ``[N, T]`` token-level A (verl's ``advantages``: the scalar A_i times the response mask).
        response_mask: ``[N, T]``.
        baseline: ``[N, T]`` b_t from :func:`expert_baseline`.
        passed: ``[N]`` bool s_i > 0.
        is_expert: ``[N]`` bool; expert rows contribute nothing (they may also be absent from the batch).
        clip_low, clip_high, clip_c: PPO eps_low, eps_high, dual-clip c (released: 0.2, 0.2, 3.0).
        alpha, lam, activation: the calibration term's slope, weight lambda and shaping function.
        loss_agg_mode: verl's aggregation mode (released: token-mean).
        huber_delta, weight_by_abs_advantage: see :func:`calibration_term`.
        calibration_token_mask: ``[N, T]`` where the term applies (e.g. :func:`calibration_mask`, or the driver's
            per-row switch); default: every on-policy token.
        **global_batch_info: dp_size, batch_num_tokens, global_batch_size, loss_scale_factor (verl's
            ``config.global_batch_info``) for micro-batch-invariant aggregation.

    Returns:
        ``(loss, metrics)``: scalar loss; metrics ``pg_loss``, ``calibration_loss`` (agg(G), before lambda),
        ``pg_clipfrac``, ``pg_clipfrac_lower``, ``ppo_kl``, ``calibrated_token_fraction`` and the baseline fractions
        of :func:`calibration_diagnostics`.
    """
    on_mask = _on_policy_mask(response_mask, is_expert)
    safe_old = _sanitize(old_log_probs, on_mask)
    safe_new = _sanitize(log_probs, on_mask)
    pg_mat, stats = ppo_clip_token_loss(safe_old, safe_new, advantages, clip_low, clip_high, clip_c)
    calib_mask = on_mask if calibration_token_mask is None else on_mask & calibration_token_mask.bool()
    calib_mat = calibration_term(
        safe_new,
        baseline,
        advantages,
        passed,
        activation=activation,
        alpha=alpha,
        huber_delta=huber_delta,
        weight_by_abs_advantage=weight_by_abs_advantage,
        mask=calib_mask,
    )
    pg_loss = aggregate_loss(pg_mat, on_mask, loss_agg_mode, **global_batch_info)
    calibration_loss = aggregate_loss(calib_mat, on_mask, loss_agg_mode, **global_batch_info)
    loss = pg_loss + lam * calibration_loss
    metrics = {
        "pg_loss": pg_loss.detach(),
        "calibration_loss": calibration_loss.detach(),
        "pg_clipfrac": _masked_mean(stats["clipped"], on_mask),
        "pg_clipfrac_lower": _masked_mean(stats["clipped_lower"], on_mask),
        "ppo_kl": _masked_mean(-stats["log_ratio"], on_mask),
        "calibrated_token_fraction": _masked_mean(calib_mask, on_mask),
    }
    metrics.update(calibration_diagnostics(safe_new, baseline, torch.as_tensor(passed), calib_mask))
    return loss, metrics


# --------------------------------------------------------------------------------------------------------------------
# Baselines that train the expert row (§5): LUFFY and RL-PLUS
# --------------------------------------------------------------------------------------------------------------------
def guard_expert_advantage(advantages: torch.Tensor, expert_adv_clip: float | None) -> torch.Tensor:
    """Guard against the norm_by_std blow-up of A_e (§7.9): clamp |A_e| and drop non-finite values."""
    advantages = torch.nan_to_num(advantages, nan=0.0)
    if expert_adv_clip is None:
        return torch.nan_to_num(advantages, posinf=0.0, neginf=0.0)
    return advantages.clamp(min=-expert_adv_clip, max=expert_adv_clip)


def luffy_expert_token_loss(
    log_probs: torch.Tensor, expert_advantages: torch.Tensor, gamma: float = 0.1
) -> torch.Tensor:
    """LUFFY policy shaping on expert tokens: -A_e * f(pi_theta), f(p) = p / (p + gamma); no ratio, no clip.

    Args:
        log_probs: ``[N, T]`` l(theta) of the expert rows (finite where the mask is set).
        expert_advantages: ``[N]`` or ``[N, T]`` A_e (already guarded).
        gamma: shaping constant (LUFFY: 0.1).

    Returns:
        ``[N, T]`` per-token loss.
    """
    p = torch.exp(log_probs)
    shaped = p / (p + gamma)
    return -_row_vector(expert_advantages, log_probs, "expert_advantages").to(log_probs.dtype) * shaped


def rlplus_expert_token_loss(
    log_probs: torch.Tensor, old_log_probs: torch.Tensor, expert_advantages: torch.Tensor
) -> torch.Tensor:
    """RL-PLUS (as released) on expert tokens: -A_e * [2p / (p_old + 0.5 (p_old + 1))] * (1 - sg(p))^0.5.

    Args:
        log_probs, old_log_probs: ``[N, T]`` l(theta), l^old of the expert rows.
        expert_advantages: ``[N]`` or ``[N, T]`` A_e (already guarded).

    Returns:
        ``[N, T]`` per-token loss.
    """
    p = torch.exp(log_probs)
    p_old = torch.exp(old_log_probs.detach())
    importance = 2.0 * p / (p_old + 0.5 * (p_old + 1.0))
    exploration = torch.clamp(1.0 - p.detach(), min=0.0).sqrt()
    return -_row_vector(expert_advantages, log_probs, "expert_advantages").to(log_probs.dtype) * importance * exploration


def _hybrid_policy_loss(
    expert_loss: str,
    old_log_probs: torch.Tensor,
    log_probs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    is_expert: torch.Tensor | Sequence[bool],
    clip_low: float,
    clip_high: float,
    clip_c: float,
    loss_agg_mode: str,
    gamma: float,
    expert_adv_clip: float | None,
    global_batch_info: dict,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    on_mask = _on_policy_mask(response_mask, is_expert)
    expert_mask = response_mask.bool() & ~on_mask
    all_mask = on_mask | expert_mask
    safe_old = _sanitize(old_log_probs, all_mask)
    safe_new = _sanitize(log_probs, all_mask)
    advantages = _row_vector(advantages, log_probs, "advantages").expand_as(log_probs)
    pg_mat, stats = ppo_clip_token_loss(safe_old, safe_new, advantages, clip_low, clip_high, clip_c)
    expert_adv = guard_expert_advantage(torch.where(expert_mask, advantages, torch.zeros_like(advantages)), expert_adv_clip)
    if expert_loss == "luffy":
        off_mat = luffy_expert_token_loss(safe_new, expert_adv, gamma)
    else:
        off_mat = rlplus_expert_token_loss(safe_new, safe_old, expert_adv)
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


def luffy_policy_loss(
    old_log_probs: torch.Tensor,
    log_probs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    is_expert: torch.Tensor | Sequence[bool],
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float = 3.0,
    loss_agg_mode: str = "token-mean",
    gamma: float = 0.1,
    expert_adv_clip: float | None = 5.0,
    **global_batch_info,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """LUFFY baseline: PPO on on-policy tokens + policy-shaped expert tokens, aggregated together (§5).

    Args: as :func:`calibrl_policy_loss`; ``advantages`` ``[N, T]`` hold A_e on expert rows; ``gamma`` the shaping
    constant; ``expert_adv_clip`` bounds |A_e| (§7.9 guard; None disables clamping but still drops inf/NaN).
    """
    return _hybrid_policy_loss(
        "luffy", old_log_probs, log_probs, advantages, response_mask, is_expert, clip_low, clip_high, clip_c,
        loss_agg_mode, gamma, expert_adv_clip, global_batch_info,
    )  # fmt: skip


def rlplus_policy_loss(
    old_log_probs: torch.Tensor,
    log_probs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    is_expert: torch.Tensor | Sequence[bool],
    clip_low: float = 0.2,
    clip_high: float = 0.2,
    clip_c: float = 3.0,
    loss_agg_mode: str = "token-mean",
    expert_adv_clip: float | None = 5.0,
    **global_batch_info,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """RL-PLUS baseline (as released): PPO on on-policy tokens + the RL-PLUS expert-token loss (§5)."""
    return _hybrid_policy_loss(
        "rlplus", old_log_probs, log_probs, advantages, response_mask, is_expert, clip_low, clip_high, clip_c,
        loss_agg_mode, 0.0, expert_adv_clip, global_batch_info,
    )  # fmt: skip
