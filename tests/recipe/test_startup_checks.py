"""Start-up validation: every misconfiguration fails before any worker starts, naming the key and the fix."""

import pytest
from calibrl_ext.config import ConfigValueError
from recipe.calibrl.settings import CalibRLConfigError, CalibRLRecipeSettings
from recipe.calibrl.startup_checks import validate_startup


def test_recipe_yaml_passes_and_reproduces_released_defaults(compose_recipe):
    """The recipe's yaml, composed by hydra, validates; mode calibrl selects the calibrl loss with the released
    alpha/lambda, Dr.GRPO advantages and the calibrl estimator."""
    config = compose_recipe()
    settings = validate_startup(config, expect_trainer_mode=True)
    assert settings == CalibRLRecipeSettings()
    actor = config.actor_rollout_ref.actor
    assert actor.policy_loss.loss_mode == "calibrl"
    assert (actor.policy_loss.alpha, actor.policy_loss.lam) == (0.5, 0.1)
    assert config.algorithm.adv_estimator == "calibrl" and config.algorithm.norm_adv_by_std_in_grpo is False
    assert config.actor_rollout_ref.rollout.n == 10 and actor.entropy_coeff == 0.0 and not actor.use_kl_loss


@pytest.mark.parametrize("mode,loss_mode", [("calibrl", "calibrl"), ("luffy", "luffy"), ("rlplus", "rlplus"),
                                            ("grpo", "vanilla")])  # fmt: skip
def test_one_switch_selects_the_loss(compose_recipe, mode, loss_mode):
    """calibrl.mode alone selects the policy loss (the yaml derives loss_mode from it)."""
    config = compose_recipe(f"calibrl.mode={mode}")
    assert config.actor_rollout_ref.actor.policy_loss.loss_mode == loss_mode
    assert validate_startup(config).mode == mode


ERROR_CASES = [
    (["calibrl.mode=sft"], CalibRLConfigError, r"calibrl.mode='sft'.*one of"),
    (["actor_rollout_ref.actor.policy_loss.alpha=1.5"], ConfigValueError, r"policy_loss\.alpha=1\.5.*\[0, 1\]"),
    (["actor_rollout_ref.actor.policy_loss.lam=-0.1"], ConfigValueError, r"policy_loss\.lam=-0\.1"),
    (["actor_rollout_ref.actor.policy_loss.activation=gelu"], ConfigValueError, r"policy_loss\.activation"),
    (["calibrl.expert_column=gpt4o_solution"], CalibRLConfigError, r"no column 'gpt4o_solution'.*build_parquet"),
    (["actor_rollout_ref.rollout.n=1"], CalibRLConfigError, r"rollout\.n=1.*>= 2"),
    (["data.train_batch_size=5"], CalibRLConfigError, r"train_batch_size=5.*multiple.*ppo_mini_batch_size=2"),
    (["calibrl.mode=luffy", "trainer.n_gpus_per_node=4", "actor_rollout_ref.rollout.n=4"], CalibRLConfigError,
     r"2 \* 5 must be divisible by the data-parallel size 4"),
    (["reward.custom_reward_function.path=pkg://calibrl_ext.no_such_reward"], CalibRLConfigError,
     r"reward\.custom_reward_function\.path=.*could not be loaded"),
    (["reward.custom_reward_function.name=no_such_function"], CalibRLConfigError,
     r"reward\.custom_reward_function.*no_such_function"),
    (["trainer.v1.trainer_mode=sync"], CalibRLConfigError, r"trainer\.v1\.trainer_mode=calibrl"),
    (["calibrl.mode=luffy", "algorithm.adv_estimator=grpo"], CalibRLConfigError,
     r"adv_estimator='grpo'.*algorithm\.adv_estimator=calibrl"),
    (["actor_rollout_ref.actor.policy_loss.loss_mode=vanilla"], CalibRLConfigError, r"loss_mode='vanilla'"),
    (["calibrl.expert_keep_prob=1.5"], CalibRLConfigError, r"calibrl\.expert_keep_prob"),
    (["calibrl.pass_rate_window=[0.8,0.2]"], CalibRLConfigError, r"calibrl\.pass_rate_window"),
    (["calibrl.grpo_warmup_steps=-1"], CalibRLConfigError, r"calibrl\.grpo_warmup_steps"),
    (["algorithm.rollout_correction.bypass_mode=true"], CalibRLConfigError, r"bypass_mode=False"),
]  # fmt: skip


@pytest.mark.parametrize("overrides,error,pattern", ERROR_CASES, ids=[c[2][:40] for c in ERROR_CASES])
def test_each_misconfiguration_is_rejected_with_its_key(compose_recipe, overrides, error, pattern):
    """Each bad value raises at start-up with a message naming the key (and how to fix it)."""
    config = compose_recipe(*overrides)
    with pytest.raises(error, match=pattern):
        validate_startup(config, expect_trainer_mode=True)


def test_missing_expert_column_is_fine_for_grpo(compose_recipe, train_parquet):
    """calibrl.mode=grpo runs on data without the expert column; the expert modes reject it."""
    plain = train_parquet("plain.parquet", with_expert=False)
    assert validate_startup(compose_recipe("calibrl.mode=grpo", f"data.train_files={plain}")).mode == "grpo"
    with pytest.raises(CalibRLConfigError, match="expert_solution"):
        validate_startup(compose_recipe(f"data.train_files={plain}"))


def test_missing_train_file_is_reported(compose_recipe, tmp_path):
    """A train file that does not exist is reported with its index and the command that builds it."""
    with pytest.raises(CalibRLConfigError, match=r"train_files\[0\].*does not exist.*build_parquet"):
        validate_startup(compose_recipe(f"data.train_files={tmp_path / 'missing.parquet'}"))
