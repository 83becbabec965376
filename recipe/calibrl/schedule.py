"""When an expert row calibrates its group (METHOD §7.3: in the released code these knobs acted only after the
baseline had been copied, so they never switched the calibration term off; here every one of them does).

Two decisions, made at different times:

- before generation (:meth:`ExpertSchedule.expert_rows_for_batch`): GRPO-only warm-up steps, prompts without an
  expert solution, and the per-group keep probability. A prompt that gets no expert row costs nothing (no
  tokenisation, no old-log-prob forward) and its group trains as plain GRPO.
- after generation, as soon as rewards exist (:func:`experts_outside_pass_rate_window`): the pass-rate window needs
  the group's on-policy outcomes, so the expert row exists; outside the window it is removed before any forward pass,
  which switches its calibration term off (and luffy/rlplus do not train on it).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from calibrl_ext.core import encode_groups
from recipe.calibrl.settings import CalibRLRecipeSettings


class ExpertSchedule:
    """Per-step expert decisions from :class:`CalibRLRecipeSettings`; stateless, so resuming reproduces them."""

    def __init__(self, settings: CalibRLRecipeSettings):
        self.settings = settings

    def in_warmup(self, global_step: int) -> bool:
        """True while the first ``grpo_warmup_steps`` steps (1-based) run as plain GRPO."""
        return global_step <= self.settings.grpo_warmup_steps

    def expert_rows_for_batch(self, solutions: Sequence[str], global_step: int) -> np.ndarray:
        """Which prompts of a training batch get an expert row this step.

        Args:
            solutions: ``[B]`` expert solutions in batch order (``""`` = none for that prompt).
            global_step: the step the batch is generated for (1-based, as verl counts).

        Returns:
            ``[B]`` bool. The keep draw uses a generator seeded by (schedule_seed, global_step), one draw per prompt in
            batch order, so a resumed run makes the same decisions for the same step.
        """
        has_solution = np.array([isinstance(s, str) and s.strip() != "" for s in solutions], dtype=bool)
        if not self.settings.uses_expert_rows or self.in_warmup(global_step):
            return np.zeros(len(solutions), dtype=bool)
        keep_prob = self.settings.expert_keep_prob
        if keep_prob >= 1.0:
            return has_solution
        draws = np.random.default_rng([self.settings.schedule_seed, global_step]).random(len(solutions))
        return has_solution & (draws < keep_prob)


def groups_in_pass_rate_window(
    passed: torch.Tensor, group_codes: torch.Tensor, on_policy: torch.Tensor, window: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """On-policy pass rate of each row's group and whether it lies in ``window`` (inclusive).

    Args:
        passed: ``[N]`` bool s_i > 0.
        group_codes: ``[N]`` dense group codes (:func:`calibrl_ext.core.encode_groups`).
        on_policy: ``[N]`` bool, rows that count (not expert, not padding).
        window: ``(low, high)``.

    Returns:
        ``([N]`` float pass rate of the row's group, ``[N]`` bool in-window). Groups without on-policy rows have rate
        0.
    """
    num_groups = int(group_codes.max().item()) + 1 if group_codes.numel() else 0
    weights = on_policy.double()
    count = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, group_codes, weights)
    passes = torch.zeros(num_groups, dtype=torch.float64).index_add_(0, group_codes, weights * passed.double())
    rate = (passes / count.clamp(min=1))[group_codes]
    low, high = window
    return rate.float(), (rate >= low) & (rate <= high)


def experts_outside_pass_rate_window(
    scores: torch.Tensor,
    group_ids: Sequence[str] | np.ndarray,
    is_expert: torch.Tensor,
    pass_threshold: float,
    window: tuple[float, float],
) -> torch.Tensor:
    """Expert rows whose group's on-policy pass rate (reward > ``pass_threshold``) lies outside ``window``.

    Args:
        scores: ``[N]`` rewards of the sampled rows (rollouts and expert rows; no pads yet).
        group_ids: ``[N]`` prompt uids.
        is_expert: ``[N]`` bool.
        pass_threshold: s_i = +1 iff r_i > pass_threshold.
        window: ``(low, high)``, inclusive.

    Returns:
        ``[N]`` bool, True on the expert rows to remove.
    """
    is_expert = is_expert.bool()
    _, inside = groups_in_pass_rate_window(scores > pass_threshold, encode_groups(group_ids), ~is_expert, window)
    return is_expert & ~inside
