"""Reports from verl's own validation dumps: the join by eval_id, the numbers, the files, the comparison.

The dumps are written by verl's own writer (PPOTrainer._write_generations, the function _validate calls)
from responses scored by calibrl_ext.reward, so the format is the real one.
"""

import csv
import json
import uuid

import pytest
from verl.trainer.ppo.metric_utils import process_validation_metrics
from verl.trainer.ppo.v1.trainer_base import PPOTrainer

from calibrl_ext.eval.__main__ import main as eval_cli
from calibrl_ext.reward import compute_score

N_SAMPLES = 2


def _answer(row, session: int, position: int) -> str:
    """Deterministic policy: sample 0 is right on even positions, sample 1 is right on positions divisible by 3."""
    right = position % 2 == 0 if session == 0 else position % 3 == 0
    return row["reward_model"]["ground_truth"] if right else "zzz"


def simulate_run(built, run_dir, drop_eval_id=None, extra_line=False, n=N_SAMPLES):
    """Score every row n times with compute_score and dump like verl's _validate; returns expected accs."""
    inputs, outputs, gts, scores, extras = [], [], [], [], {}
    expected = {}
    val_files = []
    for summary, rows in built.values():
        val_files.append(summary.parquet)
        for position, row in enumerate(rows):
            uid = str(uuid.uuid4())
            for session in range(n):
                response = f"<think>t</think><answer>{_answer(row, session, position)}</answer>"
                result = compute_score(row["data_source"], response, row["reward_model"]["ground_truth"], row["extra_info"])
                expected.setdefault(row["extra_info"]["eval_id"], []).append(result["acc"])
                if row["extra_info"]["eval_id"] == drop_eval_id:
                    continue
                inputs.append("prompt")
                outputs.append(response)
                gts.append(row["reward_model"]["ground_truth"])
                scores.append(result["score"])
                for key, value in {**result, "reward": result["score"], "uid": f"{uid}_{session}_0"}.items():
                    extras.setdefault(key, []).append(value)
    if extra_line:
        inputs.append("p"), outputs.append("o"), gts.append("g"), scores.append(0.0)
        for key in extras:
            extras[key].append({"eval_id": "other_benchmark/1", "uid": "x_0_0"}.get(key, 0.0))
    PPOTrainer._write_generations(inputs, outputs, gts, scores, extras, str(run_dir / "generations"), 0)
    manifest = {"name": run_dir.name, "checkpoint": "ckpt/global_step_1", "model_path": "tiny", "n": n,
                "temperature": 1.0, "do_sample": True, "max_response_length": 64, "answer_extractor": "answer_tag",
                "val_files": val_files, "backend": "test"}  # fmt: skip
    (run_dir / "run.json").write_text(json.dumps(manifest))
    return expected


@pytest.fixture
def run_dir(built, tmp_path):
    directory = tmp_path / "calibrl_run"
    expected = simulate_run(built, directory)
    assert eval_cli(["report", "--run-dir", str(directory)]) == 0
    return directory, expected


def _mean_acc(expected, eval_ids):
    return sum(sum(expected[e]) / len(expected[e]) for e in eval_ids) / len(eval_ids)


def test_report_accuracy_matches_the_scored_samples(run_dir, built):
    """metrics.json acc per benchmark = mean over its rows of the mean over the n scored samples."""
    directory, expected = run_dir
    report = json.loads((directory / "metrics.json").read_text())
    for name, (summary, rows) in built.items():
        entry = report["benchmarks"][f"{name}_{summary.split}"]
        ids = [r["extra_info"]["eval_id"] for r in rows]
        assert entry["metrics"]["acc"] == pytest.approx(_mean_acc(expected, ids)), name
        assert (entry["rows"], entry["evaluated_rows"], entry["n"]) == (len(rows), len(rows), N_SAMPLES)


def test_report_accuracy_equals_verls_val_core_metric(run_dir, built):
    """Our acc equals what verl logs as val-core/<data_source>/acc/mean@n (process_validation_metrics)."""
    directory, expected = run_dir
    report = json.loads((directory / "metrics.json").read_text())
    summary, rows = built["mathvista"]
    data_sources, uids, accs = [], [], []
    for row in rows:
        for acc in expected[row["extra_info"]["eval_id"]]:
            data_sources.append(row["data_source"]), uids.append(row["extra_info"]["eval_id"]), accs.append(acc)
    verl_metrics = process_validation_metrics(data_sources, uids, {"acc": accs})
    verl_value = verl_metrics["mathvista_testmini"]["acc"][f"mean@{N_SAMPLES}"]
    assert report["benchmarks"]["mathvista_testmini"]["metrics"]["acc"] == pytest.approx(verl_value)


