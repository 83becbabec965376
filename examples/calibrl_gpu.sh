#!/usr/bin/env bash
# Shared GPU launcher of the CalibRL recipe (verl 0.9.1, FSDP training, vLLM rollout). The per-model scripts
# (run_qwen25vl_3b.sh, run_qwen25vl_7b.sh, run_internvl3_8b.sh, run_qwen25vl_32b.sh) set their defaults and exec
# this file; every variable below can be overridden from the environment, and extra arguments are Hydra overrides
# that win over everything here. Settings follow verl's own examples/grpo_trainer/run_qwen2_5_vl-7b.sh (in verl's
# repository at v0.9.1; the pip package ships no examples) and the released CalibRL recipe (METHOD §6).
#
# Needs the GPU install: pip install -e ".[gpu]" (verl[vllm] + flash-attn) -- on EVERY node of a multi-node run:
# verl imports calibrl_ext in each Ray worker, wherever Ray places it. Written for 8 x 80 GB per node; not run
# on GPUs by this project's CI (see README "What was run where").
#
# Logging: LOGGER is a comma-separated list of verl backends, default console,file,tensorboard (as released; no
# account needed). wandb only when asked: LOGGER=wandb (added to the defaults) or a full list such as
# LOGGER=console,wandb; it then needs WANDB_API_KEY (or `wandb login`, or WANDB_MODE=offline).
set -euo pipefail
cd "$(dirname "$0")/.."

# ---- method: calibrl | luffy | rlplus | grpo | entropy_reg | chord | hpt | sft_then_grpo (baselines, same data) ----
MODE=${MODE:-calibrl}
# ---- sft_then_grpo only: stage 1 = verl's SFT trainer on the expert solutions, then GRPO from its checkpoint
# (calibrl.sft.*, recipe/calibrl/sft_stage.py; a finished stage directory is reused). Not run on GPUs here. ----
SFT_EPOCHS=${SFT_EPOCHS:-1}                      # calibrl.sft.epochs
SFT_LR=${SFT_LR:-1e-5}                           # calibrl.sft.lr
SFT_BATCH_SIZE=${SFT_BATCH_SIZE:-32}             # calibrl.sft.train_batch_size (rows per step, all GPUs)
SFT_MICRO_BATCH_SIZE=${SFT_MICRO_BATCH_SIZE:-1}  # calibrl.sft.micro_batch_size_per_gpu (long multimodal rows: 1)
SFT_CKPT_DIR=${SFT_CKPT_DIR:-null}               # calibrl.sft.checkpoint_dir; null = $CKPT_DIR/sft_stage/<hash>
# ---- data and model ----
MODEL_PATH=${MODEL_PATH:?set MODEL_PATH (a local HF checkpoint directory or a hub id)}
TRAIN_FILES=${TRAIN_FILES:-data/virl/train.parquet}   # where docs/data_prep.md's ViRL39K command writes (--out data/virl)
VAL_FILES=${VAL_FILES:-data/virl/val.parquet}
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
# ---- data order and length of the run (released: data.shuffle false; one epoch over a ~9k-prompt subset) ----
SHUFFLE=${SHUFFLE:-False}                       # data.shuffle
TOTAL_TRAINING_STEPS=${TOTAL_TRAINING_STEPS:-null}   # trainer.total_training_steps; null = the epochs decide
PARAM_OFFLOAD=${PARAM_OFFLOAD:-False}
OPTIMIZER_OFFLOAD=${OPTIMIZER_OFFLOAD:-False}
ULYSSES_SP=${ULYSSES_SP:-1}
# ---- rollout (vLLM) ----
ROLLOUT_TP=${ROLLOUT_TP:-2}
GPU_MEM_UTIL=${GPU_MEM_UTIL:-0.5}
# ---- cluster ----
NNODES=${NNODES:-1}
NGPUS_PER_NODE=${NGPUS_PER_NODE:-8}
# ---- logging and checkpoints (released: validation every 5 steps, checkpoint every 10) ----
PROJECT_NAME=${PROJECT_NAME:-calibrl}
EXPERIMENT_NAME=${EXPERIMENT_NAME:-${MODE}}
SAVE_FREQ=${SAVE_FREQ:-10}
TEST_FREQ=${TEST_FREQ:-5}
CKPT_DIR=${CKPT_DIR:-checkpoints/${PROJECT_NAME}/${EXPERIMENT_NAME}}   # trainer.default_local_dir (verl's default)
LOGGER=${LOGGER:-console,file,tensorboard}
PYTHON=${PYTHON:-python3}

die() { echo "calibrl_gpu.sh: error: $*" >&2; exit 2; }

