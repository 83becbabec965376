"""The verl plugin: importing this module registers everything calibrl adds to verl.

verl imports it in every process (driver, TaskRunner, agent-loop and FSDP workers) by either
mechanism:

- the ``verl.plugins`` entry point declared in ``setup.py`` (automatic on ``import verl``);
- ``VERL_USE_EXTERNAL_MODULES=calibrl_ext.plugin`` (explicit, for environments where entry points are off;
  on several nodes pass it through ``ray_kwargs.ray_init.runtime_env.env_vars``). verl *imports* this
  module by that name, so it does not replace installing the package: calibrl must be installed on
  every node of a multi-node run either way.

verl swallows an exception raised by an entry-point plugin (it logs at DEBUG level and goes on), which
would leave a run without its losses and fail much later with "Unsupported loss mode". So a failure
here is logged at ERROR level with the module that failed before it propagates.

Importing twice is harmless: every registration is idempotent (same name, same object).
"""

import importlib
import logging

logger = logging.getLogger(__name__)

#: Modules whose import registers something with verl, in dependency order.
REGISTRATION_MODULES: tuple[str, ...] = (
    "calibrl_ext.verl_fixes",  # fixes of verl 0.9.1 bugs on every platform (equal-length mRoPE position_ids)
    "calibrl_ext.verl_losses",  # policy losses: calibrl, luffy, rlplus
    "calibrl_ext.verl_advantage",  # advantage estimator: calibrl
    "calibrl_ext.cpu_backend.register",  # CPU platform "cpu", rollout backend "hf" (used only when selected)
    # verl's actor.freeze_vision_tower, which verl 0.9.1's FSDP engine ignores. After the platform registration:
    # importing verl's FSDP engine asks the platform for its device name.
    "calibrl_ext.vision_freeze",
    "calibrl_ext.internvl",  # InternVL3 (HF-native): verl's processor whitelist and agent-loop image inputs
    "recipe.calibrl.expert_agent_loop",  # agent loop: calibrl_expert (expert row of a training group)
    "recipe.calibrl.calibrl_trainer",  # trainer: trainer.v1.trainer_mode=calibrl
)


def _register_all() -> None:
    for module_name in REGISTRATION_MODULES:
        try:
            importlib.import_module(module_name)
        except Exception:
            logger.error(
                "calibrl plugin: importing %s failed, so calibrl is NOT registered with verl in this process "
                "(pid-local). Reinstall with `pip install -e .` in this environment and check that verl==0.9.1 "
                "imports.",
                module_name,
                exc_info=True,
            )
            raise


_register_all()
