#!/usr/bin/env bash
# The test command of the README (and of .ci/run): the whole suite, e2e CPU runs included.
# Two environments: everything except tests/vllm/ runs in .venv/; tests/vllm/ (verl's real vLLM rollout on CPU)
# runs in .venv-vllm/ (scripts/bootstrap_vllm_venv.sh; `make test` builds both).
# Extra arguments go to pytest (e.g. `-m "not e2e"` for the fast part only). With test paths among them, only
# those run, each in its environment (paths under tests/vllm in .venv-vllm). CALIBRL_SKIP_VLLM=1 skips tests/vllm
# (for a machine without the vLLM environment; CI never sets it).
# The two environments run at the same time when both are selected (their e2e runs wait on process start-up and
# Ray as much as on the CPU): tests/vllm/ in the background, its output kept in a log that is printed after the main
# part. CALIBRL_VLLM_BOOTSTRAP=1 (set by `make test`) builds .venv-vllm/ first in that background lane;
# CALIBRL_TEST_SERIAL=1 runs the two one after the other instead.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false

main_paths=() vllm_paths=() options=()
for arg in "$@"; do
  case "$arg" in
    tests/vllm|tests/vllm/*) vllm_paths+=("$arg") ;;
    tests|tests/|tests/*) main_paths+=("$arg") ;;
    *) options+=("$arg") ;;
  esac
done
run_main=1 run_vllm=1
if [ ${#main_paths[@]} -gt 0 ] || [ ${#vllm_paths[@]} -gt 0 ]; then
  [ ${#main_paths[@]} -gt 0 ] || run_main=0
  [ ${#vllm_paths[@]} -gt 0 ] || run_vllm=0
fi
[ "${CALIBRL_SKIP_VLLM:-0}" = "1" ] && run_vllm=0

check_rc() {  # pytest exit 5 = nothing collected: an empty selection is an error here
  if [ "$1" -eq 5 ]; then
    echo "run_tests: pytest collected no tests (exit 5) in $2: the selection is empty or the tests are missing" >&2
    return 1
  fi
  return "$1"
}
rc_main=0 rc_vllm=0
run_vllm_lane() {  # builds .venv-vllm when asked, then runs the vLLM tests; the exit code is its status
  if [ "${CALIBRL_VLLM_BOOTSTRAP:-0}" = "1" ]; then
    bash scripts/bootstrap_vllm_venv.sh || { echo "run_tests: building .venv-vllm/ failed (above)" >&2; return 1; }
  fi
  if [ ! -x .venv-vllm/bin/python ]; then
    echo "run_tests: .venv-vllm/ is missing: build it with 'bash scripts/bootstrap_vllm_venv.sh' (make test does)," \
      "or set CALIBRL_SKIP_VLLM=1 to skip tests/vllm" >&2
    return 1
  fi
  [ ${#vllm_paths[@]} -gt 0 ] || vllm_paths=(tests/vllm)
  .venv-vllm/bin/python -m pytest "${options[@]}" "${vllm_paths[@]}"
  check_rc $? ".venv-vllm (tests/vllm)"
}
parallel=0
[ "$run_main" = 1 ] && [ "$run_vllm" = 1 ] && [ "${CALIBRL_TEST_SERIAL:-0}" != "1" ] && parallel=1
vllm_log="" vllm_pid=""
if [ "$parallel" = 1 ]; then
  vllm_log=$(mktemp "${TMPDIR:-/tmp}/calibrl_vllm_tests.XXXXXX.log")
  echo "run_tests: tests/vllm runs in the background (.venv-vllm); its output follows the main part (log: $vllm_log)"
  run_vllm_lane > "$vllm_log" 2>&1 &
  vllm_pid=$!
  # An interrupted or killed test command stops the background lane too (pytest then ends its own runs).
  trap '[ -n "$vllm_pid" ] && { pkill -TERM -P "$vllm_pid"; kill -TERM "$vllm_pid"; } 2>/dev/null' EXIT
fi
if [ "$run_main" = 1 ]; then
  .venv/bin/python -m pytest --ignore=tests/vllm "${options[@]}" "${main_paths[@]}"
  check_rc $? ".venv (tests except tests/vllm)"; rc_main=$?
fi
if [ "$parallel" = 1 ]; then
  wait "$vllm_pid"; rc_vllm=$?
  vllm_pid=""
  echo "=============================== tests/vllm (.venv-vllm), run alongside ==============================="
  cat "$vllm_log"
  rm -f "$vllm_log"
elif [ "$run_vllm" = 1 ]; then
  run_vllm_lane; rc_vllm=$?
fi
echo "run_tests: main part exit $rc_main, tests/vllm exit $rc_vllm (0 = passed; not run counts as 0)"
[ "$rc_main" -eq 0 ] && [ "$rc_vllm" -eq 0 ]
