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


def test_chord_mixes_grpo_with_the_expert_sft_term_on_its_schedule(assets):  # noqa: F811
    """chord for 2 steps with a warm-up schedule (warm-up 2, peak 0.5): mu is 0 at the first step and 0.25 at the
    second (Trinity-RFT's linear warm-up); every expert row enters the update ((n + 1)-row groups) with a finite,
    positive phi-weighted NLL; the two parts' token shares are those of the update batch; verl's per-row metrics
    (critic/score) are the on-policy rows' (the expert rows' under calibrl/expert_*)."""
    import json

    from calibrl_ext.cpu_backend.launcher import is_finite_number, run_verl

    root, data_dir, model = assets
    out = root / "chord"
    key = "actor_rollout_ref.actor.policy_loss."
    run = run_verl(
        _overrides(data_dir, model, out, "calibrl.mode=chord", "trainer.total_training_steps=2",
                   "trainer.save_freq=-1", "trainer.test_freq=-1", f"trainer.rollout_data_dir={out / 'rollouts'}",
                   f"{key}chord_mu_warmup_steps=2", f"{key}chord_mu_decay_steps=2", f"{key}chord_mu_peak=0.5",
                   f"{key}chord_mu_valley=0.1"),
        metrics_path=out / "metrics.jsonl", entry_module=RECIPE_ENTRY, timeout_s=900,
    )  # fmt: skip
    run.raise_for_status()
    steps = run.by_step()
    assert set(steps) >= {1, 2}
    for step, mu in ((1, 0.0), (2, 0.25)):
        m = steps[step]
        assert m["calibrl/chord_mu"] == pytest.approx(mu)
        assert m["actor/expert_rows_seen"] == m["calibrl/expert_rows"] == PROMPTS_PER_STEP
        assert m["calibrl/update_rows"] == PROMPTS_PER_STEP * (N_ROLLOUTS + 1)
        assert is_finite_number(m["actor/chord_expert_loss"]) and m["actor/chord_expert_loss"] > 0
        assert is_finite_number(m["actor/pg_loss"])
        assert m["calibrl/expert_token_share"] == pytest.approx(m["calibrl/expert_tokens"] / m["calibrl/update_tokens"])
        assert m["calibrl/policy_token_share"] + m["calibrl/expert_token_share"] == pytest.approx(1.0)
        dumped = [json.loads(line) for line in (out / "rollouts" / f"{step}.jsonl").read_text().splitlines()]
        on_policy = [r["score"] for r in dumped if not r["uid"].startswith("pad")
                     and int(r["uid"].rsplit("_", 2)[1]) < N_ROLLOUTS]  # fmt: skip
        assert len(on_policy) == PROMPTS_PER_STEP * N_ROLLOUTS
        assert m["critic/score/mean"] == pytest.approx(sum(on_policy) / len(on_policy), abs=1e-6)
        assert m["calibrl/expert_critic/score/mean"] == pytest.approx(1.0)


def test_hpt_switches_each_group_between_grpo_and_sft(assets):  # noqa: F811
    """hpt for 2 steps with gamma 0.5 (n = 2: a group with at most one passing rollout switches to SFT) and a
    pass-rate window [0, 0.99] (it removes the expert rows of all-pass groups first, which are RL groups anyway): every
    group is counted once as SFT or RL; exactly the SFT groups' expert rows enter the update (the RL groups' are
    removed before any forward pass) and their rollouts are left out of the policy-gradient part; where a step has
    SFT groups their NLL is finite and positive; the expert token share is that of the update batch."""
    from calibrl_ext.cpu_backend.launcher import is_finite_number, run_verl

    root, data_dir, model = assets
    out = root / "hpt"
    run = run_verl(
        _overrides(data_dir, model, out, "calibrl.mode=hpt", "trainer.total_training_steps=2",
                   "trainer.save_freq=-1", "trainer.test_freq=-1", "actor_rollout_ref.actor.policy_loss.hpt_gamma=0.5",
                   "calibrl.pass_rate_window=[0.0,0.99]"),
        metrics_path=out / "metrics.jsonl", entry_module=RECIPE_ENTRY, timeout_s=900,
    )  # fmt: skip
    run.raise_for_status()
    steps = run.by_step()
    assert set(steps) >= {1, 2}
    for step in (1, 2):
        m = steps[step]
        sft_groups = m["calibrl/hpt_sft_groups"]
        assert sft_groups + m["calibrl/hpt_rl_groups"] == PROMPTS_PER_STEP
        assert m["calibrl/groups_outside_pass_window"] <= m["calibrl/hpt_rl_groups"]
        assert m["actor/expert_rows_seen"] == m["calibrl/expert_rows"] == sft_groups
        assert m["calibrl/hpt_sft_group_rollouts_left_out"] == sft_groups * N_ROLLOUTS
        assert m["calibrl/update_rows"] == PROMPTS_PER_STEP * N_ROLLOUTS + sft_groups
        assert m["calibrl/expert_token_share"] == pytest.approx(m["calibrl/expert_tokens"] / m["calibrl/update_tokens"])
        assert is_finite_number(m["actor/pg_loss"])
        if sft_groups:
            assert is_finite_number(m["actor/hpt_sft_loss"]) and m["actor/hpt_sft_loss"] > 0
