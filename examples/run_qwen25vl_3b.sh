#!/usr/bin/env bash
# CalibRL on Qwen2.5-VL-3B-Instruct, 1 node x 8 x 80 GB. The 7B recipe's batch and lengths; the 3B model fits a
# vLLM engine per GPU (TP 1) with more memory for the KV cache.
#   MODEL_PATH=/models/Qwen2.5-VL-3B-Instruct TRAIN_FILES=... VAL_FILES=... bash examples/run_qwen25vl_3b.sh
#   MODE=grpo bash examples/run_qwen25vl_3b.sh           # baselines: MODE=grpo | luffy | rlplus
export MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-VL-3B-Instruct}
export ROLLOUT_TP=${ROLLOUT_TP:-1}
export GPU_MEM_UTIL=${GPU_MEM_UTIL:-0.6}
export EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen25vl_3b_${MODE:-calibrl}}
exec bash "$(dirname "$0")/calibrl_gpu.sh" "$@"
