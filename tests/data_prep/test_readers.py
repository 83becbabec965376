"""Input shapes users have: save_to_disk folders, parquet/arrow with ViRL39K-, geometry3k-, MMK12-like
columns, JSONL/JSON + an image folder, and the released CalibRL / LUFFY parquet layouts."""

from __future__ import annotations

import io

import datasets
import pyarrow as pa
import pytest
from PIL import Image

from calibrl_ext.data import PAPER_INSTRUCTION_SUFFIX, BuildConfig, ColumnMapping, ConfigError, build
from calibrl_ext.data.readers import open_input

EXPERT = "<think>\nread it\n</think>\n<answer>{}</answer>"


def _pil(color) -> Image.Image:
    return Image.new("RGB", (56, 56), color)


def _geometry3k_like() -> datasets.Dataset:
    features = datasets.Features(
        {
            "problem": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "images": datasets.Sequence(datasets.Image()),
        }
    )
    return datasets.Dataset.from_dict(
        {
            "problem": ["<image>Find x.", "<image>Find y."],
            "answer": ["3", "4"],
            "images": [[_pil((10, 20, 30))], [_pil((40, 50, 60))]],
        },
        features=features,
    )


def test_save_to_disk_dataset_with_pil_images(run_build, tmp_path):
    """A geometry3k-like Dataset saved with save_to_disk (HF Image feature) converts with the preset; the images
    come out as the exact bytes datasets stored."""
    dataset = _geometry3k_like()
    dataset.save_to_disk(str(tmp_path / "geo"))
    run = run_build(tmp_path / "geo", preset="geometry3k")
    rows = run.rows()
    assert [row["reward_model"]["ground_truth"] for row in rows] == ["3", "4"]
    assert rows[0]["data_source"] == "geometry3k"
    stored = dataset.with_format("arrow")[0:1]["images"].to_pylist()[0][0]["bytes"]
    assert rows[0]["images"][0]["bytes"] == stored
    assert rows[0]["prompt"][0]["content"].startswith("<image>Find x.")
    assert rows[0]["extra_info"]["expert_status"] == "missing"


