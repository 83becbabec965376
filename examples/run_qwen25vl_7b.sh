#!/usr/bin/env bash
# CalibRL on Qwen2.5-VL-7B-Instruct, 1 node x 8 x 80 GB: the authors' released recipe (METHOD §6):
# 480 prompts x (10 rollouts + 1 expert) per step, mini-batch 120, lr 1e-6 constant, 1 epoch, prompt 20480 /
# response 4096 tokens, vLLM TP 2 at 0.5 memory, greedy validation, no KL, no entropy bonus.
#   MODEL_PATH=/models/Qwen2.5-VL-7B-Instruct TRAIN_FILES=... VAL_FILES=... bash examples/run_qwen25vl_7b.sh
#   MODE=luffy bash examples/run_qwen25vl_7b.sh          # baselines: MODE=grpo | luffy | rlplus
export MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-VL-7B-Instruct}
export EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen25vl_7b_${MODE:-calibrl}}
exec bash "$(dirname "$0")/calibrl_gpu.sh" "$@"
