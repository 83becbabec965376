"""The study's reading, aggregation, figure and table on a recorded metrics file.

``fixtures/calibrl_2steps_metrics.jsonl`` is verl's file-logger output of a real run, recorded with
``python -m recipe.calibrl.cpu_demo --steps 2 -- trainer.val_before_train=True trainer.test_freq=1`` (calibrl mode,
warm-started tiny Qwen2.5-VL, demo data): validation at step 0 (before RL), training + validation at steps 1, 2.
"""

import json
import shutil
import statistics
from pathlib import Path

import pytest

from calibrl_ext.cpu_backend.launcher import read_metrics
from recipe.calibrl.study.grid import build_arms, build_runs, manifest
from recipe.calibrl.study.metrics import final_validation_keys, run_curves
from recipe.calibrl.study.presets import PRESETS, apply_overrides
from recipe.calibrl.study.report import FIGURE_FILE, build_figure, collect, format_table, write_report
from recipe.calibrl.study.runner import METRICS_FILE, metrics_complete

FIXTURE = Path(__file__).with_name("fixtures") / "calibrl_2steps_metrics.jsonl"
STEPS = 2
#: Added to every validation accuracy of the fixture to make a second "seed" with a known difference.
SECOND_SEED_VAL_SHIFT = 0.1


def _fixture_val_acc(step: int) -> float:
    data = {k: v for r in read_metrics(FIXTURE) if r["step"] == step for k, v in r["data"].items()}
    return statistics.fmean(data[k] for k in final_validation_keys(data))


def test_curves_of_a_recorded_run():
    """Entropy and reward at the training steps; validation accuracy (mean over data sources) at 0, 1, 2."""
    curves = run_curves(read_metrics(FIXTURE))
    assert sorted(curves["entropy"]) == sorted(curves["reward"]) == [1, 2]
    assert sorted(curves["val_acc"]) == [0, 1, 2]
    assert curves["val_acc"][2] == pytest.approx(_fixture_val_acc(2))
    records = {r["step"]: r["data"] for r in read_metrics(FIXTURE) if "critic/score/mean" in r["data"]}
    assert curves["reward"][1] == records[1]["critic/score/mean"]
    assert curves["entropy"][2] == records[2]["calibrl/entropy_on_policy"]
    assert len([k for k in curves if k.startswith("val/val-core/")]) >= 2  # per-source curves kept


def test_complete_only_with_last_training_step_and_its_validation(tmp_path):
    """A metrics file counts as finished only with step `steps` trained and validated; a file cut before the final
    validation, an empty one, a malformed one or a missing one does not (the study reruns those)."""
    assert metrics_complete(FIXTURE, STEPS)
    assert not metrics_complete(FIXTURE, STEPS + 1)
    lines = FIXTURE.read_text().splitlines()
    cut = tmp_path / "cut.jsonl"
    kept = [line for line in lines if not (json.loads(line)["step"] == STEPS and "val-core" in line)]
    if len(kept) == len(lines):  # training and validation of the last step in one line: drop the whole step
        kept = [line for line in lines if json.loads(line)["step"] != STEPS]
    cut.write_text("\n".join(kept) + "\n")
    assert not metrics_complete(cut, STEPS)
    (tmp_path / "empty.jsonl").write_text("")
    assert not metrics_complete(tmp_path / "empty.jsonl", STEPS)
    (tmp_path / "bad.jsonl").write_text(lines[0] + "\n{not json\n")
    assert not metrics_complete(tmp_path / "bad.jsonl", STEPS)
    assert not metrics_complete(tmp_path / "missing.jsonl", STEPS)


@pytest.fixture
def study_folder(tmp_path):
    """A 2-mode x 2-seed study folder: calibrl runs = the fixture and the fixture with validation accuracies
    shifted by SECOND_SEED_VAL_SHIFT; grpo seed 0 = the fixture; grpo seed 1 missing (interrupted study)."""
    preset = apply_overrides(PRESETS["quick"], ["modes=calibrl,grpo", "activations=", "seeds=0,1", f"steps={STEPS}"])
    arms = build_arms(preset)
    data = manifest(preset, arms, build_runs(preset, arms))
    shifted = []
    for line in FIXTURE.read_text().splitlines():
        record = json.loads(line)
        for key in final_validation_keys(record["data"]):
            record["data"][key] += SECOND_SEED_VAL_SHIFT
        shifted.append(json.dumps(record))
    for name in data["runs"]:
        if name.startswith("grpo") and name.endswith("-s1"):
            continue
        (tmp_path / "runs" / name).mkdir(parents=True)
        if name.startswith("calibrl") and name.endswith("-s1"):
            (tmp_path / "runs" / name / METRICS_FILE).write_text("\n".join(shifted) + "\n")
        else:
            shutil.copy(FIXTURE, tmp_path / "runs" / name / METRICS_FILE)
    return tmp_path, data


