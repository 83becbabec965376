"""The actor-side loss call for each fork family, taking exactly the names the fork has at that point.

Every form computes L = agg(L_pg + lambda * G * calibration mask) with ONE aggregation over the micro-batch's
training tokens (on-policy tokens for CalibRL; on-policy + expert tokens for LUFFY / RL-PLUS, as their released code
trains them), the formula of the project's registered verl 0.9 losses (``calibrl_ext.verl_losses``). Each form keeps
its fork's own aggregation and scaling conventions: the fork scales the returned loss afterwards, as it does its
stock loss (legacy verl: ``/ gradient_accumulation`` or ``* loss_scale_factor``; EasyR1: ``* micro tokens * world
size / mini-batch tokens``).
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np
import torch

from calibrl_ext import core
from calibrl_ext.fork_kit.driver import CALIBRATION_MASK, EXPERT_BASELINE, IS_EXPERT, PASSED
from calibrl_ext.fork_kit.settings import ForkSettings

#: EasyR1's ``loss_avg_mode`` values and the verl aggregation each one is.
EASYR1_AVG_MODES = {"token": "token-mean", "seq": "seq-mean-token-mean"}


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Detached mean of ``values`` over ``mask`` (0 for an empty mask), for the metrics."""
    mask = mask.float()
    return ((values.detach().float() * mask).sum() / mask.sum().clamp(min=1)).detach()


def _field(model_inputs: Mapping[str, Any], name: str) -> torch.Tensor:
    if name not in model_inputs:
        raise KeyError(
            f"the micro-batch has no '{name}': add calibrl_ext.fork_kit.ACTOR_SELECT_KEYS to update_policy's "
            "select_keys and run fork_kit.after_old_log_prob in the driver (docs/verl_fork.md)"
        )
    return model_inputs[name]


def _config_value(config, name: str, default=None):
    if config is None:
        return default
    value = config.get(name, default) if hasattr(config, "get") else getattr(config, name, default)
    return default if value is None else value


def _clip_ranges(config) -> tuple[float, float, float]:
    """(eps_low, eps_high, c) read from a legacy actor config as verl's own losses read them."""
    clip = _config_value(config, "clip_ratio", 0.2)
    low = _config_value(config, "clip_ratio_low", clip)
    high = _config_value(config, "clip_ratio_high", clip)
    return low, high, _config_value(config, "clip_ratio_c", 3.0)


