"""CalibRL settings for a fork whose actor config cannot carry them (no verl import: works beside any verl).

verl 0.4-0.8 build the actor config as a fixed dataclass / DictConfig, and EasyR1 as its own dataclass, so the kit
keeps CalibRL's settings in one object the fork defines once (the guide puts it at the top of the edited files).
Field meanings and defaults are those of :class:`calibrl_ext.config.CalibRLPolicyLossConfig` (the released numerics).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from calibrl_ext.core import ACTIVATIONS, BEYOND_EXPERT_MODES

#: ``loss_mode`` values of the kit: CalibRL drops the expert rows after the old-log-prob pass; LUFFY / RL-PLUS train
#: them.
FORK_LOSS_MODES = ("calibrl", "luffy", "rlplus")


@dataclass(frozen=True)
class ForkSettings:
    """CalibRL's knobs for a fork (see ``CalibRLPolicyLossConfig`` for each field's meaning; same defaults).

    Args:
        loss_mode: ``calibrl`` | ``luffy`` | ``rlplus``.
        alpha, lam, activation, huber_delta, weight_by_abs_advantage: the calibration term (METHOD §3, §4).
        pass_threshold: a row passed when its summed reward is > this (released 0.1).
        beyond_expert: ``zero_baseline`` (released) or ``drop`` (METHOD §7.7).
        norm_adv_by_std: GRPO (True) or Dr.GRPO (False, released) on-policy advantages.
        luffy_gamma, expert_adv_clip: the LUFFY / RL-PLUS expert-row loss (METHOD §5, §7.9).
    """

    loss_mode: str = "calibrl"
    alpha: float = 0.5
    lam: float = 0.1
    activation: str = "leaky_relu"
    huber_delta: float = 1.0
    weight_by_abs_advantage: bool = True
    pass_threshold: float = 0.1
    beyond_expert: str = "zero_baseline"
    norm_adv_by_std: bool = False
    luffy_gamma: float = 0.1
    expert_adv_clip: Optional[float] = 5.0

    def __post_init__(self):
        def number(x):
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        checks = [
            ("loss_mode", self.loss_mode in FORK_LOSS_MODES, f"one of {list(FORK_LOSS_MODES)}"),
            ("alpha", number(self.alpha) and 0.0 <= self.alpha <= 1.0, "a number in [0, 1]"),
            ("lam", number(self.lam) and self.lam >= 0.0, "a finite number >= 0"),
            ("activation", self.activation in ACTIVATIONS, f"one of {list(ACTIVATIONS)}"),
            ("huber_delta", number(self.huber_delta) and self.huber_delta > 0, "> 0"),
            ("weight_by_abs_advantage", isinstance(self.weight_by_abs_advantage, bool), "true or false"),
            ("pass_threshold", number(self.pass_threshold), "a finite number"),
            ("beyond_expert", self.beyond_expert in BEYOND_EXPERT_MODES, f"one of {list(BEYOND_EXPERT_MODES)}"),
            ("norm_adv_by_std", isinstance(self.norm_adv_by_std, bool), "true or false"),
            ("luffy_gamma", number(self.luffy_gamma) and self.luffy_gamma > 0, "> 0"),
            (
                "expert_adv_clip",
                self.expert_adv_clip is None or (number(self.expert_adv_clip) and self.expert_adv_clip > 0),
                "> 0, or None to disable the clamp",
            ),
        ]
        for key, ok, requirement in checks:
            if not ok:
                raise ValueError(f"ForkSettings.{key}={getattr(self, key)!r} is invalid: must be {requirement}")

    @property
    def trains_expert_rows(self) -> bool:
        """LUFFY / RL-PLUS keep the expert rows in the update; CalibRL removes them."""
        return self.loss_mode != "calibrl"