def test_report_files_record_how_numbers_were_made(run_dir):
    """report.md states it is rule-based and shows sampling, extractor and each prompt template;
    metrics.csv has one line per metric; the official aggregates appear."""
    directory, _ = run_dir
    markdown = (directory / "report.md").read_text()
    assert "Rule-based accuracy" in markdown
    assert "n=2" in markdown and "answer_tag" in markdown and "ckpt/global_step_1" in markdown
    assert "The final answer MUST BE put in <answer> </answer> tags." in markdown
    assert "score_strict" in markdown and "worst_case" in markdown and "vision_mean" in markdown
    assert "pass@2" in markdown
    with (directory / "metrics.csv").open() as handle:
        lines = list(csv.DictReader(handle))
    metrics = {(line["benchmark"], line["metric"]) for line in lines}
    assert {("wemath", "score_loose"), ("dynamath", "worst_case"), ("mathverse", "version/Vision Only")} <= metrics


def test_missing_rows_and_foreign_lines_are_reported(built, tmp_path):
    """A row verl never answered counts as wrong and is reported; dump lines of other data are counted."""
    summary, rows = built["amc"]
    dropped = rows[0]["extra_info"]["eval_id"]
    directory = tmp_path / "run"
    expected = simulate_run(built, directory, drop_eval_id=dropped, extra_line=True)
    assert eval_cli(["report", "--run-dir", str(directory)]) == 0
    report = json.loads((directory / "metrics.json").read_text())
    entry = report["benchmarks"]["amc_train"]
    assert (entry["missing_rows"], entry["missing_samples"]) == (1, N_SAMPLES)
    other = [r["extra_info"]["eval_id"] for r in rows[1:]]
    assert entry["metrics"]["acc"] == pytest.approx(_mean_acc(expected, other) * len(other) / len(rows))
    assert report["unmatched_dump_lines"] == 1
    assert "Missing responses" in (directory / "report.md").read_text()


def test_compare_lays_runs_side_by_side_and_flags_differences(built, tmp_path):
    """compare: one row per run, the main-table columns, their average; a differing n is flagged."""
    first, second = tmp_path / "grpo", tmp_path / "calibrl"
    simulate_run(built, first, n=1)
    simulate_run(built, second, n=2)
    assert eval_cli(["report", "--run-dir", str(first)]) == 0
    assert eval_cli(["report", "--run-dir", str(second)]) == 0
    assert eval_cli(["compare", str(first), str(second), "--names", "GRPO,CalibRL", "--out", str(tmp_path / "cmp")]) == 0
    markdown = (tmp_path / "cmp" / "compare.md").read_text()
    assert "| GRPO |" in markdown and "| CalibRL |" in markdown
    assert "We-Math (strict)" in markdown and "DynaMath (worst)" in markdown and "| Avg |" in markdown
    assert "Settings differ" in markdown and '"n"' not in markdown and "- n:" in markdown
    with (tmp_path / "cmp" / "compare.csv").open() as handle:
        assert [line["run"] for line in csv.DictReader(handle)] == ["GRPO", "CalibRL"]


def test_dump_without_eval_id_is_an_error_naming_the_fix(built, tmp_path, capsys):
    """A dump scored by another reward function has no eval_id: exit 2 and say which reward to use."""
    (tmp_path / "generations").mkdir()
    (tmp_path / "generations" / "0.jsonl").write_text(json.dumps({"input": "i", "output": "o", "acc": 1.0}) + "\n")
    val_files = [summary.parquet for summary, _ in built.values()]
    status = eval_cli(["report", "--generations", str(tmp_path / "generations"), "--val-files", *val_files, "--out", str(tmp_path)])
    assert status == 2
    assert "pkg://calibrl_ext.reward" in capsys.readouterr().err


def test_missing_dump_folder_is_an_error_naming_the_setting(tmp_path, capsys):
    """No dump folder: exit 2 naming trainer.validation_data_dir."""
    status = eval_cli(["report", "--generations", str(tmp_path / "nowhere"), "--val-files", "x.parquet", "--out", str(tmp_path)])
    assert status == 2 and "trainer.validation_data_dir" in capsys.readouterr().err


def test_check_accepts_evaluation_parquets_and_refuses_others(built, tmp_path, capsys):
    """`check` (run by eval.sh before verl starts) passes built parquets and refuses one without eval_id."""
    assert eval_cli(["check", *[summary.parquet for summary, _ in built.values()]]) == 0
    import pyarrow as pa
    import pyarrow.parquet as pq

    plain = tmp_path / "val.parquet"
    pq.write_table(pa.table({"data_source": ["x"], "extra_info": [{"index": 0}]}), plain)
    assert eval_cli(["check", str(plain)]) == 2
    assert "build it with data_prep/build_benchmarks.py" in capsys.readouterr().err
