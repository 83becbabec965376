# The two commands of the README. Both set up .venv/ first (idempotent; see scripts/bootstrap_venv.sh).
.PHONY: setup demo test

setup:
	bash scripts/bootstrap_venv.sh

demo: setup
	bash examples/run_cpu_demo.sh

test: setup
	bash scripts/run_tests.sh
