"""Adaptive lambda: a controller that sets the calibration term's weight per update to hold the on-policy entropy
in a target band (``calibrl.adaptive_lam.*``; the control law and why it is stable: docs/adaptive.md).

Control law (one update per actor update, from the on-policy token-mean entropy H_k that the old-log-prob pass
measures just before that update)::

    band      [H_lo, H_hi]  = target_entropy, or target_ratio * H_0 (H_0: the first measured entropy)
    error     e_k = log(H_lo / H_k) if H_k < H_lo;  log(H_hi / H_k) if H_k > H_hi;  0 inside the band
    step      u_k = clip(gain * e_k, -max_log_step, +max_log_step)
    lambda    lam_k = clip(lam_{k-1} * exp(u_k), lam_min, lam_max)        (lam_0 = policy_loss.lam)

i.e. integral control of log(lambda) on the log-entropy error with a dead band, a clipped step and clipped
bounds. ``gain > 0`` assumes lambda raises the entropy (the calibration term's purpose, METHOD §3); a negative gain
serves the opposite response. The state (lambda, H_0, the last error, the update count) is a small dict saved with
every trainer checkpoint (:meth:`AdaptiveLamController.state_dict`).

No verl import: the recipe's trainer owns one controller and writes its lambda into every update row
(``calibrl_ext.verl_losses.LAM``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch

#: Prefix of the keys in the recipe config, used in error messages.
CONFIG_PREFIX = "calibrl.adaptive_lam"


class AdaptiveLamConfigError(ValueError):
    """An ``calibrl.adaptive_lam.*`` value is invalid; the message names the key and the fix."""


def _fail(key: str, value, requirement: str):
    raise AdaptiveLamConfigError(
        f"{CONFIG_PREFIX}.{key}={value!r} is invalid: {requirement}. Set `{CONFIG_PREFIX}.{key}=...`."
    )


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _band(value, key: str, positive_low: bool) -> Optional[tuple[float, float]]:
    if value is None:
        return None
    band = tuple(value)
    low_ok = len(band) == 2 and _is_number(band[0]) and (band[0] > 0 if positive_low else band[0] >= 0)
    if not (low_ok and _is_number(band[1]) and band[0] <= band[1]):
        _fail(key, value, f"must be [low, high] with {'0 <' if positive_low else '0 <='} low <= high")
    return float(band[0]), float(band[1])


@dataclass(frozen=True)
class AdaptiveLamSettings:
    """The ``calibrl.adaptive_lam`` section (every default documented in the recipe yaml and docs/adaptive.md).

    Args:
        enable: off (default) keeps lambda = ``policy_loss.lam`` and the released numerics bit for bit.
        target_entropy: absolute band ``[low, high]`` of the on-policy token-mean entropy (nats/token); null =
            use ``target_ratio``.
        target_ratio: band relative to the first measured entropy H_0 (used when ``target_entropy`` is null).
        gain: integral gain on the log-entropy error (per update). > 0: lambda rises when entropy is below the band.
        max_log_step: bound on |log(lam_k / lam_{k-1})| per update (0.1 = at most ~10.5% per update).
        lam_min, lam_max: bounds on lambda (``0 < lam_min <= policy_loss.lam <= lam_max``: the control works in
            log space, where 0 is unreachable).
    """

    enable: bool = False
    target_entropy: Optional[tuple[float, float]] = None
    target_ratio: tuple[float, float] = (0.9, 1.1)
    gain: float = 1.0
    max_log_step: float = 0.1
    lam_min: float = 0.01
    lam_max: float = 1.0

    @classmethod
    def from_section(cls, section) -> "AdaptiveLamSettings":
        """Build from the ``calibrl.adaptive_lam`` mapping (None or missing keys: defaults); raise naming the key."""
        section = {} if section is None else dict(section)
        unknown = sorted(set(section) - {f for f in cls.__dataclass_fields__})
        if unknown:
            _fail(unknown[0], section[unknown[0]], f"is not a key; known keys: {sorted(cls.__dataclass_fields__)}")
        enable = section.get("enable", cls.enable)
        if not isinstance(enable, bool):
            _fail("enable", enable, "must be true or false")
        target_ratio = _band(section.get("target_ratio", cls.target_ratio), "target_ratio", positive_low=True)
        if target_ratio is None:
            _fail("target_ratio", None, "must be [low, high] (used when target_entropy is null)")
        settings = cls(
            enable=enable,
            target_entropy=_band(section.get("target_entropy", cls.target_entropy), "target_entropy", False),
            target_ratio=target_ratio,
            gain=section.get("gain", cls.gain),
            max_log_step=section.get("max_log_step", cls.max_log_step),
            lam_min=section.get("lam_min", cls.lam_min),
            lam_max=section.get("lam_max", cls.lam_max),
        )
        if not (_is_number(settings.gain) and settings.gain != 0):
            _fail("gain", settings.gain, "must be a finite non-zero number (> 0: lambda raises entropy)")
        if not (_is_number(settings.max_log_step) and settings.max_log_step > 0):
            _fail("max_log_step", settings.max_log_step, "must be a finite number > 0")
        if not (_is_number(settings.lam_min) and settings.lam_min > 0):
            _fail("lam_min", settings.lam_min, "must be a finite number > 0 (lambda is controlled in log space)")
        if not (_is_number(settings.lam_max) and settings.lam_max >= settings.lam_min):
            _fail("lam_max", settings.lam_max, f"must be a finite number >= lam_min ({settings.lam_min})")
        return settings

    def check_initial_lam(self, lam: float) -> None:
        """``policy_loss.lam`` is the controller's starting point: it must lie within the bounds."""
        if not (self.lam_min <= lam <= self.lam_max):
            raise AdaptiveLamConfigError(
                f"actor_rollout_ref.actor.policy_loss.lam={lam!r} is the adaptive controller's starting value and must "
                f"lie in [{CONFIG_PREFIX}.lam_min, {CONFIG_PREFIX}.lam_max] = [{self.lam_min}, {self.lam_max}]. "
                "Change policy_loss.lam or the bounds."
            )


