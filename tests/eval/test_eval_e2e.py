"""examples/eval.sh --cpu: a real verl val-only run (trainer.val_only=True) on the CPU backend with a tiny
Qwen2.5-VL, on parquets built from the benchmark fixtures, then the report.

The model is random, so accuracies are near 0; what is checked is the plumbing: every row is generated,
scored by calibrl_ext.reward and dumped by verl, the report joins every dump line back to its row, and
the report's accuracy equals what verl logs as val-core/<data_source>/acc/mean@1.
"""

import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Wall-clock limit of the whole eval.sh call (verl start-up on CPU is about a minute).
EVAL_TIMEOUT_S = 900
#: Benchmarks of the fixture set evaluated (image rows and text-only rows together).
E2E_BENCHMARKS = ("mathvista", "wemath", "dynamath", "amc")


@pytest.mark.e2e
@pytest.mark.ray
def test_eval_sh_cpu_dry_run_reports_every_row(built, tmp_path):
    """eval.sh --cpu exits 0; every parquet row is evaluated once; nothing in the dump is unmatched; the
    report's accuracy per benchmark equals verl's val-core acc/mean@1 for that data_source."""
    from calibrl_ext.tiny_models import cached_tiny_model

    model = cached_tiny_model("qwen2_5_vl")
    val_files = " ".join(built[name][0].parquet for name in E2E_BENCHMARKS)
    out = tmp_path / "run"
    command = [
        "bash", str(REPO / "examples" / "eval.sh"), "--cpu", "--model", str(model), "--val-files", val_files,
        "--out", str(out), "--name", "tiny_dry_run", "--max-prompt-length", "2048", "--max-response-length", "16",
        "--timeout", str(EVAL_TIMEOUT_S - 60),
    ]  # fmt: skip
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=EVAL_TIMEOUT_S)
    log_tail = (completed.stdout + completed.stderr)[-6000:]
    assert completed.returncode == 0, log_tail

    report = json.loads((out / "metrics.json").read_text())
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["n"] == 1 and manifest["do_sample"] is False and manifest["backend"].startswith("cpu")
    total_rows = sum(len(built[name][1]) for name in E2E_BENCHMARKS)
    assert report["dump_lines"] == total_rows and report["unmatched_dump_lines"] == 0
    for name in E2E_BENCHMARKS:
        summary, rows = built[name]
        entry = report["benchmarks"][f"{name}_{summary.split}"]
        assert (entry["rows"], entry["evaluated_rows"], entry["missing_samples"]) == (len(rows), len(rows), 0), name
        assert 0.0 <= entry["metrics"]["acc"] <= 1.0
    assert "worst_case" in report["benchmarks"]["dynamath_sample"]["metrics"]
    assert "score_strict" in report["benchmarks"]["wemath_testmini"]["metrics"]

    logged = {}
    for line in (out / "verl_metrics.jsonl").read_text().splitlines():
        logged.update(json.loads(line)["data"])
    for name in ("mathvista", "amc"):  # one data_source each, so verl's per-source metric is the benchmark's
        summary, rows = built[name]
        data_source = rows[0]["data_source"]
        entry = report["benchmarks"][f"{name}_{summary.split}"]
        assert logged[f"val-core/{data_source}/acc/mean@1"] == pytest.approx(entry["metrics"]["acc"])
    assert (out / "report.md").read_text().startswith("# Evaluation report: tiny_dry_run")