def test_arm_statistics_over_seeds(study_folder):
    """Per arm: mean and sample std over the seeds done; pre-RL accuracy from step 0, gain = final - pre-RL;
    the missing run is listed, not counted."""
    out, data = study_folder
    results = collect(out, data)
    calibrl = next(a for a in results["arms"] if a["label"] == "calibrl")
    grpo = next(a for a in results["arms"] if a["label"] == "grpo")
    final, pre = _fixture_val_acc(STEPS), _fixture_val_acc(0)
    assert calibrl["seeds_done"] == 2 and grpo["seeds_done"] == 1
    assert calibrl["final"]["final_val_acc"]["mean"] == pytest.approx(final + SECOND_SEED_VAL_SHIFT / 2)
    assert calibrl["final"]["final_val_acc"]["std"] == pytest.approx(statistics.stdev([final, final + 0.1]))
    assert calibrl["final"]["val_acc_gain"]["mean"] == pytest.approx(final - pre)
    assert grpo["final"]["final_val_acc"]["std"] is None  # one seed: no spread claimed
    assert [n for n in results["missing_runs"]] == [n for n in data["runs"] if n.startswith("grpo") and "-s1" in n]
    assert calibrl["curves"]["val_acc"][0]["n"] == 2
    entropy = run_curves(read_metrics(FIXTURE))["entropy"]
    assert calibrl["final"]["late_entropy"]["mean"] == pytest.approx(entropy[STEPS])  # steps after STEPS // 2 = 1


