"""Fixtures shared by every test folder (cpu_backend, recipe, and any rollout backend's e2e tests)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

#: Colour of each row's image (row i gets the i % 4-th); the name is the row's ground truth.
EQUAL_LENGTH_COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}
#: Side in pixels of every image (one size, so every prompt has the same number of image tokens).
EQUAL_LENGTH_IMAGE_SIZE = 56
#: The one question every row asks (one text, so every prompt has the same number of text tokens).
EQUAL_LENGTH_QUESTION = "<image>What color is the image? Answer with one word."
#: Words in each expert solution after its answer: enough to be cut at any test's max_response_length.
EQUAL_LENGTH_EXPERT_FILLER_WORDS = 400


def write_equal_length_parquet(path: Path, n_rows: int, *, split: str = "train") -> Path:
    """Rows whose prompts all have the same token length, in verl's RL parquet layout (with ``expert_solution``).

    Together with responses that always reach ``data.max_response_length``
    (``actor_rollout_ref.rollout.ignore_eos=True``), every sequence of every batch has the same total length: the
    case verl 0.9.1 mis-packs (verl issue 7899, fixed by ``calibrl_ext/verl_fixes.py``). The expert solutions start
    with ``<answer>`` (the recipe tests' toy reward passes them) and are longer than any response cap, so the
    expert rows are cut to ``max_response_length`` too.
    """
    import pandas as pd
    from PIL import Image

    names = list(EQUAL_LENGTH_COLORS)
    filler = " ".join(["because"] * EQUAL_LENGTH_EXPERT_FILLER_WORDS)
    rows = []
    for index in range(n_rows):
        name = names[index % len(names)]
        buffer = io.BytesIO()
        Image.new("RGB", (EQUAL_LENGTH_IMAGE_SIZE, EQUAL_LENGTH_IMAGE_SIZE), EQUAL_LENGTH_COLORS[name]).save(
            buffer, format="PNG"
        )
        rows.append(
            {
                "data_source": "calibrl_test/equal_lengths",
                "prompt": [{"role": "user", "content": EQUAL_LENGTH_QUESTION}],
                "images": [{"bytes": buffer.getvalue(), "path": None}],
                "ability": "vision",
                "reward_model": {"style": "rule", "ground_truth": name},
                "extra_info": {"split": split, "index": index},
                "expert_solution": f"<answer>{name}</answer> {filler}",
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.fixture(scope="session")
def equal_length_data(tmp_path_factory):
    """``{"train": 8 rows, "val": 4 rows}`` of :func:`write_equal_length_parquet`, built once per session."""
    root = tmp_path_factory.mktemp("equal_length_data")
    return {
        "train": write_equal_length_parquet(root / "train.parquet", 8),
        "val": write_equal_length_parquet(root / "val.parquet", 4, split="val"),
    }