# ---- LOGGER -> trainer.logger: a comma list (or a Hydra list "[a,b]"); "wandb" alone adds it to the defaults ----
LOGGER=${LOGGER//[\[\]\"\' ]/}
[ "$LOGGER" = wandb ] && LOGGER=console,file,tensorboard,wandb
if [[ ",$LOGGER," == *,wandb,* ]] && [ -z "${WANDB_API_KEY:-}" ] && [ "${WANDB_MODE:-}" != offline ] \
   && ! grep -qs "api.wandb.ai" "$HOME/.netrc"; then
  die "LOGGER=$LOGGER logs to wandb but no key is set: export WANDB_API_KEY, run \`wandb login\`, set WANDB_MODE=offline, or drop wandb from LOGGER (default console,file,tensorboard)"
fi
TRAINER_LOGGER="[${LOGGER}]"

# ---- several nodes: verl's TaskRunner (which reads the data and writes checkpoints) runs on whichever node Ray
# picks (no node affinity), so every path must be absolute and on storage all nodes mount ----
if [ "$NNODES" -gt 1 ]; then
  for pair in "TRAIN_FILES=$TRAIN_FILES" "VAL_FILES=$VAL_FILES" "CKPT_DIR=$CKPT_DIR"; do
    name=${pair%%=*}; value=${pair#*=}
    IFS=',' read -r -a paths <<<"${value//[\[\]\"\' ]/}"
    for path in "${paths[@]}"; do
      [[ "$path" == *://* || "$path" == /* ]] || die "NNODES=$NNODES: $name=$path must be an absolute path on storage every node mounts (verl's TaskRunner may run on any node)"
    done
  done
  echo "calibrl_gpu.sh: $NNODES nodes: calibrl must be installed (pip install -e \".[gpu]\") on every node; data and $CKPT_DIR must be on shared storage" >&2
fi
# ---- LoRA (lora-plan; docs/memory.md): LORA_RANK=0 trains all weights; LORA_RANK>0 trains verl's LoRA adapters
# (actor_rollout_ref.model.lora_rank / lora_alpha / target_modules) on every linear layer of the language model.
# The vision tower and projector are excluded (vLLM applies LoRA to the language model only); they stay frozen.
LORA_RANK=${LORA_RANK:-0}
if [[ ! "$LORA_RANK" =~ ^[0-9]+$ ]]; then echo "LORA_RANK must be a non-negative integer, got $LORA_RANK" >&2; exit 2; fi
LORA_ALPHA=${LORA_ALPHA:-$((2 * LORA_RANK))}
LORA_TARGET_MODULES=${LORA_TARGET_MODULES:-all-linear}
LORA_EXCLUDE_MODULES=${LORA_EXCLUDE_MODULES:-'.*(visual|vision_tower|vision_model|multi_modal_projector|mlp1).*'}
LORA_ARGS=()
if [ "$LORA_RANK" -gt 0 ]; then
  LORA_ARGS=(
    actor_rollout_ref.model.lora_rank="$LORA_RANK"
    actor_rollout_ref.model.lora_alpha="$LORA_ALPHA"
    actor_rollout_ref.model.target_modules="$LORA_TARGET_MODULES"
    "actor_rollout_ref.model.exclude_modules='$LORA_EXCLUDE_MODULES'"
  )
fi
# ---- end LoRA ----
# ---- frozen vision tower: FREEZE_VISION_TOWER=1 trains the language model only (verl's
# actor_rollout_ref.actor.freeze_vision_tower, which calibrl_ext.vision_freeze makes the FSDP engine honour; for
# Qwen2.5-VL the tower includes its patch merger). Default 0, as released (the whole model trains). Under LoRA the
# tower is frozen either way (excluded from the adapters above). ----
FREEZE_VISION_TOWER=${FREEZE_VISION_TOWER:-0}
case "$FREEZE_VISION_TOWER" in
  1|true|True) FREEZE_VISION_TOWER=True ;;
  0|false|False) FREEZE_VISION_TOWER=False ;;
  *) die "FREEZE_VISION_TOWER must be 0 or 1, got $FREEZE_VISION_TOWER" ;;
esac

exec "$PYTHON" -m recipe.calibrl.main_calibrl \
  calibrl.mode="$MODE" \
  calibrl.sft.epochs="$SFT_EPOCHS" \
  calibrl.sft.lr="$SFT_LR" \
  calibrl.sft.train_batch_size="$SFT_BATCH_SIZE" \
  calibrl.sft.micro_batch_size_per_gpu="$SFT_MICRO_BATCH_SIZE" \
  calibrl.sft.checkpoint_dir="$SFT_CKPT_DIR" \
  data.train_files="$TRAIN_FILES" \
  data.val_files="$VAL_FILES" \
  data.shuffle="$SHUFFLE" \
  data.train_batch_size="$TRAIN_BATCH_SIZE" \
  data.max_prompt_length="$MAX_PROMPT_LENGTH" \
  data.max_response_length="$MAX_RESPONSE_LENGTH" \
  actor_rollout_ref.model.path="$MODEL_PATH" \
  actor_rollout_ref.model.use_remove_padding=True \
  actor_rollout_ref.model.enable_gradient_checkpointing=True \
  actor_rollout_ref.actor.optim.lr="$LR" \
  actor_rollout_ref.actor.freeze_vision_tower="$FREEZE_VISION_TOWER" \
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
  trainer.logger="$TRAINER_LOGGER" \
  trainer.project_name="$PROJECT_NAME" \
  trainer.experiment_name="$EXPERIMENT_NAME" \
  trainer.n_gpus_per_node="$NGPUS_PER_NODE" \
  trainer.nnodes="$NNODES" \
  trainer.save_freq="$SAVE_FREQ" \
  trainer.test_freq="$TEST_FREQ" \
  trainer.total_epochs="$TOTAL_EPOCHS" \
  trainer.total_training_steps="$TOTAL_TRAINING_STEPS" \
  trainer.default_local_dir="$CKPT_DIR" \
  "${LORA_ARGS[@]}" \
  "$@"
