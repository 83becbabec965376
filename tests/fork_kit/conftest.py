"""Fixtures for the fork-kit tests: real verl release wheels from PyPI, cached across tests and sessions."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

#: Where the release wheels and their unpacked sources live (outside the repo; override with the env variable).
WHEEL_CACHE = Path(os.environ.get("CALIBRL_VERL_WHEEL_CACHE", Path.home() / ".cache" / "calibrl" / "verl_wheels"))
#: Bound on one `pip download` (the wheels are about 1 MB).
DOWNLOAD_TIMEOUT_S = 180


def _release_source(version: str) -> Path:
    """Unpacked source of ``verl==version`` (downloaded once with ``pip download --no-deps``); skips if unreachable."""
    target = WHEEL_CACHE / f"src-{version}"
    if (target / "verl" / "__init__.py").exists():
        return target
    WHEEL_CACHE.mkdir(parents=True, exist_ok=True)
    wheels = sorted(WHEEL_CACHE.glob(f"verl-{version}-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q", f"verl=={version}",
               "-d", str(WHEEL_CACHE)]  # fmt: skip
        try:
            result = subprocess.run(cmd, capture_output=True, text=True, timeout=DOWNLOAD_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.skip(f"package registry unreachable: `pip download verl=={version}` ran over {DOWNLOAD_TIMEOUT_S} s")
        wheels = sorted(WHEEL_CACHE.glob(f"verl-{version}-*.whl"))
        if result.returncode != 0 or not wheels:
            pytest.skip(f"package registry unreachable: `pip download verl=={version}` failed: {result.stderr[-500:]}")
    partial = WHEEL_CACHE / f"src-{version}.partial"
    with zipfile.ZipFile(wheels[0]) as archive:
        archive.extractall(partial)
    partial.rename(target)
    return target


@pytest.fixture(scope="session")
def release_source():
    """``release_source(version)`` -> unpacked source of that verl release (cached on disk across sessions)."""
    return _release_source
