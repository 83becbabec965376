"""Entry point of the CalibRL recipe: ``python -m recipe.calibrl.main_calibrl [hydra overrides]``.

The same as verl's ``python -m verl.trainer.main_ppo``, with the recipe's config and one addition: every CalibRL
check (recipe/calibrl/startup_checks.py) runs on the driver before Ray starts, so a bad key, missing column or
unloadable reward function fails in seconds, not after the first rollout.
"""

import hydra
from verl.trainer.main_ppo import TaskRunnerV1, run_ppo
from verl.trainer.ppo.utils import need_critic, need_reference_policy
from verl.utils.config import validate_config
from verl.utils.device import auto_set_device

import calibrl_ext.plugin  # noqa: F401  (registers losses, estimator, trainer and agent loop in this process)
from recipe.calibrl.startup_checks import validate_startup


@hydra.main(config_path="config", config_name="calibrl_trainer", version_base=None)
def main(config):
    auto_set_device(config)
    validate_startup(config, expect_trainer_mode=True)
    validate_config(config=config, use_reference_policy=need_reference_policy(config), use_critic=need_critic(config))
    run_ppo(config, task_runner_class=TaskRunnerV1)


if __name__ == "__main__":
    main()