def calibrl_token_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    model_inputs: Mapping[str, Any],
    settings: ForkSettings,
    clip_low: float,
    clip_high: float,
    clip_c: float,
    loss_agg_mode: str = "token-mean",
    rollout_is_weights: Optional[torch.Tensor] = None,
    loss_scale_factor: Optional[float] = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The loss of ``settings.loss_mode`` on one micro-batch, aggregated once (all tensors ``[bs, R]``).

    Returns:
        ``(loss, metrics)``: metrics are detached scalar tensors ``pg_loss`` (PPO part), ``calibration_loss`` or
        ``<mode>_expert_loss`` (before its weight), ``pg_clipfrac``, ``pg_clipfrac_lower``, ``ppo_kl``.
    """
    expert_rows = _field(model_inputs, IS_EXPERT).bool().unsqueeze(-1)
    tokens = response_mask.bool()
    on_policy = tokens & ~expert_rows
    pg_mat, stats = core.ppo_clip_token_loss(old_log_prob, log_prob, advantages, clip_low, clip_high, clip_c)
    if rollout_is_weights is not None:
        pg_mat = pg_mat * rollout_is_weights
    agg = {"loss_agg_mode": loss_agg_mode, "loss_scale_factor": loss_scale_factor}
    metrics = {
        "pg_clipfrac": _masked_mean(stats["clipped"], on_policy),
        "pg_clipfrac_lower": _masked_mean(stats["clipped_lower"], on_policy),
        "ppo_kl": _masked_mean(-stats["log_ratio"], on_policy),
    }
    if settings.loss_mode == "calibrl":
        weight = on_policy.to(log_prob.dtype)
        calibration = core.calibration_term(
            log_prob, _field(model_inputs, EXPERT_BASELINE), advantages, _field(model_inputs, PASSED),
            activation=settings.activation, alpha=settings.alpha, huber_delta=settings.huber_delta,
            weight_by_abs_advantage=settings.weight_by_abs_advantage,
        ) * (weight * _field(model_inputs, CALIBRATION_MASK).to(log_prob.dtype))  # fmt: skip
        loss = core.aggregate_loss(pg_mat + settings.lam * calibration, weight, **agg)
        with torch.no_grad():
            part = core.aggregate_loss(calibration, weight, **agg)
        metrics.update(pg_loss=loss.detach() - settings.lam * part, calibration_loss=part)
        return loss, metrics
    expert_tokens = tokens & expert_rows
    expert_adv = core.guard_expert_advantage(
        torch.where(expert_tokens, advantages, torch.zeros_like(advantages)), settings.expert_adv_clip
    )
    if settings.loss_mode == "luffy":
        off_policy = core.luffy_expert_token_loss(log_prob, expert_adv, settings.luffy_gamma)
    else:
        off_policy = core.rlplus_expert_token_loss(log_prob, old_log_prob, expert_adv)
    weight = tokens.to(log_prob.dtype)
    loss = core.aggregate_loss(torch.where(expert_tokens, off_policy, pg_mat), weight, **agg)
    with torch.no_grad():
        part = core.aggregate_loss(off_policy * expert_tokens, weight, **agg)
    metrics.update(pg_loss=loss.detach() - part, **{f"{settings.loss_mode}_expert_loss": part})
    return loss, metrics


def verl_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str,
    config,
    model_inputs: Mapping[str, Any],
    settings: ForkSettings,
    rollout_is_weights: Optional[torch.Tensor] = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """verl 0.6-0.7 ``dp_actor.update_policy`` form: replaces ``policy_loss_fn(...)``; returns
    ``(pg_loss, pg_metrics)``.

    Clip ranges come from the actor config as the fork's own losses read them (``clip_ratio``,
    ``clip_ratio_low/high``, ``clip_ratio_c``); ``pg_metrics`` are floats named ``actor/...`` as verl's.
    """
    loss, metrics = calibrl_token_loss(
        old_log_prob, log_prob, advantages, response_mask, model_inputs, settings, *_clip_ranges(config),
        loss_agg_mode=loss_agg_mode,
        rollout_is_weights=rollout_is_weights,
    )  # fmt: skip
    return loss, {f"actor/{name}": float(value) for name, value in metrics.items() if name != "pg_loss"}


def verl_policy_loss_tuple(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str,
    config,
    model_inputs: Mapping[str, Any],
    settings: ForkSettings,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """verl 0.4-0.5 form: replaces ``compute_policy_loss(...)`` / ``policy_loss_fn(...)`` and returns their 4-tuple
    ``(pg_loss, pg_clipfrac, ppo_kl, pg_clipfrac_lower)``."""
    loss, metrics = calibrl_token_loss(
        old_log_prob, log_prob, advantages, response_mask, model_inputs, settings, *_clip_ranges(config),
        loss_agg_mode=loss_agg_mode,
    )  # fmt: skip
    return loss, metrics["pg_clipfrac"], metrics["ppo_kl"], metrics["pg_clipfrac_lower"]


def easyr1_policy_loss(
    old_log_probs: torch.Tensor,
    log_probs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip_ratio_low: float,
    clip_ratio_high: float,
    clip_ratio_dual: float,
    loss_avg_mode: str,
    model_inputs: Mapping[str, Any],
    settings: ForkSettings,
) -> tuple[torch.Tensor, dict[str, float]]:
    """EasyR1 form: replaces ``compute_policy_loss(...)`` in ``DataParallelPPOActor.update_policy``.

    EasyR1 averages per micro-batch (``loss_avg_mode`` ``token`` / ``seq``) and then rescales to the mini-batch's
    global token mean itself (``loss * sum(response_mask) * world_size / total_response_tokens``); that line stays,
    since the driver removed the expert rows (CalibRL) or keeps them in ``response_mask`` (LUFFY / RL-PLUS), which is
    exactly the set of tokens the returned loss averages over. Metrics are floats without prefix, as EasyR1's.
    """
    if loss_avg_mode not in EASYR1_AVG_MODES:
        raise ValueError(f"loss_avg_mode must be one of {list(EASYR1_AVG_MODES)}, got {loss_avg_mode!r}")
    loss, metrics = calibrl_token_loss(
        old_log_probs, log_probs, advantages, response_mask, model_inputs, settings,
        clip_low=clip_ratio_low, clip_high=clip_ratio_high, clip_c=clip_ratio_dual,
        loss_agg_mode=EASYR1_AVG_MODES[loss_avg_mode],
    )  # fmt: skip
    renamed = {"pg_clipfrac": "pg_clipfrac_higher"}
    return loss, {renamed.get(name, name): float(value) for name, value in metrics.items() if name != "pg_loss"}


def released_fork_policy_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    cliprange: float,
    cliprange_low: Optional[float],
    cliprange_high: Optional[float],
    clip_ratio_c: float,
    loss_agg_mode: str,
    model_inputs: Mapping[str, Any],
    settings: ForkSettings,
) -> dict[str, torch.Tensor]:
    """Released CalibRL fork form (verl 0.3.1, ``src/dp_actor.py``): replaces ``core_algos.compute_mix_policy_loss``.

    Returns the dict that ``update_policy`` reads (``pg_loss``, ``ppo_kl``, ``pg_clipfrac``,
    ``pg_clipfrac_lower``) plus ``calibration_loss`` for the logs; ``pg_loss`` already holds lambda * calibration
    (one aggregation), so the fork's ``policy_loss + 0.1 * loss_dict['guided_loss']`` line must be removed (the
    kit returns no ``guided_loss`` key, which would otherwise switch it off silently).
    """
    low = cliprange if cliprange_low is None else cliprange_low
    high = cliprange if cliprange_high is None else cliprange_high
    loss, metrics = calibrl_token_loss(
        old_log_prob, log_prob, advantages, response_mask, model_inputs, settings,
        clip_low=low, clip_high=high, clip_c=clip_ratio_c, loss_agg_mode=loss_agg_mode,
    )  # fmt: skip
    out = {"pg_loss": loss}
    out.update({name: value for name, value in metrics.items() if name != "pg_loss"})
    return out


def mark_released_expert_rows(batch) -> None:
    """Released fork: set :data:`ROW_KIND` from its own expert marker (``pref_mask`` ``[N, R]``, any token set).

    The released fork appends its expert rows itself (``ray_trainer.py``); this lets :func:`after_old_log_prob`
    run on its batch instead of ``compute_mix_grpo_outcome_advantage``.
    """
    from calibrl_ext.fork_kit.rows import EXPERT, ON_POLICY, ROW_KIND

    if "pref_mask" not in batch.batch.keys():
        raise ValueError("mark_released_expert_rows: the batch has no 'pref_mask' (is this the released CalibRL fork?)")
    expert = batch.batch["pref_mask"].bool().any(-1).cpu().numpy()
    batch.non_tensor_batch[ROW_KIND] = np.where(expert, EXPERT, ON_POLICY).astype(np.int8)
