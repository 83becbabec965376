"""The config a launch script (or a list of Hydra overrides) runs, composed as ``recipe.calibrl.main_calibrl`` does."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

from omegaconf import OmegaConf

REPO_ROOT = Path(__file__).resolve().parents[2]
RECIPE_CONFIG_DIR = REPO_ROOT / "recipe" / "calibrl" / "config"
ENTRY_POINT = ["-m", "recipe.calibrl.main_calibrl"]


def compose_overrides(overrides: list[str]):
    """The recipe's yaml with ``overrides`` applied and resolved (a DictConfig)."""
    from hydra import compose, initialize_config_dir

    import calibrl_ext.plugin  # noqa: F401  (the calibrl_loss_mode resolver)

    with initialize_config_dir(config_dir=str(RECIPE_CONFIG_DIR), version_base=None):
        config = compose(config_name="calibrl_trainer", overrides=list(overrides))
    OmegaConf.resolve(config)
    return config


def script_overrides(script: str | Path, env: dict[str, str] | None = None, timeout_s: float = 60) -> list[str]:
    """The Hydra overrides ``bash <script>`` passes to the recipe's entry point.

    The script runs for real with ``PYTHON`` pointing at a recorder that writes its arguments instead of training.
    ``env`` adds to the current environment (MODE, LORA_RANK, MODEL_PATH ...).
    """
    with tempfile.TemporaryDirectory(prefix="calibrl_plan_") as tmp:
        recorded = Path(tmp) / "argv"
        recorder = Path(tmp) / "record_python.sh"
        recorder.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" > "{recorded}"\n')
        recorder.chmod(0o755)
        run_env = {**os.environ, **(env or {}), "PYTHON": str(recorder)}
        out = subprocess.run(["bash", str(script)], env=run_env, capture_output=True, text=True, timeout=timeout_s)
        if out.returncode != 0:
            raise RuntimeError(f"bash {script} failed (exit {out.returncode}): {out.stderr[-2000:]}")
        argv = recorded.read_text().splitlines()
    if argv[:2] != ENTRY_POINT:
        raise RuntimeError(f"bash {script} does not start {' '.join(ENTRY_POINT)} (it ran {argv[:2]})")
    return argv[2:]


def compose_script(script: str | Path, env: dict[str, str] | None = None, extra_overrides: list[str] = ()):
    """The composed config ``bash <script>`` would train with."""
    return compose_overrides(script_overrides(script, env) + list(extra_overrides))
