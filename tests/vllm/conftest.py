"""Fixtures of the vLLM-on-CPU tests (run in .venv-vllm/ by scripts/run_tests.sh; docs/vllm_cpu.md).

The colour data and the toy reward are the CPU-backend tests' own (tests/cpu_backend/conftest.py, loaded by
path: pytest's importlib mode gives test directories no package to import from)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
_spec = importlib.util.spec_from_file_location("calibrl_cpu_backend_test_helpers", REPO / "tests/cpu_backend/conftest.py")
cpu_helpers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cpu_helpers)


@pytest.fixture(scope="session")
def vllm_tiny_model():
    """``vllm_tiny_model(arch)`` -> cached tiny checkpoint with the ``vllm`` sizes (head_dim 32)."""
    from calibrl_ext.tiny_models import cached_tiny_model

    return lambda arch: cached_tiny_model(arch, variant="vllm")


@pytest.fixture(scope="session")
def toy_reward_path() -> Path:
    return cpu_helpers.TOY_REWARD_PATH


@pytest.fixture(scope="session")
def color_parquet():
    """``color_parquet(path, n_rows, text_only_every=0, split="train")`` (tests/cpu_backend/conftest.py)."""
    return cpu_helpers.write_color_parquet


@pytest.fixture(scope="session")
def session_pids():
    """``session_pids(sid)``: live pids of a session, from ps."""
    return cpu_helpers.pids_in_session


def shm_names(prefix: str = "verl_weights_") -> set[str]:
    return {p.name for p in Path("/dev/shm").glob(prefix + "*")}


@pytest.fixture(scope="session")
def shm_listing():
    """``shm_listing(prefix="verl_weights_")`` -> names in /dev/shm with that prefix."""
    return shm_names
