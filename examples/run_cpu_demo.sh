#!/usr/bin/env bash
# The main job's embedded default (`make demo`): CalibRL on CPU through verl's own trainer and calibrl's CPU
# backend, on the study's learnable task (docs/study.md). Builds the demo parquet (data/demo-shape_colour: name the
# colour of the shape drawn) and a tiny Qwen2.5-VL warm-started on its expert solutions, validates (before RL), runs
# 16 CalibRL steps + validation, logs to outputs/cpu_demo/metrics.jsonl, prints a summary with the validation
# accuracy before -> after RL (measured: 0.512 -> 0.578) and writes outputs/cpu_demo/curves.png. About 4 minutes on
# 2 cores (plus ~1 the first time); no GPU and no downloads. A tiny model on a toy task: the numbers say nothing about
# the method at scale (docs/cpu_dry_run.md).
#
#   bash examples/run_cpu_demo.sh                              # defaults
#   bash examples/run_cpu_demo.sh --steps 5 --out outputs/x    # options: --help
#   bash examples/run_cpu_demo.sh --task reasoning             # the four reasoning kinds (data/demo; no rise)
#   bash examples/run_cpu_demo.sh -- calibrl.mode=luffy        # extra Hydra overrides for the recipe
#   ROLLOUT=vllm bash examples/run_cpu_demo.sh                 # rollouts through verl's vLLM server on CPU
#                                                              # (needs .venv-vllm: scripts/bootstrap_vllm_venv.sh;
#                                                              # `ROLLOUT=vllm make demo` builds it)
set -euo pipefail
cd "$(dirname "$0")/.."
ROLLOUT="${ROLLOUT:-hf}"
case "$ROLLOUT" in
  hf) VENV_PY=.venv/bin/python ;;
  vllm)
    VENV_PY=.venv-vllm/bin/python
    if [ -z "${PYTHON:-}" ] && [ ! -x "$VENV_PY" ]; then
      echo "run_cpu_demo: ROLLOUT=vllm needs .venv-vllm/: run 'bash scripts/bootstrap_vllm_venv.sh' (or ROLLOUT=vllm make demo)" >&2
      exit 1
    fi ;;
  *) echo "run_cpu_demo: ROLLOUT must be hf or vllm, got '$ROLLOUT'" >&2; exit 2 ;;
esac
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$VENV_PY" ]; then PYTHON=$VENV_PY; else PYTHON=python; fi
fi
exec "$PYTHON" -m recipe.calibrl.cpu_demo --rollout "$ROLLOUT" "$@"
