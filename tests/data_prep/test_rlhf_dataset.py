"""The output loads through verl 0.9.1's own RLHFDataset (tiny Qwen2.5-VL tokenizer + processor, offline),
images round-trip losslessly, and our prompt token count equals the count verl's overlong filter uses."""

from __future__ import annotations

import io
import statistics

import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf
from PIL import Image

from calibrl_ext.data import BuildConfig, DemoConfig, build


def _dataset(path, model_dir, max_prompt_length=4096):
    from transformers import AutoProcessor, AutoTokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    config = OmegaConf.create(
        {
            "max_prompt_length": max_prompt_length,
            "filter_overlong_prompts": True,
            # None = filter in this process: datasets' fork pool can deadlock in a process that already
            # runs torch threads (a pytest process does); verl's own trainer process is fresh.
            "filter_overlong_prompts_workers": None,
            "cache_dir": str(path.parent / "verl_cache"),
        }
    )
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    processor = AutoProcessor.from_pretrained(model_dir)
    return RLHFDataset(str(path), tokenizer, config, processor=processor)


@pytest.fixture(scope="module")
def built(tmp_path_factory, tiny_vl_model):
    """A small demo build with token counts from the tiny model."""
    out = tmp_path_factory.mktemp("rlhf")
    config = BuildConfig(
        out_dir=str(out / "demo"), progress=False, tokenizer=str(tiny_vl_model), demo=DemoConfig(rows=24, val_rows=4)
    )
    build(config)
    return out / "demo"


def test_rlhf_dataset_reads_every_row_and_collates(built, tiny_vl_model):
    """RLHFDataset keeps every row, each item carries raw_prompt with one image part per image and the
    expert_solution column, and verl's collate_fn batches the items."""
    from verl.utils.dataset.rl_dataset import collate_fn

    table = pq.read_table(built / "train.parquet").to_pylist()
    dataset = _dataset(built / "train.parquet", tiny_vl_model)
    assert len(dataset) == len(table) == 20
    items = [dataset[i] for i in range(4)]
    for item, row in zip(items, table, strict=False):
        parts = [part for message in item["raw_prompt"] for part in message["content"]]
        assert sum(part["type"] == "image" for part in parts) == len(row["images"]) == 1
        assert item["expert_solution"] == row["expert_solution"] and item["expert_solution"].startswith("<think>")
        assert item["extra_info"]["expert_pass"] is True
    batch = collate_fn(items)
    assert batch["expert_solution"].shape == (4,)


def test_images_round_trip_losslessly_through_verl(built, tiny_vl_model):
    """The image verl's vision pipeline decodes from the parquet equals, pixel for pixel, the image that was
    generated (bytes are stored unchanged and sides are already multiples of 28, so nothing is resampled)."""
    from verl.utils.dataset.rl_dataset import RLHFDataset

    from calibrl_ext.data import generate_demo_records

    originals = {r["id"]: r["images"][0] for r in generate_demo_records(DemoConfig(rows=24, val_rows=4))}
    dataset = _dataset(built / "train.parquet", tiny_vl_model)
    for index in range(3):
        item = dataset[index]
        original = originals[item["extra_info"]["row_id"]]
        images, _, _ = RLHFDataset._process_multi_modal_info(item["raw_prompt"], 14, config={})
        assert [part["bytes"] for part in item["raw_prompt"][0]["content"] if part["type"] == "image"] == [original]
        expected = Image.open(io.BytesIO(original)).convert("RGB")
        assert images[0].size == expected.size
        assert images[0].tobytes() == expected.tobytes()


def test_prompt_token_count_matches_verls_overlong_filter(built, tiny_vl_model):
    """extra_info.prompt_tokens is the length verl's own filter measures: with max_prompt_length at the median
    count, verl keeps exactly the rows whose recorded count is <= the median."""
    counts = [info["prompt_tokens"] for info in pq.read_table(built / "train.parquet").column("extra_info").to_pylist()]
    assert min(counts) > 0 and len(set(counts)) > 1  # varied lengths, like real data
    threshold = int(statistics.median(counts))
    dataset = _dataset(built / "train.parquet", tiny_vl_model, max_prompt_length=threshold)
    assert len(dataset) == sum(count <= threshold for count in counts)


def test_multi_image_rows_load(tmp_path, tiny_vl_model, helpers):
    """A row with two images and no placeholders gets two, and verl pairs them with its two images."""
    images = [helpers.png_bytes(color=(10, 10, 10)), helpers.png_bytes(size=(84, 56), color=(90, 90, 90))]
    source = helpers.write_parquet(
        tmp_path / "in.parquet", [helpers.record(0, images=images, question="Which is darker?")]
    )
    build(BuildConfig(inputs=[str(source)], out_dir=str(tmp_path / "out"), val_ratio=0.0, progress=False))
    item = _dataset(tmp_path / "out" / "train.parquet", tiny_vl_model)[0]
    parts = item["raw_prompt"][0]["content"]
    assert [part["bytes"] for part in parts if part["type"] == "image"] == images
    assert parts[2] == {"type": "text", "text": parts[2]["text"]} and parts[2]["text"].startswith("Which is darker?")
