"""Several expert rows per prompt group: one baseline b_t from all of them (pure torch, no verl import).

The paper uses one expert trajectory per prompt and names several as future work. With ``K`` expert rows in a group,
their old log-probs are combined BY POSITION into one baseline (position t of every expert row is the t-th token of
that expert's solution), with one of :data:`EXPERT_COMBINE_RULES`:

- ``max``: the most likely expert token at t (the strictest baseline: a rollout token is "above" only when it is
  more likely than every expert's t-th token);
- ``mean``: the arithmetic mean of the experts' log-probs at t;
- ``logmeanexp``: log of the mean PROBABILITY at t (``logsumexp - log k``; between mean and max);
- ``passing_mean``: the mean over the experts whose reward passed (r > pass_threshold); a group none of whose
  experts passed falls back to the mean over all of them.

Different lengths: at position t only the experts whose response covers t (response mask 1) take part; past the end
of EVERY expert of the group b_t = 0, as released for one expert (``beyond_expert=zero_baseline``), and with
``beyond_expert=drop`` the calibration term stops past the LONGEST expert. With one expert per group every rule
returns exactly :func:`~calibrl_ext.losses.groups.expert_baseline` (bit for bit: max/mean/logsumexp of one value).

Shapes: ``N`` rows, ``T`` response positions, ``G`` groups, ``K`` the largest number of experts in a group.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Hashable

import numpy as np
import torch

from calibrl_ext.losses.groups import BEYOND_EXPERT_MODES, _as_bool, encode_groups

__all__ = ["EXPERT_COMBINE_RULES", "combined_expert_baseline", "experts_per_group", "multi_expert_calibration_mask"]

#: ``calibrl.expert_combine`` values (module docstring).
EXPERT_COMBINE_RULES = ("max", "mean", "logmeanexp", "passing_mean")


def experts_per_group(codes: torch.Tensor, expert: torch.Tensor) -> torch.Tensor:
    """``[G]`` number of expert rows in each group (``codes`` from :func:`encode_groups`)."""
    num_groups = int(codes.max().item()) + 1 if codes.numel() else 0
    return torch.zeros(num_groups, dtype=torch.long).index_add_(0, codes, expert.long())


def _expert_slots(codes: torch.Tensor, expert: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Each expert row's group and its rank among its group's experts (batch order): ``([E], [E], K)``."""
    rows = expert.nonzero().squeeze(-1)
    groups = codes[rows]
    counts = experts_per_group(codes, expert)
    order = torch.argsort(groups, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    ranks = torch.empty_like(rows)
    ranks[order] = torch.arange(rows.numel()) - starts[groups[order]]
    return rows, ranks, int(counts.max().item()) if counts.numel() else 0


def combined_expert_baseline(
    old_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    group_ids: Sequence[Hashable] | np.ndarray | torch.Tensor,
    is_expert: torch.Tensor | Sequence[bool] | np.ndarray,
    combine: str = "max",
    expert_passed: torch.Tensor | None = None,
) -> torch.Tensor:
    """b_t from every expert row of each group, combined by position with ``combine`` (module docstring).

    Args:
        old_log_probs: ``[N, T]`` l^old from the one old-log-prob pass.
        response_mask: ``[N, T]`` 1 on response tokens.
        group_ids: ``[N]`` prompt ids.
        is_expert: ``[N]`` bool.
        combine: one of :data:`EXPERT_COMBINE_RULES`.
        expert_passed: ``[N]`` bool, whether each row's reward passed (read on expert rows); needed by
            ``passing_mean`` only.

    Returns:
        ``[N, T]`` detached baseline (dtype of ``old_log_probs``), 0 where no expert covers t and in groups without
        an expert.
    """
    if combine not in EXPERT_COMBINE_RULES:
        raise ValueError(f"combine must be one of {EXPERT_COMBINE_RULES}, got {combine!r}")
    if old_log_probs.shape != response_mask.shape or old_log_probs.ndim != 2:
        raise ValueError(
            f"old_log_probs {tuple(old_log_probs.shape)} and response_mask {tuple(response_mask.shape)} "
            "must both be [N, T]"
        )
    n, length = old_log_probs.shape
    expert = _as_bool(is_expert, n, "is_expert")
    codes = encode_groups(group_ids)
    num_groups = int(codes.max().item()) + 1 if codes.numel() else 0
    rows, ranks, k = _expert_slots(codes, expert)
    if k == 0:
        return torch.zeros_like(old_log_probs).detach()
    values = torch.zeros(num_groups, k, length, dtype=old_log_probs.dtype)
    covered = torch.zeros(num_groups, k, length, dtype=torch.bool)
    valid = response_mask.bool()
    values[codes[rows], ranks] = torch.where(valid[rows], old_log_probs.detach()[rows], 0.0).to(values.dtype)
    covered[codes[rows], ranks] = valid[rows]
    if combine == "passing_mean":
        if expert_passed is None:
            raise ValueError("combine='passing_mean' needs expert_passed ([N] bool)")
        passing = torch.zeros(num_groups, k, dtype=torch.bool)
        passing[codes[rows], ranks] = _as_bool(expert_passed, n, "expert_passed")[rows]
        # a group none of whose experts passed uses all of them (documented fallback)
        slot_used = torch.zeros(num_groups, k, dtype=torch.bool)
        slot_used[codes[rows], ranks] = True
        passing = torch.where(passing.any(-1, keepdim=True), passing, slot_used)
        covered = covered & passing.unsqueeze(-1)
    count = covered.sum(1)
    if combine == "max":
        combined = torch.where(covered, values, torch.full_like(values, -math.inf)).amax(1)
    elif combine == "logmeanexp":
        masked = torch.where(covered, values, torch.full_like(values, -math.inf))
        combined = torch.logsumexp(masked, 1) - torch.log(count.clamp(min=1).to(values.dtype))
    else:  # mean, passing_mean
        combined = (values * covered).sum(1) / count.clamp(min=1)
    combined = torch.where(count > 0, combined, torch.zeros_like(combined))
    has_expert = (experts_per_group(codes, expert) > 0)[codes].unsqueeze(-1)
    gathered = combined[codes]
    return torch.where(has_expert, gathered, torch.zeros_like(gathered))


def multi_expert_calibration_mask(
    response_mask: torch.Tensor,
    group_ids: Sequence[Hashable] | np.ndarray | torch.Tensor,
    is_expert: torch.Tensor | Sequence[bool] | np.ndarray,
    beyond_expert: str = "zero_baseline",
) -> torch.Tensor:
    """:func:`~calibrl_ext.losses.groups.calibration_mask` for groups with one or more expert rows.

    On-policy tokens of groups with at least one expert; with ``beyond_expert="drop"`` only positions some expert of
    the group covers (up to the longest expert). One expert per group gives exactly ``calibration_mask``.

    Returns:
        ``[N, T]`` float mask (dtype of ``response_mask`` if floating, else float32).
    """
    if beyond_expert not in BEYOND_EXPERT_MODES:
        raise ValueError(f"beyond_expert must be one of {BEYOND_EXPERT_MODES}, got {beyond_expert!r}")
    n = response_mask.shape[0]
    expert = _as_bool(is_expert, n, "is_expert")
    codes = encode_groups(group_ids)
    has_expert = experts_per_group(codes, expert)[codes] > 0
    applies = (has_expert & ~expert).unsqueeze(-1) & response_mask.bool()
    if beyond_expert == "drop":
        num_groups = int(codes.max().item()) + 1 if codes.numel() else 0
        expert_tokens = response_mask.bool() & expert.unsqueeze(-1)
        covered = torch.zeros(num_groups, response_mask.shape[1], dtype=torch.long)
        covered.index_add_(0, codes, expert_tokens.long())
        applies = applies & (covered[codes] > 0)
    dtype = response_mask.dtype if response_mask.is_floating_point() else torch.float32
    return applies.to(dtype)
