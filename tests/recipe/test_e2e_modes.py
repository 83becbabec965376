"""The issue-12 modes end to end through verl's real v1 trainer on the CPU backend (tiny Qwen2.5-VL, demo data).

Reuses the set-up of ``test_e2e_recipe.py`` (demo parquet, cached tiny model); 2 steps each, smallest shapes.
"""

import pytest

from tests.recipe.test_e2e_recipe import N_ROLLOUTS, PROMPTS_PER_STEP, RECIPE_ENTRY, _overrides, assets  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.ray]


def test_entropy_reg_trains_with_the_entropy_bonus_and_no_expert_rows(assets):  # noqa: F811
    """entropy_reg for 2 steps: verl's entropy term is in the loss (actor/entropy_loss reported and finite), and,
    as GRPO, no expert row enters the update (n on-policy rows per group)."""
    from calibrl_ext.cpu_backend.launcher import is_finite_number, run_verl

    root, data_dir, model = assets
    out = root / "entropy_reg"
    run = run_verl(
        _overrides(data_dir, model, out, "calibrl.mode=entropy_reg", "trainer.total_training_steps=2",
                   "trainer.save_freq=-1", "trainer.test_freq=-1"),
        metrics_path=out / "metrics.jsonl", entry_module=RECIPE_ENTRY, timeout_s=900,
    )  # fmt: skip
    run.raise_for_status()
    steps = run.by_step()
    assert set(steps) >= {1, 2}
    for step in (1, 2):
        m = steps[step]
        assert is_finite_number(m["actor/entropy_loss"]) and m["actor/entropy_loss"] > 0
        assert m["actor/expert_rows_seen"] == 0
        assert m["calibrl/update_rows"] == PROMPTS_PER_STEP * N_ROLLOUTS
        # modes without expert rows keep the on-policy entropy under the cross-mode name (recipe README)
        assert m["calibrl/entropy_on_policy"] == m["actor/entropy"]
