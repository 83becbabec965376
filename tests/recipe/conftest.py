"""Fixtures for the recipe tests: the recipe's real yaml composed by hydra, and tiny parquet files."""

from pathlib import Path

import pandas as pd
import pytest

RECIPE_CONFIG_DIR = Path(__file__).resolve().parents[2] / "recipe" / "calibrl" / "config"


def write_train_parquet(path: Path, with_expert: bool = True) -> Path:
    rows = {
        "data_source": ["demo", "demo"],
        "prompt": [[{"role": "user", "content": "1+1?"}], [{"role": "user", "content": "2+2?"}]],
        "reward_model": [{"style": "rule", "ground_truth": "2"}, {"style": "rule", "ground_truth": "4"}],
    }
    if with_expert:
        rows["expert_solution"] = ["<think>1+1</think><answer>2</answer>", ""]
    pd.DataFrame(rows).to_parquet(path)
    return path


@pytest.fixture
def train_parquet(tmp_path):
    """Factory: ``train_parquet(name, with_expert=True)`` writes a 2-row train parquet and returns its path."""
    return lambda name, with_expert=True: write_train_parquet(tmp_path / name, with_expert)


@pytest.fixture
def compose_recipe(tmp_path):
    """Compose recipe/calibrl/config/calibrl_trainer.yaml with overrides, with a real parquet as train/val file."""
    from hydra import compose, initialize_config_dir

    import calibrl_ext.plugin  # noqa: F401  (registers the calibrl_loss_mode resolver, losses, trainer)

    train = write_train_parquet(tmp_path / "train.parquet")

    def _compose(*overrides: str):
        base = [
            f"data.train_files={train}",
            f"data.val_files={train}",
            "actor_rollout_ref.model.path=/nonexistent/model",
            "data.train_batch_size=4",
            "actor_rollout_ref.actor.ppo_mini_batch_size=2",
            "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2",
            "trainer.n_gpus_per_node=1",
            "trainer.nnodes=1",
        ]
        with initialize_config_dir(config_dir=str(RECIPE_CONFIG_DIR), version_base=None):
            return compose(config_name="calibrl_trainer", overrides=base + list(overrides))

    return _compose
