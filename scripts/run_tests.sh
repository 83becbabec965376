#!/usr/bin/env bash
# The test command of the README (and of .ci/run): the whole suite, e2e CPU runs included.
# Extra arguments go to pytest (e.g. `-m "not e2e"` for the fast part only).
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false
.venv/bin/python -m pytest "$@"
rc=$?
if [ "$rc" -eq 5 ]; then
  echo "run_tests: pytest collected no tests (exit 5): the selection is empty or tests/ is missing" >&2
  exit 1
fi
exit "$rc"
