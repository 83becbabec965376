"""Driver-side CalibRL: from one old-log-prob pass over on-policy and expert rows to the per-row loss inputs.

The actor never sees a whole group (verl reorders, pads and shuffles rows before the update), so everything that
crosses rows is materialised here, per row, before the expert rows leave the batch (METHOD §2, §3):

- ``baseline`` b_t: the expert's l^old by position (0 past its length, 0 without an expert), or at the expert token
  aligned by content (``calibrl.baseline_alignment=lcs|window``, :mod:`calibrl_ext.baseline_alignment`);
- ``calibration_mask``: where the term applies (groups that kept their expert row - the schedules and the pass-rate
  window remove it earlier - on-policy rows only, and with ``beyond_expert=drop`` not past the expert's length);
- ``passed`` s_i: reward > ``pass_threshold``.

All inputs are padded ``[N, T]`` / ``[N]`` tensors in one batch order; pad rows (verl's upsampling) count as
neither on-policy nor expert.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from calibrl_ext import core
from calibrl_ext.baseline_alignment import aligned_expert_baseline
from calibrl_ext.losses.groups import _expert_row_of_group


@dataclass
class CalibrationFields:
    """Per-row loss inputs and the group facts the metrics report. Shapes: ``[N, T]`` and ``[N]``."""

    baseline: torch.Tensor
    calibration_mask: torch.Tensor
    passed: torch.Tensor
    group_has_expert: torch.Tensor
    group_codes: torch.Tensor
    #: ``[N, T]`` bool: on-policy tokens of groups with an expert that have an expert token to compare with (by
    #: position: within the expert's length; lcs / window: aligned by content).
    aligned: torch.Tensor | None = None


def compute_calibration_fields(
    old_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    scores: torch.Tensor,
    uids: Sequence[str] | np.ndarray,
    is_expert: torch.Tensor,
    is_pad: torch.Tensor,
    pass_threshold: float,
    beyond_expert: str,
    expert_combine: str = "mean",
    alignment: str = "position",
    alignment_window: int = 32,
    responses: torch.Tensor | None = None,
) -> CalibrationFields:
    """Compute b_t, the calibration mask and s_i for every row.

    Args:
        old_log_probs: ``[N, T]`` l^old from the one old-log-prob pass (on-policy and expert rows).
        response_mask: ``[N, T]``.
        scores: ``[N]`` rewards r_i (sum of ``rm_scores``).
        uids: ``[N]`` prompt ids (pad rows have their own).
        is_expert: ``[N]`` bool expert rows.
        is_pad: ``[N]`` bool pad rows from verl's upsampling.
        pass_threshold: s_i = +1 iff r_i > pass_threshold (released 0.1).
        beyond_expert: ``zero_baseline`` | ``drop`` (METHOD §7.7); ``position`` alignment only (the content
            alignments give unaligned tokens, those past the expert's end included, no term).
        expert_combine: ``calibrl.expert_combine``, how the baselines of several expert rows of one group combine
            (:mod:`calibrl_ext.losses.multi_expert`); unused while every group has at most one expert row.
        alignment: ``position`` (released) | ``lcs`` | ``window`` (``calibrl.baseline_alignment``); the content
            alignments need at most one expert row per group (start-up refuses them with several experts).
        alignment_window: ``calibrl.baseline_alignment_window``.
        responses: ``[N, T]`` token ids; needed by ``lcs`` / ``window``.

    Returns:
        :class:`CalibrationFields`.
    """
    is_expert = is_expert.bool()
    is_pad = is_pad.bool()
    codes = core.encode_groups(uids)
    passed = scores > pass_threshold
    experts_per_group = core.experts_per_group(codes, is_expert)
    if alignment == "position":
        baseline, mask = _baseline_and_mask(
            old_log_probs, response_mask, codes, is_expert, passed, beyond_expert, expert_combine, experts_per_group
        )
        # compared with an expert token: within the expert's length (what beyond_expert=drop keeps)
        aligned = _calibration_mask(response_mask, codes, is_expert, "drop", experts_per_group).bool()
    else:
        if responses is None:
            raise ValueError(f"baseline alignment {alignment!r} needs the response token ids (responses)")
        source = _expert_row_of_group(codes, is_expert)  # raises on a group with several expert rows
        baseline, aligned = aligned_expert_baseline(
            old_log_probs, response_mask, responses, source, is_expert, alignment, alignment_window
        )
        dtype = response_mask.dtype if response_mask.is_floating_point() else torch.float32
        mask = aligned.to(dtype)
    has_expert = experts_per_group[codes] > 0
    return CalibrationFields(
        baseline=baseline,
        calibration_mask=mask * (~is_pad).unsqueeze(-1).to(mask.dtype),
        passed=passed,
        group_has_expert=has_expert,
        group_codes=codes,
        aligned=aligned & ~is_pad.unsqueeze(-1),
    )


def _baseline_and_mask(
    old_log_probs, response_mask, codes, is_expert, passed, beyond_expert, expert_combine, experts_per_group
) -> tuple[torch.Tensor, torch.Tensor]:
    """b_t and the calibration mask: the released one-expert functions while every group has at most one expert
    row (the parity path), the combined baseline of :mod:`calibrl_ext.losses.multi_expert` otherwise."""
    mask = _calibration_mask(response_mask, codes, is_expert, beyond_expert, experts_per_group)
    if _one_expert_at_most(experts_per_group):
        return core.expert_baseline(old_log_probs, response_mask, codes, is_expert), mask
    baseline = core.combined_expert_baseline(
        old_log_probs, response_mask, codes, is_expert, combine=expert_combine, expert_passed=passed
    )
    return baseline, mask


def _one_expert_at_most(experts_per_group: torch.Tensor) -> bool:
    return experts_per_group.numel() == 0 or int(experts_per_group.max()) <= 1


def _calibration_mask(response_mask, codes, is_expert, beyond_expert, experts_per_group) -> torch.Tensor:
    """The released one-expert mask while every group has at most one expert row, the several-expert one otherwise."""
    if _one_expert_at_most(experts_per_group):
        return core.calibration_mask(response_mask, codes, is_expert, beyond_expert=beyond_expert)
    return core.multi_expert_calibration_mask(response_mask, codes, is_expert, beyond_expert=beyond_expert)


def _token_mean(values: torch.Tensor, mask: torch.Tensor) -> float:
    mask = mask.float()
    total = mask.sum()
    return float((values.float() * mask).sum() / total) if total > 0 else float("nan")


def calibration_metrics(
    fields: CalibrationFields,
    old_log_probs: torch.Tensor,
    entropy: torch.Tensor,
    response_mask: torch.Tensor,
    is_expert: torch.Tensor,
    is_pad: torch.Tensor,
    expert_truncated: torch.Tensor,
    groups_offered_expert: int,
    groups_with_solution: int,
) -> dict[str, float]:
    """The ``calibrl/*`` step metrics (see recipe/calibrl/README.md, "Logged metrics").

    Args:
        fields: from :func:`compute_calibration_fields` on the same rows.
        old_log_probs, entropy, response_mask: ``[N, T]``.
        is_expert, is_pad, expert_truncated: ``[N]`` bool.
        groups_offered_expert: prompts that got an expert row this step (after warm-up and keep probability).
        groups_with_solution: prompts of the step whose dataset row has an expert solution.
    """
    is_expert, is_pad = is_expert.bool(), is_pad.bool()
    on_policy = ~is_expert & ~is_pad
    on_tokens = response_mask.bool() & on_policy.unsqueeze(-1)
    expert_tokens = response_mask.bool() & is_expert.unsqueeze(-1)
    calibrated = fields.calibration_mask.bool() & on_tokens
    above = old_log_probs > fields.baseline
    passed_rows = fields.passed.unsqueeze(-1)
    metrics: dict[str, float] = {}
    for tag, rows in (("passed", passed_rows), ("failed", ~passed_rows)):
        selected = calibrated & rows
        count = int(selected.sum())
        metrics[f"calibrl/frac_above_baseline_{tag}"] = float((above & selected).sum()) / count if count else 0.0
        metrics[f"calibrl/frac_below_baseline_{tag}"] = float((~above & selected).sum()) / count if count else 0.0
    prompt_groups = int(torch.unique(fields.group_codes[on_policy]).numel())
    expert_rows = int(is_expert.sum())
    # several expert rows may share a group (calibrl.max_experts_per_prompt > 1): count groups, not rows
    groups_with_expert_rows = int(torch.unique(fields.group_codes[is_expert]).numel())
    metrics.update(
        {
            "calibrl/entropy_on_policy": _token_mean(entropy, on_tokens),
            "calibrl/expert_entropy": _token_mean(entropy, expert_tokens),
            "calibrl/expert_log_prob": _token_mean(old_log_probs, expert_tokens),
            "calibrl/expert_pass_rate": float(fields.passed[is_expert].float().mean()) if expert_rows else 0.0,
            "calibrl/expert_truncated_frac": float(expert_truncated[is_expert].float().mean()) if expert_rows else 0.0,
            "calibrl/expert_rows": float(expert_rows),
            "calibrl/expert_groups": float(groups_with_expert_rows),
            **prompt_count_metrics(groups_offered_expert, groups_with_solution),
            "calibrl/groups_without_expert": float(prompt_groups - groups_with_expert_rows),
            "calibrl/calibrated_token_frac": float(calibrated.sum()) / max(int(on_tokens.sum()), 1),
        }
    )
    if fields.aligned is not None:
        # of the on-policy tokens in groups with an expert: those compared with an expert token
        eligible = on_tokens & fields.group_has_expert.unsqueeze(-1)
        count = int(eligible.sum())
        aligned = int((fields.aligned & eligible).sum())
        if count:  # not logged in a step without any expert row (the fraction is undefined there)
            metrics["calibrl/baseline_aligned_fraction"] = aligned / count
    return metrics


def prompt_count_metrics(offered: int, with_solution: int) -> dict[str, float]:
    """Prompt counts of a whole training step (all ``parameter_sync_step`` parts of it).

    Args:
        offered: prompts that got an expert row (after warm-up and keep probability).
        with_solution: prompts whose dataset row has an expert solution.
    """
    return {
        "calibrl/expert_kept_rate": offered / with_solution if with_solution else 0.0,
        "calibrl/groups_with_expert_solution": float(with_solution),
    }


#: verl data metrics (``compute_data_metrics``) that are per-row statistics and get an expert-row version.
EXPERT_ROW_METRIC_PREFIXES = ("critic/", "response_length", "response/")


def expert_row_metrics(expert_only_metrics: dict) -> dict[str, float]:
    """verl's per-row data metrics computed over the expert rows only, renamed ``calibrl/expert_<verl name>``
    (e.g. ``calibrl/expert_critic/score/mean``) so ``critic/*`` and ``response_length/*`` stay on-policy."""
    return {
        f"calibrl/expert_{key}": value
        for key, value in expert_only_metrics.items()
        if key.startswith(EXPERT_ROW_METRIC_PREFIXES)
    }


def on_policy_rollout_corr_metrics(
    old_log_probs: torch.Tensor,
    rollout_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    on_policy: torch.Tensor,
    rollout_corr_config,
) -> dict[str, float]:
    """verl's ``rollout_corr/*`` metrics over the on-policy rows only (expert rows were not sampled by the rollout).

    Args:
        old_log_probs, rollout_log_probs, response_mask: ``[N, T]``.
        on_policy: ``[N]`` bool, sampled rows (not expert, not padding).
        rollout_corr_config: ``algorithm.rollout_correction``.

    Returns:
        The metrics verl's ``compute_rollout_correction_and_rejection_mask`` reports for these rows ({} if none).
    """
    from verl.trainer.ppo.rollout_corr_helper import compute_rollout_correction_and_rejection_mask

    rows = on_policy.bool().nonzero().squeeze(-1)
    if rows.numel() == 0:
        return {}
    _, _, metrics = compute_rollout_correction_and_rejection_mask(
        old_log_prob=old_log_probs[rows],
        rollout_log_prob=rollout_log_probs[rows],
        response_mask=response_mask[rows],
        rollout_is=rollout_corr_config.get("rollout_is", None),
        rollout_is_threshold=rollout_corr_config.get("rollout_is_threshold", 2.0),
        rollout_is_batch_normalize=rollout_corr_config.get("rollout_is_batch_normalize", False),
        rollout_rs=rollout_corr_config.get("rollout_rs", None),
        rollout_rs_threshold=rollout_corr_config.get("rollout_rs_threshold", None),
    )
    return {key: float(value) for key, value in metrics.items()}
