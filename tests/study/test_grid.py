"""The study's presets and grid: arms follow the recipe's modes and activations at run time, shared settings run
once, every run composes into a recipe config that passes the start-up checks, and a resumed study keeps its
preset."""

import dataclasses
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from calibrl_ext.core import ACTIVATIONS
from recipe.calibrl.settings import MODE_TO_LOSS_MODE
from recipe.calibrl.study import grid
from recipe.calibrl.study.grid import build_arms, build_runs, check_or_write_manifest, manifest
from recipe.calibrl.study.presets import PRESETS, StudyConfigError, apply_overrides


def test_all_means_every_mode_and_activation_known_at_run_time(monkeypatch):
    """`modes=all` expands to MODE_TO_LOSS_MODE as it is when the study starts (a mode added later joins)."""
    arms = build_arms(PRESETS["full"])
    assert [a.label for a in arms if a.group == "mode"] == list(MODE_TO_LOSS_MODE)
    assert [a.label for a in arms if a.group == "activation"] == list(ACTIVATIONS)
    monkeypatch.setattr(grid, "known_modes", lambda: [*MODE_TO_LOSS_MODE, "newmode"])
    assert [a.label for a in build_arms(PRESETS["full"]) if a.group == "mode"][-1] == "newmode"
    # quick names its modes (the paper's central comparison): a new mode does not grow it
    assert [a.label for a in build_arms(PRESETS["quick"]) if a.group == "mode"] == ["calibrl", "grpo", "luffy"]


def test_arms_with_one_setting_share_runs_and_seeds_go_outermost():
    """The calibrl mode arm, the leaky_relu arm and the released alpha/lambda arms are one setting: run once per
    seed; every setting's first seed comes before any second seed."""
    preset = apply_overrides(PRESETS["full"], ["seeds=0,1", "alphas=0.5,1", "lams=0.1"])
    arms = build_arms(preset)
    runs = build_runs(preset, arms)
    settings = {a.setting for a in arms}
    assert len(runs) == len(settings) * 2 < len(arms) * 2
    assert [r.seed for r in runs] == [0] * len(settings) + [1] * len(settings)
    assert len({r.name for r in runs}) == len(runs)
    released = next(a for a in arms if a.group == "mode" and a.label == "calibrl").setting
    assert next(a for a in arms if a.group == "activation" and a.label == "leaky_relu").setting == released
    assert next(a for a in arms if a.group == "alpha" and a.label == "0.5").setting == released


@pytest.mark.parametrize(
    "assignment, field",
    [("modes=grpo,nosuchmode", "modes"), ("activations=softplus", "activations"), ("ablation_mode=x", "ablation_mode"),
     ("steps=0", "steps"), ("seeds=", "seeds"), ("seeds=1,1", "seeds"), ("nosuchfield=1", "nosuchfield"),
     ("val_temperature=-1", "val_temperature"), ("val_temperature=0", "val_n"), ("data_kinds=nosuchkind", "data_kinds"),
     ("warm_start_steps=0", "warm_start_steps")],
)  # fmt: skip
def test_bad_preset_values_fail_naming_the_field(assignment, field):
    with pytest.raises(StudyConfigError, match=field):
        build_arms(apply_overrides(PRESETS["quick"], [assignment]))


def test_set_parses_field_types():
    preset = apply_overrides(
        PRESETS["quick"],
        ["steps=3", "seeds=4,5", "alphas=0,0.25", "modes=grpo", "val_before_train=false",
         "extra_overrides=a.b=[1,2] c=3", "learning_rate=2e-4"],
    )  # fmt: skip
    assert (preset.steps, preset.seeds, preset.alphas, preset.modes) == (3, (4, 5), (0.0, 0.25), ("grpo",))
    assert preset.val_before_train is False and preset.learning_rate == 2e-4
    assert preset.extra_overrides == ("a.b=[1,2]", "c=3")


RECIPE_CONFIG_DIR = Path(__file__).resolve().parents[2] / "recipe" / "calibrl" / "config"


def _write_train_parquet(path):
    import pandas as pd

    pd.DataFrame({
        "data_source": ["demo", "demo"],
        "prompt": [[{"role": "user", "content": "1+1?"}], [{"role": "user", "content": "2+2?"}]],
        "reward_model": [{"style": "rule", "ground_truth": "2"}, {"style": "rule", "ground_truth": "4"}],
        "expert_solution": ["<answer>2</answer>", "<answer>4</answer>"],
        "expert_solutions": [["<answer>2</answer>", "<answer>2.0</answer>"], ["<answer>4</answer>"]],
    }).to_parquet(path)  # fmt: skip


