"""verl glue for the advantage: the ``calibrl`` estimator in verl's advantage-estimator registry.

``algorithm.adv_estimator=calibrl`` computes METHOD §1: group mean (and optionally std) over the group's
ON-POLICY rows only, A_i = r_i - mu (``algorithm.norm_adv_by_std_in_grpo=False``, the released setting) or
(r_i - mu) / (sigma + eps). Expert rows, which verl cannot flag to an estimator (it passes only rewards, mask,
config and the uid index), are named for the duration of the call with :func:`expert_rows`; the CalibRL trainer
does this in its advantage step. Without it every row counts as on-policy, and the estimator equals verl's GRPO
(or Dr.GRPO) on the same batch.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Optional

import numpy as np
import torch
from verl.trainer.ppo.core_algos import register_adv_est

from calibrl_ext.core import group_advantages

#: Name under which the estimator is registered (``algorithm.adv_estimator``).
ESTIMATOR_NAME = "calibrl"

#: Epsilon added to sigma when normalising by std (verl's GRPO uses the same value).
NORM_EPS = 1e-6

_expert_rows: contextvars.ContextVar[Optional[torch.Tensor]] = contextvars.ContextVar(
    "calibrl_expert_rows", default=None
)


@contextlib.contextmanager
def expert_rows(is_expert: torch.Tensor | np.ndarray):
    """Flag the expert rows (``[bs]`` bool, in batch order) for estimator calls inside the ``with`` block."""
    token = _expert_rows.set(torch.as_tensor(np.asarray(is_expert), dtype=torch.bool))
    try:
        yield
    finally:
        _expert_rows.reset(token)


@register_adv_est(ESTIMATOR_NAME)
def compute_calibrl_outcome_advantage(
    token_level_rewards: torch.Tensor,
    response_mask: torch.Tensor,
    config=None,
    index: np.ndarray | None = None,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outcome advantage with on-policy group statistics (METHOD §1).

    Args:
        token_level_rewards: ``(bs, response_length)``; the row's reward r_i is their sum.
        response_mask: ``(bs, response_length)``.
        config: verl's ``algorithm`` config; ``norm_adv_by_std_in_grpo`` (default True, the released recipe sets
            False) selects (r - mu) / (sigma + eps) over r - mu.
        index: ``(bs,)`` prompt uids (groups).

    Returns:
        ``(advantages, returns)``, both ``(bs, response_length)``: the scalar A_i broadcast over the response.
    """
    if index is None:
        raise ValueError("the calibrl advantage estimator needs the prompt uid index (verl passes data['uid'])")
    scores = token_level_rewards.sum(dim=-1)
    flagged = _expert_rows.get()
    if flagged is None:
        flagged = torch.zeros(scores.shape[0], dtype=torch.bool)
    elif flagged.numel() != scores.shape[0]:
        raise ValueError(f"expert_rows() flagged {flagged.numel()} rows but the batch has {scores.shape[0]}")
    norm_by_std = bool(config.get("norm_adv_by_std_in_grpo", True)) if config is not None else True
    advantages = group_advantages(scores, index, flagged, norm_by_std=norm_by_std, eps=NORM_EPS)
    advantages = advantages.unsqueeze(-1) * response_mask
    return advantages, advantages
