"""examples/eval.sh refuses bad arguments before anything starts (exit 2, a message naming the fix)."""

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def run_eval_sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(REPO / "examples" / "eval.sh"), *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "--model is required"),
        (("--model", "/no/such/model", "--val-files", "x.parquet"), "does not exist"),
        (("--model", "{model}"), "no evaluation parquets"),
        (("--model", "{model}", "--bench-dir", "{bench}", "--benchmarks", "nosuch"), "build it with data_prep/build_benchmarks.py --benchmark nosuch"),
        (("--model", "{model}", "--val-files", "{plain}"), "not an evaluation parquet"),
        (("--model", "{model}", "--val-files", "{parquet}", "--n", "0"), "--n must be a positive integer"),
        (("--model", "{model}", "--val-files", "{parquet}", "--extractor", "boxed"), "--extractor must be"),
        (("--model", "{model}", "--val-files", "{parquet}", "--temperature", "-1"), "--temperature must be a number >= 0"),
        (("--model", "{bench}", "--val-files", "{parquet}"), "neither an HF model folder"),
    ],
)
def test_bad_arguments_exit_2_before_verl_starts(built, tmp_path, args, message):
    """Each bad argument gives exit 2 and a message; no run folder content is produced by verl."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"data_source": ["x"], "extra_info": [{"index": 0}]}), plain)
    summary = built["amc"][0]
    values = {"model": str(model), "bench": str(Path(summary.parquet).parent), "plain": str(plain), "parquet": summary.parquet}
    completed = run_eval_sh(*(arg.format(**values) for arg in args), "--out", str(tmp_path / "out"))
    assert completed.returncode == 2, completed.stderr
    assert message in completed.stderr
    assert not (tmp_path / "out" / "generations").exists()
