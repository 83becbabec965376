#!/usr/bin/env bash
# Shared GPU launcher of the CalibRL recipe (verl 0.9.1, FSDP training, vLLM rollout). The per-model scripts
# (run_qwen25vl_3b.sh, run_qwen25vl_7b.sh, run_internvl3_8b.sh, run_qwen25vl_32b.sh) set their defaults and exec
# this file; every variable below can be overridden from the environment, and extra arguments are Hydra overrides
# that win over everything here. Settings follow verl's own examples/grpo_trainer/run_qwen2_5_vl_7b_vllm_fsdp.sh
# and the released CalibRL recipe (METHOD §6).
#
# Needs the GPU install: pip install -e ".[gpu]" (verl[vllm] + flash-attn). Written for 8 x 80 GB per node; not run
# on GPUs by this project's CI (see README "What was run where").
set -euo pipefail
cd "$(dirname "$0")/.."

# ---- method: calibrl | luffy | rlplus | grpo | entropy_reg (the baselines of the paper on the same data) ----
MODE=${MODE:-calibrl}
# ---- data and model ----
MODEL_PATH=${MODEL_PATH:?set MODEL_PATH (a local HF checkpoint directory or a hub id)}
TRAIN_FILES=${TRAIN_FILES:-data/virl39k/train.parquet}   # from data_prep/build_parquet.py
VAL_FILES=${VAL_FILES:-data/virl39k/val.parquet}
# ---- batch and lengths (prompts per step; rollouts per prompt; an expert row joins each group) ----
TRAIN_BATCH_SIZE=${TRAIN_BATCH_SIZE:-480}
PPO_MINI_BATCH_SIZE=${PPO_MINI_BATCH_SIZE:-120}
ROLLOUT_N=${ROLLOUT_N:-10}
MAX_PROMPT_LENGTH=${MAX_PROMPT_LENGTH:-20480}
MAX_RESPONSE_LENGTH=${MAX_RESPONSE_LENGTH:-4096}
PPO_MAX_TOKEN_LEN_PER_GPU=${PPO_MAX_TOKEN_LEN_PER_GPU:-$((MAX_PROMPT_LENGTH + MAX_RESPONSE_LENGTH))}
# ---- optimisation (released: constant lr 1e-6, weight decay 0.01, grad clip 1.0, 1 epoch, no KL, no entropy) ----
LR=${LR:-1e-6}
TOTAL_EPOCHS=${TOTAL_EPOCHS:-1}
PARAM_OFFLOAD=${PARAM_OFFLOAD:-False}
OPTIMIZER_OFFLOAD=${OPTIMIZER_OFFLOAD:-False}
ULYSSES_SP=${ULYSSES_SP:-1}
# ---- rollout (vLLM) ----
ROLLOUT_TP=${ROLLOUT_TP:-2}
GPU_MEM_UTIL=${GPU_MEM_UTIL:-0.5}
# ---- cluster ----
NNODES=${NNODES:-1}
NGPUS_PER_NODE=${NGPUS_PER_NODE:-8}
# ---- logging and checkpoints ----
PROJECT_NAME=${PROJECT_NAME:-calibrl}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-${MODE}}
SAVE_FREQ=${SAVE_FREQ:-20}
TEST_FREQ=${TEST_FREQ:-10}
LOGGER=${LOGGER:-'["console","wandb"]'}
PYTHON=${PYTHON:-python3}

exec "$PYTHON" -m recipe.calibrl.main_calibrl \
  calibrl.mode="$MODE" \
  data.train_files="$TRAIN_FILES" \
  data.val_files="$VAL_FILES" \
  data.train_batch_size="$TRAIN_BATCH_SIZE" \
  data.max_prompt_length="$MAX_PROMPT_LENGTH" \
  data.max_response_length="$MAX_RESPONSE_LENGTH" \
  actor_rollout_ref.model.path="$MODEL_PATH" \
  actor_rollout_ref.model.use_remove_padding=True \
  actor_rollout_ref.model.enable_gradient_checkpointing=True \
  actor_rollout_ref.actor.optim.lr="$LR" \
  actor_rollout_ref.actor.ppo_mini_batch_size="$PPO_MINI_BATCH_SIZE" \
  actor_rollout_ref.actor.use_dynamic_bsz=True \
  actor_rollout_ref.actor.ppo_max_token_len_per_gpu="$PPO_MAX_TOKEN_LEN_PER_GPU" \
  actor_rollout_ref.actor.ulysses_sequence_parallel_size="$ULYSSES_SP" \
  actor_rollout_ref.actor.fsdp_config.param_offload="$PARAM_OFFLOAD" \
  actor_rollout_ref.actor.fsdp_config.optimizer_offload="$OPTIMIZER_OFFLOAD" \
  actor_rollout_ref.rollout.name=vllm \
  actor_rollout_ref.rollout.mode=async \
  actor_rollout_ref.rollout.n="$ROLLOUT_N" \
  actor_rollout_ref.rollout.tensor_model_parallel_size="$ROLLOUT_TP" \
  actor_rollout_ref.rollout.gpu_memory_utilization="$GPU_MEM_UTIL" \
  actor_rollout_ref.rollout.log_prob_use_dynamic_bsz=True \
  actor_rollout_ref.rollout.log_prob_max_token_len_per_gpu="$PPO_MAX_TOKEN_LEN_PER_GPU" \
  trainer.balance_batch=True \
  trainer.logger="$LOGGER" \
  trainer.project_name="$PROJECT_NAME" \
  trainer.experiment_name="$EXPERIMENT_NAME" \
  trainer.n_gpus_per_node="$NGPUS_PER_NODE" \
  trainer.nnodes="$NNODES" \
  trainer.save_freq="$SAVE_FREQ" \
  trainer.test_freq="$TEST_FREQ" \
  trainer.total_epochs="$TOTAL_EPOCHS" \
  "$@"
