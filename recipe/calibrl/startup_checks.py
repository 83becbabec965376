"""Start-up validation of a CalibRL run: every error before any worker starts or any rollout runs.

Called by ``main_calibrl.py`` on the driver before Ray starts, and again by the trainer's constructor (for runs
launched through ``python -m verl.trainer.main_ppo`` with the recipe's yaml). Each error names the config key and
the fix.
"""

from __future__ import annotations

import logging
import os

from omegaconf import OmegaConf

from recipe.calibrl.settings import TRAINER_MODE, CalibRLConfigError, CalibRLRecipeSettings

logger = logging.getLogger(__name__)

#: The policy-loss dataclass the expert modes need (its fields hold alpha, lambda, ...).
POLICY_LOSS_TARGET = "calibrl_ext.config.CalibRLPolicyLossConfig"

#: Advantage estimators that keep the expert row out of the group statistics when expert rows are in the batch.
EXPERT_AWARE_ESTIMATORS = ("calibrl",)


def _fail(message: str) -> None:
    raise CalibRLConfigError(message)


def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(OmegaConf.to_container(value, resolve=True)) if OmegaConf.is_config(value) else list(value)


def check_trainer(config, expect_trainer_mode: bool) -> None:
    if not config.trainer.get("use_v1", True):
        _fail("trainer.use_v1=False: CalibRL runs on verl's v1 trainer. Set trainer.use_v1=True.")
    mode = config.trainer.v1.trainer_mode
    if expect_trainer_mode and mode != TRAINER_MODE:
        _fail(f"trainer.v1.trainer_mode={mode!r}: the CalibRL recipe needs trainer.v1.trainer_mode={TRAINER_MODE}.")


def check_policy_loss(config, settings: CalibRLRecipeSettings) -> None:
    """The loss mode follows ``calibrl.mode``, and the loss settings are in range (built as verl builds them)."""
    policy_loss = config.actor_rollout_ref.actor.policy_loss
    loss_mode = policy_loss.get("loss_mode")
    if loss_mode != settings.loss_mode:
        _fail(
            f"calibrl.mode={settings.mode} runs actor_rollout_ref.actor.policy_loss.loss_mode={settings.loss_mode}, "
            f"but the config has loss_mode={loss_mode!r}. Remove the loss_mode override (the recipe derives it "
            f"from calibrl.mode) or change calibrl.mode."
        )
    if not settings.uses_expert_rows:
        return
    target = policy_loss.get("_target_")
    if target != POLICY_LOSS_TARGET:
        _fail(
            f"actor_rollout_ref.actor.policy_loss._target_={target!r}: calibrl.mode={settings.mode} needs "
            f"actor_rollout_ref.actor.policy_loss._target_={POLICY_LOSS_TARGET}."
        )
    from verl.utils.config import omega_conf_to_dataclass

    from calibrl_ext.config import ConfigValueError

    try:
        omega_conf_to_dataclass(policy_loss)  # built as verl builds it; out-of-range values raise naming the key
    except Exception as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, ConfigValueError):  # hydra wraps it in an InstantiationException
            raise cause from None
        raise


def check_algorithm(config, settings: CalibRLRecipeSettings) -> None:
    algorithm = config.algorithm
    if settings.trains_expert_rows and algorithm.adv_estimator not in EXPERT_AWARE_ESTIMATORS:
        _fail(
            f"algorithm.adv_estimator={algorithm.adv_estimator!r}: calibrl.mode={settings.mode} keeps the expert row "
            "in the batch, so the estimator must exclude it from the group statistics. Set "
            "algorithm.adv_estimator=calibrl."
        )
    if not settings.uses_expert_rows:
        return
    filter_groups = algorithm.get("filter_groups", None)
    if filter_groups is not None and filter_groups.get("enable", False):
        _fail(
            "algorithm.filter_groups.enable=True: DAPO's group filter would count the expert row's reward in the "
            "group's score. Set algorithm.filter_groups.enable=False, or calibrl.mode=grpo."
        )
    correction = algorithm.get("rollout_correction", None)
    if correction is not None and correction.get("bypass_mode", False):
        _fail(
            "algorithm.rollout_correction.bypass_mode=True takes old log-probs from the rollout, but the expert row "
            "has none (its baseline needs the actor's pi_old). Set algorithm.rollout_correction.bypass_mode=False."
        )
    distillation = config.get("distillation", None)
    if distillation is not None and distillation.get("enabled", False):
        _fail("distillation.enabled=True is not supported together with CalibRL's expert rows; disable one of them.")


