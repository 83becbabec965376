# The two commands of the README. Both set up .venv/ first (idempotent; see scripts/bootstrap_venv.sh).
# `make test` also builds the vLLM-on-CPU environment .venv-vllm/ (scripts/bootstrap_vllm_venv.sh) and runs
# tests/vllm/ with it; `ROLLOUT=vllm make demo` runs the demo's rollouts through verl's vLLM server on CPU.
.PHONY: setup setup-vllm demo test

ROLLOUT ?= hf

setup:
	bash scripts/bootstrap_venv.sh

setup-vllm:
	bash scripts/bootstrap_vllm_venv.sh

demo: setup
ifeq ($(ROLLOUT),vllm)
	bash scripts/bootstrap_vllm_venv.sh
endif
	ROLLOUT=$(ROLLOUT) bash examples/run_cpu_demo.sh

# .venv-vllm/ is built in run_tests.sh's background lane, while the main part of the suite runs.
test: setup
	CALIBRL_VLLM_BOOTSTRAP=1 bash scripts/run_tests.sh
