"""CalibRL's calibration term and its policy loss (pure torch, no verl import).

Paper: "Controllable Exploration in Hybrid-Policy RLVR for Multi-Modal Reasoning" (CalibRL),
https://arxiv.org/abs/2602.20197. "§n" refers to ``docs/method.md``. With default arguments every function
reproduces the authors' released numerics.

Shapes: ``N`` rows, ``T`` response positions. Symbols:
  A_i advantage, s_i = +1 if row i passed else -1, l_{i,t} = log pi_theta, b_t the expert baseline
  (:func:`calibrl_ext.losses.groups.expert_baseline`), x_{i,t} = -s_i (l_{i,t} - b_t),
  G_{i,t} = |A_i| * phi(x_{i,t}), L = agg(L_pg) + lambda * agg(G) over on-policy tokens (§3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

from calibrl_ext.losses.ppo import (
    _all_finite,
    _masked_mean,
    _on_policy_mask,
    _row_vector,
    aggregate_loss,
    ppo_clip_token_loss,
)

__all__ = ["ACTIVATIONS", "calibration_diagnostics", "calibration_term", "calibrl_policy_loss"]

#: Activations phi applied to x = -s (l - b) (paper Table: ablation of the shaping function, §4).
ACTIVATIONS = ("leaky_relu", "relu", "sigmoid", "tanh", "huber")

Activation = Literal["leaky_relu", "relu", "sigmoid", "tanh", "huber"]


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
    passed_rows = _row_vector(passed, log_probs, "passed").bool().reshape(-1)
    mask = mask.bool()
    # Per-row counts first, then the split by passed / failed on [N]: no [N, T] row masks are materialised.
    tokens_per_row = mask.sum(dim=-1)
    above_per_row = ((log_probs.detach() > baseline) & mask).sum(dim=-1)
    out = {}
    for tag, rows in (("passed", passed_rows), ("failed", ~passed_rows)):
        count = tokens_per_row[rows].sum()
        above = above_per_row[rows].sum()
        out[f"above_baseline_{tag}"] = above / count.clamp(min=1)
        out[f"below_baseline_{tag}"] = (count - above) / count.clamp(min=1)
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
    calib_mask = on_mask if calibration_token_mask is None else on_mask & calibration_token_mask.bool()
    if _all_finite(old_log_probs, log_probs, baseline):
        # Finite inputs (verl pads with zeros): the tensors go in as they are, as in the registered loss. Off-mask
        # entries are finite, so the aggregation's select (PPO part) and the calibration mask's multiply zero them in
        # the loss, and their gradient is 0 times a finite factor: the same loss, gradient and metrics as the
        # selects below, without their five [N, T] passes (and a sixth in the backward).
        safe_old, safe_new, safe_baseline = old_log_probs, log_probs, baseline
    else:
        # One "keep" mask selects both log-prob tensors: padding (-inf / NaN there) becomes 0, so every later op
        # sees finite inputs and needs no select of its own. A non-finite log-prob or baseline INSIDE the mask is a
        # caller bug and propagates.
        with torch.no_grad():
            keep = on_mask & torch.isfinite(old_log_probs)
            safe_old = torch.where(keep, old_log_probs, 0.0)
            safe_baseline = torch.where(calib_mask, baseline.detach().to(log_probs.dtype), 0.0)
        safe_new = torch.where(keep, log_probs, 0.0)
    pg_mat, stats = ppo_clip_token_loss(safe_old, safe_new, advantages, clip_low, clip_high, clip_c)
    calib_mat = calibration_term(
        safe_new,
        safe_baseline,
        advantages,
        passed,
        activation=activation,
        alpha=alpha,
        huber_delta=huber_delta,
        weight_by_abs_advantage=weight_by_abs_advantage,
    ) * calib_mask.to(log_probs.dtype)  # a float multiply: on CPU several times cheaper than a select
    # ONE aggregation of the combined per-token loss (aggregation is linear, so this equals agg(L_pg) + lambda *
    # agg(G)): the masked select and sum, forward and backward, is the costliest part of the loss on CPU, and a
    # second one on the gradient path made this loss ~1.7x verl's vanilla loss (bench/loss_overhead.py). The parts
    # are aggregated again only for the metrics, without gradient.
    loss = aggregate_loss(pg_mat + lam * calib_mat, on_mask, loss_agg_mode, **global_batch_info)
    with torch.no_grad():
        calibration_loss = aggregate_loss(calib_mat, on_mask, loss_agg_mode, **global_batch_info)
        count = on_mask.sum().clamp(min=1).float()  # shared by the four token fractions below
        diagnostics = calibration_diagnostics(safe_new, baseline, torch.as_tensor(passed), calib_mask)
        metrics = {
            "pg_loss": loss.detach() - lam * calibration_loss,
            "calibration_loss": calibration_loss,
            "pg_clipfrac": _masked_mean(stats["clipped"], on_mask, count),
            "pg_clipfrac_lower": _masked_mean(stats["clipped_lower"], on_mask, count),
            # -(sum of the log-ratio) is bit-identical to the sum of its negation, without a negated [N, T] copy.
            "ppo_kl": -_masked_mean(stats["log_ratio"], on_mask, count),
            # calib_mask lies inside on_mask, so its token count is the diagnostics' passed + failed counts.
            "calibrated_token_fraction": (diagnostics["tokens_passed"] + diagnostics["tokens_failed"]).float() / count,
        }
        metrics.update(diagnostics)
    return loss, metrics