def check_batch_arithmetic(config, settings: CalibRLRecipeSettings) -> None:
    """n and the mini-batch arithmetic, including the (n + 1)-row groups of luffy / rlplus."""
    data, actor = config.data, config.actor_rollout_ref.actor
    rollout = config.actor_rollout_ref.rollout
    n = int(rollout.n)
    if settings.uses_expert_rows and n < 2:
        _fail(
            f"actor_rollout_ref.rollout.n={n}: the advantage needs the mean over at least 2 on-policy rollouts per "
            "group (a single rollout gets mu = 0). Set actor_rollout_ref.rollout.n >= 2."
        )
    train_batch, mini_batch = int(data.train_batch_size), int(actor.ppo_mini_batch_size)
    if mini_batch <= 0 or train_batch % mini_batch != 0:
        _fail(
            f"data.train_batch_size={train_batch} must be a positive multiple of "
            f"actor_rollout_ref.actor.ppo_mini_batch_size={mini_batch} (both count prompts)."
        )
    world = int(config.trainer.n_gpus_per_node) * int(config.trainer.nnodes)
    sequence_parallel = int(actor.get("ulysses_sequence_parallel_size", 1) or 1)
    dp = max(world // sequence_parallel, 1)
    rows_per_group = n + 1 if settings.trains_expert_rows else n
    if (mini_batch * rows_per_group) % dp != 0:
        _fail(
            f"actor_rollout_ref.actor.ppo_mini_batch_size * rows per group = {mini_batch} * {rows_per_group} must be "
            f"divisible by the data-parallel size {dp} (trainer.n_gpus_per_node * trainer.nnodes / ulysses sequence "
            "parallel). Change ppo_mini_batch_size or actor_rollout_ref.rollout.n."
        )


def check_expert_column(config, settings: CalibRLRecipeSettings) -> None:
    """Every local training parquet has the expert column (read from the parquet schema, no data loaded)."""
    if not settings.uses_expert_rows:
        return
    import pyarrow.parquet as pq

    for index, path in enumerate(_as_list(config.data.train_files)):
        if "://" in str(path):
            logger.warning("calibrl: cannot check the expert column of remote file %s at start-up", path)
            continue
        if not os.path.exists(path):
            _fail(f"data.train_files[{index}]={path!r} does not exist. Build it with data_prep/build_parquet.py.")
        columns = pq.read_schema(path).names
        if settings.expert_column not in columns:
            _fail(
                f"data.train_files[{index}]={path!r} has no column {settings.expert_column!r} "
                f"(calibrl.expert_column), which calibrl.mode={settings.mode} needs. Rebuild the data with "
                "data_prep/build_parquet.py (it writes expert_solution), set calibrl.expert_column to your column, "
                "or run calibrl.mode=grpo."
            )


def check_reward_function(config) -> None:
    """The configured reward function can be loaded (path and name)."""
    reward_fn = config.reward.get("custom_reward_function", None) or {}
    path = reward_fn.get("path")
    if not path:
        logger.warning(
            "calibrl: reward.custom_reward_function.path is not set; verl will pick a reward by data_source, which "
            "returns 0 for data sources it does not know. The recipe's yaml sets pkg://calibrl_ext.reward."
        )
        return
    name = reward_fn.get("name")
    from verl.utils.import_utils import load_extern_object

    try:
        fn = load_extern_object(module_path=path, object_name=name)
    except (FileNotFoundError, ImportError, AttributeError, RuntimeError) as exc:
        _fail(
            f"reward.custom_reward_function.path={path!r} / .name={name!r} could not be loaded ({exc}). Point them "
            "at an existing file (or pkg://module) and function, e.g. path=pkg://calibrl_ext.reward "
            "name=compute_score."
        )
    if not callable(fn):
        _fail(f"reward.custom_reward_function.name={name!r} in {path!r} is not a function.")


# ---- memory plan hook (owned by calibrl_ext/plan; docs/memory.md) ----
def check_memory_plan(config) -> None:
    """Estimate per-GPU memory (calibrl_ext.plan); warn when it does not fit, or fail with
    ``calibrl.memory_plan.strict=True``. Skipped with ``calibrl.memory_plan.enable=False``."""
    from calibrl_ext.plan.hook import check_memory_plan as _check

    _check(config)


# ---- end of memory plan hook ----


def validate_startup(config, expect_trainer_mode: bool = False) -> CalibRLRecipeSettings:
    """Run every check; return the validated recipe settings.

    Args:
        config: the full verl config (DictConfig).
        expect_trainer_mode: also require ``trainer.v1.trainer_mode=calibrl`` (the driver-side call; the trainer
            itself resets the mode to ``sync`` once verl has chosen it).
    """
    settings = CalibRLRecipeSettings.from_config(config)
    check_trainer(config, expect_trainer_mode)
    check_policy_loss(config, settings)
    check_algorithm(config, settings)
    check_batch_arithmetic(config, settings)
    check_expert_column(config, settings)
    check_reward_function(config)
    check_memory_plan(config)
    return settings
