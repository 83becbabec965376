"""A preset as runs: the arms (what a figure compares) and the unique runs they need (what is executed).

An arm is a labelled setting of (mode, activation, alpha, lambda, and the beyond-the-paper switches: adaptive lambda,
content-aware baseline); each arm runs once per seed. Arms with the same
setting share their runs, so the ``calibrl`` mode arm, the ``leaky_relu`` activation arm and the arms at the
released alpha and lambda cost one set of runs. Every run passes all its settings explicitly, so the grid does
not depend on the yaml's defaults staying what they are today. A ``switch`` arm is the ablation mode's released
setting with one switch on (:data:`SWITCHES`), so it compares with plain CalibRL (the ``calibrl`` mode arm).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from recipe.calibrl.study.presets import ALL, StudyConfigError, StudyPreset

#: Groups of arms, in the order figures and tables show them.
ARM_GROUPS = ("mode", "activation", "alpha", "lam", "experts", "switch")

#: ``switches`` values: each turns one option of docs/adaptive.md on over the ablation mode's released setting.
SWITCHES = ("adaptive_lam", "lcs_baseline")


@dataclass(frozen=True)
class RunSetting:
    """The loss settings of one run, seed excluded."""

    mode: str
    activation: str
    alpha: float
    lam: float
    #: ``calibrl.max_experts_per_prompt``; 1 (the released method) adds nothing to the name or the overrides, so
    #: the runs of studies made before this field keep their folders.
    experts: int = 1
    #: ``calibrl.adaptive_lam.enable`` (the controller's other keys keep the yaml's values)
    adaptive_lam: bool = False
    #: ``calibrl.baseline_alignment``
    baseline_alignment: str = "position"

    def name(self) -> str:
        """A folder-safe name, unique per setting (the released settings add nothing: older studies keep names)."""
        name = f"{self.mode}-{self.activation}-a{self.alpha:g}-l{self.lam:g}"
        name += f"-e{self.experts}" if self.experts != 1 else ""
        name += "-adaptive" if self.adaptive_lam else ""
        return name + (f"-{self.baseline_alignment}" if self.baseline_alignment != "position" else "")

    def overrides(self) -> list[str]:
        loss = "actor_rollout_ref.actor.policy_loss"
        return [
            f"calibrl.mode={self.mode}",
            f"{loss}.activation={self.activation}",
            f"{loss}.alpha={self.alpha}",
            f"{loss}.lam={self.lam}",
            *([f"calibrl.max_experts_per_prompt={self.experts}"] if self.experts != 1 else []),
            f"calibrl.adaptive_lam.enable={str(self.adaptive_lam).lower()}",
            f"calibrl.baseline_alignment={self.baseline_alignment}",
        ]


@dataclass(frozen=True)
class Arm:
    """One bar or curve of the study: ``group`` (one of ARM_GROUPS), its ``label`` and the setting it runs."""

    group: str
    label: str
    setting: RunSetting


@dataclass(frozen=True)
class RunSpec:
    """One execution: a setting and a seed. ``name`` is its folder under ``<out>/runs``."""

    setting: RunSetting
    seed: int

    @property
    def name(self) -> str:
        return f"{self.setting.name()}-s{self.seed}"

    def overrides(self) -> list[str]:
        return [
            *self.setting.overrides(),
            f"actor_rollout_ref.rollout.seed={self.seed}",
            f"calibrl.schedule_seed={self.seed}",
        ]


def known_modes() -> list[str]:
    """Every ``calibrl.mode`` of the recipe, read at run time (modes added later join the study)."""
    from recipe.calibrl.settings import MODE_TO_LOSS_MODE

    return list(MODE_TO_LOSS_MODE)


def known_activations() -> list[str]:
    from calibrl_ext.core import ACTIVATIONS

    return list(ACTIVATIONS)


#: The recipe's yaml: its ``policy_loss`` values are the released settings every non-swept field keeps.
RECIPE_YAML = Path(__file__).resolve().parents[1] / "config" / "calibrl_trainer.yaml"


def loss_defaults() -> dict[str, Any]:
    """The recipe's released loss settings (``actor_rollout_ref.actor.policy_loss`` of the recipe yaml).

    Read from the yaml rather than from ``calibrl_ext.config`` so that the study driver imports no verl.
    """
    from omegaconf import OmegaConf

    loss = OmegaConf.load(RECIPE_YAML).actor_rollout_ref.actor.policy_loss
    return {"activation": str(loss.activation), "alpha": float(loss.alpha), "lam": float(loss.lam)}


def _expand(name: str, values: tuple, known: list[str]) -> list[str]:
    if tuple(values) == (ALL,):
        return list(known)
    unknown = [v for v in values if v not in known]
    if unknown:
        raise StudyConfigError(f"study field {name} has unknown values {unknown}: choose from {known} or `{ALL}`")
    return list(values)


def build_arms(preset: StudyPreset) -> list[Arm]:
    """The preset's arms in ARM_GROUPS order; raises StudyConfigError naming the field on an unknown value."""
    modes = known_modes()
    defaults = loss_defaults()
    if preset.ablation_mode not in modes:
        raise StudyConfigError(f"study field ablation_mode={preset.ablation_mode!r}: choose from {modes}")
    base = RunSetting(preset.ablation_mode, defaults["activation"], float(defaults["alpha"]), float(defaults["lam"]))
    arms = [
        Arm("mode", mode, RunSetting(mode, base.activation, base.alpha, base.lam))
        for mode in _expand("modes", preset.modes, modes)
    ]
    arms += [
        Arm("activation", act, RunSetting(base.mode, act, base.alpha, base.lam))
        for act in _expand("activations", preset.activations, known_activations())
    ]
    arms += [Arm("alpha", f"{a:g}", RunSetting(base.mode, base.activation, float(a), base.lam)) for a in preset.alphas]
    arms += [Arm("lam", f"{lam:g}", RunSetting(base.mode, base.activation, base.alpha, float(lam))) for lam in preset.lams]
    if preset.experts_per_prompt:  # one expert (the baseline run, shared with the calibrl arm) against several
        arms += [
            Arm("experts", str(k), RunSetting(base.mode, base.activation, base.alpha, base.lam, experts=k))
            for k in (1, *preset.experts_per_prompt)
        ]
    switches = _expand("switches", preset.switches, list(SWITCHES))
    if switches and base.mode != "calibrl":
        raise StudyConfigError(
            f"study field switches={list(preset.switches)} needs ablation_mode=calibrl (the switches act on the "
            f"calibration term), got {base.mode!r}"
        )
    arms += [Arm("switch", switch, _switched(base, switch)) for switch in switches]
    return arms


