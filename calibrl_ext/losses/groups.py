"""Prompt groups, group-relative advantages and the expert baseline (pure torch, no verl import).

CalibRL (https://arxiv.org/abs/2602.20197) METHOD §1 (advantages from on-policy group statistics only) and §2
(the expert row's old log-probs as a per-position baseline). GRPO: https://arxiv.org/abs/2402.03300; Dr.GRPO
(A = r - mu, no std division): https://arxiv.org/abs/2503.20783.

Shapes: ``N`` rows (on-policy rollouts and expert rows of several groups), ``T`` response positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Hashable

import numpy as np
import torch

from calibrl_ext.losses.ppo import _as_bool

__all__ = ["BEYOND_EXPERT_MODES", "calibration_mask", "encode_groups", "expert_baseline", "group_advantages"]

#: What the calibration term does past the expert's length (§7.7).
#: ``zero_baseline``: b_t = 0 there (log-prob of 1), as released. ``drop``: no calibration term there.
BEYOND_EXPERT_MODES = ("zero_baseline", "drop")


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