def test_save_to_disk_dataset_dict_needs_a_split(run_build, tmp_path):
    """A DatasetDict folder is read one split at a time (--input-split); without it the error lists the splits."""
    datasets.DatasetDict({"train": _geometry3k_like(), "test": _geometry3k_like()}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(ValueError, match=r"splits \['train', 'test'\].*--input-split"):
        run_build(tmp_path / "dd", preset="geometry3k")
    run = run_build(tmp_path / "dd", preset="geometry3k", input_split="test")
    assert len(run.rows()) == 2 and run.rows()[0]["extra_info"]["input_name"] == "dd[test]"


def test_mmk12_like_parquet_with_image_structs(run_build, helpers, tmp_path):
    """MMK12-like parquet (single image as a {bytes, path} struct, no placeholder): one <image> is inserted,
    the id and the kept `subject` column land in extra_info."""
    records = [
        {
            "id": "m1",
            "subject": "physics",
            "image": {"bytes": helpers.png_bytes(color=(1, 1, 1)), "path": "a.png"},
            "question": "What is the force?",
            "answer": "B",
        },
        {
            "id": "m2",
            "subject": "math",
            "image": {"bytes": helpers.png_bytes(color=(2, 2, 2)), "path": None},
            "question": "Solve for x.",
            "answer": "2",
        },
    ]
    run = run_build(records, preset="mmk12")
    rows = run.by_id()
    assert rows["m1"]["prompt"][0]["content"].startswith(
        "<image>What is the force?\n\n" + PAPER_INSTRUCTION_SUFFIX[:20]
    )
    assert rows["m1"]["images"][0]["path"] == "a.png"
    assert rows["m1"]["extra_info"]["subject"] == "physics" and rows["m2"]["data_source"] == "mmk12"


def test_virl39k_like_parquet_with_relative_image_paths(run_build, helpers, tmp_path):
    """ViRL39K-like parquet: <image> in the question, \\boxed{} answers (unwrapped), image lists of paths
    relative to the parquet's folder, qid as the id, category/source kept."""
    root = tmp_path / "ViRL39K"
    (root / "images").mkdir(parents=True)
    (root / "images" / "q1-0.png").write_bytes(helpers.png_bytes(color=(9, 9, 9)))
    (root / "images" / "q2-0.png").write_bytes(helpers.png_bytes(color=(8, 8, 8)))
    records = [
        {
            "question": "<image>\nWhat is x?",
            "answer": "\\boxed{60}",
            "image": ["images/q1-0.png"],
            "qid": "q1",
            "category": "geometry",
            "source": "mm",
            "PassRate_7BTrained": 0.5,
        },
        {
            "question": "<image>\nWhich option?",
            "answer": "\\boxed{C}",
            "image": ["images/q2-0.png"],
            "qid": "q2",
            "category": "chart",
            "source": "mm",
            "PassRate_7BTrained": 0.25,
        },
    ]
    source = helpers.write_parquet(root / "39Krelease.parquet", records)
    run = run_build(source, preset="virl39k")
    rows = run.by_id()
    assert {key: row["reward_model"]["ground_truth"] for key, row in rows.items()} == {"q1": "60", "q2": "C"}
    assert rows["q1"]["images"][0] == {"bytes": (root / "images" / "q1-0.png").read_bytes(), "path": "images/q1-0.png"}
    assert rows["q1"]["extra_info"]["category"] == "geometry" and rows["q1"]["data_source"] == "virl39k"


def test_arrow_files_stream_and_file_format(run_build, helpers, tmp_path):
    """.arrow inputs in the IPC stream format (what datasets writes) and the IPC file format both read."""
    table = pa.Table.from_pylist([helpers.record(i) for i in range(3)])
    with pa.ipc.new_stream(str(tmp_path / "s.arrow"), table.schema) as writer:
        writer.write_table(table, max_chunksize=2)
    with pa.ipc.new_file(str(tmp_path / "f.arrow"), table.schema) as writer:
        writer.write_table(table)
    for name in ("s.arrow", "f.arrow"):
        run = run_build(tmp_path / name, chunk_rows=2)
        assert [row["extra_info"]["row_id"] for row in run.rows()] == ["r0", "r1", "r2"]


def test_jsonl_and_json_with_an_image_folder_and_custom_columns(run_build, helpers, tmp_path):
    """JSONL (and a .json list) with custom column names mapped by flags; image paths resolve against --image-root;
    messages-shaped experts (LUFFY's `target`) are accepted."""
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "a.png").write_bytes(helpers.png_bytes(color=(3, 3, 3)))
    (tmp_path / "pics" / "b.png").write_bytes(helpers.png_bytes(color=(4, 4, 4)))
    lines = [
        {
            "uid": 1,
            "q": "How many?",
            "gt": 3,
            "img": "a.png",
            "cot": [{"role": "assistant", "content": EXPERT.format(3)}],
        },
        {"uid": 2, "q": "Which?", "gt": "A", "img": ["a.png", "b.png"], "cot": {"content": EXPERT.format("A")}},
    ]
    mapping = ColumnMapping(question="q", answer="gt", images="img", expert="cot", id="uid")
    for name in ("in.jsonl", "in.json"):
        path = tmp_path / name
        if name.endswith(".json"):
            import json

            path.write_text(json.dumps(lines))
        else:
            helpers.write_jsonl(path, lines)
        run = run_build(path, mapping=mapping, image_root=str(tmp_path / "pics"))
        rows = run.by_id()
        assert rows["1"]["expert_solution"] == EXPERT.format(3) and rows["1"]["extra_info"]["expert_status"] == "ok"
        assert rows["2"]["prompt"][0]["content"].startswith("<image><image>Which?")
        assert [image["path"] for image in rows["2"]["images"]] == ["a.png", "b.png"]