def demo_experts(preset: StudyPreset) -> int:
    """Expert solutions per prompt the study's demo data needs (the largest ``experts_per_prompt``, else 1)."""
    return max(preset.experts_per_prompt, default=1)


def _switched(base: RunSetting, switch: str) -> RunSetting:
    """``base`` with one of :data:`SWITCHES` on."""
    if switch == "adaptive_lam":
        return dataclasses.replace(base, adaptive_lam=True)
    return dataclasses.replace(base, baseline_alignment="lcs")


def build_runs(preset: StudyPreset, arms: list[Arm]) -> list[RunSpec]:
    """Unique runs of the arms, seed-major (every setting's first seed before any second seed: an interrupted
    study still has one seed of every arm)."""
    settings = list(dict.fromkeys(arm.setting for arm in arms))
    return [RunSpec(setting, seed) for seed in preset.seeds for setting in settings]


def manifest(preset: StudyPreset, arms: list[Arm], runs: list[RunSpec]) -> dict[str, Any]:
    """What ``<out>/study.json`` records: the preset, the arms and the run names."""
    return {
        "preset": preset.as_dict(),
        "arms": [{"group": a.group, "label": a.label, "setting": asdict(a.setting), "run_stem": a.setting.name()}
                 for a in arms],  # fmt: skip
        "runs": [run.name for run in runs],
    }


def check_or_write_manifest(path: Path, data: dict[str, Any], preset_name: str) -> None:
    """Write the manifest; on resume refuse a different preset (its runs would not share one budget)."""
    if path.exists():
        previous = json.loads(path.read_text())
        if previous.get("preset") != data["preset"]:
            changed = sorted(k for k in data["preset"] if previous.get("preset", {}).get(k) != data["preset"][k])
            raise StudyConfigError(
                f"{path} was written by another preset (fields {changed} differ): resume with the same --preset and "
                f"--set values, or choose another --out"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"preset_name": preset_name, **data}, indent=1) + "\n")
