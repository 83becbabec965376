"""data_prep/build_benchmarks.py: exit codes, start-up errors naming the flag, outputs on disk."""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cli():
    spec = importlib.util.spec_from_file_location("build_benchmarks_cli", REPO / "data_prep" / "build_benchmarks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_cli_builds_parquet_rejects_and_summary(cli, mathverse_input, tmp_path, capsys):
    """A normal build exits 0 and writes <name>.parquet, .rejects.jsonl and .summary.json; it prints the licence."""
    status = cli(["--benchmark", "mathverse", "--input", str(mathverse_input[0]), "--image-root",
                  str(mathverse_input[1]), "--out", str(tmp_path)])  # fmt: skip
    assert status == 0
    for suffix in (".parquet", ".rejects.jsonl", ".summary.json"):
        assert (tmp_path / f"mathverse_testmini{suffix}").is_file()
    summary = json.loads((tmp_path / "mathverse_testmini.summary.json").read_text())
    assert (summary["rows_written"], summary["rejected"]) == (3, {"malformed_row": 1})
    assert "licence: MIT" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--input", "does/not/exist.json"], "--input does/not/exist.json does not exist"),
        (["--prompt-template", "no field"], "{question}"),
        (["--max-pixels", "0"], "--max-pixels must be >= 1"),
    ],
)
def test_bad_flags_exit_2_naming_the_flag(cli, logicvista_input, tmp_path, capsys, args, message):
    """A flag that cannot work stops the build before any record is read, with exit 2 and the flag's name."""
    base = {"--benchmark": "logicvista", "--input": str(logicvista_input[0]), "--out": str(tmp_path)}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    argv = [item for pair in base.items() for item in pair]
    assert cli(argv) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "logicvista_test.parquet").exists()


def test_everything_rejected_exits_1(cli, tmp_path, capsys):
    """When every record is rejected the CLI exits 1 and points at the rejects file."""
    (tmp_path / "amc.jsonl").write_text(json.dumps({"id": 1, "problem": "p", "answer": None}) + "\n")
    assert cli(["--benchmark", "amc", "--input", str(tmp_path / "amc.jsonl"), "--out", str(tmp_path / "out")]) == 1
    assert "rejects" in capsys.readouterr().err


def test_save_to_disk_dict_without_split_names_the_splits(cli, dynamath_input, tmp_path, capsys):
    """A DatasetDict input without --input-split fails at start-up listing the available splits."""
    assert cli(["--benchmark", "dynamath", "--input", str(dynamath_input), "--out", str(tmp_path)]) == 2
    assert "sample_variant1" in capsys.readouterr().err
    assert not (tmp_path / "dynamath_sample.rejects.jsonl").exists()


def test_json_of_wrong_shape_fails_at_start_up(cli, tmp_path, capsys):
    """A .json whose top level is neither a dict of records nor a list fails before writing anything."""
    (tmp_path / "bad.json").write_text("42")
    assert cli(["--benchmark", "mathvista", "--input", str(tmp_path / "bad.json"), "--out", str(tmp_path / "out")]) == 2
    assert "expected a JSON object or list" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
