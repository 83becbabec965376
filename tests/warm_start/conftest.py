"""Fixtures of the warm-start tests: cached tiny models and small SFT parquet files written in code."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

#: RGB of the test images, one per answer.
COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}
#: The demo data's instruction suffix (data_prep), so prompts look like the RL prompts.
SUFFIX = (
    "\n\nYou FIRST think about the reasoning process as an internal monologue and then provide the final answer. "
    "The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST BE put in "
    "<answer> </answer> tags."
)


def _png(rgb) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (56, 56), rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def solution_for(name: str) -> str:
    return f"<think>\nThe whole picture is {name}, so the colour is {name}.\n</think>\n<answer>{name}</answer>"


def write_sft_parquet(
    path: Path, n_rows: int, *, images: bool = True, empty_solution_rows: tuple[int, ...] = (), expert: bool = True
) -> Path:
    """verl RL rows asking for an image's colour (or, ``images=False``, a text question), with expert solutions.

    Rows whose index is in ``empty_solution_rows`` get ``expert_solution = ""``; ``expert=False`` leaves the
    column out.
    """
    import pandas as pd

    names = list(COLORS)
    rows = []
    for index in range(n_rows):
        name = names[index % len(names)]
        question = "What colour is the image?" if images else f"Which colour comes at position {index % 4} of {names}?"
        row = {
            "data_source": "calibrl_test/colors",
            "prompt": [{"role": "user", "content": ("<image>" if images else "") + question + SUFFIX}],
            "images": [{"bytes": _png(COLORS[name]), "path": None}] if images else [],
            "ability": "vision",
            "reward_model": {"style": "rule", "ground_truth": name},
            "extra_info": {"split": "train", "index": index},
        }
        if expert:
            row["expert_solution"] = "" if index in empty_solution_rows else solution_for(name)
        rows.append(row)
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.fixture(scope="session")
def tiny_model():
    """``tiny_model(arch)`` -> directory of the cached tiny checkpoint (built once per cache, a few seconds)."""
    from calibrl_ext.tiny_models import cached_tiny_model

    return lambda arch: cached_tiny_model(arch)


@pytest.fixture(scope="session")
def sft_data(tmp_path_factory):
    """Session parquet files: ``vl`` (8 image rows), ``text`` (8 text-only rows)."""
    root = tmp_path_factory.mktemp("sft_data")
    return {
        "vl": write_sft_parquet(root / "vl.parquet", 8),
        "text": write_sft_parquet(root / "text.parquet", 8, images=False),
    }


# Test modules cannot import this file (pytest's importlib mode): the writer reaches them as a fixture.
@pytest.fixture
def sft_parquet(tmp_path):
    """Factory: ``sft_parquet(name, n_rows, **kwargs)`` writes :func:`write_sft_parquet` rows under tmp_path."""
    return lambda name, n_rows, **kwargs: write_sft_parquet(tmp_path / name, n_rows, **kwargs)


@pytest.fixture(autouse=True)
def _cache_root_in_tmp(tmp_path, monkeypatch):
    """Default outputs (``out_dir=None``) go to a temporary cache root, never into the repository."""
    from calibrl_ext.warm_start import CACHE_ROOT_ENV

    monkeypatch.setenv(CACHE_ROOT_ENV, str(tmp_path / "warm_start_cache"))
