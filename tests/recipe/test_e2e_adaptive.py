"""Adaptive lambda and the LCS-aligned baseline end to end through verl's real v1 trainer on the CPU backend
(tiny Qwen2.5-VL, demo data; the set-up of ``test_e2e_recipe.py``): 2 steps with a checkpoint, then a resume for
step 3, both switches on in one run.

The entropy band is out of reach (50-60 nats/token), so the controller raises lambda by its full step each update
until the upper bound: 0.1 -> 0.1 e^0.5 (step 1) -> 0.2 (step 2, clipped to lam_max) -> 0.2 after the resume (a
controller that had lost its state would restart at 0.1 and give 0.1 e^0.5 again).
"""

import json
import math

import pytest

from tests.recipe.test_e2e_recipe import RECIPE_ENTRY, _overrides, assets  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

LAM_0, LAM_MAX, MAX_LOG_STEP = 0.1, 0.2, 0.5
SWITCHES = (
    "calibrl.baseline_alignment=lcs", "calibrl.baseline_alignment_window=16",
    "calibrl.adaptive_lam.enable=true", "calibrl.adaptive_lam.target_entropy=[50.0,60.0]",
    f"calibrl.adaptive_lam.max_log_step={MAX_LOG_STEP}", "calibrl.adaptive_lam.lam_min=0.05",
    f"calibrl.adaptive_lam.lam_max={LAM_MAX}", f"actor_rollout_ref.actor.policy_loss.lam={LAM_0}",
)  # fmt: skip


@pytest.fixture(scope="module")
def adaptive_runs(assets):  # noqa: F811
    """Steps 1-2 with a checkpoint at step 2, then resume_mode=auto for step 3, same settings."""
    from calibrl_ext.cpu_backend.launcher import run_verl

    root, data_dir, model = assets
    out = root / "adaptive"
    first = run_verl(
        _overrides(data_dir, model, out, "trainer.total_training_steps=2", "trainer.save_freq=2",
                   "trainer.test_freq=-1", *SWITCHES),
        metrics_path=out / "metrics.jsonl", entry_module=RECIPE_ENTRY, timeout_s=900,
    )  # fmt: skip
    first.raise_for_status()
    resumed = run_verl(
        _overrides(data_dir, model, out, "trainer.total_training_steps=3", "trainer.save_freq=-1",
                   "trainer.test_freq=-1", "trainer.resume_mode=auto", *SWITCHES),
        metrics_path=out / "resumed_metrics.jsonl", entry_module=RECIPE_ENTRY, timeout_s=900,
    )  # fmt: skip
    resumed.raise_for_status()
    return first, resumed, out


def test_lambda_is_logged_moves_within_bounds_and_reaches_the_loss(adaptive_runs):
    """Every step logs lambda and the controller error; lambda rises by exp(max_log_step) then stops at lam_max;
    the actor's loss used exactly the driver's lambda (actor/lam_seen); the loss parts are finite."""
    from calibrl_ext.cpu_backend.launcher import is_finite_number

    first, _, _ = adaptive_runs
    assert first.steps() == [1, 2]
    steps = first.by_step()
    assert steps[1]["calibrl/lam"] == pytest.approx(LAM_0 * math.exp(MAX_LOG_STEP))
    assert steps[2]["calibrl/lam"] == pytest.approx(LAM_MAX)
    for m in (steps[1], steps[2]):
        assert m["calibrl/lam_controller_error"] > 0  # entropy below the band
        assert m["actor/lam_seen"] == pytest.approx(m["calibrl/lam"], rel=1e-6)
        for key in ("actor/pg_loss", "actor/calibration_loss", "actor/grad_norm"):
            assert is_finite_number(m[key]), key


def test_lcs_alignment_reports_the_aligned_fraction(adaptive_runs):
    """With baseline_alignment=lcs the aligned fraction is logged every step, in [0, 1], and the calibrated
    tokens are at most the aligned ones (unaligned tokens get no term)."""
    first, resumed, _ = adaptive_runs
    for m in [first.by_step()[1], first.by_step()[2], resumed.by_step()[3]]:
        assert 0.0 <= m["calibrl/baseline_aligned_fraction"] <= 1.0
        assert m["calibrl/calibrated_token_frac"] <= m["calibrl/baseline_aligned_fraction"] + 1e-9


def test_resume_restores_the_controller(adaptive_runs):
    """The step-2 checkpoint holds the controller state; the resumed run's step 3 continues from it (lambda stays
    at lam_max, its 3rd update) instead of restarting from policy_loss.lam."""
    from recipe.calibrl.calibrl_trainer import ADAPTIVE_LAM_STATE_FILE

    _, resumed, out = adaptive_runs
    state = json.loads((out / "checkpoints" / "global_step_2" / ADAPTIVE_LAM_STATE_FILE).read_text())
    assert state["lam"] == pytest.approx(LAM_MAX) and state["updates"] == 2
    assert resumed.steps() == [3]
    assert resumed.by_step()[3]["calibrl/lam"] == pytest.approx(LAM_MAX)
    assert resumed.by_step()[3]["actor/lam_seen"] == pytest.approx(LAM_MAX, rel=1e-6)