class AdaptiveLamController:
    """Log-space integral control of lambda on the on-policy entropy (module docstring).

    Args:
        settings: validated :class:`AdaptiveLamSettings`.
        initial_lam: lam_0 (``policy_loss.lam``), within the bounds.
    """

    def __init__(self, settings: AdaptiveLamSettings, initial_lam: float):
        settings.check_initial_lam(initial_lam)
        self.settings = settings
        self.lam = float(initial_lam)
        #: H_0, the first measured entropy (the reference of ``target_ratio``); None before the first update.
        self.reference_entropy: Optional[float] = None
        #: e_k of the last update (0 inside the band, nan when the entropy was not finite).
        self.last_error = 0.0
        self.updates = 0

    def band(self) -> tuple[float, float]:
        """The target band [H_lo, H_hi] in nats/token (needs H_0 in ratio mode)."""
        if self.settings.target_entropy is not None:
            return self.settings.target_entropy
        if self.reference_entropy is None:
            raise RuntimeError("the ratio band needs the first entropy measurement (call update first)")
        low, high = self.settings.target_ratio
        return low * self.reference_entropy, high * self.reference_entropy

    def error(self, entropy: float) -> float:
        """e = log(H_lo / H) below the band, log(H_hi / H) above, 0 inside (> 0: entropy too low)."""
        low, high = self.band()
        # log(0) guards: an entropy of exactly 0 (a collapsed policy) gives a large positive error, which the step
        # clip bounds; a band edge of 0 (target_entropy low = 0) never triggers the "below" branch.
        if entropy < low:
            return math.log(low / max(entropy, 1e-12))
        if entropy > high:
            return math.log(high / entropy)
        return 0.0

    def update(self, entropy: float) -> float:
        """Advance one update with the measured on-policy entropy H_k; returns lam_k (the lambda of this update).

        A non-finite entropy (a broken forward pass) holds lambda and records a nan error: the controller never
        turns a nan into a lambda.
        """
        entropy = float(entropy)
        self.updates += 1
        if not math.isfinite(entropy) or entropy < 0:
            self.last_error = float("nan")
            return self.lam
        if self.reference_entropy is None:
            self.reference_entropy = entropy
        s = self.settings
        self.last_error = self.error(entropy)
        step = min(max(s.gain * self.last_error, -s.max_log_step), s.max_log_step)
        self.lam = min(max(self.lam * math.exp(step), s.lam_min), s.lam_max)
        return self.lam

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state (floats round-trip exactly through ``json``: Python writes the shortest repr)."""
        return {
            "lam": self.lam,
            "reference_entropy": self.reference_entropy,
            "last_error": self.last_error,
            "updates": self.updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a lambda outside the current bounds is clipped into them (bounds may have
        been changed for the resumed run)."""
        missing = {"lam", "reference_entropy", "last_error", "updates"} - set(state)
        if missing:
            raise ValueError(f"adaptive-lambda state lacks {sorted(missing)}: not a state_dict() of this controller")
        self.lam = min(max(float(state["lam"]), self.settings.lam_min), self.settings.lam_max)
        ref = state["reference_entropy"]
        self.reference_entropy = None if ref is None else float(ref)
        self.last_error = float(state["last_error"])
        self.updates = int(state["updates"])


def on_policy_entropy(entropy: torch.Tensor, response_mask: torch.Tensor, on_policy_rows: torch.Tensor) -> float:
    """Token-mean entropy over the response tokens of the on-policy rows (what ``calibrl/entropy_on_policy`` logs).

    Args:
        entropy, response_mask: ``[N, T]``.
        on_policy_rows: ``[N]`` bool (not expert, not padding).

    Returns:
        The mean in nats/token, nan when there is no on-policy token.
    """
    tokens = response_mask.bool() & on_policy_rows.bool().unsqueeze(-1)
    count = tokens.sum()
    if count == 0:
        return float("nan")
    return float((entropy.float() * tokens).sum() / count)
