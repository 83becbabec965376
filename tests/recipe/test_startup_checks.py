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
                                            ("grpo", "vanilla"), ("chord", "chord"), ("hpt", "hpt")])  # fmt: skip
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
    # chord / hpt (issue 12): their keys' ranges (the policy-loss dataclass) and the recipe checks
    (["calibrl.mode=chord", "actor_rollout_ref.actor.policy_loss.chord_mu_peak=1.5"], ConfigValueError,
     r"policy_loss\.chord_mu_peak=1\.5.*\[0, 1\]"),
    (["calibrl.mode=chord", "actor_rollout_ref.actor.policy_loss.chord_mu_warmup_steps=-2"], ConfigValueError,
     r"policy_loss\.chord_mu_warmup_steps=-2.*integer >= 0"),
    (["calibrl.mode=chord", "actor_rollout_ref.actor.policy_loss.chord_mu_peak=0",
      "actor_rollout_ref.actor.policy_loss.chord_mu_valley=0"], CalibRLConfigError, r"chord_mu_peak=0.*mu is 0"),
    (["calibrl.mode=chord", "actor_rollout_ref.actor.loss_agg_mode=seq-mean-token-mean"], CalibRLConfigError,
     r"loss_agg_mode='seq-mean-token-mean'.*loss_agg_mode=token-mean"),
    (["calibrl.mode=hpt", "actor_rollout_ref.actor.policy_loss.hpt_gamma=1.0"], ConfigValueError,
     r"policy_loss\.hpt_gamma=1\.0.*\[0, 1\)"),
    (["calibrl.mode=hpt", "actor_rollout_ref.actor.policy_loss.hpt_sft_coef=0"], ConfigValueError,
     r"policy_loss\.hpt_sft_coef=0.*> 0"),
    (["calibrl.mode=hpt", "calibrl.pass_rate_window=[0.5,1.0]"], CalibRLConfigError,
     r"pass_rate_window=\[0\.5, \.\.\.\].*hpt_gamma=0\.0"),
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


#: The released LUFFY/RLPlus shapes: mini-batch 120 prompts, n = 10, 8 ranks, micro-batches of 6 rows.
RELEASED_SHAPES = ("data.train_batch_size=120", "actor_rollout_ref.actor.ppo_mini_batch_size=120",
                   "actor_rollout_ref.rollout.n=10", "trainer.n_gpus_per_node=8",
                   "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=6",
                   "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=6")  # fmt: skip


@pytest.mark.parametrize("mode", ["luffy", "rlplus"])
def test_released_expert_training_shapes_are_refused_before_the_first_update(compose_recipe, mode):
    """luffy / rlplus update (n + 1)-row groups: 120 * 11 / 8 = 165 rows per rank, not a multiple of 6. verl's
    prepare_micro_batches would assert after a whole rollout; start-up refuses it with the key and a divisor."""
    pattern = r"ppo_micro_batch_size_per_gpu=6: in calibrl\.mode=.*165 rows.*=5 \(a divisor of 165\).*use_dynamic_bsz"
    with pytest.raises(CalibRLConfigError, match=pattern):
        validate_startup(compose_recipe(f"calibrl.mode={mode}", *RELEASED_SHAPES))


@pytest.mark.parametrize("overrides", [
    ("calibrl.mode=calibrl",),  # n rows per group: 150 per rank
    ("calibrl.mode=grpo", "algorithm.adv_estimator=grpo"),
    ("calibrl.mode=luffy", "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=5"),  # the proposed fix
    ("calibrl.mode=luffy", "actor_rollout_ref.actor.use_dynamic_bsz=True",
     "actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True"),
])  # fmt: skip
def test_released_shapes_pass_where_every_pass_divides(compose_recipe, overrides):
    """The same shapes pass in the modes (or with the fixes) where every pass gets whole micro-batches."""
    validate_startup(compose_recipe(*RELEASED_SHAPES, *overrides))


MICRO_BATCH_CASES = [
    # luffy's reference pass runs on the update batch: multiples of lcm(1, 2 * 3, 1) / 1 = 6 rows per rank
    (["calibrl.mode=luffy", "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.actor.use_kl_loss=True",
      "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=4"],
     r"ref\.log_prob_micro_batch_size_per_gpu=4: .*reference log-prob pass.* 6 rows.*=3 \(a divisor of 6\)"),
    # grpo: verl pads 4 prompts * 2 rollouts to lcm(1, 4) = 4 -> 8 rows for the old-log-prob pass
    (["calibrl.mode=grpo", "algorithm.adv_estimator=grpo", "actor_rollout_ref.rollout.n=2",
      "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=3"],
     r"rollout\.log_prob_micro_batch_size_per_gpu=3: .*old log-prob pass.* 8 rows.*=2 \(a divisor of 8\)"),
    # two parameter-sync parts: 2 prompts per part * 2 rollouts, padded to lcm(1, 2 * 2) -> 4 rows
    (["calibrl.mode=calibrl", "actor_rollout_ref.rollout.n=2", "actor_rollout_ref.actor.use_kl_loss=True",
      "+trainer.v1.sync.parameter_sync_step=2", "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=3"],
     r"reference log-prob pass.* 4 rows"),
]  # fmt: skip


@pytest.mark.parametrize("overrides,pattern", MICRO_BATCH_CASES)
def test_every_fixed_micro_batch_pass_is_checked(compose_recipe, overrides, pattern):
    """Old-log-prob, reference and update passes each get a whole number of micro-batches per rank, in every mode;
    the error names the pass's key, its row count and a divisor."""
    with pytest.raises(CalibRLConfigError, match=pattern):
        validate_startup(compose_recipe(*overrides))


@pytest.mark.parametrize("overrides", [
    ("algorithm.adv_estimator=gae",),
    ("critic.enable=True",),
    ("calibrl.mode=luffy", "critic.enable=True"),
])  # fmt: skip
def test_critic_is_refused_in_the_expert_modes(compose_recipe, overrides):
    """The expert modes' step computes no values: a critic config (GAE or critic.enable) is refused at start-up,
    naming the keys and the fix."""
    with pytest.raises(CalibRLConfigError, match=r"algorithm\.adv_estimator=.*critic\.enable.*has no critic.*"
                                                 r"Set algorithm\.adv_estimator=calibrl"):  # fmt: skip
        validate_startup(compose_recipe(*overrides))


def test_rollout_is_batch_normalize_is_refused_when_expert_rows_are_trained(compose_recipe):
    """Batch-normalised IS weights would average over the expert rows: refused in luffy, allowed in calibrl mode
    (its update batch has no expert row)."""
    key = "algorithm.rollout_correction.rollout_is_batch_normalize=True"
    with pytest.raises(CalibRLConfigError, match=r"rollout_is_batch_normalize=False"):
        validate_startup(compose_recipe("calibrl.mode=luffy", key))
    validate_startup(compose_recipe(key))
