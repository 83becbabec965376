#!/usr/bin/env bash
# Create or refresh the project environment in .venv/ for a CPU-only machine.
#   - torch/torchvision first, pinned by constraints/cpu.txt (never a CUDA-only extra, never vllm/flash-attn);
#   - then this package in editable mode with its test extra, under the same constraints plus
#     constraints/cpu-lock.txt (exact versions of a working environment: a fresh resolve of verl's wide ranges
#     backtracks for many minutes).
# Idempotent: the stamp file records the hash of the install inputs; an unchanged tree re-installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
VENV=.venv
STAMP="$VENV/.calibrl-install-stamp"
inputs_hash=$(cat setup.py constraints/cpu.txt constraints/cpu-lock.txt | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$inputs_hash" ]; then
  exit 0
fi
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "bootstrap: $PYTHON not found; set PYTHON=/path/to/python3.11 (verl 0.9.1 and this project need Python >= 3.10)" >&2
  exit 1
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
# pip's own exit status decides (pipefail); the filter only drops the local-index notices of this workplace.
pip_install() {
  "$VENV/bin/python" -m pip --disable-pip-version-check -q install "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }
}
echo "bootstrap: installing torch/torchvision (constraints/cpu.txt)"
pip_install -r constraints/cpu.txt -c constraints/cpu.txt
echo "bootstrap: installing calibrl (editable) with verl 0.9.1 and test tools"
pip_install -e ".[test,study]" -c constraints/cpu.txt -c constraints/cpu-lock.txt
"$VENV/bin/python" - <<'PY'
import importlib, sys
for mod in ("torch", "torchvision", "verl", "calibrl_ext", "qwen_vl_utils", "math_verify", "pytest", "matplotlib"):
    try:
        importlib.import_module(mod)
    except Exception as exc:  # the environment is unusable: say which module and why
        sys.exit(f"bootstrap: import {mod} failed after install: {exc!r}")
PY
echo "$inputs_hash" > "$STAMP"
echo "bootstrap: .venv ready"
