#!/usr/bin/env bash
# CalibRL on Qwen2.5-VL-32B-Instruct. Default: ONE node x 8 x 80 GB (as verl's and EasyR1's 32B examples), FSDP
# with parameter and optimizer offload, vLLM TP 4, Ulysses sequence parallelism 8 with a micro-batch of ONE full
# sequence spread over the 8 GPUs (PPO_MAX_TOKEN_LEN_PER_GPU = (prompt + response) / 8 = 3072 tokens).
#   MODEL_PATH=/models/Qwen2.5-VL-32B-Instruct TRAIN_FILES=... VAL_FILES=... bash examples/run_qwen25vl_32b.sh
#
# Memory per GPU while updating (the planner's terms, docs/memory.md; `python -m calibrl_ext.plan --script
# examples/run_qwen25vl_32b.sh` prints them; 33.5e9 parameters, FSDP keeps fp32 master weights and grads, Adam two
# fp32 moments, 16 B/param):
#   training state      16 B/param x 33.5e9 / 8 GPUs = 67 GB (62 GiB): verl loads offloaded params and Adam state
#                       BACK to the GPU for the update, so offload does not lower this phase; it frees the GPU for
#                       vLLM during the rollout (the two phases do not stack)
#   per-token terms     gradient checkpointing; 3072 tokens per GPU: ~4 GiB of logits / log-prob buffers over the
#                       152k vocabulary and ~4 GiB of activations; + ~5 GiB of gathered bf16 FSDP units + 2 reserve
#                       -> ~77 of 80 GiB (FREEZE_VISION_TOWER=1: ~76). With Ulysses 2 and a whole 24576-token
#                       sequence per GPU pair (12288 tokens per GPU) the per-token terms alone are ~64 GiB: no fit.
#   rollout (vLLM, sleeps during the update) bf16 weights 67 GB / TP 4 = 16.75 GB per GPU; GPU_MEM_UTIL 0.5
#      = 40 GB per GPU -> ~23 GB of KV cache per GPU (2 engines of 4 GPUs, ~15 full-length sequences each)
#   host memory         offloaded fp32 params + Adam: 33.5e9 x 12 B = 402 GB per node (plan >= 512 GB RAM)
# Ulysses 8 needs the attention heads (40 query, 8 key/value) divisible by 8, as Qwen2.5-VL-32B's are. NNODES=2
# halves the training state (31 GiB); raise PPO_MAX_TOKEN_LEN_PER_GPU or lower ULYSSES_SP there for throughput.
# LORA_RANK=64 leaves only the frozen fp32 base (16 GiB) and the adapters' state.
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
export ULYSSES_SP=${ULYSSES_SP:-8}
# One full sequence (prompt + response) per micro-batch, split over the ULYSSES_SP GPUs (rounded up).
export PPO_MAX_TOKEN_LEN_PER_GPU=${PPO_MAX_TOKEN_LEN_PER_GPU:-$(( (${MAX_PROMPT_LENGTH:-20480} + ${MAX_RESPONSE_LENGTH:-4096} + ULYSSES_SP - 1) / ULYSSES_SP ))}
# 8 GPUs / Ulysses 8 = 1 data-parallel rank: the released 480 prompts x (10 + 1 rows), mini-batch 120, divide.
export EXPERIMENT_NAME=${EXPERIMENT_NAME:-qwen25vl_32b_${MODE:-calibrl}}
RAY_ARGS=()
if [ "$NNODES" -gt 1 ]; then
  RAY_ARGS=(+ray_kwargs.ray_init.address="${RAY_ADDRESS:-auto}"
            +ray_kwargs.ray_init.runtime_env.env_vars.VERL_USE_EXTERNAL_MODULES=calibrl_ext.plugin)
fi
exec bash "$(dirname "$0")/calibrl_gpu.sh" "${RAY_ARGS[@]}" "$@"