def test_report_writes_png_table_and_json(study_folder):
    """write_report writes a PNG, a markdown table with one row per arm (mean ± std) and a JSON with every run."""
    out, data = study_folder
    paths = write_report(out, data)
    assert paths["figure"] == out / FIGURE_FILE and paths["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = paths["table"].read_text()
    assert "| calibrl | 2 |" in table and "| grpo | 1 |" in table and " ± " in table
    assert "Incomplete or missing runs" in table
    results = json.loads(paths["results"].read_text())
    assert len(results["runs"]) == 3 and results["preset"]["steps"] == STEPS
    assert format_table(collect(out, data)) == table


def test_execute_runs_starts_only_incomplete_runs(tmp_path, monkeypatch):
    """Resume logic without verl: a run whose metrics are complete is skipped, a run cut before its final
    validation is started again, and progress names run i/N with an ETA. (The launcher is replaced by one that
    writes the recorded metrics; the e2e test runs the real one.)"""
    from calibrl_ext.cpu_backend.launcher import VerlRun
    from recipe.calibrl.study import runner

    preset = apply_overrides(PRESETS["quick"], ["modes=calibrl,grpo", "activations=", "seeds=0", f"steps={STEPS}"])
    runs = build_runs(preset, build_arms(preset))
    complete, cut = runs
    (tmp_path / complete.name).mkdir()
    shutil.copy(FIXTURE, tmp_path / complete.name / METRICS_FILE)
    (tmp_path / cut.name).mkdir()
    first_line = FIXTURE.read_text().splitlines()[0]
    (tmp_path / cut.name / METRICS_FILE).write_text(first_line + "\n")
    started = []

    def fake_run_verl(overrides, *, metrics_path, **kwargs):
        started.append(Path(metrics_path).parent.name)
        shutil.copy(FIXTURE, metrics_path)
        return VerlRun(command=["python", "-m", "x", *overrides], returncode=0, timed_out=False, wall_s=12.0,
                       metrics_path=Path(metrics_path), log_path=Path(str(metrics_path) + ".log"))  # fmt: skip

    monkeypatch.setattr(runner, "run_verl", fake_run_verl)
    lines = []
    outcomes = runner.execute_runs(preset, runs, runner.RunAssets(tmp_path, tmp_path / "model"), tmp_path,
                                   log=lines.append)  # fmt: skip
    assert started == [cut.name]
    assert [o.status for o in outcomes] == ["skipped", "ok"]
    assert any(f"run 1/2 {complete.name}: complete, skipped" in line for line in lines)
    assert any(f"run 2/2 {cut.name}: ok" in line and "ETA" in line for line in lines)
    record = json.loads((tmp_path / cut.name / runner.RUN_RECORD_FILE).read_text())
    assert record["status"] == "ok" and f"calibrl.mode={cut.setting.mode}" in record["overrides"]


def test_figure_shows_final_accuracy_and_its_paired_difference_per_arm(study_folder):
    """The bar rows show, per arm, the mean final validation accuracy and (third row) the mean paired difference with
    the released CalibRL arm, with every seed as a dot; the top row's paired panels show that difference per step."""
    import matplotlib.pyplot as plt
    from matplotlib.collections import PathCollection

    out, data = study_folder
    calibrl_s1 = next(n for n in data["runs"] if n.startswith("calibrl") and n.endswith("-s1"))
    grpo_s0 = next(n for n in data["runs"] if n.startswith("grpo") and n.endswith("-s0"))
    shutil.copy(out / "runs" / calibrl_s1 / METRICS_FILE, out / "runs" / grpo_s0 / METRICS_FILE)  # grpo s0 = +0.1
    results = collect(out, data)
    figure = build_figure(results)
    try:
        accuracy, paired = figure.axes[5], figure.axes[10]  # 5 columns (3 curves, 2 paired curves) a row
        assert "final val acc" in accuracy.get_title() and "minus CalibRL" in paired.get_title()
        arms = [a for a in results["arms"] if a["group"] == "mode"]
        assert [a["label"] for a in arms] == ["calibrl", "grpo"]
        heights = [bar.get_height() for bar in accuracy.patches]
        assert heights == pytest.approx([a["final"]["final_val_acc"]["mean"] for a in arms])
        assert [bar.get_height() for bar in paired.patches] == pytest.approx([0.0, SECOND_SEED_VAL_SHIFT])
        dots = [len(c.get_offsets()) for c in paired.collections if isinstance(c, PathCollection)]
        assert dots == [2, 1]  # calibrl: seeds 0 and 1; grpo: seed 0 only (its seed 1 is missing)
        grpo = arms[1]["paired_curves"]
        assert {step: v["mean"] for step, v in grpo["val_acc"].items()} == pytest.approx(
            {0: SECOND_SEED_VAL_SHIFT, 1: SECOND_SEED_VAL_SHIFT, 2: SECOND_SEED_VAL_SHIFT})
        assert all(v["mean"] == 0.0 and v["n"] == 1 for v in grpo["entropy"].values())  # entropy not shifted
        val_panel = figure.axes[4]  # top row: 3 curves, then the paired entropy and validation-accuracy panels
        assert "minus CalibRL" in val_panel.get_title()
        assert list(val_panel.get_lines()[1].get_ydata()) == pytest.approx([SECOND_SEED_VAL_SHIFT] * 3)
    finally:
        plt.close(figure)


def test_paired_difference_subtracts_the_reference_run_of_the_same_seed():
    """Each arm is compared with the released CalibRL arm seed by seed; seeds either side lacks are left out, and a
    study without a calibrl / leaky_relu arm has no reference."""
    from recipe.calibrl.study.report import paired_difference, reference_stem

    def run(acc):
        return {"final": {"final_val_acc": acc}}

    runs = {"ref-s0": run(0.5), "ref-s1": run(0.6), "ref-s2": run(0.7), "grpo-s0": run(0.55), "grpo-s1": run(0.5),
            "grpo-s3": run(0.9)}  # fmt: skip
    paired = paired_difference(runs, "grpo", "ref", [0, 1, 2, 3])
    assert paired["n"] == 2 and paired["values"] == pytest.approx([0.05, -0.1])
    assert paired_difference(runs, "grpo", None, [0, 1])["n"] == 0
    runs["grpo-s0"]["final"]["late_entropy"], runs["ref-s0"]["final"]["late_entropy"] = 0.7, 0.9
    late = paired_difference(runs, "grpo", "ref", [0, 1, 2], key="late_entropy")
    assert late["values"] == pytest.approx([-0.2])  # seed 1 has no entropy figure on either side: left out
    arms = [{"group": "activation", "label": "tanh", "run_stem": "t"}, {"group": "activation", "label": "leaky_relu",
            "run_stem": "lr"}]  # fmt: skip
    assert reference_stem(arms) == "lr"
    assert reference_stem([*arms, {"group": "mode", "label": "calibrl", "run_stem": "c"}]) == "c"
    assert reference_stem(arms[:1]) is None
