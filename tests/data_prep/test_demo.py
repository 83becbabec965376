"""The embedded demo dataset and the no-argument CLI path that writes it."""

from __future__ import annotations

import hashlib
import io
import json
from collections import Counter

import pyarrow.parquet as pq
import pytest
from PIL import Image

from calibrl_ext.data import BuildConfig, DemoConfig, build, generate_demo_records
from calibrl_ext.data.demo import DEFAULT_KINDS, SIDE_MULTIPLE
from calibrl_ext.reward import compute_score, is_well_formatted


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_demo_records_are_correct_varied_and_within_bounds():
    """Every demo expert is well formatted and passes the project's reward against its own ground truth;
    all kinds appear; image sides are multiples of 28 within bounds; prompts vary in length."""
    config = DemoConfig(rows=48, val_rows=8, min_side=56, max_side=112)
    records = list(generate_demo_records(config))
    assert len(records) == 48 and sum(r["split"] == "val" for r in records) == 8
    assert set(Counter(r["kind"] for r in records)) == set(DEFAULT_KINDS)
    for record in records:
        assert is_well_formatted(record["solution"])
        assert compute_score(record["data_source"], record["solution"], record["answer"])["acc"] == 1.0
        width, height = Image.open(io.BytesIO(record["images"][0])).size
        assert width == height and width % SIDE_MULTIPLE == 0 and 56 <= width <= 112
    assert len({len(r["question"]) for r in records}) > 10
    assert len({(r["question"], r["images"][0]) for r in records}) == 48  # no duplicates to lose


def test_shape_colour_kind_answers_the_drawn_colour():
    """--demo-kinds shape_colour: only that kind; the answer is the palette colour that fills most non-white pixels
    of the image (so the image decides it), the question never names it, and the expert passes the reward."""
    from calibrl_ext.data.demo import PALETTE

    records = list(generate_demo_records(DemoConfig(rows=30, val_rows=5, kinds=("shape_colour",))))
    assert {r["kind"] for r in records} == {"shape_colour"} and len({r["answer"] for r in records}) == len(PALETTE)
    for record in records:
        pixels = Counter(Image.open(io.BytesIO(record["images"][0])).convert("RGB").getdata())
        drawn = max((rgb for rgb in pixels if rgb in PALETTE.values()), key=pixels.__getitem__)
        assert PALETTE[record["answer"]] == drawn and record["answer"] not in record["question"]
        assert compute_score(record["data_source"], record["solution"], record["answer"])["acc"] == 1.0


def test_demo_kinds_are_checked():
    """An unknown, empty or repeated --demo-kinds list fails naming the flag."""
    for kinds in (("no_such_kind",), (), ("clock_time", "clock_time")):
        with pytest.raises(ValueError, match="--demo-kinds"):
            DemoConfig(kinds=kinds).validate()


def test_demo_rows_do_not_depend_on_how_many_are_generated():
    """Row i of a longer demo equals row i of a shorter one (seeded per row), split marks aside."""
    short = list(generate_demo_records(DemoConfig(rows=12, val_rows=0)))
    long = list(generate_demo_records(DemoConfig(rows=30, val_rows=0)))
    assert short == long[:12]


def test_demo_missing_expert_ratio():
    """--demo-missing-expert-ratio 1 gives rows with no expert (their groups train as plain GRPO)."""
    records = list(generate_demo_records(DemoConfig(rows=8, val_rows=0, missing_expert_ratio=1.0)))
    assert all(record["solution"] is None for record in records)


def test_demo_build_is_byte_deterministic_and_seed_sensitive(tmp_path):
    """Same seed and settings -> byte-identical parquet files; another seed -> different files."""

    def run(name, seed):
        config = BuildConfig(
            out_dir=str(tmp_path / name), progress=False, demo=DemoConfig(rows=40, val_rows=8, seed=seed)
        )
        build(config)
        return {split: _sha(tmp_path / name / f"{split}.parquet") for split in ("train", "val")}

    first, second, other = run("a", 0), run("b", 0), run("c", 1)
    assert first == second
    assert first["train"] != other["train"]


def test_demo_config_errors_name_the_flag():
    """Impossible demo settings fail before anything is generated, naming the flag."""
    with pytest.raises(ValueError, match="--demo-val-rows"):
        DemoConfig(rows=4, val_rows=5).validate()
    with pytest.raises(ValueError, match="no multiple of 28"):
        DemoConfig(min_side=57, max_side=83).validate()


def test_cli_without_arguments_writes_the_demo(tmp_path, monkeypatch, capsys):
    """`python data_prep/build_parquet.py` with no argument writes data/demo/{train,val}.parquet (256 + 64 rows
    by default), every row with a passing expert, and prints the summary."""
    from calibrl_ext.data.schema import output_schema

    build_parquet = _load_cli()
    monkeypatch.chdir(tmp_path)
    assert build_parquet.main(["--no-progress"]) == 0
    out = tmp_path / "data" / "demo"
    train, val = pq.read_table(out / "train.parquet"), pq.read_table(out / "val.parquet")
    assert (train.num_rows, val.num_rows) == (256, 64)
    assert train.schema.equals(output_schema(("kind",)))
    statuses = Counter(info["expert_status"] for info in train.column("extra_info").to_pylist())
    assert statuses == {"ok": 256}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rows_written"] == {"train": 256, "val": 64} and summary["rejected"] == {}
    assert "written: train 256, val 64" in capsys.readouterr().out


def test_cli_bad_flag_value_exits_2_before_writing(tmp_path, monkeypatch, capsys):
    """A setting that cannot work exits with status 2 and a message naming the flag; nothing is written."""
    build_parquet = _load_cli()
    monkeypatch.chdir(tmp_path)
    assert build_parquet.main(["--val-ratio", "1.5"]) == 2
    assert "--val-ratio" in capsys.readouterr().err
    assert build_parquet.main(["--prompt-template", "no field"]) == 2
    assert not (tmp_path / "data").exists()


def _load_cli():
    """Import data_prep/build_parquet.py from its path (it is a script, not a package module)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "data_prep" / "build_parquet.py"
    spec = importlib.util.spec_from_file_location("build_parquet_cli", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
