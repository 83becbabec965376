#!/usr/bin/env bash
# CalibRL on Qwen2.5-VL-32B-Instruct, multi-node on an EXISTING Ray cluster (default 4 nodes x 8 x 80 GB).
#   1. on every node, in the same environment (pip install -e ".[gpu]"):
#        head:    ray start --head --port=6379
#        workers: ray start --address=<head-ip>:6379
#   2. on the head node:
#        MODEL_PATH=/models/Qwen2.5-VL-32B-Instruct TRAIN_FILES=... VAL_FILES=... bash examples/run_qwen25vl_32b.sh
# The plugin is loaded in every process by the installed package's entry point; the explicit
# VERL_USE_EXTERNAL_MODULES below also covers nodes where entry points are disabled.
export MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-VL-32B-Instruct}
export NNODES=${NNODES:-4}
export ROLLOUT_TP=${ROLLOUT_TP:-4}
export GPU_MEM_UTIL=${GPU_MEM_UTIL:-0.5}
export PARAM_OFFLOAD=${PARAM_OFFLOAD:-True}
export OPTIMIZER_OFFLOAD=${OPTIMIZER_OFFLOAD:-True}
export ULYSSES_SP=${ULYSSES_SP:-2}
# 32 GPUs / Ulysses 2 = 16 data-parallel ranks: 128 prompts x (10 + 1 rows) divides by 16 in every mode.
export TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-512}
export PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-128}
export EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen25vl_32b_${MODE:-calibrl}}
exec bash "$(dirname "$0")/calibrl_gpu.sh" \
  +ray_kwargs.ray_init.address="${RAY_ADDRESS:-auto}" \
  +ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=calibrl_ext.plugin \
  "$@"
