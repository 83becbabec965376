"""The start-up check: the memory plan of a run, as a warning (or an error with ``calibrl.memory_plan.strict``)."""

from __future__ import annotations

import logging

from calibrl_ext.plan import PlannerSettings, plan_for_config
from calibrl_ext.plan.model_shape import find_model_config

logger = logging.getLogger(__name__)


class MemoryPlanError(ValueError):
    """The run's memory plan does not fit and ``calibrl.memory_plan.strict=True``."""


def check_memory_plan(config) -> None:
    """Warn (or raise MemoryPlanError when strict) if the estimate exceeds the GPU; skip the CPU backend, runs
    without a config.json at hand, and ``calibrl.memory_plan.enable=False``."""
    section = (config.get("calibrl", None) or {}).get("memory_plan", None)
    try:
        settings = PlannerSettings.from_mapping(section)
    except (TypeError, ValueError) as exc:
        raise MemoryPlanError(f"calibrl.memory_plan: {exc}") from None
    if not settings.enable:
        return
    if str(config.actor_rollout_ref.rollout.get("name", "")) not in ("vllm", "sglang"):
        return  # the CPU backend's hf rollout: no GPU to plan for
    model_path = str(config.actor_rollout_ref.model.path)
    if find_model_config(model_path) is None:
        logger.warning("calibrl: memory plan skipped: no config.json for %s (python -m calibrl_ext.plan)", model_path)
        return
    plan = plan_for_config(config, settings=settings)
    if plan.fits:
        logger.info("calibrl: %s", plan.report())
        return
    message = (
        f"{plan.report()}\n(an estimate: docs/memory.md; calibrl.memory_plan.gpu_memory_gib sets the GPU's memory, "
        "calibrl.memory_plan.strict=True makes this an error, calibrl.memory_plan.enable=False skips it)"
    )
    if settings.strict:
        raise MemoryPlanError(message)
    logger.warning("calibrl: %s", message)
