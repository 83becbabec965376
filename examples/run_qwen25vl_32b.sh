#!/usr/bin/env bash
# CalibRL on Qwen2.5-VL-32B-Instruct. Default: the smallest layout that fits, ONE node x 8 x 80 GB (as verl's and
# EasyR1's 32B examples), FSDP with parameter and optimizer offload, vLLM TP 4, Ulysses 2.
#   MODEL_PATH=/models/Qwen2.5-VL-32B-Instruct TRAIN_FILES=... VAL_FILES=... bash examples/run_qwen25vl_32b.sh
#
# Memory per GPU (33.5e9 parameters; FSDP keeps fp32 master weights and grads, Adam two fp32 moments):
#   training state      16 B/param x 33.5e9 / 8 GPUs = 67 GB: params 16.75 + grads 16.75 + Adam 33.5 GB
#   -> optimizer offload (Adam to CPU): 33.5 GB on GPU while updating; param offload moves the 16.75 GB of
#      weights to CPU during rollout, so the two phases do not stack
#   activations         gradient checkpointing; (20480 + 4096) tokens / Ulysses 2 = 12288 tokens per GPU:
#      ~64 layers x 12288 x 5120 x 2 B = 8 GB of checkpoints + one layer's recompute + fp32 logits of the
#      12288 tokens x 152k vocabulary (7.5 GB) -> ~50 GB peak of 80 while updating
#   rollout (vLLM, sleeps during the update) bf16 weights 67 GB / TP 4 = 16.75 GB per GPU; GPU_MEM_UTIL 0.5
#      = 40 GB per GPU -> ~23 GB of KV cache per GPU (2 engines of 4 GPUs)
#   host memory         offloaded fp32 params + Adam: 33.5e9 x 12 B = 402 GB per node (plan >= 512 GB RAM)
# Without offload the 67 GB of training state alone leaves no room on 80 GB; more nodes are not needed.
#
# Several nodes (NNODES=N > 1) join an EXISTING Ray cluster (head: `ray start --head --port=6379`; workers:
# `ray start --address=<head-ip>:6379`), and then: calibrl must be installed on EVERY node (pip install -e
# ".[gpu]"): VERL_USE_EXTERNAL_MODULES below only makes verl import calibrl_ext.plugin in each worker, which needs
# the package there; TRAIN_FILES, VAL_FILES and CKPT_DIR must be absolute paths on storage every node mounts,
# because verl's TaskRunner (data loading, checkpoints) runs on whichever node Ray picks (calibrl_gpu.sh checks).
export MODEL_PATH=${MODEL_PATH:-Qwen/Qwen2.5-VL-32B-Instruct}
export NNODES=${NNODES:-1}
export ROLLOUT_TP=${ROLLOUT_TP:-4}
export GPU_MEM_UTIL=${GPU_MEM_UTIL:-0.5}
export PARAM_OFFLOAD=${PARAM_OFFLOAD:-True}
export OPTIMIZER_OFFLOAD=${OPTIMIZER_OFFLOAD:-True}
export ULYSSES_SP=${ULYSSES_SP:-2}
# 8 GPUs / Ulysses 2 = 4 data-parallel ranks: the released 480 prompts x (10 + 1 rows), mini-batch 120, divide.
export EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen25vl_32b_${MODE:-calibrl}}
RAY_ARGS=()
if [ "$NNODES" -gt 1 ]; then
  RAY_ARGS=(+ray_kwargs.ray_init.address="${RAY_ADDRESS:-auto}"
            +ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=calibrl_ext.plugin)
fi
exec bash "$(dirname "$0")/calibrl_gpu.sh" "${RAY_ARGS[@]}" "$@"
