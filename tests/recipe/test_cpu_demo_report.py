"""The demo's closing report on a recorded run: validation accuracy before / after RL and the curves PNG."""

import statistics
from pathlib import Path

import pytest

from calibrl_ext.cpu_backend.launcher import read_metrics
from recipe.calibrl.cpu_demo import DEMO_OVERRIDES, plot_curves, validation_before_after
from recipe.calibrl.study.metrics import final_validation_keys

#: A real 2-step calibrl run of the demo with validation at steps 0 (before RL), 1 and 2 (tests/study/fixtures).
FIXTURE = Path(__file__).resolve().parents[1] / "study" / "fixtures" / "calibrl_2steps_metrics.jsonl"


def _val_acc(step: int) -> float:
    data = {k: v for r in read_metrics(FIXTURE) if r["step"] == step for k, v in r["data"].items()}
    return statistics.fmean(data[k] for k in final_validation_keys(data))


def test_before_after_are_the_first_and_last_validations():
    """Before = the step-0 validation (val_before_train), after = the last step's; both the mean over sources."""
    assert validation_before_after(FIXTURE) == (pytest.approx(_val_acc(0)), pytest.approx(_val_acc(2)))


def test_before_after_needs_two_validations(tmp_path):
    """A run validated once (no val_before_train) has no before/after pair: None, not a fake difference."""
    one = tmp_path / "metrics.jsonl"
    one.write_text("".join(line for line in FIXTURE.read_text().splitlines(keepends=True)
                           if not line.startswith(('{"step":0,', '{"step":1,'))))  # fmt: skip
    assert len([r for r in read_metrics(one) if final_validation_keys(r["data"])]) == 1
    assert validation_before_after(one) is None


def test_curves_png_is_written(tmp_path):
    path = plot_curves(FIXTURE, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_fixes_the_validation_subset_and_validates_before_training():
    """`make demo` compares before/after on the same prompts: data.seed is set (verl draws the val_max_samples subset
    from it) and the pre-RL validation is on."""
    assert "data.seed=0" in DEMO_OVERRIDES and "trainer.val_before_train=True" in DEMO_OVERRIDES


def test_the_demo_runs_the_study_task_with_the_study_settings():
    """`make demo`'s default task is the study presets' shape_colour task: same data kinds, warm start, lengths,
    rollout temperature and validation sampling as every run of the `quick` preset (so the rise measured by the
    study is the one the demo shows), and the reasoning task keeps greedy validation."""
    from recipe.calibrl.cpu_demo import DEMO_TASKS
    from recipe.calibrl.study.presets import PRESETS
    from recipe.calibrl.study.runner import RunAssets, shared_overrides

    quick = PRESETS["quick"]
    colour = DEMO_TASKS["colour"]
    assert colour.kinds == quick.data_kinds and colour.warm_start_steps == quick.warm_start_steps
    assert colour.steps == quick.steps
    def normalised(override):  # 1e-4 and 0.0001 are the same setting
        key, _, value = override.partition("=")
        try:
            return f"{key}={float(value)!r}"
        except ValueError:
            return override

    study = {normalised(o) for o in shared_overrides(quick, RunAssets(data_dir=Path("/d"), model=Path("/m")))}
    assert {normalised(o) for o in colour.overrides} <= study
    demo_keys = {o.split("=")[0] for o in (*DEMO_OVERRIDES, *colour.overrides)}
    for key in ("actor_rollout_ref.rollout.temperature", "actor_rollout_ref.rollout.val_kwargs.temperature",
                "actor_rollout_ref.rollout.val_kwargs.n", "data.seed", "actor_rollout_ref.actor.optim.lr"):
        assert key in demo_keys
    shared_keys = {s.split("=")[0] for s in study} - {"trainer.project_name", "trainer.experiment_name"}
    assert {normalised(o) for o in DEMO_OVERRIDES if o.split("=")[0] in shared_keys} <= study
    assert "actor_rollout_ref.rollout.val_kwargs.do_sample=False" in DEMO_TASKS["reasoning"].overrides
