"""Entry point of the CalibRL recipe: ``python -m recipe.calibrl.main_calibrl [hydra overrides]``.

The same as verl's ``python -m verl.trainer.main_ppo``, with the recipe's config and one addition: every CalibRL
check (recipe/calibrl/startup_checks.py) runs on the driver before Ray starts, so a bad key, missing column or
unloadable reward function fails in seconds, not after the first rollout.

``calibrl.mode=sft_then_grpo`` first runs its SFT stage here, on the driver (verl's SFT trainer on the expert
solutions, recipe/calibrl/sft_stage.py; a complete checkpoint of the same inputs is reused), then GRPO with
``actor_rollout_ref.model.path`` set to that checkpoint.
"""

import hydra
from verl.trainer.main_ppo import TaskRunnerV1, run_ppo
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import validate_config
from verl.utils.device import auto_set_device

import calibrl_ext.plugin  # noqa: F401  (registers losses, estimator, trainer and agent loop in this process)
from recipe.calibrl.sft_stage import SFT_MODES, run_sft_stage
from recipe.calibrl.startup_checks import validate_startup


@hydra.main(config_path="config", config_name="calibrl_trainer", version_base=None)
def main(config):
    auto_set_device(config)
    settings = validate_startup(config, expect_trainer_mode=True)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    if settings.mode in SFT_MODES:
        checkpoint, reused = run_sft_stage(config)
        print(f"calibrl: sft_then_grpo: GRPO starts from {checkpoint} ({'reused' if reused else 'trained'})", flush=True)
        config.actor_rollout_ref.model.path = str(checkpoint)
    run_ppo(config, task_runner_class=TaskRunnerV1)


if __name__ == "__main__":
    main()
