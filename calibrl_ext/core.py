"""CalibRL's maths as plain torch functions (no verl import): re-exports of :mod:`calibrl_ext.losses`.

The code lives in one small module per method (``calibrl_ext/losses/``); this module keeps the public names
that docs/verl_fork.md, forks and tests import.

Paper: "Controllable Exploration in Hybrid-Policy RLVR for Multi-Modal Reasoning" (CalibRL),
https://arxiv.org/abs/2602.20197. "§n" and "METHOD §n" refer to ``docs/method.md``. With default arguments
every function reproduces the authors' released numerics.

Shapes: ``N`` rows (on-policy rollouts and expert rows of several groups), ``T`` response positions
(right-padded; position ``t`` of every row is the ``t``-th generated token).

Symbols:
  r_i     scalar reward of row i (``scores``)
  A_i     advantage (``advantages``), |A_i| the "distribution-aware" weight
  s_i     +1 if row i passed (answer correct), else -1 (``passed``)
  l_{i,t} log pi_theta of token t of row i (``log_probs``); l^old under pi_old (``old_log_probs``)
  b_t     expert baseline: the expert row's l^old at position t (``baseline``)
  x_{i,t} = -s_i (l_{i,t} - b_t); G_{i,t} = |A_i| * phi(x_{i,t}), phi the activation (LeakyReLU_alpha)
  L       = agg(L_pg) + lambda * agg(G) over on-policy tokens (§3)
"""

from __future__ import annotations

from calibrl_ext.losses.calibrl import (
    ACTIVATIONS,
    Activation,
    calibration_diagnostics,
    calibration_term,
    calibrl_policy_loss,
)
from calibrl_ext.losses.groups import (
    BEYOND_EXPERT_MODES,
    calibration_mask,
    encode_groups,
    expert_baseline,
    group_advantages,
)
from calibrl_ext.losses.multi_expert import (
    EXPERT_COMBINE_RULES,
    combined_expert_baseline,
    experts_per_group,
    multi_expert_calibration_mask,
)
from calibrl_ext.losses.chord import CHORD_DEFAULTS, chord_expert_token_loss, chord_mu, chord_policy_loss
from calibrl_ext.losses.hpt import HPT_DEFAULTS, hpt_policy_loss, hpt_sft_groups
from calibrl_ext.losses.hybrid import guard_expert_advantage, mix_policy_and_sft
from calibrl_ext.losses.luffy import luffy_expert_token_loss, luffy_policy_loss
from calibrl_ext.losses.ppo import LOG_RATIO_CLAMP, LOSS_AGG_MODES, aggregate_loss, part_token_mean, ppo_clip_token_loss
from calibrl_ext.losses.rlplus import rlplus_expert_token_loss, rlplus_policy_loss

__all__ = [
    "ACTIVATIONS",
    "Activation",
    "BEYOND_EXPERT_MODES",
    "EXPERT_COMBINE_RULES",
    "CHORD_DEFAULTS",
    "HPT_DEFAULTS",
    "LOG_RATIO_CLAMP",
    "LOSS_AGG_MODES",
    "aggregate_loss",
    "calibration_mask",
    "calibration_term",
    "calibration_diagnostics",
    "calibrl_policy_loss",
    "combined_expert_baseline",
    "chord_expert_token_loss",
    "chord_mu",
    "chord_policy_loss",
    "encode_groups",
    "expert_baseline",
    "experts_per_group",
    "group_advantages",
    "guard_expert_advantage",
    "hpt_policy_loss",
    "hpt_sft_groups",
    "luffy_expert_token_loss",
    "luffy_policy_loss",
    "multi_expert_calibration_mask",
    "mix_policy_and_sft",
    "part_token_mean",
    "ppo_clip_token_loss",
    "rlplus_expert_token_loss",
    "rlplus_policy_loss",
]
