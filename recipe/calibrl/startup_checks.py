"""Start-up validation of a CalibRL run: every error before any worker starts or any rollout runs.

Called by ``main_calibrl.py`` on the driver before Ray starts, and again by the trainer's constructor (for runs
launched through ``python -m verl.trainer.main_ppo`` with the recipe's yaml). Each error names the config key and
the fix.
"""

from __future__ import annotations

import logging
import math
import os

from omegaconf import OmegaConf

from recipe.calibrl.settings import SFT_MIX_MODES, TRAINER_MODE, CalibRLConfigError, CalibRLRecipeSettings

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


def _largest_divisor_at_most(rows: int, limit: int) -> int:
    return max(d for d in range(1, max(min(rows, limit), 1) + 1) if rows % d == 0)


def micro_batch_row_counts(config, settings: CalibRLRecipeSettings) -> list[tuple[str, int, str, str, str]]:
    """Rows per data-parallel rank that each pass with a FIXED micro-batch size splits into micro-batches.

    verl 0.9.1 (``workers/engine/utils.py::prepare_micro_batches``) asserts ``rows % micro_batch_size_per_gpu == 0``
    on every rank unless the pass uses dynamic batch sizes. Rows per rank, by pass and mode (B_s = prompts per
    ``_step_once`` = ``data.train_batch_size / trainer.v1.sync.parameter_sync_step``, M = ``ppo_mini_batch_size``,
    dp = data-parallel size):

    - actor update (``actor.use_dynamic_bsz=False``): one mini-batch per rank, M * rows_per_group / dp, with
      rows_per_group = n + 1 in luffy / rlplus (the expert row is trained), n otherwise.
    - old log-prob (``rollout.log_prob_use_dynamic_bsz=False``): in the expert modes the trainer pads this pass to a
      multiple of dp * ``log_prob_micro_batch_size_per_gpu`` itself (nothing to check); in grpo mode verl pads the
      B_s * n rows to lcm(dp, M * n), so each rank gets ceil(B_s * n / L) * L / dp rows.
    - reference (``ref.log_prob_use_dynamic_bsz=False``, only with a KL loss or KL in reward): it runs on the
      update batch. grpo / calibrl: the on-policy rows padded to lcm(dp, M * n), as above. luffy / rlplus: on-policy
      and expert rows (0 to B_s experts: keep probability, pass-rate window) padded to
      L' = lcm(dp, M * (n + 1), dp * ``log_prob_micro_batch_size_per_gpu``), so every multiple of L' / dp occurs.

    Returns:
        ``(pass name, rows per rank, micro-batch key, its dynamic-batch key, how the rows arise)`` for every pass
        that runs with a fixed micro-batch size.
    """
    ref_cfg, rollout = config.actor_rollout_ref.ref, config.actor_rollout_ref.rollout
    actor = config.actor_rollout_ref.actor
    n = int(rollout.n)
    mini = int(actor.ppo_mini_batch_size)
    world = int(config.trainer.n_gpus_per_node) * int(config.trainer.nnodes)
    dp = max(world // int(actor.get("ulysses_sequence_parallel_size", 1) or 1), 1)
    sync_steps = int(config.trainer.get("v1", {}).get("sync", {}).get("parameter_sync_step", 1) or 1)
    prompts = max(int(config.data.train_batch_size) // sync_steps, 1)
    rows_per_group = n + 1 if settings.trains_expert_rows else n
    prefix = "actor_rollout_ref."
    counts = []
    if not actor.get("use_dynamic_bsz", False):
        counts.append(("actor update", mini * rows_per_group // dp, prefix + "actor.ppo_micro_batch_size_per_gpu",
                       prefix + "actor.use_dynamic_bsz",
                       f"ppo_mini_batch_size * {rows_per_group} rows per group / {dp} ranks"))  # fmt: skip
    grpo_multiple = math.lcm(dp, mini * n)
    grpo_rows = -(-prompts * n // grpo_multiple) * grpo_multiple // dp
    grpo_how = f"{prompts} prompts * n={n}, padded to lcm(dp, ppo_mini_batch_size * n) = {grpo_multiple}, / {dp} ranks"
    log_prob_micro = rollout.get("log_prob_micro_batch_size_per_gpu", None)
    if not settings.uses_expert_rows and not rollout.get("log_prob_use_dynamic_bsz", False) and log_prob_micro:
        counts.append(("old log-prob", grpo_rows, prefix + "rollout.log_prob_micro_batch_size_per_gpu",
                       prefix + "rollout.log_prob_use_dynamic_bsz", grpo_how))  # fmt: skip
    uses_reference = bool(config.algorithm.get("use_kl_in_reward", False) or actor.get("use_kl_loss", False))
    if uses_reference and not ref_cfg.get("log_prob_use_dynamic_bsz", False):
        if settings.trains_expert_rows:
            lp_multiple = dp * int(log_prob_micro or 1) if not rollout.get("log_prob_use_dynamic_bsz", False) else dp
            whole = math.lcm(dp, mini * (n + 1), lp_multiple)
            ref_rows, ref_how = whole // dp, (
                f"any multiple of lcm(dp, ppo_mini_batch_size * (n + 1), dp * log_prob_micro_batch_size_per_gpu) / dp "
                f"= {whole} / {dp} (the expert-row count varies per step)"
            )
        else:
            ref_rows, ref_how = grpo_rows, grpo_how
        counts.append(("reference log-prob", ref_rows, prefix + "ref.log_prob_micro_batch_size_per_gpu",
                       prefix + "ref.log_prob_use_dynamic_bsz", ref_how))  # fmt: skip
    return counts


def check_micro_batch_rows(config, settings: CalibRLRecipeSettings) -> None:
    """Every pass with a fixed micro-batch size gets a whole number of micro-batches on every rank (verl asserts
    this only after a rollout; luffy / rlplus have n + 1 rows per group, which verl's own checks do not know)."""
    for name, rows, micro_key, dynamic_key, how in micro_batch_row_counts(config, settings):
        micro = OmegaConf.select(config, micro_key)
        if micro is None or rows <= 0:
            continue
        micro = int(micro)
        if rows % micro != 0:
            _fail(
                f"{micro_key}={micro}: in calibrl.mode={settings.mode} the {name} pass gives each data-parallel rank "
                f"{rows} rows ({how}), not a multiple of {micro}; verl's prepare_micro_batches would assert after the "
                f"first rollout. Set {micro_key}={_largest_divisor_at_most(rows, micro)} (a divisor of {rows}), or "
                f"{dynamic_key}=True, or change actor_rollout_ref.actor.ppo_mini_batch_size."
            )


def check_no_critic(config, settings: CalibRLRecipeSettings) -> None:
    """The expert modes' step never runs verl's value or critic passes: a critic config would train without values."""
    if not settings.uses_expert_rows:
        return  # calibrl.mode=grpo runs verl's own step, critic included
    critic = config.get("critic", None)
    enabled = critic.get("enable", None) if critic is not None else None
    needs = bool(enabled) if enabled is not None else config.algorithm.adv_estimator == "gae"
    if needs:
        _fail(
            f"algorithm.adv_estimator={config.algorithm.adv_estimator!r} / critic.enable={enabled!r}: "
            f"calibrl.mode={settings.mode} has no critic (its step computes no values, and the expert row has no "
            "value target). Set algorithm.adv_estimator=calibrl and critic.enable=False, or calibrl.mode=grpo for a "
            "critic baseline."
        )


def check_rollout_correction_rows(config, settings: CalibRLRecipeSettings) -> None:
    """Rollout correction with expert rows: the trainer gives expert rows neutral rollout log-probs (their own
    pi_old) so verl's IS weights are 1 and rejection sampling never masks them; batch-normalised IS weights would
    still average over expert rows, so that one option is refused."""
    if not settings.trains_expert_rows:
        return
    correction = config.algorithm.get("rollout_correction", None)
    if correction is not None and correction.get("rollout_is_batch_normalize", False):
        _fail(
            "algorithm.rollout_correction.rollout_is_batch_normalize=True: in calibrl.mode="
            f"{settings.mode} the batch mean of the IS weights would include the expert rows (weight 1). Set "
            "algorithm.rollout_correction.rollout_is_batch_normalize=False."
        )


def check_sft_mix_modes(config, settings: CalibRLRecipeSettings) -> None:
    """chord / hpt: their loss averages each part over its own tokens (token-mean, as their reference code), and
    their keys must leave the expert SFT term a chance to act (range checks are in CalibRLPolicyLossConfig)."""
    if settings.mode not in SFT_MIX_MODES:
        return
    actor = config.actor_rollout_ref.actor
    if actor.get("loss_agg_mode") != "token-mean":
        _fail(
            f"actor_rollout_ref.actor.loss_agg_mode={actor.get('loss_agg_mode')!r}: calibrl.mode={settings.mode} "
            "averages its policy-gradient and SFT parts over their own tokens (token-mean, as its reference code). "
            "Set actor_rollout_ref.actor.loss_agg_mode=token-mean."
        )
    policy_loss = actor.policy_loss
    key = "actor_rollout_ref.actor.policy_loss."
    if settings.mode == "chord" and policy_loss.get("chord_mu_peak") == 0 and policy_loss.get("chord_mu_valley") == 0:
        _fail(
            f"{key}chord_mu_peak=0 and {key}chord_mu_valley=0: mu is 0 at every step, so CHORD would be GRPO that "
            f"forward-passes expert rows for nothing. Set {key}chord_mu_peak / chord_mu_valley > 0 (published 0.1), "
            "or run calibrl.mode=grpo."
        )
    if settings.mode == "hpt":
        gamma, low = policy_loss.get("hpt_gamma"), settings.pass_rate_window[0]
        if isinstance(gamma, (int, float)) and low > gamma:
            _fail(
                f"calibrl.pass_rate_window=[{low}, ...] starts above {key}hpt_gamma={gamma}: HPT keeps an expert row "
                f"only where the pass rate is <= hpt_gamma, and the window removes every such row, so no group could "
                f"ever switch to SFT. Lower calibrl.pass_rate_window's low end to <= {gamma} (default [0, 1]) or "
                f"raise {key}hpt_gamma."
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
        if settings.multi_expert and settings.expert_list_column not in columns:
            _fail(
                f"data.train_files[{index}]={path!r} has no column {settings.expert_list_column!r} "
                f"(calibrl.expert_list_column), which calibrl.max_experts_per_prompt="
                f"{settings.max_experts_per_prompt} needs. Rebuild the data with data_prep/build_parquet.py "
                "--max-experts K (it writes expert_solutions), set calibrl.expert_list_column to your list column, "
                "or set calibrl.max_experts_per_prompt=1."
            )


def check_sft_stage(config, settings: CalibRLRecipeSettings) -> None:
    """sft_then_grpo: the ``calibrl.sft`` keys are valid and the training parquets have non-empty expert solutions
    (recipe/calibrl/sft_stage.py; the model path and batch-vs-rows checks run when the stage is planned)."""
    from recipe.calibrl.sft_stage import SFT_MODES, SftStageError, SftStageSettings, count_expert_rows

    if settings.mode not in SFT_MODES:
        return
    try:
        SftStageSettings.from_config(config)
        count_expert_rows(
            [str(p) for p in _as_list(config.data.train_files)], settings.expert_column,
            str(config.data.get("prompt_key", "prompt")),
        )  # fmt: skip
    except SftStageError as exc:
        _fail(str(exc))


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
    check_micro_batch_rows(config, settings)
    check_no_critic(config, settings)
    check_rollout_correction_rows(config, settings)
    check_sft_mix_modes(config, settings)
    check_expert_column(config, settings)
    check_sft_stage(config, settings)
    check_reward_function(config)
    check_memory_plan(config)
    return settings
