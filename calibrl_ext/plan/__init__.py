"""Memory planner: per-GPU memory of a CalibRL / verl run from its config and the model's config.json (no weights,
no GPU). ``python -m calibrl_ext.plan --help``; the formulas and their validation are in docs/memory.md."""

from calibrl_ext.plan.estimate import GIB, MemoryPlan, PlannerSettings, plan_memory
from calibrl_ext.plan.model_shape import ModelConfigError, ModelShape, load_model_shape, shape_from_config

__all__ = [
    "GIB",
    "MemoryPlan",
    "ModelConfigError",
    "ModelShape",
    "PlannerSettings",
    "load_model_shape",
    "plan_memory",
    "plan_for_config",
    "shape_from_config",
]


def extra_rows_per_group(config) -> int:
    """Expert rows per group the run's mode adds: ``calibrl.max_experts_per_prompt`` (1 as released) in the expert
    modes (the actor computes their log-probs, and trains on the one expert row in luffy / rlplus), else 0."""
    section = config.get("calibrl", None) or {}
    mode = str(section.get("mode", "grpo"))
    try:
        from recipe.calibrl.settings import EXPERT_MODES

        return int(section.get("max_experts_per_prompt", 1) or 1) if mode in EXPERT_MODES else 0
    except ImportError:  # the planner used outside the repo's recipe
        return int(mode != "grpo")


def plan_for_config(config, model_config: str | None = None, settings: PlannerSettings | None = None) -> MemoryPlan:
    """The plan of a composed config; the model's config.json is found from ``model.path`` unless given."""
    if settings is None:
        section = (config.get("calibrl", None) or {}).get("memory_plan", None)
        settings = PlannerSettings.from_mapping(section)
    shape = load_model_shape(model_config or str(config.actor_rollout_ref.model.path))
    return plan_memory(config, shape, settings, rows_per_group_extra=extra_rows_per_group(config))
