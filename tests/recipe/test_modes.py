"""Mode switch entries added by issue 12 (``calibrl.mode=entropy_reg``): config wiring and start-up checks."""

import pytest

from recipe.calibrl.settings import CalibRLConfigError, CalibRLRecipeSettings


def test_entropy_reg_sets_verls_entropy_bonus_and_other_modes_do_not(compose_recipe):
    """entropy_reg runs verl's vanilla PPO loss with actor.entropy_coeff = calibrl.entropy_coeff (default 0.001);
    every other mode keeps the released recipe's entropy_coeff 0."""
    config = compose_recipe("calibrl.mode=entropy_reg")
    assert config.actor_rollout_ref.actor.policy_loss.loss_mode == "vanilla"
    assert config.actor_rollout_ref.actor.entropy_coeff == pytest.approx(0.001)
    settings = CalibRLRecipeSettings.from_config(config)
    assert not settings.uses_expert_rows and not settings.trains_expert_rows
    custom = compose_recipe("calibrl.mode=entropy_reg", "calibrl.entropy_coeff=0.01")
    assert custom.actor_rollout_ref.actor.entropy_coeff == pytest.approx(0.01)
    for mode in ("calibrl", "luffy", "rlplus", "grpo"):
        assert compose_recipe(f"calibrl.mode={mode}").actor_rollout_ref.actor.entropy_coeff == 0.0


def test_entropy_reg_without_a_bonus_fails_at_start_up_naming_the_key(compose_recipe):
    """A zero or negative coefficient (in the calibrl: key, or overridden on the actor key) fails at start-up."""
    with pytest.raises(CalibRLConfigError, match=r"calibrl\.entropy_coeff"):
        CalibRLRecipeSettings.from_config(compose_recipe("calibrl.mode=entropy_reg", "calibrl.entropy_coeff=0"))
    with pytest.raises(CalibRLConfigError, match=r"calibrl\.entropy_coeff"):
        CalibRLRecipeSettings.from_config(compose_recipe("calibrl.mode=grpo", "calibrl.entropy_coeff=-1"))
    overridden = compose_recipe("calibrl.mode=entropy_reg", "actor_rollout_ref.actor.entropy_coeff=0")
    with pytest.raises(CalibRLConfigError, match=r"actor_rollout_ref\.actor\.entropy_coeff"):
        CalibRLRecipeSettings.from_config(overridden)
