"""The recipe's own settings: the ``calibrl:`` section of ``config/calibrl_trainer.yaml``.

The loss settings (alpha, lambda, activation, ...) live in ``actor_rollout_ref.actor.policy_loss``
(:class:`calibrl_ext.config.CalibRLPolicyLossConfig`); this section holds what the driver decides: which mode
runs, where the expert solution comes from and when an expert row calibrates its group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import OmegaConf

from calibrl_ext.adaptive_lam import AdaptiveLamConfigError, AdaptiveLamSettings
from calibrl_ext.baseline_alignment import ALIGNMENTS

#: ``calibrl.mode`` values and the verl ``policy_loss.loss_mode`` each one runs.
MODE_TO_LOSS_MODE = {
    "calibrl": "calibrl",
    "luffy": "luffy",
    "rlplus": "rlplus",
    "grpo": "vanilla",
    # GRPO plus verl's entropy bonus (actor.entropy_coeff = calibrl.entropy_coeff): the paper's "conventional RL
    # with entropy regularisation" baseline.
    "entropy_reg": "vanilla",
    # GRPO mixed with a phi-weighted SFT loss on the expert row, weight mu on a schedule (arXiv 2508.11408).
    "chord": "chord",
    # Per group: GRPO if the on-policy pass rate is > gamma, else SFT on the expert row (arXiv 2509.04419).
    "hpt": "hpt",
    # SFT on the expert solutions (verl's SFT trainer, recipe/calibrl/sft_stage.py), then GRPO from that checkpoint.
    "sft_then_grpo": "vanilla",
}

#: Modes that add verl's entropy bonus; ``actor.entropy_coeff`` follows ``calibrl.entropy_coeff`` in them, 0 otherwise.
ENTROPY_MODES = ("entropy_reg",)

#: Key of verl's entropy bonus, checked at start-up in the entropy modes.
ENTROPY_COEFF_KEY = "actor_rollout_ref.actor.entropy_coeff"

#: Modes whose groups get an expert row.
EXPERT_MODES = ("calibrl", "luffy", "rlplus", "chord", "hpt")

#: Modes that train the expert row in the actor update (their expert losses, METHOD §5).
EXPERT_TRAINING_MODES = ("luffy", "rlplus", "chord", "hpt")

#: Modes whose loss averages a PPO part and an expert SFT part over their own tokens (the driver writes each part's
#: token share, and CHORD's mu / HPT's SFT groups, into the batch: calibrl_ext/verl_losses.py).
SFT_MIX_MODES = ("chord", "hpt")

#: ``calibrl.expert_combine`` values: how the baselines of several expert rows of a group combine by position
#: (calibrl_ext/losses/multi_expert.py; the same tuple as ``calibrl_ext.losses.multi_expert.EXPERT_COMBINE_RULES``,
#: kept here so the settings import no torch).
EXPERT_COMBINE_RULES = ("max", "mean", "logmeanexp", "passing_mean")

#: Name of the trainer registered with verl (``trainer.v1.trainer_mode``).
TRAINER_MODE = "calibrl"


class CalibRLConfigError(ValueError):
    """A recipe setting is invalid; the message names the key and the fix."""


@dataclass(frozen=True)
class CalibRLRecipeSettings:
    """The ``calibrl:`` config section.

    Args:
        mode: ``calibrl`` (PPO + calibration term, expert rows never trained), ``luffy`` / ``rlplus`` (expert rows
            trained with their losses), ``chord`` / ``hpt`` (expert rows trained with an SFT loss: CHORD's mu mix,
            HPT's per-group switch), ``grpo`` (no expert rows; the same data and driver), ``entropy_reg``,
            ``sft_then_grpo`` (``grpo`` from a checkpoint fine-tuned on the expert solutions first; ``calibrl.sft.*``).
        expert_column: dataset column holding the expert solution (``""`` = no expert for that prompt; data_prep
            writes ``expert_solution``).
        expert_keep_prob: probability that a prompt's expert row is kept in a step (the released "mix ratio");
            1.0 keeps every expert. Dropped groups train as plain GRPO.
        grpo_warmup_steps: the first this-many training steps run without expert rows (plain GRPO).
        pass_rate_window: ``[low, high]``: an expert row calibrates (or, for luffy/rlplus, is trained with) its group
            only if the group's on-policy pass rate p satisfies low <= p <= high; ``[0, 1]`` always.
        schedule_seed: seed of the per-step keep decisions (deterministic across resumes).
        max_experts_per_prompt: the most expert rows a training prompt gets per step (1 = the released method: one
            expert row from ``expert_column``). Above 1, the expert solutions are read from ``expert_list_column``
            (data_prep's ``--max-experts`` writes it) and a prompt gets one expert row per solution, the first
            ``max_experts_per_prompt`` of them. Only mode ``calibrl`` accepts more than 1 (luffy / rlplus refuse at
            start-up: their expert losses and ``(n + 1)``-row mini-batches assume one expert row per group).
        expert_list_column: dataset column with the LIST of expert solutions (read when max_experts_per_prompt > 1).
        expert_combine: how the baselines of several expert rows of one group combine by position: ``max``,
            ``mean`` (default), ``logmeanexp`` or ``passing_mean`` (docs/multi_expert.md). Any rule with one expert
            row per group is exactly the released baseline.
        entropy_coeff: weight of verl's entropy bonus in mode ``entropy_reg`` (the yaml copies it into
            ``actor_rollout_ref.actor.entropy_coeff``; other modes get 0). Must be > 0 in that mode. Default 0.001:
            the ``entropy_coeff`` default of verl's PPO/GRPO actor config before verl 0.5 set it to 0 (verl's GRPO
            examples of that time, e.g. ``examples/grpo_trainer/run_qwen2_5_vl-7b.sh``, train with it).
        baseline_alignment: which expert token a rollout token is compared with (docs/adaptive.md): ``position``
            (released: token t with expert token t), ``lcs`` (longest common subsequence of token ids, in a band of
            ``baseline_alignment_window``), ``window`` (nearest same token id within ``baseline_alignment_window``).
            Unaligned tokens get no calibration term. Mode ``calibrl`` only.
        baseline_alignment_window: band half-width of ``lcs`` / search radius of ``window`` (tokens, >= 0).
        adaptive_lam: ``calibrl.adaptive_lam.*`` (:class:`calibrl_ext.adaptive_lam.AdaptiveLamSettings`); off by
            default. Mode ``calibrl`` only.
    """

    mode: str = "calibrl"
    expert_column: str = "expert_solution"
    expert_keep_prob: float = 1.0
    grpo_warmup_steps: int = 0
    pass_rate_window: tuple[float, float] = (0.0, 1.0)
    schedule_seed: int = 0
    entropy_coeff: float = 0.001
    max_experts_per_prompt: int = 1
    expert_list_column: str = "expert_solutions"
    expert_combine: str = "mean"
    baseline_alignment: str = "position"
    baseline_alignment_window: int = 32
    adaptive_lam: AdaptiveLamSettings = AdaptiveLamSettings()

    @classmethod
    def from_config(cls, config) -> "CalibRLRecipeSettings":
        """Build and validate from the full verl config (``config.calibrl``); raise naming the key on error."""
        section = config.get("calibrl", None)
        if section is None:
            raise CalibRLConfigError(
                "the config has no `calibrl:` section. Start from recipe/calibrl/config/calibrl_trainer.yaml "
                "(`--config-path recipe/calibrl/config --config-name calibrl_trainer`)."
            )
        window = section.get("pass_rate_window", [0.0, 1.0])
        settings = cls(
            mode=str(section.get("mode", cls.mode)),
            expert_column=str(section.get("expert_column", cls.expert_column)),
            expert_keep_prob=section.get("expert_keep_prob", cls.expert_keep_prob),
            grpo_warmup_steps=section.get("grpo_warmup_steps", cls.grpo_warmup_steps),
            pass_rate_window=tuple(window) if window is not None else None,
            schedule_seed=section.get("schedule_seed", cls.schedule_seed),
            entropy_coeff=section.get("entropy_coeff", cls.entropy_coeff),
            max_experts_per_prompt=section.get("max_experts_per_prompt", cls.max_experts_per_prompt),
            expert_list_column=str(section.get("expert_list_column", cls.expert_list_column)),
            expert_combine=str(section.get("expert_combine", cls.expert_combine)),
            baseline_alignment=str(section.get("baseline_alignment", cls.baseline_alignment)),
            baseline_alignment_window=section.get("baseline_alignment_window", cls.baseline_alignment_window),
            adaptive_lam=_adaptive_lam_settings(section.get("adaptive_lam", None)),
        )
        settings.validate()
        check_entropy_bonus(config, settings)
        if settings.adaptive_lam.enable:
            lam = config.get("actor_rollout_ref", {}).get("actor", {}).get("policy_loss", {}).get("lam", None)
            try:
                settings.adaptive_lam.check_initial_lam(lam if isinstance(lam, (int, float)) else float("nan"))
            except AdaptiveLamConfigError as error:
                raise CalibRLConfigError(str(error)) from None
        return settings

    def validate(self) -> None:
        def fail(key, value, requirement):
            raise CalibRLConfigError(f"calibrl.{key}={value!r} is invalid: {requirement}. Set `calibrl.{key}=...`.")

        if self.mode not in MODE_TO_LOSS_MODE:
            fail("mode", self.mode, f"must be one of {list(MODE_TO_LOSS_MODE)}")
        if not self.expert_column:
            fail("expert_column", self.expert_column, "must name the dataset column with the expert solution")
        p = self.expert_keep_prob
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not (0.0 <= p <= 1.0):
            fail("expert_keep_prob", p, "must be a probability in [0, 1]")
        w = self.grpo_warmup_steps
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            fail("grpo_warmup_steps", w, "must be an integer >= 0")
        window = self.pass_rate_window
        if (
            window is None
            or len(window) != 2
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in window)
            or not (0.0 <= window[0] <= window[1] <= 1.0)
        ):
            fail("pass_rate_window", window, "must be [low, high] with 0 <= low <= high <= 1")
        if isinstance(self.schedule_seed, bool) or not isinstance(self.schedule_seed, int):
            fail("schedule_seed", self.schedule_seed, "must be an integer")
        c = self.entropy_coeff
        if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c) or c < 0:
            fail("entropy_coeff", c, "must be a finite number >= 0")
        if self.mode in ENTROPY_MODES and c <= 0:
            fail("entropy_coeff", c, f"must be > 0 in mode {self.mode!r} (it is that mode's entropy bonus)")
        k = self.max_experts_per_prompt
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            fail("max_experts_per_prompt", k, "must be an integer >= 1 (1 = one expert row per prompt, as released)")
        if k > 1 and self.mode in EXPERT_TRAINING_MODES:
            fail(
                "max_experts_per_prompt",
                k,
                f"must be 1 in mode {self.mode!r} (its expert loss and (n + 1)-row mini-batches assume one expert row "
                "per group); several experts per prompt run in calibrl.mode=calibrl only",
            )
        if k > 1 and not self.expert_list_column:
            fail("expert_list_column", self.expert_list_column, "must name the dataset column with the expert list")
        if self.expert_combine not in EXPERT_COMBINE_RULES:
            fail("expert_combine", self.expert_combine, f"must be one of {list(EXPERT_COMBINE_RULES)}")
        if self.baseline_alignment not in ALIGNMENTS:
            fail("baseline_alignment", self.baseline_alignment, f"must be one of {list(ALIGNMENTS)}")
        if self.baseline_alignment != "position" and self.mode != "calibrl":
            fail("baseline_alignment", self.baseline_alignment,
                 f"only mode 'calibrl' has a calibration baseline (mode is {self.mode!r}); use 'position'")  # fmt: skip
        w = self.baseline_alignment_window
        if isinstance(w, bool) or not isinstance(w, int) or w < 0:
            fail("baseline_alignment_window", w, "must be an integer >= 0")
        if self.baseline_alignment != "position" and self.max_experts_per_prompt > 1:
            fail("baseline_alignment", self.baseline_alignment,
                 "aligns a rollout with ONE expert; with calibrl.max_experts_per_prompt > 1 use 'position'")  # fmt: skip
        if self.adaptive_lam.enable and self.mode != "calibrl":
            fail("adaptive_lam.enable", True,
                 f"only mode 'calibrl' has a calibration term to weigh (mode is {self.mode!r}); set it to false")  # fmt: skip

    @property
    def loss_mode(self) -> str:
        return MODE_TO_LOSS_MODE[self.mode]

    @property
    def uses_expert_rows(self) -> bool:
        return self.mode in EXPERT_MODES

    @property
    def trains_expert_rows(self) -> bool:
        return self.mode in EXPERT_TRAINING_MODES

    @property
    def multi_expert(self) -> bool:
        """Whether prompts may get several expert rows (read from ``expert_list_column``)."""
        return self.uses_expert_rows and self.max_experts_per_prompt > 1


def _adaptive_lam_settings(section) -> AdaptiveLamSettings:
    try:
        return AdaptiveLamSettings.from_section(section)
    except AdaptiveLamConfigError as error:
        raise CalibRLConfigError(str(error)) from None


def check_entropy_bonus(config, settings: CalibRLRecipeSettings) -> None:
    """Start-up check of the entropy modes: verl's ``actor.entropy_coeff`` must be > 0 (the mode's whole point).

    The yaml derives it from ``calibrl.entropy_coeff``; a direct override of the actor key to 0 would silently turn
    ``entropy_reg`` into plain GRPO, so it fails here naming both keys.
    """
    if settings.mode not in ENTROPY_MODES:
        return
    actor = config.get("actor_rollout_ref", {}).get("actor", {})
    coeff = actor.get("entropy_coeff", None)
    if not isinstance(coeff, (int, float)) or isinstance(coeff, bool) or not coeff > 0:
        raise CalibRLConfigError(
            f"calibrl.mode={settings.mode!r} needs {ENTROPY_COEFF_KEY} > 0, got {coeff!r}. Set `calibrl.entropy_coeff="
            f"<value > 0>` and leave {ENTROPY_COEFF_KEY} to the recipe yaml, which copies it in this mode."
        )


def entropy_coeff_for(mode: str, entropy_coeff: float) -> float:
    """``actor.entropy_coeff`` for a mode (the yaml's ``${calibrl_entropy_coeff:...}`` resolver): the bonus in the
    entropy modes, 0 elsewhere (the released CalibRL and the other baselines train without it)."""
    return float(entropy_coeff) if mode in ENTROPY_MODES else 0.0


def loss_mode_for(mode: str) -> str:
    """The ``policy_loss.loss_mode`` a ``calibrl.mode`` runs (the yaml's ``${calibrl_loss_mode:...}`` resolver)."""
    if mode not in MODE_TO_LOSS_MODE:
        raise CalibRLConfigError(f"calibrl.mode={mode!r} is invalid: must be one of {list(MODE_TO_LOSS_MODE)}.")
    return MODE_TO_LOSS_MODE[mode]


OmegaConf.register_new_resolver("calibrl_loss_mode", loss_mode_for, replace=True)
OmegaConf.register_new_resolver("calibrl_entropy_coeff", entropy_coeff_for, replace=True)
