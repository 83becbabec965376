"""Step time of CalibRL against GRPO at equal n, and the wall time of a study, from a study's own runs.

The study (``python -m recipe.calibrl.study``) runs seed-major, so the ``calibrl`` and ``grpo`` runs of one seed run
back to back with the same data, model, batch and ``rollout.n`` (CalibRL adds its expert row to each group): the
runs alternate, and pairing them per seed cancels most of the drift of a shared host's load. For each seed this
prints the median ``timing_s/step`` of each mode (steps after the first, which carries one-off warm-up) and their
ratio, then the mean ratio over seeds (the issue's target: <= 1.05), and the study's wall time: the sum of the runs'
wall times and the span from the first run's start to the last run's end (``run.json``). Prints figures only;
nothing is asserted (timings depend on the host and its load)::

    python bench/study_step_time.py --out outputs/study [--mode calibrl --baseline grpo]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from calibrl_ext.cpu_backend.launcher import read_metrics  # noqa: E402
from recipe.calibrl.study.metrics import run_curves  # noqa: E402
from recipe.calibrl.study.runner import METRICS_FILE, RUN_RECORD_FILE  # noqa: E402

#: Training steps left out of the step-time median (the first carries one-off warm-up: compile, caches).
WARM_UP_STEPS = 1
RUN_NAME = re.compile(r"^(?P<setting>.+)-s(?P<seed>\d+)$")


def median_step_time(metrics: Path) -> float | None:
    """Median ``timing_s/step`` over the training steps after the first WARM_UP_STEPS (None when there are none)."""
    times = run_curves(read_metrics(metrics))["step_time"]
    kept = [times[s] for s in sorted(times)[WARM_UP_STEPS:]]
    return statistics.median(kept) if kept else None


#: Phases shown in the breakdown: those whose median is at least this many seconds in either mode.
PHASE_MIN_S = 0.01


def phase_medians(metrics_files: list[Path]) -> dict[str, float]:
    """Median of every ``timing_s/<phase>`` over the training steps after warm-up of all ``metrics_files``."""
    values: dict[str, list[float]] = {}
    for path in metrics_files:
        records = read_metrics(path)
        first = min((r["step"] for r in records if "timing_s/step" in r["data"]), default=0)
        for record in records:
            if record["step"] < first + WARM_UP_STEPS:
                continue
            for key, value in record["data"].items():
                if key.startswith("timing_s/") and isinstance(value, (int, float)):
                    values.setdefault(key, []).append(float(value))
    return {key: statistics.median(v) for key, v in values.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="a study folder (study.json, runs/)")
    parser.add_argument("--mode", default="calibrl", help="mode whose step time is the numerator")
    parser.add_argument("--baseline", default="grpo", help="mode whose step time is the denominator")
    args = parser.parse_args(argv)
    out = Path(args.out)
    manifest = json.loads((out / "study.json").read_text())
    mode_arms = {a["label"]: a["run_stem"] for a in manifest["arms"] if a["group"] == "mode"}
    missing = [m for m in (args.mode, args.baseline) if m not in mode_arms]
    if missing:
        print(f"study_step_time: {out} has no mode arm {missing}; its mode arms: {sorted(mode_arms)}", file=sys.stderr)
        return 2
    ratios = []
    print(f"{'seed':>4}  {args.mode + ' s/step':>16}  {args.baseline + ' s/step':>16}  ratio")
    for seed in manifest["preset"]["seeds"]:
        times = {m: median_step_time(out / "runs" / f"{mode_arms[m]}-s{seed}" / METRICS_FILE)
                 if (out / "runs" / f"{mode_arms[m]}-s{seed}" / METRICS_FILE).exists() else None
                 for m in (args.mode, args.baseline)}  # fmt: skip
        if None in times.values():
            print(f"{seed:>4}  (a run of this seed is missing or has no step after warm-up)")
            continue
        ratio = times[args.mode] / times[args.baseline]
        ratios.append(ratio)
        print(f"{seed:>4}  {times[args.mode]:>16.2f}  {times[args.baseline]:>16.2f}  {ratio:.3f}")
    if ratios:
        spread = f" ± {statistics.stdev(ratios):.3f} (sample std)" if len(ratios) > 1 else ""
        print(f"step time {args.mode} / {args.baseline}: {statistics.fmean(ratios):.3f}{spread} over "
              f"{len(ratios)} seed(s); target <= 1.05")  # fmt: skip
    files = {m: [f for seed in manifest["preset"]["seeds"]
                 if (f := out / "runs" / f"{mode_arms[m]}-s{seed}" / METRICS_FILE).exists()]
             for m in (args.mode, args.baseline)}  # fmt: skip
    if all(files.values()):
        phases = {m: phase_medians(f) for m, f in files.items()}
        keys = sorted(k for k in set(phases[args.mode]) | set(phases[args.baseline])
                      if max(phases[args.mode].get(k, 0.0), phases[args.baseline].get(k, 0.0)) >= PHASE_MIN_S)  # fmt: skip
        print("\nwhere the time goes (median s over steps after warm-up, all seeds):")
        print(f"{'phase':<28}  {args.mode:>10}  {args.baseline:>10}  {'difference':>10}")
        for key in keys:
            mine, theirs = phases[args.mode].get(key), phases[args.baseline].get(key)
            difference = f"{mine - theirs:+10.3f}" if mine is not None and theirs is not None else f"{'-':>10}"
            print(f"{key:<28}  {mine if mine is not None else float('nan'):>10.3f}  "
                  f"{theirs if theirs is not None else float('nan'):>10.3f}  {difference}")  # fmt: skip
    records = [json.loads(p.read_text()) for p in sorted((out / "runs").glob(f"*/{RUN_RECORD_FILE}"))]
    if records:
        total = sum(r["wall_s"] for r in records)
        span = max(r["started_unix"] + r["wall_s"] for r in records) - min(r["started_unix"] for r in records)
        print(f"study wall time: {len(records)} runs, {total / 60:.1f} min of runs, {span / 60:.1f} min first start "
              f"to last end (includes any pause between resumed invocations)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
