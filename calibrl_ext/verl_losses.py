"""verl glue for the policy losses: ``calibrl``, ``luffy``, ``rlplus``, ``chord`` and ``hpt`` in verl's policy-loss
registry.

How the per-row CalibRL inputs reach a registered loss
------------------------------------------------------
verl's registry functions see only ``old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
rollout_is_weights`` (``verl/workers/utils/losses.py::ppo_loss``). CalibRL also needs, per row, the expert baseline
b_t, the pass sign s_i, where the term applies and which rows are expert rows. The driver writes them into the
batch (field names in :data:`BATCH_FIELDS`); :func:`calibrl_actor_loss` - installed on the actor with
``actor_rollout_wg.set_loss_fn`` - reads them from the micro-batch, makes them visible to the registered loss for
the duration of one ``ppo_loss`` call (a context variable), and reports the loss parts as verl metrics.
Everything else (entropy bonus, KL loss, rollout-correction weights, micro-batch-invariant aggregation through
``agg_loss`` with ``config.global_batch_info``) is verl's own ``ppo_loss``; the PPO part is verl's vanilla formula
(see :func:`_ppo_token_loss` for why it is computed per token here).

A fork that builds its own batches calls the same pieces: see ``docs/verl_fork.md``.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Optional

import torch
from tensordict import TensorDict
from verl.trainer.ppo.core_algos import agg_loss, register_policy_loss
from verl.utils.metric import AggregationType, Metric
from verl.utils.torch_functional import masked_mean
from verl.workers.utils.losses import ppo_loss

from calibrl_ext import core
# The module, not the name: `import calibrl_ext.config` imports verl, whose plugin entry point imports this module
# while calibrl_ext.config is still half-initialised (the name would not exist yet; the module does).
from calibrl_ext import config as calibrl_config

#: Batch fields the driver writes for the actor update (per row; ``[T]`` fields are nested, response-aligned).
EXPERT_BASELINE = "calibrl_expert_baseline"  # [T] float: b_t (zeros where no expert / past the expert's length)
CALIBRATION_MASK = "calibrl_calibration_mask"  # [T] float: 1 where the calibration term applies
PASSED = "calibrl_passed"  # [] bool: s_i > 0
IS_EXPERT = "calibrl_is_expert"  # [] bool: expert row (trained only by luffy / rlplus / chord / hpt)
CHORD_MU = "calibrl_chord_mu"  # [] float: CHORD's mu of this step (the same on every row)
HPT_SFT_GROUP = "calibrl_hpt_sft_group"  # [] bool: the row's group is switched to SFT (hpt)
#: [] float each: the share of the update batch's response tokens that the PPO part / the expert SFT part trains
#: (the same on every row; chord and hpt average each part over its own tokens, see losses.ppo.part_token_mean).
POLICY_TOKEN_SHARE = "calibrl_policy_token_share"
EXPERT_TOKEN_SHARE = "calibrl_expert_token_share"
#: The fields of calibrl / luffy / rlplus: the contract the fork kit's driver writes too (fork_kit.ACTOR_SELECT_KEYS).
CALIBRL_FIELDS = (EXPERT_BASELINE, CALIBRATION_MASK, PASSED, IS_EXPERT)
#: Every per-row field a registered loss reads: CALIBRL_FIELDS plus chord's / hpt's (this package's driver only).
BATCH_FIELDS = (*CALIBRL_FIELDS, CHORD_MU, HPT_SFT_GROUP, POLICY_TOKEN_SHARE, EXPERT_TOKEN_SHARE)
# [] float: this update's lambda (adaptive lambda, calibrl_ext/adaptive_lam.py); absent: policy_loss.lam. Optional,
# so not in BATCH_FIELDS.
LAM = "calibrl_lam"

_REQUIRED_FIELDS = {
    "calibrl": (EXPERT_BASELINE, PASSED),
    "luffy": (IS_EXPERT,),
    "rlplus": (IS_EXPERT,),
    "chord": (IS_EXPERT, CHORD_MU, POLICY_TOKEN_SHARE, EXPERT_TOKEN_SHARE),
    "hpt": (IS_EXPERT, HPT_SFT_GROUP, POLICY_TOKEN_SHARE, EXPERT_TOKEN_SHARE),
}

_micro_batch_extras: contextvars.ContextVar[Optional[dict[str, Any]]] = contextvars.ContextVar(
    "calibrl_micro_batch_extras", default=None
)


class MissingBatchFieldError(KeyError):
    """A registered calibrl loss ran without the per-row fields the driver must provide."""

    def __str__(self) -> str:
        return str(self.args[0])


@contextlib.contextmanager
def micro_batch_extras(**tensors: torch.Tensor):
    """Make padded per-row tensors (keys: :data:`BATCH_FIELDS`) visible to the registered losses.

    Yields a dict into which the registered loss writes its parts (``pg_loss``, ``calibration_loss``, ...), so the
    caller can report them. Rows must be in the same order as the ``log_prob`` the loss receives.
    """
    parts: dict[str, torch.Tensor] = {}
    token = _micro_batch_extras.set({"tensors": tensors, "parts": parts})
    try:
        yield parts
    finally:
        _micro_batch_extras.reset(token)


def _extras(loss_mode: str) -> dict[str, Any]:
    extras = _micro_batch_extras.get()
    required = _REQUIRED_FIELDS[loss_mode]
    missing = [name for name in required if extras is None or name not in extras["tensors"]]
    if missing:
        raise MissingBatchFieldError(
            f"policy loss '{loss_mode}' needs the per-row batch fields {missing}, which verl's stock ppo_loss does "
            "not provide. Run it through the CalibRL trainer (trainer.v1.trainer_mode=calibrl, recipe/calibrl) or, "
            "in your own trainer, write those fields into the batch and install "
            "calibrl_ext.verl_losses.calibrl_actor_loss with actor_rollout_wg.set_loss_fn (docs/verl_fork.md)."
        )
    return extras


def _ppo_token_loss(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    on_policy: torch.Tensor,
    config,
    rollout_is_weights: torch.Tensor | None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """verl's ``vanilla`` dual-clip PPO loss per token, before aggregation, with verl's three metrics.

    The formula is :func:`calibrl_ext.core.ppo_clip_token_loss`, pinned equal to verl's
    ``compute_policy_loss_vanilla`` (loss and metrics) by ``tests/core/test_verl_glue.py``. It is computed per token
    here, instead of calling verl's function, so that the PPO part and CalibRL's term are aggregated by ONE
    ``agg_loss`` call: the aggregation (a masked select and sum, forward and backward) is the most expensive part of
    the loss on CPU, and a second one made the loss 1.4x verl's instead of the <= 1.3x target (bench/loss_overhead.py).

    Returns:
        ``((bs, T)`` per-token loss, ``{"actor/pg_clipfrac", "actor/ppo_kl", "actor/pg_clipfrac_lower"}``).
    """
    clip_ratio = config.clip_ratio
    clip_low = config.clip_ratio_low if config.clip_ratio_low is not None else clip_ratio
    clip_high = config.clip_ratio_high if config.clip_ratio_high is not None else clip_ratio
    loss_mat, stats = core.ppo_clip_token_loss(
        old_log_prob, log_prob, advantages, clip_low, clip_high, config.get("clip_ratio_c", 3.0)
    )
    if rollout_is_weights is not None:
        loss_mat = loss_mat * rollout_is_weights
    with torch.no_grad():
        metrics = {
            "actor/pg_clipfrac": masked_mean(stats["clipped"].float(), on_policy).item(),
            "actor/ppo_kl": masked_mean(-stats["log_ratio"], on_policy).item(),
            "actor/pg_clipfrac_lower": masked_mean(stats["clipped_lower"].float(), on_policy).item(),
        }
    return loss_mat, metrics


@register_policy_loss("calibrl")
def compute_policy_loss_calibrl(
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str = "token-mean",
    config=None,
    rollout_is_weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """CalibRL loss: agg(L_pg + lambda * |A| * LeakyReLU_alpha(-s (l - b))) over on-policy tokens (METHOD §3).

    All tensors ``(bs, response_length)``. L_pg is verl's ``vanilla`` dual-clip PPO per token (with rollout
    correction weights when given); the calibration term comes from :func:`calibrl_ext.core.calibration_term`; the
    sum is aggregated once by verl's ``agg_loss`` with ``config.global_batch_info`` (aggregation is linear, so this
    equals agg(L_pg) + lambda * agg(G)). The two parts are reported separately. lambda is ``config.lam``, or the
    per-row :data:`LAM` batch field when the driver writes one (adaptive lambda).
    """
    settings = calibrl_config.calibrl_settings(config)
    extras = _extras("calibrl")
    tensors = extras["tensors"]
    # (bs, 1) when the driver sets lambda per update; the plain float otherwise (the released arithmetic)
    lam = tensors[LAM].to(log_prob.dtype).unsqueeze(-1) if LAM in tensors else settings.lam
    on_policy = response_mask.bool()
    if IS_EXPERT in tensors:
        on_policy = on_policy & ~tensors[IS_EXPERT].bool().unsqueeze(-1)
    pg_mat, pg_metrics = _ppo_token_loss(old_log_prob, log_prob, advantages, on_policy, config, rollout_is_weights)
    # Float masks: on CPU a multiply by a float mask is several times cheaper than by a bool one.
    on_policy_weight = on_policy.to(log_prob.dtype)
    term_weight = on_policy_weight
    if CALIBRATION_MASK in tensors:
        term_weight = term_weight * tensors[CALIBRATION_MASK].to(log_prob.dtype)
    # verl pads log_prob and our fields with zeros, so the inputs are finite everywhere: the term needs no select
    # of its own; multiplying by the term mask zeroes it where it is off, and agg_loss normalises over every
    # on-policy token (G = 0 counts as a token, as in the released code).
    calibration = core.calibration_term(
        log_prob,
        tensors[EXPERT_BASELINE],
        advantages,
        tensors[PASSED],
        activation=settings.activation,
        alpha=settings.alpha,
        huber_delta=settings.huber_delta,
        weight_by_abs_advantage=settings.weight_by_abs_advantage,
    ) * term_weight
    loss = agg_loss(
        loss_mat=pg_mat + lam * calibration,
        loss_mask=on_policy_weight,
        loss_agg_mode=loss_agg_mode,
        **config.global_batch_info,
    )
    with torch.no_grad():
        calibration_loss = agg_loss(calibration, on_policy_weight, loss_agg_mode, **config.global_batch_info)
        weighted = (
            lam * calibration_loss
            if LAM not in tensors
            else agg_loss(lam * calibration, on_policy_weight, loss_agg_mode, **config.global_batch_info)
        )
    extras["parts"].update(pg_loss=loss.detach() - weighted, calibration_loss=calibration_loss)
    return loss, pg_metrics


def _hybrid_loss(
    expert_loss: str,
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str,
    config,
    rollout_is_weights: torch.Tensor | None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """PPO on on-policy tokens and the LUFFY / RL-PLUS loss on expert tokens, aggregated together once."""
    settings = calibrl_config.calibrl_settings(config)
    extras = _extras(expert_loss)
    expert_rows = extras["tensors"][IS_EXPERT].bool().unsqueeze(-1)
    tokens = response_mask.bool()
    on_policy = tokens & ~expert_rows
    expert_tokens = tokens & expert_rows
    pg_mat, pg_metrics = _ppo_token_loss(old_log_prob, log_prob, advantages, on_policy, config, rollout_is_weights)
    expert_adv = core.guard_expert_advantage(
        torch.where(expert_tokens, advantages, torch.zeros_like(advantages)), settings.expert_adv_clip
    )
    if expert_loss == "luffy":
        off_policy = core.luffy_expert_token_loss(log_prob, expert_adv, settings.luffy_gamma)
    else:
        off_policy = core.rlplus_expert_token_loss(log_prob, old_log_prob, expert_adv)
    token_weight = tokens.to(log_prob.dtype)
    loss = agg_loss(
        loss_mat=torch.where(expert_tokens, off_policy, pg_mat),
        loss_mask=token_weight,
        loss_agg_mode=loss_agg_mode,
        **config.global_batch_info,
    )
    with torch.no_grad():
        expert_part = agg_loss(off_policy * expert_tokens, token_weight, loss_agg_mode, **config.global_batch_info)
    extras["parts"].update(pg_loss=loss.detach() - expert_part, **{f"{expert_loss}_expert_loss": expert_part})
    return loss, pg_metrics


@register_policy_loss("luffy")
def compute_policy_loss_luffy(
    old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None, rollout_is_weights=None
):
    """LUFFY baseline (METHOD §5): PPO on on-policy tokens, -A_e p/(p+gamma) on expert tokens. ``(bs, T)``."""
    return _hybrid_loss(
        "luffy", old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights
    )


@register_policy_loss("rlplus")
def compute_policy_loss_rlplus(
    old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None, rollout_is_weights=None
):
    """RL-PLUS baseline as released (METHOD §5): PPO on on-policy tokens, the RL-PLUS loss on expert tokens."""
    return _hybrid_loss(
        "rlplus", old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights
    )


def _row_constant(tensors: dict[str, torch.Tensor], name: str) -> float:
    """A per-row field the driver writes with the same value on every row (mu, the token shares)."""
    values = tensors[name].float()
    if values.numel() == 0:
        return 0.0
    if not bool(torch.all(values == values[0])):
        raise ValueError(f"batch field {name} must hold one value for the whole step, got {values.unique().tolist()}")
    return float(values[0])


def _policy_and_sft_loss(
    loss_mode: str,
    old_log_prob: torch.Tensor,
    log_prob: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    loss_agg_mode: str,
    config,
    rollout_is_weights: torch.Tensor | None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """CHORD / HPT: a PPO part and an expert SFT part, each a token mean over its own tokens, then mixed."""
    if loss_agg_mode != "token-mean":
        raise ValueError(
            f"policy loss {loss_mode!r} averages each part over its own tokens (token-mean, as its reference code); "
            f"got {loss_agg_mode!r}. Set actor_rollout_ref.actor.loss_agg_mode=token-mean."
        )
    settings = calibrl_config.calibrl_settings(config)
    extras = _extras(loss_mode)
    tensors = extras["tensors"]
    tokens = response_mask.bool()
    expert_rows = tensors[IS_EXPERT].bool().unsqueeze(-1)
    if loss_mode == "hpt":
        sft_rows = tensors[HPT_SFT_GROUP].bool().unsqueeze(-1)
        policy_tokens, expert_tokens = tokens & ~expert_rows & ~sft_rows, tokens & expert_rows & sft_rows
        policy_weight, expert_weight = 1.0, settings.hpt_sft_coef
        sft_mat = core.chord_expert_token_loss(log_prob, enable_phi=False)
    else:
        mu = _row_constant(tensors, CHORD_MU)
        policy_tokens, expert_tokens = tokens & ~expert_rows, tokens & expert_rows
        policy_weight, expert_weight = 1.0 - mu, mu
        sft_mat = core.chord_expert_token_loss(log_prob, enable_phi=settings.chord_enable_phi)
    pg_mat, pg_metrics = _ppo_token_loss(old_log_prob, log_prob, advantages, policy_tokens, config, rollout_is_weights)
    info = config.global_batch_info
    loss, pg_part, sft_part = core.mix_policy_and_sft(
        pg_mat, sft_mat, policy_tokens, expert_tokens, policy_weight, expert_weight,
        _row_constant(tensors, POLICY_TOKEN_SHARE), _row_constant(tensors, EXPERT_TOKEN_SHARE),
        dp_size=info.get("dp_size", 1) or 1, batch_num_tokens=info.get("batch_num_tokens"),
    )  # fmt: skip
    expert_name = "hpt_sft_loss" if loss_mode == "hpt" else "chord_expert_loss"
    extras["parts"].update(pg_loss=pg_part, **{expert_name: sft_part})
    return loss, pg_metrics


@register_policy_loss("chord")
def compute_policy_loss_chord(
    old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None, rollout_is_weights=None
):
    """CHORD (arXiv 2508.11408; calibrl_ext/losses/chord.py): (1 - mu) * PPO on on-policy tokens + mu * the
    phi-weighted NLL of the expert row, mu from the driver's schedule. ``(bs, T)``."""
    return _policy_and_sft_loss(
        "chord", old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights
    )


