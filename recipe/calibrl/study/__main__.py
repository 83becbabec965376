"""``python -m recipe.calibrl.study --preset quick|full --out outputs/study [--set field=value ...]``.

Builds the demo data and the (warm-started) tiny model if missing, runs every incomplete run of the preset's grid
through the recipe on the CPU backend (finished runs are skipped: rerun the same command to resume), then writes
results.json, study.png and table.md under ``--out``. Exit code 0 when every run is complete, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from recipe.calibrl.study.grid import build_arms, build_runs, check_or_write_manifest, manifest
from recipe.calibrl.study.presets import PRESETS, StudyConfigError, apply_overrides

REPO_ROOT = Path(__file__).resolve().parents[3]
MANIFEST_FILE = "study.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m recipe.calibrl.study", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", choices=sorted(PRESETS), default="quick", help="study preset (presets.py)")
    parser.add_argument("--out", default="outputs/study", help="study folder (runs/, results.json, study.png, ...)")
    parser.add_argument(
        "--data-dir", default=None,
        help="demo parquet folder, built if missing (default: data/demo, or data/demo-<kinds> for the preset's "
        "data_kinds)",
    )  # fmt: skip
    parser.add_argument(
        "--set", dest="assignments", action="append", default=[], metavar="FIELD=VALUE",
        help="change one preset field, e.g. --set steps=4 --set seeds=0,1 --set modes=grpo,calibrl --set alphas=",
    )  # fmt: skip
    parser.add_argument("--list", action="store_true", help="print the preset, its arms and runs, run nothing")
    parser.add_argument("--report-only", action="store_true", help="rebuild the outputs from --out, run nothing")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    out = Path(args.out).resolve()
    try:
        preset = apply_overrides(PRESETS[args.preset], args.assignments)
        arms = build_arms(preset)
    except StudyConfigError as exc:
        print(f"study: {exc}", file=sys.stderr)
        return 2
    runs = build_runs(preset, arms)
    data = manifest(preset, arms, runs)
    if args.list:
        print(json.dumps(data, indent=1))
        return 0
    from recipe.calibrl.study.report import write_report

    if args.report_only:
        manifest_path = out / MANIFEST_FILE
        if not manifest_path.exists():
            print(f"study: {manifest_path} missing: --report-only needs a study folder", file=sys.stderr)
            return 2
        paths = write_report(out, json.loads(manifest_path.read_text()))
        print("\n".join(f"{kind}: {path}" for kind, path in paths.items()))
        return 0
    try:
        check_or_write_manifest(out / MANIFEST_FILE, data, args.preset)
    except StudyConfigError as exc:
        print(f"study: {exc}", file=sys.stderr)
        return 2

    import logging

    from recipe.calibrl.cpu_demo import build_demo_data, demo_data_dir, prepare_model
    from recipe.calibrl.study.grid import demo_experts
    from recipe.calibrl.study.runner import RunAssets, execute_runs

    from recipe.calibrl.study.report import budget_line

    changed = f" with --set {' '.join(args.assignments)}" if args.assignments else ""
    print(f"[study] preset {args.preset}{changed}: {budget_line(preset.as_dict())}; {len(arms)} arms, {len(runs)} runs "
          f"-> {out}", flush=True)  # fmt: skip
    data_dir = Path(args.data_dir or demo_data_dir(preset.data_kinds)).resolve()
    build_demo_data(data_dir, kinds=preset.data_kinds, experts_per_prompt=demo_experts(preset))
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")  # warm-start progress on stderr
    model = prepare_model(data_dir, warm_start=preset.warm_start, steps=preset.warm_start_steps)
    assets = RunAssets(data_dir=data_dir, model=model)
    started = time.monotonic()
    outcomes = execute_runs(preset, runs, assets, out / "runs", log=lambda line: print(line, flush=True),
                            cwd=REPO_ROOT)  # fmt: skip
    failed = [o for o in outcomes if o.status == "failed"]
    print(f"[study] finished in {time.monotonic() - started:.0f} s: "
          f"{sum(o.status == 'ok' for o in outcomes)} ran, {sum(o.status == 'skipped' for o in outcomes)} skipped, "
          f"{len(failed)} failed{' (' + ', '.join(o.run.name for o in failed) + ')' if failed else ''}")  # fmt: skip
    paths = write_report(out, data)
    print("\n".join(f"{kind}: {path}" for kind, path in paths.items()))
    print((out / "table.md").read_text())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