def test_every_run_composes_into_a_valid_recipe_config(tmp_path):
    """Each run's overrides (CPU set, shared budget, its own settings and seed) compose with the recipe yaml, pass
    the recipe's start-up checks, and put the seed and loss settings at the keys the trainer reads."""
    from hydra import compose, initialize_config_dir

    import calibrl_ext.plugin  # noqa: F401  (the calibrl_loss_mode resolver)
    from calibrl_ext.cpu_backend.launcher import LOGGER_OVERRIDE
    from calibrl_ext.cpu_backend.overrides import cpu_overrides
    from recipe.calibrl.startup_checks import validate_startup
    from recipe.calibrl.study.runner import RunAssets, run_overrides

    _write_train_parquet(tmp_path / "train.parquet")
    _write_train_parquet(tmp_path / "val.parquet")
    preset = apply_overrides(PRESETS["full"], ["seeds=7", "alphas=0.25", "lams=0.2"])  # one non-default value each
    arms = build_arms(preset)
    assets = RunAssets(data_dir=tmp_path, model=tmp_path / "model")
    for run in build_runs(preset, arms):
        argv = [*cpu_overrides(), LOGGER_OVERRIDE, *run_overrides(preset, assets, run, tmp_path / run.name)]
        with initialize_config_dir(config_dir=str(RECIPE_CONFIG_DIR), version_base=None):
            config = compose(config_name="calibrl_trainer", overrides=argv)
        OmegaConf.resolve(config)
        settings = validate_startup(config, expect_trainer_mode=True)
        loss = config.actor_rollout_ref.actor.policy_loss
        assert settings.mode == run.setting.mode and loss.loss_mode == MODE_TO_LOSS_MODE[run.setting.mode]
        assert (loss.activation, loss.alpha, loss.lam) == (run.setting.activation, run.setting.alpha, run.setting.lam)
        assert config.actor_rollout_ref.rollout.seed == config.calibrl.schedule_seed == 7
        # one validation subset for every run: verl draws it from data.seed, which the seeds must not vary
        assert config.data.seed == preset.data_seed and config.data.shuffle
        assert config.trainer.total_training_steps == preset.steps and config.trainer.val_before_train is True
        assert settings.max_experts_per_prompt == run.setting.experts
        # the preset's validation measure: val_n temperature-1 samples per prompt (logged as mean@val_n)
        val_kwargs = config.actor_rollout_ref.rollout.val_kwargs
        assert (val_kwargs.do_sample, val_kwargs.temperature, val_kwargs.n) == (True, preset.val_temperature, preset.val_n)
        assert config.data.max_response_length == preset.max_response_length


def test_resume_refuses_another_preset(tmp_path):
    """A study folder keeps its budget: resuming it with different preset values fails naming the fields."""
    preset = PRESETS["quick"]
    arms = build_arms(preset)
    path = tmp_path / "study.json"
    check_or_write_manifest(path, manifest(preset, arms, build_runs(preset, arms)), "quick")
    check_or_write_manifest(path, manifest(preset, arms, build_runs(preset, arms)), "quick")  # same: fine
    other = apply_overrides(preset, ["steps=3"])
    with pytest.raises(StudyConfigError, match="steps"):
        check_or_write_manifest(path, manifest(other, arms, build_runs(other, arms)), "quick")
    assert json.loads(path.read_text())["preset"]["steps"] == preset.steps


def test_experts_arm_compares_one_expert_with_several():
    """experts_per_prompt adds an 'experts' arm group: 1 (the released setting, the same runs as the calibrl arm) and
    each K, which alone passes calibrl.max_experts_per_prompt=K and gets its own run name; the demo data is built
    with the largest K; K < 2 or a non-calibrl ablation mode fail naming the field."""
    preset = apply_overrides(PRESETS["quick"], ["experts_per_prompt=2", "seeds=0"])
    arms = build_arms(preset)
    experts = [a for a in arms if a.group == "experts"]
    assert [a.label for a in experts] == ["1", "2"]
    released = next(a for a in arms if a.group == "mode" and a.label == "calibrl").setting
    assert experts[0].setting == released and "calibrl.max_experts_per_prompt=2" in experts[1].setting.overrides()
    assert not any("max_experts" in o for o in released.overrides()) and released.name().endswith("-l0.1")
    assert experts[1].setting.name() == released.name() + "-e2"
    assert len(build_runs(preset, arms)) == len({a.setting for a in arms})
    assert grid.demo_experts(preset) == 2 and grid.demo_experts(PRESETS["quick"]) == 1
    assert PRESETS["full"].experts_per_prompt == (2,)
    for assignments in (["experts_per_prompt=1"], ["experts_per_prompt=2", "ablation_mode=luffy"]):
        with pytest.raises(StudyConfigError, match="experts_per_prompt"):
            apply_overrides(PRESETS["quick"], assignments)


def test_switch_arms_are_plain_calibrl_with_one_switch_on():
    """`switches=all` adds one arm per switch: the released calibrl setting (the `calibrl` mode arm's) with exactly
    that switch on, so each compares with plain CalibRL; the released setting's run name is unchanged by the new
    fields, and each switch reaches its recipe key."""
    from recipe.calibrl.study.grid import SWITCHES

    preset = apply_overrides(PRESETS["quick"], ["switches=all"])
    arms = build_arms(preset)
    switch_arms = {a.label: a.setting for a in arms if a.group == "switch"}
    assert list(switch_arms) == list(SWITCHES) == ["adaptive_lam", "lcs_baseline"]
    plain = next(a for a in arms if a.group == "mode" and a.label == "calibrl").setting
    assert plain.name() == "calibrl-leaky_relu-a0.5-l0.1"
    assert switch_arms["adaptive_lam"] == dataclasses.replace(plain, adaptive_lam=True)
    assert switch_arms["lcs_baseline"] == dataclasses.replace(plain, baseline_alignment="lcs")
    assert "calibrl.adaptive_lam.enable=true" in switch_arms["adaptive_lam"].overrides()
    assert "calibrl.baseline_alignment=lcs" in switch_arms["lcs_baseline"].overrides()
    assert "calibrl.adaptive_lam.enable=false" in plain.overrides()
    runs = build_runs(preset, arms)
    assert len({r.name for r in runs}) == len(runs) and len(runs) == len({a.setting for a in arms}) * len(preset.seeds)
    assert not [a for a in build_arms(PRESETS["quick"]) if a.group == "switch"]  # quick: opt-in
    assert [a.label for a in build_arms(PRESETS["full"]) if a.group == "switch"] == list(SWITCHES)


@pytest.mark.parametrize("assignment", ["switches=nosuchswitch", "ablation_mode=luffy"])
def test_bad_switch_arms_fail_naming_the_field(assignment):
    with pytest.raises(StudyConfigError, match="switches"):
        build_arms(apply_overrides(PRESETS["quick"], ["switches=all", assignment]))
