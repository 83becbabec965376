"""``python -m calibrl_ext.plan``: will this run fit its GPUs?

    python -m calibrl_ext.plan --script examples/run_qwen25vl_7b.sh               # a launch script's config
    MODE=grpo LORA_RANK=64 python -m calibrl_ext.plan --script examples/run_qwen25vl_7b.sh --gpu-memory-gib 40
    python -m calibrl_ext.plan --model-config /models/X/config.json -- actor_rollout_ref.model.path=/models/X ...

Exit status: 0 fits, 3 does not fit, 2 bad input.
"""

from __future__ import annotations

import argparse
import sys

from calibrl_ext.plan import PlannerSettings, plan_for_config
from calibrl_ext.plan.compose import compose_overrides, compose_script
from calibrl_ext.plan.model_shape import ModelConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m calibrl_ext.plan", description=__doc__.split("\n")[0])
    parser.add_argument("--script", help="a launch script (examples/run_*.sh); its environment variables apply")
    parser.add_argument("--model-config", help="config.json (or checkpoint dir); default: the config's model.path")
    parser.add_argument("--gpu-memory-gib", type=float, help="memory of one GPU (default 80, or the config's key)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (after the script's, if any)")
    args = parser.parse_args(argv)
    try:
        if args.script:
            config = compose_script(args.script, extra_overrides=args.overrides)
        else:
            config = compose_overrides(args.overrides)
        section = dict((config.get("calibrl", None) or {}).get("memory_plan", None) or {})
        if args.gpu_memory_gib is not None:
            section["gpu_memory_gib"] = args.gpu_memory_gib
        plan = plan_for_config(config, args.model_config, PlannerSettings.from_mapping(section))
    except (ModelConfigError, ValueError, RuntimeError) as exc:
        print(f"calibrl_ext.plan: {exc}", file=sys.stderr)
        return 2
    print(plan.report())
    return 0 if plan.fits else 3


if __name__ == "__main__":
    sys.exit(main())
