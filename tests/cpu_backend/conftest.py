"""Fixtures of the CPU-backend tests: tiny models (cached under the git-ignored tiny_models/), small parquet files
made in code, and the path of a toy reward with non-zero variance for a random model."""

from __future__ import annotations

import io
import os
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
#: verl-style custom reward file with a graded score, so GRPO advantages and gradients are non-zero even for a
#: random model (the real reward gives a random model 0 everywhere).
TOY_REWARD_PATH = HERE / "toy_reward.py"
#: RGB of the toy images, one per answer.
COLORS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 30)}


@pytest.fixture(scope="session")
def tiny_model():
    """``tiny_model(arch)`` -> directory of the cached tiny checkpoint (built once per cache, a few seconds)."""
    from calibrl_ext.tiny_models import cached_tiny_model

    return lambda arch: cached_tiny_model(arch)


def _png(rgb, size):
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def write_color_parquet(path: Path, n_rows: int, *, text_only_every: int = 0, split: str = "train") -> Path:
    """Rows asking for an image's colour, in verl's RL parquet layout.

    Prompt lengths vary from row to row, like real data (equal-length batches, which verl 0.9.1 mis-splits
    without calibrl_ext/verl_fixes.py, have their own e2e test). With ``text_only_every=k``,
    every k-th row (index % k == k - 1) has no image.
    """
    import pandas as pd

    names = list(COLORS)
    rows = []
    for index in range(n_rows):
        name = names[index % len(names)]
        text_only = text_only_every > 0 and index % text_only_every == text_only_every - 1
        filler = " ".join(["please"] * (index % 5))
        question = f"What color is the image? {filler} Answer with one word."
        rows.append(
            {
                "data_source": "calibrl_test/colors",
                "prompt": [{"role": "user", "content": question if text_only else "<image>" + question}],
                "images": [] if text_only else [{"bytes": _png(COLORS[name], 56 + 28 * (index % 2)), "path": None}],
                "ability": "vision",
                "reward_model": {"style": "rule", "ground_truth": name},
                "extra_info": {"split": split, "index": index},
            }
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.fixture(scope="session")
def color_data(tmp_path_factory):
    """train.parquet (12 rows, every 3rd without an image) and val.parquet (4 image rows) in a session tmp dir."""
    root = tmp_path_factory.mktemp("color_data")
    return {
        "train": write_color_parquet(root / "train.parquet", 12, text_only_every=3),
        "val": write_color_parquet(root / "val.parquet", 4, split="val"),
    }


def run_isolated(args: list[str], *, env: dict[str, str], timeout_s: float) -> subprocess.CompletedProcess:
    """Run a command in its own session; afterwards terminate whatever of that session is left (by pid)."""
    from calibrl_ext.cpu_backend.launcher import terminate_session

    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        terminate_session(proc.pid)
        out, _ = proc.communicate()
        pytest.fail(f"{args[:3]} timed out after {timeout_s} s:\n{out[-4000:]}")
    finally:
        terminate_session(proc.pid)
    return subprocess.CompletedProcess(args, proc.returncode, out, None)


def pids_in_session(session_id: int) -> list[int]:
    """Processes whose session id is ``session_id``, from ``ps`` (independent of the launcher's psutil scan)."""
    out = subprocess.run(["ps", "-eo", "pid=,sid=,stat="], capture_output=True, text=True, check=True).stdout
    pids = []
    for line in out.splitlines():
        pid, sid, stat = line.split(None, 2)
        if int(sid) == session_id and not stat.startswith("Z"):
            pids.append(int(pid))
    return pids


def python_env(**extra: str) -> dict[str, str]:
    """os.environ with the repo on PYTHONPATH (the package may not be pip-installed) plus ``extra``."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *[p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]])
    env.update(extra)
    return env



# Test modules cannot import this file (pytest's importlib mode): the helpers reach them as fixtures.
@pytest.fixture(scope="session")
def toy_reward_path() -> Path:
    return TOY_REWARD_PATH


@pytest.fixture(scope="session")
def color_parquet():
    """``color_parquet(path, n_rows, text_only_every=0, split="train")``: see write_color_parquet."""
    return write_color_parquet


@pytest.fixture(scope="session")
def isolated():
    """``isolated(args, env=..., timeout_s=...)``: run_isolated."""
    return run_isolated


@pytest.fixture(scope="session")
def session_pids():
    """``session_pids(sid)``: live pids of a session, from ps."""
    return pids_in_session


@pytest.fixture(scope="session")
def repo_env():
    """``repo_env(**extra)``: python_env."""
    return python_env
