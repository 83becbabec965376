"""Benchmark: what enters the actor update per step, CalibRL vs GRPO at equal n, and the old-log-prob cost of the
expert rows. Prints figures; asserts nothing.

Two short runs of the recipe on the CPU backend (tiny Qwen2.5-VL, demo data, same seed and shapes):
``calibrl.mode=calibrl`` and ``calibrl.mode=grpo``. Reported per mode (mean over the steps):

- rows and response tokens that entered the actor loss (``actor/update_tokens_seen``, summed over micro-batches);
- for CalibRL, the ratio of update tokens to the on-policy tokens of the step (target 1.00) and the ratio the
  released code had, which pushed the expert rows through every update ((on-policy + expert tokens) / on-policy,
  ~(n+1)/n);
- ``timing_s/old_log_prob`` (the one pass that includes the expert rows in CalibRL) and ``timing_s/update_actor``.

    .venv/bin/python bench/update_tokens.py [--steps 3] [--n 4] [--prompts 4]
"""

import argparse
import statistics
import sys
from pathlib import Path

from calibrl_ext.cpu_backend.launcher import run_verl
from calibrl_ext.tiny_models import cached_tiny_model

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_mode(mode: str, args, out: Path, model: Path):
    data = REPO_ROOT / "data" / "demo"
    overrides = [
        f"calibrl.mode={mode}",
        f"data.train_files={data / 'train.parquet'}",
        f"data.val_files={data / 'val.parquet'}",
        f"data.train_batch_size={args.prompts}",
        "data.max_prompt_length=256",
        f"data.max_response_length={args.response_length}",
        f"actor_rollout_ref.model.path={model}",
        f"actor_rollout_ref.rollout.n={args.n}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={args.prompts}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={args.prompts}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={args.prompts}",
        f"trainer.total_training_steps={args.steps}",
        "trainer.val_before_train=False",
        "trainer.test_freq=-1",
        "trainer.save_freq=-1",
        f"trainer.experiment_name=bench_{mode}",
    ]
    run = run_verl(overrides, metrics_path=out / mode / "metrics.jsonl", entry_module="recipe.calibrl.main_calibrl",
                   timeout_s=args.timeout, cwd=REPO_ROOT)  # fmt: skip
    run.raise_for_status()
    return [m for _, m in sorted(run.by_step().items()) if "training/global_step" in m]


def mean(steps, key):
    values = [m[key] for m in steps if key in m]
    return statistics.fmean(values) if values else float("nan")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3, help="training steps per mode (default 3)")
    parser.add_argument("--n", type=int, default=4, help="rollouts per prompt (default 4)")
    parser.add_argument("--prompts", type=int, default=4, help="prompts per step (default 4)")
    parser.add_argument("--response-length", type=int, default=96, help="max response tokens (default 96)")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run (default 900)")
    parser.add_argument("--out", default="outputs/bench_update_tokens", help="run folder")
    args = parser.parse_args()
    if not (REPO_ROOT / "data" / "demo" / "train.parquet").exists():
        sys.exit("bench: build the demo data first: python data_prep/build_parquet.py")
    model = cached_tiny_model("qwen2_5_vl")
    out = Path(args.out).resolve()
    results = {mode: run_mode(mode, args, out, model) for mode in ("calibrl", "grpo")}
    rows = args.prompts * args.n
    print(f"\n{args.prompts} prompts x n={args.n} rollouts, {args.steps} steps per mode, tiny Qwen2.5-VL on CPU")
    print(f"{'mode':<8} {'update rows':>12} {'tokens into loss':>17} {'old_log_prob s':>15} {'update_actor s':>15}")
    for mode, steps in results.items():
        print(f"{mode:<8} {mean(steps, 'calibrl/update_rows'):>12.1f} {mean(steps, 'actor/update_tokens_seen'):>17.1f} "
              f"{mean(steps, 'timing_s/old_log_prob'):>15.3f} {mean(steps, 'timing_s/update_actor'):>15.3f}")  # fmt: skip
    calibrl = results["calibrl"]
    on_policy = mean(calibrl, "calibrl/update_tokens")
    seen = mean(calibrl, "actor/update_tokens_seen")
    expert = mean(calibrl, "calibrl/expert_tokens")
    experts = mean(calibrl, "calibrl/expert_rows")
    print(f"CalibRL update tokens / on-policy tokens (GRPO at equal n): {seen / on_policy:.3f}   (target 1.00)")
    print(f"released code: (on-policy + expert tokens) / on-policy tokens: {(on_policy + expert) / on_policy:.3f}; "
          f"rows {(rows + experts) / rows:.3f} (= (n+1)/n with an expert in every group)")  # fmt: skip
    grpo_lp, calib_lp = mean(results["grpo"], "timing_s/old_log_prob"), mean(calibrl, "timing_s/old_log_prob")
    print(f"old-log-prob pass with expert rows / without (GRPO): {calib_lp / grpo_lp:.2f}x")


if __name__ == "__main__":
    main()