@register_policy_loss("hpt")
def compute_policy_loss_hpt(
    old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean", config=None, rollout_is_weights=None
):
    """HPT (arXiv 2509.04419; calibrl_ext/losses/hpt.py): PPO on the rollouts of RL groups + sft_coef * NLL of the
    expert rows of SFT groups (pass rate <= gamma, decided by the driver). ``(bs, T)``."""
    return _policy_and_sft_loss(
        "hpt", old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config, rollout_is_weights
    )


def read_batch_extras(data: TensorDict) -> dict[str, torch.Tensor]:
    """The :data:`BATCH_FIELDS` present in a micro-batch, padded like verl pads ``old_log_probs``.

    Returns:
        dict of ``(bs, response_length)`` tensors for the ``[T]`` fields and ``(bs,)`` for the per-row flags.
    """
    present = [name for name in (*BATCH_FIELDS, LAM) if name in data.keys()]
    if not present:
        return {}
    selected = data.select("response_mask", *present).to_padded_tensor()
    return {name: selected[name] for name in present}


def calibrl_actor_loss(config, model_output, data: TensorDict, dp_group=None):
    """Actor loss for ``set_loss_fn``: verl's ``ppo_loss`` with the CalibRL batch fields made visible.

    Args:
        config: verl ``ActorConfig`` (its ``policy_loss.loss_mode`` selects calibrl / luffy / rlplus / chord / hpt /
            any verl mode).
        model_output: the engine's output (``log_probs`` nested, ``entropy`` optional).
        data: the micro-batch TensorDict, including the :data:`BATCH_FIELDS` written by the driver.
        dp_group: data-parallel group (passed through).

    Returns:
        ``(loss, metrics)`` as verl's ``ppo_loss``; ``actor/pg_loss`` is the PPO part alone and the calibration /
        expert parts are reported as ``actor/calibration_loss``, ``actor/luffy_expert_loss``,
        ``actor/rlplus_expert_loss``, ``actor/chord_expert_loss``, ``actor/hpt_sft_loss`` (each before its weight),
        aggregated like ``actor/pg_loss``. Two counts
        prove what entered the update: ``actor/update_tokens_seen`` (response tokens) and
        ``actor/expert_rows_seen``, summed over micro-batches, mini-batches and epochs and, like every verl SUM
        metric, averaged over data-parallel ranks (multiply by the dp size for the total). With a per-row
        :data:`LAM` field, ``actor/lam_seen`` is the lambda the loss used.
    """
    extras = read_batch_extras(data)
    with micro_batch_extras(**extras) as parts:
        loss, metrics = ppo_loss(config, model_output, data, dp_group)
    aggregation = metrics["actor/pg_loss"].aggregation if "actor/pg_loss" in metrics else AggregationType.MEAN
    for name, value in parts.items():
        metrics[f"actor/{name}"] = Metric(value=value, aggregation=aggregation)
    response_mask = data["response_mask"]
    tokens = response_mask.values().sum() if response_mask.is_nested else response_mask.sum()
    metrics["actor/update_tokens_seen"] = Metric(value=float(tokens), aggregation=AggregationType.SUM)
    expert_rows = float(extras[IS_EXPERT].sum()) if IS_EXPERT in extras else 0.0
    metrics["actor/expert_rows_seen"] = Metric(value=expert_rows, aggregation=AggregationType.SUM)
    if LAM in extras:  # the lambda the loss used (adaptive lambda): proves the driver's value reached the actor
        metrics["actor/lam_seen"] = Metric(value=float(extras[LAM].float().mean()), aggregation=AggregationType.MEAN)
    return loss, metrics
