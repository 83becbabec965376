"""Step time of CalibRL against GRPO at equal n, and the wall time of a study, from a study's own runs.

The study (``python -m recipe.calibrl.study``) runs seed-major, so the ``calibrl`` and ``grpo`` runs of one seed run
back to back with the same data, model, batch and ``rollout.n`` (CalibRL adds its expert row to each group): the
runs alternate, and pairing them per seed cancels most of the drift of a shared host's load. For each seed this
prints the median ``timing_s/step`` of each mode (steps after the first, which carries one-off warm-up) and their
ratio, then the mean ratio over seeds (the issue's target: <= 1.05), and the study's wall time: the sum of the runs'
wall times and the span from the first run's start to the last run's end (``run.json``). Prints figures only;
nothing is asserted (timings depend on the host and its load)::

    python bench/study_step_time.py --out outputs/study [--mode calibrl --baseline grpo]

With ``--baseline-out`` the baseline's runs come from another study folder, paired by seed: e.g. GRPO at
``rollout_n = n + 1`` (``--set modes=grpo --set rollout_n=5``) against CalibRL's n rollouts + 1 expert row, the
comparison at equal rows per group. Those runs did not alternate with the numerator's, so host drift between the
two studies enters the ratio; ``--mode lam=0.05`` (any arm of the numerator's cost, e.g. one run in the same
session as the baseline) picks another arm than the mode arm.
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
from recipe.calibrl.settings import EXPERT_MODES  # noqa: E402
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


def arm_runs(out: Path, arm: str) -> tuple[dict[int, Path], dict, str]:
    """``{seed: metrics.jsonl}`` of the existing runs of ``arm`` in the study folder ``out``, the folder's preset and
    the arm's ``calibrl.mode``. ``arm`` is a mode label (``grpo``) or ``GROUP=LABEL`` (``lam=0.05``, ``alpha=1``:
    an arm of the same cost as its mode, run at another time). Raises LookupError naming the folder's arms when it
    has no such arm."""
    manifest = json.loads((out / "study.json").read_text())
    group, label = arm.split("=", 1) if "=" in arm else ("mode", arm)
    found = [a for a in manifest["arms"] if a["group"] == group and a["label"] == label]
    if not found:
        known = sorted(a["label"] if a["group"] == "mode" else f"{a['group']}={a['label']}" for a in manifest["arms"])
        raise LookupError(f"{out} has no arm {arm!r}; its arms: {known}")
    stem = found[0]["run_stem"]
    files = {seed: out / "runs" / f"{stem}-s{seed}" / METRICS_FILE for seed in manifest["preset"]["seeds"]}
    existing = {seed: path for seed, path in files.items() if path.exists()}
    return existing, manifest["preset"], found[0]["setting"]["mode"]


def rows_per_group(mode: str, preset: dict) -> str:
    """``n`` rollouts, plus the expert row of the modes whose groups get one (``settings.EXPERT_MODES``)."""
    return f"{preset['rollout_n']} rollouts" + (" + 1 expert row" if mode in EXPERT_MODES else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="a study folder (study.json, runs/)")
    parser.add_argument("--mode", default="calibrl",
                        help="arm whose step time is the numerator: a mode, or GROUP=LABEL such as lam=0.05")
    parser.add_argument("--baseline", default="grpo", help="arm whose step time is the denominator (same forms)")
    parser.add_argument("--baseline-out", default=None,
                        help="study folder of the baseline's runs (default --out), e.g. a grpo study at another "
                             "rollout_n; its runs are paired with --out's by seed")  # fmt: skip
    args = parser.parse_args(argv)
    out = Path(args.out)
    baseline_out = Path(args.baseline_out) if args.baseline_out else out
    try:
        mine, preset, mode = arm_runs(out, args.mode)
        theirs, baseline_preset, baseline_mode = arm_runs(baseline_out, args.baseline)
    except LookupError as error:
        print(f"study_step_time: {error}", file=sys.stderr)
        return 2
    print(f"{args.mode}: {rows_per_group(mode, preset)} a group ({out}); "
          f"{args.baseline}: {rows_per_group(baseline_mode, baseline_preset)} a group ({baseline_out})")
    ratios = []
    print(f"{'seed':>4}  {args.mode + ' s/step':>16}  {args.baseline + ' s/step':>16}  ratio")
    for seed in preset["seeds"]:
        times = (median_step_time(mine[seed]) if seed in mine else None,
                 median_step_time(theirs[seed]) if seed in theirs else None)  # fmt: skip
        if None in times:
            print(f"{seed:>4}  (a run of this seed is missing or has no step after warm-up)")
            continue
        ratio = times[0] / times[1]
        ratios.append(ratio)
        print(f"{seed:>4}  {times[0]:>16.2f}  {times[1]:>16.2f}  {ratio:.3f}")
    if ratios:
        spread = f" ± {statistics.stdev(ratios):.3f} (sample std)" if len(ratios) > 1 else ""
        print(f"step time {args.mode} / {args.baseline}: {statistics.fmean(ratios):.3f}{spread} over "
              f"{len(ratios)} seed(s); target <= 1.05")  # fmt: skip
    if mine and theirs:
        phases = {args.mode: phase_medians(list(mine.values())), args.baseline: phase_medians(list(theirs.values()))}
        keys = sorted(k for k in set(phases[args.mode]) | set(phases[args.baseline])
                      if max(phases[args.mode].get(k, 0.0), phases[args.baseline].get(k, 0.0)) >= PHASE_MIN_S)  # fmt: skip
        print("\nwhere the time goes (median s over steps after warm-up, all seeds):")
        print(f"{'phase':<28}  {args.mode:>10}  {args.baseline:>10}  {'difference':>10}")
        for key in keys:
            a, b = phases[args.mode].get(key), phases[args.baseline].get(key)
            difference = f"{a - b:+10.3f}" if a is not None and b is not None else f"{'-':>10}"
            print(f"{key:<28}  {a if a is not None else float('nan'):>10.3f}  "
                  f"{b if b is not None else float('nan'):>10.3f}  {difference}")  # fmt: skip
    records = [json.loads(p.read_text()) for p in sorted((out / "runs").glob(f"*/{RUN_RECORD_FILE}"))]
    if records:
        total = sum(r["wall_s"] for r in records)
        span = max(r["started_unix"] + r["wall_s"] for r in records) - min(r["started_unix"] for r in records)
        print(f"study wall time ({out}): {len(records)} runs, {total / 60:.1f} min of runs, {span / 60:.1f} min first "
              f"start to last end (includes any pause between resumed invocations)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
