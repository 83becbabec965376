"""CalibRL's policy-loss settings as a verl ``PolicyLossConfig`` subclass.

Selected in a verl config with::

    actor_rollout_ref.actor.policy_loss._target_=calibrl_ext.config.CalibRLPolicyLossConfig
    actor_rollout_ref.actor.policy_loss.loss_mode=calibrl      # or luffy / rlplus / chord / hpt

Every field's default reproduces the authors' released code (arXiv 2602.20197, METHOD §3, §5, §7).
Out-of-range values raise at construction, i.e. when verl builds the actor config at start-up, with the
full key name and the accepted range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from verl.workers.config import PolicyLossConfig

from calibrl_ext.core import ACTIVATIONS, BEYOND_EXPERT_MODES, CHORD_DEFAULTS, HPT_DEFAULTS

#: Prefix of every key of this dataclass in a verl config, used in error messages.
CONFIG_PREFIX = "actor_rollout_ref.actor.policy_loss"

#: ``loss_mode`` values registered by calibrl (see :mod:`calibrl_ext.verl_losses`).
CALIBRL_LOSS_MODES = ("calibrl", "luffy", "rlplus", "chord", "hpt")


class ConfigValueError(ValueError):
    """A config value is out of range; the message names the full key and how to fix it."""


def _check(condition: bool, key: str, value, requirement: str) -> None:
    if not condition:
        raise ConfigValueError(
            f"{CONFIG_PREFIX}.{key}={value!r} is invalid: {requirement}. "
            f"Fix it on the command line, e.g. `{CONFIG_PREFIX}.{key}=<value>`, or in your recipe yaml."
        )


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


@dataclass
class CalibRLPolicyLossConfig(PolicyLossConfig):
    """Policy-loss settings for CalibRL and the LUFFY / RL-PLUS / CHORD / HPT baselines.

    Args:
        loss_mode: ``calibrl`` (PPO + lambda * calibration term), ``luffy`` / ``rlplus`` (expert rows trained with
            their §5 losses), ``chord`` / ``hpt`` (expert rows trained with an SFT loss, see their keys below).
            Other verl modes are accepted unchanged (the calibrl fields are then unused).
        alpha: LeakyReLU slope for x < 0 in the calibration term (paper alpha; released 0.5). In [0, 1]: 0 switches
            the x < 0 branch off (ReLU), 1 makes the term linear (no modulation by the expert baseline).
        lam: weight lambda of the calibration term (released 0.1). >= 0; 0 reduces CalibRL to Dr.GRPO.
        activation: shaping function phi of x = -s (l - b): ``leaky_relu`` (paper), ``relu``, ``sigmoid``, ``tanh``,
            ``huber`` (the paper's ablation, §4).
        huber_delta: transition point of the Huber activation (> 0; only used with ``activation=huber``).
        weight_by_abs_advantage: multiply the term by |A_i| ("distribution-aware" group-rareness weighting,
            released: on). Off weighs every calibrated token 1.
        pass_threshold: a row "passed" (s_i = +1) when its reward is > this (released 0.1: accuracy 1 plus any
            format bonus; METHOD §7.8 notes that A includes the format bonus while s does not).
        beyond_expert: on-policy positions past the expert's length: ``zero_baseline`` compares with b_t = 0 (a
            log-prob of 1, as released), ``drop`` applies no calibration term there (METHOD §7.7).
        luffy_gamma: gamma of LUFFY's policy shaping f(p) = p / (p + gamma) on expert tokens (LUFFY: 0.1; > 0).
        expert_adv_clip: bound on |A_e| for the expert rows trained by ``luffy`` / ``rlplus`` (METHOD §7.9 guard
            against (r_e - mu) / 1e-6 when norm_by_std is on and a group is all-equal). ``null`` disables the
            clamp; non-finite values are always dropped. Default 5.0 never acts with the released Dr.GRPO
            advantages (|A_e| <= 1.1).
        chord_mu_warmup_steps, chord_mu_decay_steps, chord_mu_peak, chord_mu_valley: CHORD's mixing weight mu of
            the expert SFT term (``calibrl_ext/losses/chord.py``): linear 0 -> peak over the warm-up steps, cosine
            peak -> valley over the decay steps, then valley. Defaults 0 / 0 / 0.1 / 0.1 (a constant mu = 0.1):
            Trinity-RFT ``MIXCHORDPolicyLossFn.default_args`` (docs/method.md, "CHORD"). Steps >= 0, mu in [0, 1].
        chord_enable_phi: weight each expert token's NLL by phi(p) = p (1 - p) (CHORD-phi; Trinity-RFT default
            ``enable_phi_function: True``); false trains the expert row with the plain NLL (CHORD-mu; ms-swift's
            ``chord_enable_phi_function`` default).
        hpt_gamma: HPT's switch threshold (``calibrl_ext/losses/hpt.py``): a group whose on-policy pass rate P
            (reward > ``pass_threshold``) is <= gamma trains on its expert row with SFT and drops its rollouts from
            the policy-gradient part; a group with P > gamma trains with GRPO and drops its expert row. In [0, 1).
            Default 0.0 (SFT only where no rollout passed): the released Qwen script's ``switch_gate=0`` solved
            rollouts of n = 8 (Unify-Post-Training ``exp_scripts/train.sh``; docs/method.md, "HPT").
        hpt_sft_coef: weight of HPT's SFT loss beside the policy-gradient part (released ``sft_loss_coef=1.0``).
            > 0.
    """

    loss_mode: str = "calibrl"
    alpha: float = 0.5
    lam: float = 0.1
    activation: str = "leaky_relu"
    huber_delta: float = 1.0
    weight_by_abs_advantage: bool = True
    pass_threshold: float = 0.1
    beyond_expert: str = "zero_baseline"
    luffy_gamma: float = 0.1
    expert_adv_clip: Optional[float] = 5.0
    chord_mu_warmup_steps: int = CHORD_DEFAULTS["mu_warmup_steps"]
    chord_mu_decay_steps: int = CHORD_DEFAULTS["mu_decay_steps"]
    chord_mu_peak: float = CHORD_DEFAULTS["mu_peak"]
    chord_mu_valley: float = CHORD_DEFAULTS["mu_valley"]
    chord_enable_phi: bool = CHORD_DEFAULTS["enable_phi"]
    hpt_gamma: float = HPT_DEFAULTS["gamma"]
    hpt_sft_coef: float = HPT_DEFAULTS["sft_coef"]

    def __post_init__(self):
        _check(_is_number(self.alpha) and 0.0 <= self.alpha <= 1.0, "alpha", self.alpha, "must be a number in [0, 1]")
        _check(_is_number(self.lam) and self.lam >= 0.0, "lam", self.lam, "must be a finite number >= 0")
        _check(self.activation in ACTIVATIONS, "activation", self.activation, f"must be one of {list(ACTIVATIONS)}")
        _check(_is_number(self.huber_delta) and self.huber_delta > 0, "huber_delta", self.huber_delta, "must be > 0")
        _check(
            isinstance(self.weight_by_abs_advantage, bool),
            "weight_by_abs_advantage",
            self.weight_by_abs_advantage,
            "must be true or false",
        )
        _check(_is_number(self.pass_threshold), "pass_threshold", self.pass_threshold, "must be a finite number")
        _check(
            self.beyond_expert in BEYOND_EXPERT_MODES,
            "beyond_expert",
            self.beyond_expert,
            f"must be one of {list(BEYOND_EXPERT_MODES)}",
        )
        _check(_is_number(self.luffy_gamma) and self.luffy_gamma > 0, "luffy_gamma", self.luffy_gamma, "must be > 0")
        _check(
            self.expert_adv_clip is None or (_is_number(self.expert_adv_clip) and self.expert_adv_clip > 0),
            "expert_adv_clip",
            self.expert_adv_clip,
            "must be > 0, or null to disable the clamp",
        )
        for key in ("chord_mu_warmup_steps", "chord_mu_decay_steps"):
            value = getattr(self, key)
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 0, key, value,
                   "must be an integer >= 0")  # fmt: skip
        for key in ("chord_mu_peak", "chord_mu_valley"):
            value = getattr(self, key)
            _check(_is_number(value) and 0.0 <= value <= 1.0, key, value, "must be a number in [0, 1] (mu mixes "
                   "(1 - mu) * GRPO + mu * SFT)")  # fmt: skip
        _check(isinstance(self.chord_enable_phi, bool), "chord_enable_phi", self.chord_enable_phi,
               "must be true or false")  # fmt: skip
        _check(_is_number(self.hpt_gamma) and 0.0 <= self.hpt_gamma < 1.0, "hpt_gamma", self.hpt_gamma,
               "must be a pass rate in [0, 1) (at 1 every group would train on SFT only)")  # fmt: skip
        _check(_is_number(self.hpt_sft_coef) and self.hpt_sft_coef > 0, "hpt_sft_coef", self.hpt_sft_coef,
               "must be a finite number > 0")  # fmt: skip


def calibrl_settings(actor_config) -> CalibRLPolicyLossConfig:
    """Return the actor's ``policy_loss`` as a :class:`CalibRLPolicyLossConfig`, or raise naming the fix.

    Args:
        actor_config: verl's ``ActorConfig`` (or the ``actor_rollout_ref.actor`` DictConfig after instantiation).
    """
    policy_loss = actor_config.policy_loss
    if isinstance(policy_loss, CalibRLPolicyLossConfig):
        return policy_loss
    raise ConfigValueError(
        f"{CONFIG_PREFIX}.loss_mode={policy_loss.get('loss_mode')!r} needs the CalibRL settings, but "
        f"{CONFIG_PREFIX} was built as {type(policy_loss).__name__}. Set "
        f"`{CONFIG_PREFIX}._target_=calibrl_ext.config.CalibRLPolicyLossConfig` (the recipe's yaml does)."
    )
