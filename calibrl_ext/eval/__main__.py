"""Evaluation reports from the command line.

    python -m calibrl_ext.eval report --run-dir outputs/eval/calibrl_7b
    python -m calibrl_ext.eval report --generations ckpt/val_dumps --val-files data/bench/*.parquet --out reports/step200
    python -m calibrl_ext.eval compare outputs/eval/grpo outputs/eval/calibrl outputs/eval/luffy \\
        --names GRPO,CalibRL,LUFFY --out outputs/eval/compare
    python -m calibrl_ext.eval check data/bench/*.parquet     # are these evaluation parquets?

``report`` reads ``<run-dir>/run.json`` (written by examples/eval.sh: checkpoint, sampling, val files) and
the validation dump in ``<run-dir>/generations``; both can be given explicitly for any verl run that
validated on parquets from data_prep/build_benchmarks.py with calibrl_ext.reward as the reward.
Exit status: 0 written; 2 bad arguments or inputs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from calibrl_ext.eval.report import MANIFEST_NAME, build_report, compare_runs, write_comparison, write_report
from calibrl_ext.eval.results import ResultsError, check_eval_parquets, load_run


def _report(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir) if args.run_dir else None
    manifest = {}
    if run_dir is not None and (run_dir / MANIFEST_NAME).is_file():
        manifest = json.loads((run_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    generations = args.generations or (run_dir / "generations" if run_dir else None)
    val_files = args.val_files or manifest.get("val_files")
    out = args.out or run_dir
    if generations is None or not val_files or out is None:
        raise ResultsError(
            "give --run-dir (a folder written by examples/eval.sh), or --generations, --val-files and --out"
        )
    results = load_run(generations, list(val_files), step=args.step, n=manifest.get("n"))
    paths = write_report(build_report(results, manifest), out)
    print((paths["markdown"]).read_text(encoding="utf-8"))
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


def _compare(args: argparse.Namespace) -> int:
    reports = []
    for run in args.runs:
        path = Path(run)
        path = path / "metrics.json" if path.is_dir() else path
        if not path.is_file():
            raise ResultsError(f"{run}: no metrics.json; run `python -m calibrl_ext.eval report --run-dir {run}` first")
        reports.append(json.loads(path.read_text(encoding="utf-8")))
    names = args.names.split(",") if args.names else [Path(r).name if Path(r).is_dir() else Path(r).parent.name for r in args.runs]
    if len(names) != len(reports):
        raise ResultsError(f"--names has {len(names)} names for {len(reports)} runs")
    paths = write_comparison(compare_runs(reports, names), args.out)
    print(paths["markdown"].read_text(encoding="utf-8"))
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0


def _check(args: argparse.Namespace) -> int:
    check_eval_parquets(args.files)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m calibrl_ext.eval", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    commands = parser.add_subparsers(dest="command", required=True)
    report = commands.add_parser("report", help="metrics.json / metrics.csv / report.md of one run")
    report.add_argument("--run-dir", help="folder written by examples/eval.sh (run.json, generations/)")
    report.add_argument("--generations", help="verl's trainer.validation_data_dir, or one <step>.jsonl in it")
    report.add_argument("--val-files", nargs="+", help="the evaluation parquets the run validated on")
    report.add_argument("--step", type=int, help="which validation step's dump (default: the latest)")
    report.add_argument("--out", help="output folder (default: --run-dir)")
    compare = commands.add_parser("compare", help="several runs side by side (the paper's main-table form)")
    compare.add_argument("runs", nargs="+", help="run folders (or their metrics.json)")
    compare.add_argument("--names", help="comma-separated column names, one per run (default: folder names)")
    compare.add_argument("--out", required=True, help="output folder for compare.md / compare.csv")
    check = commands.add_parser("check", help="exit 2 unless every file is an evaluation parquet (eval.sh runs it)")
    check.add_argument("files", nargs="+", help="parquet files")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return {"report": _report, "compare": _compare, "check": _check}[args.command](args)
    except (ResultsError, FileNotFoundError, json.JSONDecodeError) as error:
        print(f"python -m calibrl_ext.eval {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
