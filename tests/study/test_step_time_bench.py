"""bench/study_step_time.py on study folders built from the recorded run (tests/study/fixtures): it pairs the two
modes' runs by seed, reads the baseline from another study folder with --baseline-out, and says which arm is missing."""

import importlib.util
import json
import shutil
from pathlib import Path

from recipe.calibrl.study.grid import build_arms, build_runs, manifest
from recipe.calibrl.study.presets import PRESETS, apply_overrides
from recipe.calibrl.study.runner import METRICS_FILE

REPO = Path(__file__).resolve().parents[2]
FIXTURE = Path(__file__).with_name("fixtures") / "calibrl_2steps_metrics.jsonl"


def _bench():
    spec = importlib.util.spec_from_file_location("study_step_time", REPO / "bench" / "study_step_time.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _study(folder: Path, modes: str, rollout_n: int, extra: list[str] = ()) -> Path:
    """A study folder of the given modes x seeds 0, 1 whose every run is the recorded 2-step run."""
    preset = apply_overrides(PRESETS["quick"], [f"modes={modes}", "activations=", "seeds=0,1", "steps=2",
                                                f"rollout_n={rollout_n}", *extra])  # fmt: skip
    arms = build_arms(preset)
    data = manifest(preset, arms, build_runs(preset, arms))
    folder.mkdir(parents=True)
    (folder / "study.json").write_text(json.dumps(data))
    for name in data["runs"]:
        (folder / "runs" / name).mkdir(parents=True)
        shutil.copy(FIXTURE, folder / "runs" / name / METRICS_FILE)
    return folder


def test_ratio_per_seed_within_one_study_and_against_another(tmp_path, capsys):
    """Identical runs give ratio 1.000 per seed; --baseline-out takes the baseline from the other folder and the
    header states each side's rows per group (the equal-rows comparison: CalibRL 4 + 1 expert vs GRPO 5)."""
    bench = _bench()
    quick = _study(tmp_path / "quick", "calibrl,grpo", 4)
    grpo5 = _study(tmp_path / "grpo5", "grpo", 5)
    assert bench.main(["--out", str(quick)]) == 0
    printed = capsys.readouterr().out
    assert "calibrl / grpo: 1.000 ± 0.000 (sample std) over 2 seed(s)" in printed
    assert bench.main(["--out", str(quick), "--baseline-out", str(grpo5)]) == 0
    printed = capsys.readouterr().out
    assert "calibrl: 4 rollouts + 1 expert row a group" in printed and "grpo: 5 rollouts a group" in printed
    assert "over 2 seed(s)" in printed


def test_missing_mode_arm_is_named(tmp_path, capsys):
    bench = _bench()
    grpo5 = _study(tmp_path / "grpo5", "grpo", 5)
    assert bench.main(["--out", str(grpo5)]) == 2
    assert "has no arm 'calibrl'; its arms: ['grpo']" in capsys.readouterr().err


def test_an_arm_of_another_group_is_named_group_equals_label(tmp_path, capsys):
    """``--mode lam=0.05`` reads that sweep arm's runs (calibrl mode: its rows include the expert row)."""
    bench = _bench()
    study = _study(tmp_path / "sweep", "calibrl,grpo", 4, extra=["lams=0.05,0.1"])
    assert bench.main(["--out", str(study), "--mode", "lam=0.05"]) == 0
    printed = capsys.readouterr().out
    assert "lam=0.05: 4 rollouts + 1 expert row a group" in printed and "over 2 seed(s)" in printed


def test_a_missing_seed_is_reported_not_counted(tmp_path, capsys):
    bench = _bench()
    quick = _study(tmp_path / "quick", "calibrl,grpo", 4)
    for run in (quick / "runs").glob("grpo-*-s1"):
        shutil.rmtree(run)
    assert bench.main(["--out", str(quick)]) == 0
    printed = capsys.readouterr().out
    assert "a run of this seed is missing" in printed and "over 1 seed(s)" in printed