def test_released_calibrl_and_luffy_layouts(run_build, helpers, tmp_path):
    """Parquet already in verl's layout (prompt messages, reward_model struct, solution / target): dotted
    columns reach the ground truth, the instruction suffix is not appended twice, a system message is kept,
    and the text-only LUFFY layout needs no image."""
    suffixed = "<image>What is 2+2?\n\n" + PAPER_INSTRUCTION_SUFFIX
    calibrl = [
        {
            "data_source": "virl",
            "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": suffixed}],
            "images": [{"bytes": helpers.png_bytes(), "path": None}],
            "reward_model": {"style": "rule", "ground_truth": "4"},
            "solution": EXPERT.format(4),
        },
    ]
    row = run_build(calibrl, preset="calibrl").rows()[0]
    assert row["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": suffixed}]
    assert row["data_source"] == "virl" and row["extra_info"]["expert_status"] == "ok"
    luffy = [
        {
            "data_source": "openr1",
            "prompt": [{"role": "user", "content": "What is 2+2?"}],
            "reward_model": {"style": "rule", "ground_truth": "4"},
            "target": [{"role": "assistant", "content": EXPERT.format(4)}],
        },
    ]
    row = run_build(luffy, preset="luffy").rows()[0]
    assert row["images"] == [] and row["expert_solution"] == EXPERT.format(4)


def test_auto_detection_and_missing_columns(run_build, helpers, tmp_path):
    """Without flags or preset, common names are detected; a missing required column or a wrong flag fails at
    start-up with the input's column list."""
    run = run_build([helpers.record(0)])
    assert run.rows()[0]["expert_solution"] == helpers.GOOD_EXPERT  # `solution` auto-detected
    no_answer = [{k: v for k, v in helpers.record(0).items() if k != "answer"}]
    with pytest.raises(ConfigError, match=r"no answer column found.*columns are"):
        run_build(no_answer)
    with pytest.raises(ConfigError, match=r"column 'prob' for the question \(flag\)"):
        run_build([helpers.record(0)], mapping=ColumnMapping(question="prob"))
    no_images = [{k: v for k, v in helpers.record(0).items() if k != "images"}]
    with pytest.raises(ConfigError, match="--allow-text-only"):
        run_build(no_images)


def test_unrecognised_inputs_fail_at_start_up(tmp_path):
    """Missing paths, folders without data and unknown extensions are errors naming the accepted shapes."""
    with pytest.raises(FileNotFoundError):
        open_input(tmp_path / "missing.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no dataset"):
        open_input(tmp_path / "empty")
    (tmp_path / "data.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match="unsupported file type"):
        open_input(tmp_path / "data.csv")
    with pytest.raises(ConfigError, match="--out is required"):
        build(BuildConfig(inputs=[str(tmp_path / "data.csv")]))


def test_pil_images_are_encoded_losslessly(helpers):
    """A PIL image (Python callers) is stored as PNG whose pixels equal the original's."""
    from calibrl_ext.data import prepare_image

    original = Image.new("RGB", (30, 20), (5, 6, 7))
    original.putpixel((3, 4), (250, 1, 2))
    prepared = prepare_image(original)
    assert list(Image.open(io.BytesIO(prepared.data)).getdata()) == list(original.getdata())


@pytest.mark.parametrize("suffix", ["parquet", "arrow"])
def test_readers_do_not_hold_what_they_have_read(tmp_path, suffix):
    """Streaming: while a parquet or arrow input is read chunk by chunk, arrow never holds more than a couple of
    row groups (pyarrow's parquet pre-buffering would keep every chunk read so far: the whole file)."""
    blob = bytes(range(256)) * 800  # 200 KB per row, 40 row groups of 2 rows: 16 MB in all
    table = pa.Table.from_pylist([{"id": str(i), "payload": blob} for i in range(80)])
    path = tmp_path / f"big.{suffix}"
    if suffix == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path, row_group_size=2, compression="none")
    else:
        with pa.ipc.new_stream(str(path), table.schema) as writer:
            writer.write_table(table, max_chunksize=2)
    del table  # its own 16 MB would count in arrow's allocation figure
    source = open_input(path)
    peak = 0
    rows = 0
    for chunk in source.iter_records(["id", "payload"], 2):
        rows += len(chunk)
        peak = max(peak, pa.total_allocated_bytes())
    assert rows == 80
    assert peak < 3 * 2 * len(blob)  # a few row groups, not the 16 MB file
