"""Fixtures for the data-prep tests: images, input files and builds, all made in code."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from calibrl_ext.data import BuildConfig, build
from calibrl_ext.data.rejects import read_rejects

GOOD_EXPERT = "<think>\nTwo plus two is four.\n</think>\n<answer>4</answer>"


def png_bytes(size: tuple[int, int] = (56, 56), color: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A small solid-colour PNG (distinct colours give distinct images)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def record(index: int, **overrides) -> dict:
    """A valid input record (question, answer, one inline image, a passing expert), made unique by ``index``."""
    base = {
        "id": f"r{index}",
        "question": f"What is two plus two? (variant {index})",
        "answer": "4",
        "images": [png_bytes(color=(index % 256, 40, 90))],
        "solution": GOOD_EXPERT,
    }
    base.update(overrides)
    return base


def write_parquet(path: Path, records: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(records), path)
    return path


def write_jsonl(path: Path, records: list[dict | str]) -> Path:
    """Records as JSON lines; a str item is written verbatim (to make malformed lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for item in records:
            handle.write((item if isinstance(item, str) else json.dumps(item)) + "\n")
    return path


class BuildRun:
    """One finished build: its summary, its rows per split and its rejects."""

    def __init__(self, summary, out_dir: Path):
        self.summary = summary
        self.out_dir = out_dir

    def rows(self, split: str = "train") -> list[dict]:
        path = self.out_dir / f"{split}.parquet"
        return pq.read_table(path).to_pylist() if path.exists() else []

    def all_rows(self) -> list[dict]:
        return self.rows("train") + self.rows("val")

    @property
    def rejects(self) -> list[dict]:
        return read_rejects(self.out_dir / "rejects.jsonl")

    def reasons(self) -> dict[str, str]:
        """row_id -> reject reason."""
        return {item["row_id"]: item["reason"] for item in self.rejects}

    def by_id(self) -> dict[str, dict]:
        return {row["extra_info"]["row_id"]: row for row in self.all_rows()}


@pytest.fixture
def run_build(tmp_path):
    """``run_build(records_or_path, **BuildConfig fields) -> BuildRun`` on a parquet input (val_ratio 0 by default)."""
    counter = {"n": 0}

    def _run(source, **fields) -> BuildRun:
        counter["n"] += 1
        if isinstance(source, list):
            source = write_parquet(tmp_path / f"input{counter['n']}.parquet", source)
        out_dir = tmp_path / f"out{counter['n']}"
        fields.setdefault("val_ratio", 0.0)
        fields.setdefault("progress", False)
        config = BuildConfig(inputs=[str(source)], out_dir=str(out_dir), **fields)
        return BuildRun(build(config), out_dir)

    return _run


@pytest.fixture(scope="session")
def tiny_vl_model(tmp_path_factory) -> Path:
    """A tiny random Qwen2.5-VL checkpoint with tokenizer and processor (built offline, once per session)."""
    from calibrl_ext.tiny_models import cached_tiny_model

    return cached_tiny_model("qwen2_5_vl", cache_root=tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture
def helpers():
    """The helper functions above, for test modules (pytest's importlib mode forbids importing conftest)."""
    from types import SimpleNamespace

    return SimpleNamespace(
        png_bytes=png_bytes,
        record=record,
        write_parquet=write_parquet,
        write_jsonl=write_jsonl,
        GOOD_EXPERT=GOOD_EXPERT,
    )
