#!/usr/bin/env python
"""Build verl validation parquet for the paper's evaluation benchmarks (one benchmark per call).

The sibling of build_parquet.py for evaluation data. The library behind it is calibrl_ext.eval
(adapters, answer specs); docs/evaluation.md says how to put each benchmark on disk and what each
adapter does with the benchmark's schema traps.
"""

from __future__ import annotations

import argparse
import json
import sys

from calibrl_ext.data import DEFAULT_PROMPT_TEMPLATE
from calibrl_ext.eval.adapters import BENCHMARKS, PLACEHOLDER_POLICIES
from calibrl_ext.eval.build import BenchmarkBuildConfig, BenchmarkBuildError, build_benchmark

EXAMPLES = """\
examples (paths are where docs/evaluation.md puts the official files):
  python data_prep/build_benchmarks.py --benchmark mathvista  --input /data/MathVista/data/testmini.json --image-root /data/MathVista/data --out data/bench
  python data_prep/build_benchmarks.py --benchmark mathverse  --input /data/MathVerse/testmini.json --image-root /data/MathVerse/images --out data/bench
  python data_prep/build_benchmarks.py --benchmark mathverse  --input /data/MathVerse/testmini_text_only.json --split testmini_text_only --out data/bench
  python data_prep/build_benchmarks.py --benchmark mathvision --input /data/MATH-V/data/test.jsonl --image-root /data/MATH-V --out data/bench
  python data_prep/build_benchmarks.py --benchmark wemath     --input /data/We-Math/data/testmini.json --image-root /data/We-Math/data --out data/bench
  python data_prep/build_benchmarks.py --benchmark logicvista --input /data/LogicVista/data/dataset.json --image-root /data/LogicVista/data/images --out data/bench
  python data_prep/build_benchmarks.py --benchmark dynamath   --input /data/DynaMath_Sample --input-split all --out data/bench
  python data_prep/build_benchmarks.py --benchmark math500    --input /data/MATH-500/test.jsonl --out data/bench
  python data_prep/build_benchmarks.py --benchmark amc        --input /data/aimo-validation-amc --out data/bench

exit status: 0 built; 1 nothing usable was written (every record rejected); 2 bad flag or input (nothing read).
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="build_benchmarks.py",
        description=(
            "Turn one evaluation benchmark into verl validation parquet (<out>/<name>.parquet). Every record is "
            "either written or listed with its reason in <out>/<name>.rejects.jsonl; <out>/<name>.summary.json "
            "has the counts."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--benchmark", required=True, choices=sorted(BENCHMARKS), help="which benchmark --input holds")
    parser.add_argument("--input", required=True, metavar="PATH",
                        help=".json (dict or list), .jsonl, .parquet (file or folder), or a save_to_disk folder")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--image-root", metavar="DIR",
                        help="folder relative image paths resolve against (default: the input's folder)")
    parser.add_argument("--split", metavar="NAME",
                        help="split label for data_source and extra_info.split (default: the benchmark's, e.g. testmini)")
    parser.add_argument("--input-split", action="append", default=[], metavar="NAME",
                        help="split(s) to read from a save_to_disk DatasetDict; repeat, or 'all'")
    parser.add_argument("--name", metavar="STEM", help="output file stem (default <benchmark>_<split>)")
    parser.add_argument("--prompt-template", default=DEFAULT_PROMPT_TEMPLATE,
                        help="user-text template holding {question} once (default: the training template, the "
                             "question then the paper's <think>/<answer> instruction)")
    parser.add_argument("--use-official-query", action="store_true",
                        help="question from MathVista 'query' / MathVerse 'query_cot' instead of question + choices")
    parser.add_argument("--mathvision-placeholders", choices=PLACEHOLDER_POLICIES, default="keep",
                        help="MATH-V's <image1>..<image7> markers over one composite image: keep (default) or strip")
    parser.add_argument("--max-pixels", type=int, help="shrink images above this many pixels (default: never)")
    parser.add_argument("--min-pixels", type=int, help="enlarge images below this many pixels (default: never)")
    parser.add_argument("--limit", type=int, help="stop after this many input records (smoke runs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    config = BenchmarkBuildConfig(
        benchmark=args.benchmark,
        input=args.input,
        out_dir=args.out,
        image_root=args.image_root,
        split=args.split,
        input_splits=args.input_split,
        name=args.name,
        prompt_template=args.prompt_template,
        use_official_query=args.use_official_query,
        mathvision_placeholders=args.mathvision_placeholders,
        max_pixels=args.max_pixels,
        min_pixels=args.min_pixels,
        limit=args.limit,
    )
    try:
        summary = build_benchmark(config)
    except (BenchmarkBuildError, FileNotFoundError, ValueError) as error:
        print(f"build_benchmarks.py: error: {error}", file=sys.stderr)
        return 2
    print(
        f"{summary.benchmark} ({summary.split}): {summary.rows_written} rows -> {summary.parquet}; "
        f"{summary.records_read - summary.rows_written} rejected -> {summary.rejects_file} {json.dumps(summary.rejected)}"
    )
    print(f"rows per data_source: {json.dumps(summary.rows_per_data_source)}")
    print(f"licence: {summary.licence}")
    if summary.rows_written == 0:
        print(f"build_benchmarks.py: every record was rejected; see {summary.rejects_file}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
