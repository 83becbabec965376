#!/usr/bin/env bash
# CalibRL on Qwen2.5-VL-7B-Instruct, 1 node x 8 x 80 GB: the authors' released recipe (METHOD §6):
# 480 prompts x (10 rollouts + 1 expert) per step, mini-batch 120, lr 1e-6 constant, 1 epoch, prompt 20480 /
# response 4096 tokens, vLLM TP 2 at 0.5 memory, greedy validation, no KL, no entropy bonus, data.shuffle false,
# validation every 5 steps, checkpoint every 10 (calibrl_gpu.sh's defaults).
#   MODEL_PATH=/models/Qwen2.5-VL-7B-Instruct TRAIN_FILES=... VAL_FILES=... bash examples/run_qwen25vl_7b.sh
#   MODE=luffy bash examples/run_qwen25vl_7b.sh          # baselines: MODE=grpo | luffy | rlplus
#
# Where this run still differs from the released one, each with its key:
# - trainer.total_training_steps (TOTAL_TRAINING_STEPS, default 18): the release ran one epoch over a ~9k-prompt
#   subset of ViRL39K (9000 // 480 = 18 steps; the subset itself is not published). Here the first 18 x 480
#   prompts of TRAIN_FILES in file order (data.shuffle false); TOTAL_TRAINING_STEPS=null runs the whole file.
# - actor_rollout_ref.actor.loss_agg_mode=token-mean: verl 0.9.1 averages over all on-policy tokens of the
#   mini-batch (global token mean across micro-batches and ranks); the release averaged per-micro-batch token
#   means over 6-row micro-batches, which weighs a token of a short micro-batch more (a
#   different weighting of the same per-token losses); verl 0.9.1 has no per-micro-batch mode: a known difference.
# - actor_rollout_ref.actor.use_dynamic_bsz=True (token-budgeted micro-batches) instead of fixed 6-row ones: it
#   changes only how rows are packed, given the global token mean above.
export MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-VL-7B-Instruct}
export TOTAL_TRAINING_STEPS=${TOTAL_TRAINING_STEPS:-18}
export EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen25vl_7b_${MODE:-calibrl}}
exec bash "$(dirname "$0")/calibrl_gpu.sh" "$@"
