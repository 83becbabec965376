"""Driver step after the old-log-prob pass: CalibRL's per-row fields, on-policy advantages, expert-row removal.

Runs where a legacy trainer (``RayPPOTrainer.fit``, verl 0.4-0.8; EasyR1's ``fit``) would call
``compute_advantage``; the fork's own advantage call is skipped for the batch. Writes, per row, the fields the actor
loss reads (names of :mod:`calibrl_ext.verl_losses`, so the two paths share them), then keeps only what enters the
update: on-policy rows (CalibRL) or on-policy + expert rows (LUFFY / RL-PLUS), padded back to the world size.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from calibrl_ext.core import aggregate_loss, calibration_mask, expert_baseline, group_advantages
from calibrl_ext.fork_kit.rows import EXPERT, ON_POLICY, PAD, ROW_KIND
from calibrl_ext.fork_kit.settings import ForkSettings

# Same names as calibrl_ext.verl_losses.CALIBRL_FIELDS (that module imports verl 0.9, so they are repeated here;
# tests/fork_kit pins them equal).
EXPERT_BASELINE = "calibrl_expert_baseline"
CALIBRATION_MASK = "calibrl_calibration_mask"
PASSED = "calibrl_passed"
IS_EXPERT = "calibrl_is_expert"
#: Keys to add to the actor's ``select_keys`` in ``update_policy`` (the fork drops every other key there).
ACTOR_SELECT_KEYS = (EXPERT_BASELINE, CALIBRATION_MASK, PASSED, IS_EXPERT)


def after_old_log_prob(
    batch,
    settings: ForkSettings,
    world_size: int = 1,
    entropys: Optional[torch.Tensor] = None,
    loss_agg_mode: str = "token-mean",
    scores_key: str = "token_level_scores",
    old_log_probs_key: str = "old_log_probs",
):
    """Return ``(batch for the actor update, metrics)`` for a batch built by :func:`append_expert_rows`.

    Args:
        batch: ``DataProto``-style batch with ``response_mask`` ``[N, R]``, ``old_log_probs`` ``[N, R]`` (from ONE
            old-log-prob pass over on-policy and expert rows), the token-level reward ``scores_key`` ``[N, R]``,
            ``uid`` and :data:`ROW_KIND` columns.
        settings: the fork's :class:`ForkSettings`.
        world_size: the returned row count is a multiple of it (PAD rows, excluded from every term).
        entropys: optional ``[N, R]`` per-token entropy of the old-log-prob pass, to report ``actor/entropy`` over
            ON-POLICY tokens only (legacy ``fit`` aggregates it over every row, expert rows included).
        loss_agg_mode: the actor's aggregation mode (for the entropy metric).
        scores_key, old_log_probs_key: the fork's names (EasyR1: ``token_level_scores`` / ``old_log_probs``).

    Returns:
        the new batch (``advantages``, ``returns`` ``[N', R]`` and the :data:`ACTOR_SELECT_KEYS` fields added) and a
        dict of floats (``calibrl/...`` counts, ``actor/entropy`` when ``entropys`` is given).
    """
    tensors, non_tensors = batch.batch, batch.non_tensor_batch
    for key in ("response_mask", old_log_probs_key, scores_key):
        if key not in tensors.keys():
            raise ValueError(
                f"after_old_log_prob: the batch lacks '{key}' (run it after the reward and the old-log-prob pass)"
            )
    if ROW_KIND not in non_tensors:
        raise ValueError(
            "after_old_log_prob: the batch has no calibrl_row_kind column; build it with append_expert_rows "
            "(released CalibRL fork: mark_released_expert_rows)"
        )
    if settings.trains_expert_rows and "rollout_log_probs" in tensors.keys():
        raise ValueError(
            f"loss_mode={settings.loss_mode!r} trains the expert rows, which have no rollout log-probs: switch rollout "
            "correction off (algorithm.rollout_correction / rollout_is) and do not request rollout log-probs, or use "
            "loss_mode='calibrl', which removes the expert rows before rollout correction runs"
        )
    kind = np.asarray(non_tensors[ROW_KIND])
    uid = non_tensors["uid"]
    is_expert = torch.as_tensor(kind == EXPERT)
    is_pad = torch.as_tensor(kind == PAD)
    response_mask = tensors["response_mask"] * ~is_pad.unsqueeze(-1)
    old_log_probs = tensors[old_log_probs_key]
    scores = tensors[scores_key].sum(-1)

    advantages = group_advantages(scores, uid, is_expert | is_pad, norm_by_std=settings.norm_adv_by_std)
    advantages = torch.where(is_pad, torch.zeros_like(advantages), advantages)
    token_advantages = advantages.unsqueeze(-1) * response_mask
    tensors["response_mask"] = response_mask
    tensors["advantages"] = token_advantages
    tensors["returns"] = token_advantages
    tensors[EXPERT_BASELINE] = expert_baseline(old_log_probs, response_mask, uid, is_expert)
    tensors[CALIBRATION_MASK] = calibration_mask(response_mask, uid, is_expert, settings.beyond_expert).to(
        old_log_probs.dtype
    )
    tensors[PASSED] = scores > settings.pass_threshold
    tensors[IS_EXPERT] = is_expert

    on_policy = torch.as_tensor(kind == ON_POLICY)
    metrics = {
        "calibrl/expert_rows": float(is_expert.sum()),
        "calibrl/expert_pass_rate": float(tensors[PASSED][is_expert].float().mean()) if is_expert.any() else 0.0,
    }
    if entropys is not None:
        on_tokens = response_mask * on_policy.unsqueeze(-1)
        # float32: the old-log-prob pass may return bf16 entropies (verl 0.5), too coarse for a logged mean
        metrics["actor/entropy"] = float(aggregate_loss(entropys.detach().float(), on_tokens.float(), loss_agg_mode))

    keep_rows = on_policy | is_expert if settings.trains_expert_rows else on_policy
    keep = np.flatnonzero(keep_rows.numpy())
    pads = np.flatnonzero(kind == PAD)
    missing = (-len(keep)) % world_size
    if missing and not len(pads):
        raise ValueError(
            f"after_old_log_prob: {missing} pad rows are needed to keep the row count a multiple of world_size="
            f"{world_size}, but the batch has none; pass the same world_size to append_expert_rows (it adds them)"
        )
    keep = np.concatenate([keep, np.resize(pads, missing)]).astype(np.int64)  # a pad may repeat: all are excluded
    index = torch.as_tensor(keep)
    out_tensors = {key: tensors[key][index] for key in tensors.keys()}
    out_non_tensors = {key: np.asarray(value)[keep] for key, value in non_tensors.items()}
    out = type(batch).from_dict(tensors=out_tensors, non_tensors=out_non_tensors, meta_info=dict(batch.meta_info))
    return out, metrics
