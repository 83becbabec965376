"""Where the time of a CPU dry run goes: start-up milestones and the split of each training step.

Runs ``examples/run_tiny_cpu_grpo.sh`` (stock verl GRPO, tiny Qwen2.5-VL, demo data) with more steps, timestamps
every output line as it arrives, and prints:

- start-up: when each milestone line appeared (driver imports, Ray up, TaskRunner, actor worker, HF server,
  first weight push, first step);
- per step (from verl's own ``timing_s/*`` metrics): generation (includes the replay buffer's wait for the batch,
  i.e. up to one poll interval), old log-prob pass, advantage, actor update, weight push, and the rest;
- with ``--compare-verl-poll``, the same run with verl's built-in 2 s replay-buffer poll, to show the fixed wait
  the CPU overrides remove.

Prints figures only; nothing is asserted (timings depend on the host and its load)::

    python bench/cpu_step_bench.py --steps 4 [--compare-verl-poll]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "run_tiny_cpu_grpo.sh"
#: Output lines that mark start-up phases, in the order they appear (first match of each counts).
MILESTONES: tuple[tuple[str, str], ...] = (
    ("driver: python, hydra, verl imported", r"ray init kwargs"),
    ("Ray cluster up", r"Started a local Ray instance"),
    ("TaskRunner actor printing", r"\(TaskRunnerV1 pid="),
    ("actor worker (FSDP) process up", r"\(WorkerDict pid="),
    ("HF rollout server loaded", r"hf rollout server \d+:"),
    ("first weight push (trainer ready)", r"hf rollout: pushed"),
    ("step 1 done", r"step:1 - "),
)
#: verl's timing metrics of one step, in execution order.
STEP_PARTS: tuple[tuple[str, str], ...] = (
    ("generation + batch wait", "timing_s/gen"),
    ("old log-prob pass", "timing_s/old_log_prob"),
    ("reference log-prob", "timing_s/ref"),
    ("advantage", "timing_s/adv"),
    ("actor update", "timing_s/update_actor"),
    ("weight push to rollout", "timing_s/update_weights"),
)


def run_example(steps: int, out: Path, timeout_s: int, extra_overrides: list[str]) -> dict:
    """Run the example with ``extra_overrides``; return milestone times, per-step metrics and the wall time."""
    env = {**os.environ, "OUT": str(out), "STEPS": str(steps), "TIMEOUT_S": str(timeout_s)}
    started = time.monotonic()
    seen: dict[str, float] = {}
    step_done: dict[int, float] = {}
    proc = subprocess.Popen(
        ["bash", str(EXAMPLE), *extra_overrides],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=REPO,
    )
    for line in proc.stdout:
        now = time.monotonic() - started
        for name, pattern in MILESTONES:
            if name not in seen and re.search(pattern, line):
                seen[name] = now
        match = re.search(r"step:(\d+) - ", line)
        if match:
            step_done.setdefault(int(match.group(1)), now)
    returncode = proc.wait()
    metrics: dict[int, dict] = {}
    metrics_path = out / "metrics.jsonl"
    if metrics_path.exists():
        for line in metrics_path.read_text().splitlines():
            record = json.loads(line)
            metrics.setdefault(record["step"], {}).update(record["data"])
    wall = time.monotonic() - started
    return {"returncode": returncode, "wall": wall, "milestones": seen, "step_done": step_done, "metrics": metrics}


def verl_poll_overrides() -> list[str]:
    """Overrides that put verl's built-in replay buffer (fixed 2 s poll) back."""
    return ["trainer.v1.sampler.custom_sampler.path=null", "trainer.v1.sampler.custom_sampler.name=null",
            "trainer.v1.sampler.sampler_kwargs={}"]  # fmt: skip


def print_report(title: str, result: dict) -> None:
    print(f"\n== {title}: rc={result['returncode']}, wall {result['wall']:.1f} s")
    print("start-up (seconds since launch):")
    for name, _ in MILESTONES:
        if name in result["milestones"]:
            print(f"  {result['milestones'][name]:7.1f}  {name}")
    steps = sorted(s for s, d in result["metrics"].items() if "timing_s/step" in d)
    if not steps:
        print("  no training step logged")
        return
    print("per step (verl timing_s/*, seconds):")
    header = "  step  " + "".join(f"{label[:22]:>24}" for label, _ in STEP_PARTS) + f"{'rest':>8}{'step':>8}"
    print(header)
    for step in steps:
        data = result["metrics"][step]
        parts = [data.get(key, 0.0) or 0.0 for _, key in STEP_PARTS]
        total = data["timing_s/step"]
        print(f"  {step:4d}  " + "".join(f"{v:24.3f}" for v in parts) + f"{total - sum(parts):8.3f}{total:8.3f}")
    later = [result["metrics"][s]["timing_s/step"] for s in steps[1:]]
    if later:
        print(f"  mean step after warm-up: {statistics.mean(later):.2f} s over {len(later)} step(s)")
    first_step_end = result["step_done"].get(steps[0])
    if first_step_end is not None:
        print(f"  start-up until step 1 began: {first_step_end - result['metrics'][steps[0]]['timing_s/step']:.1f} s")
    last_step_end = result["step_done"].get(steps[-1])
    if last_step_end is not None:
        print(
            f"  after the last step line until exit (final validation, Ray and TransferQueue shutdown, cleanup): "
            f"{result['wall'] - last_step_end:.1f} s"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=4, help="training steps (default 4: 1 warm-up + 3 measured)")
    parser.add_argument("--out", default="outputs/bench_cpu_step", help="output root")
    parser.add_argument("--timeout", type=int, default=900, help="timeout of each run in seconds")
    parser.add_argument(
        "--compare-verl-poll", action="store_true", help="also run with verl's built-in 2 s replay-buffer poll"
    )
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()
    print(f"host: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (timings scale with load)")
    result = run_example(args.steps, out / "fast_poll", args.timeout, [])
    print_report("CPU overrides (0.1 s replay-buffer poll)", result)
    returncode = result["returncode"]
    if args.compare_verl_poll:
        slow = run_example(args.steps, out / "verl_poll", args.timeout, verl_poll_overrides())
        print_report("verl's built-in replay buffer (2 s poll)", slow)
        returncode = returncode or slow["returncode"]
    return returncode


if __name__ == "__main__":
    sys.exit(main())
