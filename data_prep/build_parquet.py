#!/usr/bin/env python
"""Build verl train/val parquet for CalibRL from multimodal datasets and expert solutions.

With no arguments it writes the embedded demo dataset to data/demo/{train,val}.parquet.
The library behind it is calibrl_ext.data; docs/data_prep.md documents the schema and every case
of the rejects file.
"""

from __future__ import annotations

import argparse
import logging
import sys

from calibrl_ext.data import PRESETS, BuildConfig, BuildError, ColumnMapping, ConfigError, DemoConfig, build
from calibrl_ext.data.config import (
    DEMO_OUT_DIR,
    EXPERT_FORMAT_POLICIES,
    FAILING_EXPERT_POLICIES,
    MISSING_EXPERT_POLICIES,
    OVERLONG_EXPERT_POLICIES,
)
from calibrl_ext.data.images import DEFAULT_RESIZE_FACTOR
from calibrl_ext.data.writer import DEFAULT_ROW_GROUP_BYTES, DEFAULT_ROW_GROUP_ROWS

EXAMPLES = """\
examples:
  # the embedded demo dataset (default): data/demo/train.parquet + data/demo/val.parquet
  python data_prep/build_parquet.py

  # ViRL39K (parquet + unzipped images/ beside it) with GPT-4o solutions joined on qid
  python data_prep/build_parquet.py --input /data/ViRL39K/39Krelease.parquet --preset virl39k \\
      --expert-file /data/virl_gpt4o.jsonl --expert-id-col qid --expert-file-col response \\
      --out data/virl --num-proc 8 --max-pixels 1003520

  # geometry3k saved with save_to_disk (DatasetDict): train split, and test as validation
  python data_prep/build_parquet.py --input /data/geo3k --input-split train --preset geometry3k --out data/geo3k
  python data_prep/build_parquet.py --val-input /data/geo3k --input-split test --preset geometry3k --out data/geo3k_val

  # JSONL + an image folder, custom columns, with an overlong check against the model's tokenizer
  python data_prep/build_parquet.py --input my.jsonl --image-root /data/imgs --question-col q \\
      --answer-col gt --image-col img --expert-col cot --out data/mine --tokenizer /models/Qwen2.5-VL-7B-Instruct

exit status: 0 built; 1 nothing usable was written (every row rejected); 2 bad flag or input (nothing read).
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="build_parquet.py",
        description=(
            "Turn multimodal datasets + expert solutions into verl parquet for CalibRL. Every input row is either "
            "written or listed with its reason and fix in <out>/rejects.jsonl; <out>/summary.json has the counts. "
            f"With no --input, builds the embedded demo dataset into {DEMO_OUT_DIR}."
        ),
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    inputs = parser.add_argument_group("inputs")
    inputs.add_argument(
        "--input",
        action="append",
        default=[],
        metavar="PATH",
        help="dataset to convert, split train/val by --val-ratio (repeatable): a save_to_disk folder, "
        ".parquet/.arrow file or folder, .jsonl or .json. e.g. --input /data/ViRL39K/39Krelease.parquet",
    )
    inputs.add_argument(
        "--val-input",
        action="append",
        default=[],
        metavar="PATH",
        help="dataset whose rows ALL go to val.parquet (repeatable). e.g. --val-input /data/geo3k_test.parquet",
    )
    inputs.add_argument(
        "--input-split",
        metavar="NAME",
        help="split to read from a save_to_disk DatasetDict folder. e.g. --input-split train",
    )
    inputs.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        metavar="NAME",
        help="known column layout: "
        + "; ".join(f"{p.name}: {p.description}" for p in PRESETS.values())
        + ". e.g. --preset virl39k",
    )
    inputs.add_argument(
        "--question-col", metavar="COL", help="question column (text or chat messages). e.g. --question-col problem"
    )
    inputs.add_argument(
        "--answer-col",
        metavar="COL",
        help="ground-truth column; dotted paths reach into structs. e.g. --answer-col reward_model.ground_truth",
    )
    inputs.add_argument(
        "--image-col",
        metavar="COL",
        help="image column: bytes, {bytes,path}, path string, or a list of them. e.g. --image-col image",
    )
    inputs.add_argument(
        "--expert-col",
        metavar="COL",
        help="expert-solution column: string, chat messages or {content}. e.g. --expert-col target",
    )
    inputs.add_argument(
        "--id-col", metavar="COL", help="stable row id column (needed by --expert-file). e.g. --id-col qid"
    )
    inputs.add_argument(
        "--split-col",
        metavar="COL",
        help="column holding train/val/validation/test/dev; overrides --val-ratio. e.g. --split-col split",
    )
    inputs.add_argument(
        "--data-source-col", metavar="COL", help="per-row data_source column. e.g. --data-source-col source"
    )
    inputs.add_argument(
        "--keep-col",
        action="append",
        default=[],
        metavar="COL",
        help="column copied into extra_info as a string (repeatable). e.g. --keep-col category",
    )
    inputs.add_argument(
        "--image-root",
        metavar="DIR",
        help="folder relative image paths resolve against (default: each input's folder). "
        "e.g. --image-root /data/ViRL39K",
    )
    inputs.add_argument(
        "--expert-file",
        metavar="PATH",
        help="JSONL/JSON/parquet of expert solutions joined on --id-col (overrides --expert-col). "
        "e.g. --expert-file gpt4o.jsonl",
    )
    inputs.add_argument(
        "--expert-id-col",
        default="id",
        metavar="COL",
        help="id column of --expert-file (default: %(default)s). e.g. --expert-id-col qid",
    )
    inputs.add_argument(
        "--expert-file-col",
        metavar="COL",
        help="expert column of --expert-file (default: first of expert_solution, solution, target). "
        "e.g. --expert-file-col response",
    )
    inputs.add_argument("--limit", type=int, metavar="N", help="stop after N input rows (smoke runs). e.g. --limit 200")

    output = parser.add_argument_group("output")
    output.add_argument(
        "--out",
        metavar="DIR",
        help=f"output folder for train.parquet, val.parquet, rejects.jsonl, summary.json (default for the "
        f"demo: {DEMO_OUT_DIR}; required with --input). e.g. --out data/virl",
    )
    output.add_argument(
        "--data-source",
        metavar="NAME",
        help="data_source value (default: the preset's, else the input's name). e.g. --data-source virl39k",
    )
    output.add_argument(
        "--ability",
        default="math",
        metavar="NAME",
        help="ability column (default: %(default)s). e.g. --ability geometry",
    )
    output.add_argument(
        "--prompt-template",
        metavar="TEXT",
        help="user-text template holding {question} once (default: the question, a blank line, the paper's "
        "instruction suffix). e.g. --prompt-template '{question} Answer inside <answer></answer>.'",
    )
    output.add_argument(
        "--val-ratio",
        type=float,
        default=0.05,
        metavar="F",
        help="share of --input rows hashed into val (default: %(default)s; 0 = no val file). e.g. --val-ratio 0.02",
    )
    output.add_argument(
        "--split-seed",
        type=int,
        default=0,
        metavar="N",
        help="seed of the train/val hash (default: %(default)s). e.g. --split-seed 1",
    )
    output.add_argument(
        "--row-group-rows",
        type=int,
        default=DEFAULT_ROW_GROUP_ROWS,
        metavar="N",
        help="rows per parquet row group, at most (default: %(default)s). e.g. --row-group-rows 128",
    )
    output.add_argument(
        "--row-group-mb",
        type=int,
        default=DEFAULT_ROW_GROUP_BYTES // 2**20,
        metavar="MB",
        help="buffered MiB that close a row group early (default: %(default)s). e.g. --row-group-mb 32",
    )

    checks = parser.add_argument_group("validation")
    checks.add_argument(
        "--allow-text-only",
        action="store_true",
        help="keep rows without images (default: reject them as no_images). e.g. --allow-text-only",
    )
    checks.add_argument(
        "--keep-boxed-answer",
        action="store_true",
        help="keep a \\boxed{X} ground truth as is (default: unwrap it to X). e.g. --keep-boxed-answer",
    )
    checks.add_argument(
        "--missing-expert",
        choices=MISSING_EXPERT_POLICIES,
        default="keep",
        help="row without expert: keep it flagged (trains as plain GRPO) or drop it (default: %(default)s). "
        "e.g. --missing-expert drop",
    )
    checks.add_argument(
        "--expert-format",
        choices=EXPERT_FORMAT_POLICIES,
        default="rewrap",
        help="expert not in <think>…</think><answer>…</answer>: rewrap it (from an <answer> tag or a final "
        "\\boxed{}) or reject the row (default: %(default)s). e.g. --expert-format reject",
    )
    checks.add_argument(
        "--failing-expert",
        choices=FAILING_EXPERT_POLICIES,
        default="blank",
        help="expert whose answer fails the reward: blank (row kept without it, so its group trains as plain "
        "GRPO as the released pass_ratio 0 did; text kept in extra_info.failed_expert), keep (used anyway, "
        "flagged expert_pass false) or drop the row (default: %(default)s). e.g. --failing-expert keep",
    )
    checks.add_argument(
        "--max-experts",
        type=int,
        default=1,
        metavar="K",
        help="keep up to K expert solutions per prompt: the expert column is read as a list (a string counts as "
        "one) and an --expert-file keeps every row of an id; each expert is checked like a single one, a rejected "
        "expert is logged in expert_rejects.jsonl and the others kept, and the kept ones are written to the list "
        "column expert_solutions (expert_solution = the first). 1 = one expert, schema unchanged "
        "(default: %(default)s). e.g. --max-experts 2",
    )
    checks.add_argument(
        "--skip-expert-check",
        action="store_true",
        help="do not score experts with the reward (status unchecked, expert_pass true). e.g. --skip-expert-check",
    )
    checks.add_argument(
        "--keep-duplicates",
        action="store_true",
        help="keep rows repeating an earlier question+images or id (default: reject). e.g. --keep-duplicates",
    )
    checks.add_argument(
        "--tokenizer",
        metavar="PATH",
        help="local model folder: reject prompts over --max-prompt-length tokens (image tokens counted when "
        "it has a processor) and count expert tokens. e.g. --tokenizer /models/Qwen2.5-VL-7B-Instruct",
    )
    checks.add_argument(
        "--max-prompt-length",
        type=int,
        default=20480,
        metavar="N",
        help="prompt token limit with --tokenizer (default: %(default)s, the released recipe). "
        "e.g. --max-prompt-length 4096",
    )
    checks.add_argument(
        "--max-response-length",
        type=int,
        default=4096,
        metavar="N",
        help="expert token limit (EOS included) with --tokenizer (default: %(default)s). "
        "e.g. --max-response-length 2048",
    )
    checks.add_argument(
        "--overlong-expert",
        choices=OVERLONG_EXPERT_POLICIES,
        default="keep",
        help="expert over --max-response-length: keep it (the recipe truncates, as released) or reject the "
        "row (default: %(default)s). e.g. --overlong-expert reject",
    )

    speed = parser.add_argument_group("images and speed")
    speed.add_argument(
        "--min-pixels", type=int, metavar="N", help="upscale images below N pixels. e.g. --min-pixels 3136"
    )
    speed.add_argument(
        "--max-pixels",
        type=int,
        metavar="N",
        help="downscale images above N pixels (others keep their original bytes). e.g. --max-pixels 1003520",
    )
    speed.add_argument(
        "--resize-factor",
        type=int,
        default=DEFAULT_RESIZE_FACTOR,
        metavar="N",
        help="resized sides are multiples of N (default: %(default)s = Qwen2.5-VL patch 14 x merge 2). "
        "e.g. --resize-factor 32",
    )
    speed.add_argument(
        "--num-proc",
        type=int,
        default=1,
        metavar="N",
        help="processes for image/expert/token work (default: %(default)s = in-process). e.g. --num-proc 8",
    )
    speed.add_argument(
        "--chunk-rows",
        type=int,
        default=64,
        metavar="N",
        help="rows per unit of work handed to a process (default: %(default)s). e.g. --chunk-rows 32",
    )
    speed.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI). e.g. --no-progress")

    demo = parser.add_argument_group("embedded demo dataset (used when no --input/--val-input is given)")
    defaults = DemoConfig()
    demo.add_argument(
        "--demo-rows",
        type=int,
        default=defaults.rows,
        metavar="N",
        help="rows generated, train + val (default: %(default)s). e.g. --demo-rows 64",
    )
    demo.add_argument(
        "--demo-val-rows",
        type=int,
        default=defaults.val_rows,
        metavar="N",
        help="rows of them marked val (default: %(default)s). e.g. --demo-val-rows 16",
    )
    demo.add_argument(
        "--demo-seed",
        type=int,
        default=defaults.seed,
        metavar="N",
        help="seed; same seed and flags give byte-identical files (default: %(default)s). e.g. --demo-seed 1",
    )
    demo.add_argument(
        "--demo-min-side",
        type=int,
        default=defaults.min_side,
        metavar="PX",
        help="smallest image side, rounded up to a multiple of 28 (default: %(default)s). e.g. --demo-min-side 28",
    )
    demo.add_argument(
        "--demo-max-side",
        type=int,
        default=defaults.max_side,
        metavar="PX",
        help="largest image side (default: %(default)s). e.g. --demo-max-side 224",
    )
    demo.add_argument(
        "--demo-missing-expert-ratio",
        type=float,
        default=defaults.missing_expert_ratio,
        metavar="F",
        help="share of demo rows generated without an expert (default: %(default)s). "
        "e.g. --demo-missing-expert-ratio 0.1",
    )
    demo.add_argument(
        "--demo-experts",
        type=int,
        default=defaults.experts_per_row,
        metavar="K",
        help="correct expert solutions per demo row, each worded differently (default: %(default)s); build them "
        "with --max-experts K. e.g. --demo-experts 2 --max-experts 2",
    )
    demo.add_argument(
        "--demo-kinds",
        default=",".join(defaults.kinds),
        metavar="K1,K2",
        help="comma-separated problem kinds, cycled in order (default: %(default)s; also: shape_colour, the "
        "study's learnable task). e.g. --demo-kinds shape_colour",
    )
    return parser


def config_from_args(args: argparse.Namespace) -> BuildConfig:
    """Map parsed flags onto :class:`BuildConfig` (one flag, one field)."""
    mapping = ColumnMapping(
        question=args.question_col,
        answer=args.answer_col,
        images=args.image_col,
        expert=args.expert_col,
        id=args.id_col,
        split=args.split_col,
        data_source=args.data_source_col,
        keep=tuple(args.keep_col),
    )
    config = BuildConfig(
        inputs=list(args.input),
        val_inputs=list(args.val_input),
        input_split=args.input_split,
        preset=args.preset,
        mapping=mapping,
        image_root=args.image_root,
        expert_file=args.expert_file,
        expert_file_id_col=args.expert_id_col,
        expert_file_col=args.expert_file_col,
        max_experts=args.max_experts,
        limit=args.limit,
        out_dir=args.out,
        data_source=args.data_source,
        ability=args.ability,
        val_ratio=args.val_ratio,
        split_seed=args.split_seed,
        row_group_rows=args.row_group_rows,
        row_group_bytes=args.row_group_mb * 2**20,
        allow_text_only=args.allow_text_only,
        unwrap_boxed_answer=not args.keep_boxed_answer,
        missing_expert=args.missing_expert,
        expert_format=args.expert_format,
        failing_expert=args.failing_expert,
        skip_expert_check=args.skip_expert_check,
        keep_duplicates=args.keep_duplicates,
        tokenizer=args.tokenizer,
        max_prompt_length=args.max_prompt_length,
        max_response_length=args.max_response_length,
        overlong_expert=args.overlong_expert,
        min_pixels=args.min_pixels,
        max_pixels=args.max_pixels,
        resize_factor=args.resize_factor,
        num_proc=args.num_proc,
        chunk_rows=args.chunk_rows,
        progress=not args.no_progress,
        demo=DemoConfig(
            rows=args.demo_rows,
            val_rows=args.demo_val_rows,
            seed=args.demo_seed,
            min_side=args.demo_min_side,
            max_side=args.demo_max_side,
            missing_expert_ratio=args.demo_missing_expert_ratio,
            experts_per_row=args.demo_experts,
            kinds=tuple(kind.strip() for kind in args.demo_kinds.split(",") if kind.strip()),
        ),
    )
    if args.prompt_template is not None:
        config.prompt_template = args.prompt_template
    return config


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        summary = build(config_from_args(args))
    except (ConfigError, ImportError) as error:
        print(f"build_parquet.py: error: {error}", file=sys.stderr)
        return 2
    except BuildError as error:
        print(f"build_parquet.py: {error}", file=sys.stderr)
        return 1
    print(summary.format())
    return 0


if __name__ == "__main__":
    sys.exit(main())
