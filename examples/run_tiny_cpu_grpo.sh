#!/usr/bin/env bash
# Stock verl GRPO (python -m verl.trainer.main_ppo algorithm.adv_estimator=grpo) on CPU, through calibrl's CPU
# backend: a tiny random Qwen2.5-VL, the embedded demo data (with images), STEPS training steps and a validation
# pass at the end, under a timeout, leaving no Ray process behind. About 1.5 minutes on 2 cores.
#
#   bash examples/run_tiny_cpu_grpo.sh                      # defaults below
#   STEPS=3 OUT=outputs/try bash examples/run_tiny_cpu_grpo.sh data.train_batch_size=4   # extra Hydra overrides
#
# A dry run checks data, config and code paths; with a random model the reward is ~0 (see docs/cpu_dry_run.md).
# Metrics: $OUT/metrics.jsonl (verl's file logger), full log: $OUT/metrics.jsonl.log.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python; fi
fi
OUT=${OUT:-outputs/tiny_cpu_grpo}           # metrics, log and checkpoints of this run
STEPS=${STEPS:-2}                           # training steps (validation runs after the last one)
TIMEOUT_S=${TIMEOUT_S:-600}                 # wall-clock limit of the whole verl run
DATA_DIR=${DATA_DIR:-data/demo}             # train.parquet / val.parquet in verl's RL layout
VAL_SAMPLES=${VAL_SAMPLES:-8}               # validation rows (greedy, one sample each)

if [ ! -f "$DATA_DIR/train.parquet" ] || [ ! -f "$DATA_DIR/val.parquet" ]; then
  if [ "$DATA_DIR" != "data/demo" ]; then
    echo "run_tiny_cpu_grpo: $DATA_DIR/{train,val}.parquet not found (build them with data_prep/build_parquet.py)" >&2
    exit 2
  fi
  "$PYTHON" data_prep/build_parquet.py
fi
MODEL=${MODEL:-$("$PYTHON" -m calibrl_ext.tiny_models --arch qwen2_5_vl)}   # cached under tiny_models/

exec "$PYTHON" -m calibrl_ext.cpu_backend.launcher --metrics "$OUT/metrics.jsonl" --timeout "$TIMEOUT_S" -- \
  algorithm.adv_estimator=grpo \
  data.train_files="$DATA_DIR/train.parquet" \
  data.val_files="$DATA_DIR/val.parquet" \
  data.val_max_samples="$VAL_SAMPLES" \
  data.image_key=images \
  data.train_batch_size=2 \
  data.max_prompt_length=256 \
  data.max_response_length=16 \
  actor_rollout_ref.model.path="$MODEL" \
  actor_rollout_ref.rollout.n=4 \
  actor_rollout_ref.actor.ppo_mini_batch_size=2 \
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=2 \
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=2 \
  actor_rollout_ref.actor.use_kl_loss=False \
  reward.custom_reward_function.path=pkg://calibrl_ext.reward \
  reward.custom_reward_function.name=compute_score \
  trainer.total_training_steps="$STEPS" \
  trainer.val_before_train=False \
  trainer.test_freq="$STEPS" \
  trainer.save_freq=-1 \
  trainer.project_name=calibrl_cpu \
  trainer.experiment_name=tiny_cpu_grpo \
  trainer.default_local_dir="$OUT/checkpoints" \
  "$@"
