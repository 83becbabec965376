"""Build one benchmark's verl validation parquet (``data_prep/build_benchmarks.py`` is the CLI).

Per record: adapter (:mod:`calibrl_ext.eval.adapters`) -> answer-spec check against the gold ->
images read and verified (:func:`calibrl_ext.data.prepare_image`) -> prompt through the same template as
training (:func:`calibrl_ext.data.build_prompt_messages`) -> one parquet row. A record that fails any
step becomes one line of the rejects file with its reason and message; nothing is dropped silently.

Outputs in ``out_dir``: ``<name>.parquet``, ``<name>.rejects.jsonl``, ``<name>.summary.json``.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

from calibrl_ext import __version__
from calibrl_ext.data import (
    DEFAULT_PROMPT_TEMPLATE,
    ParquetStreamWriter,
    Reject,
    RejectLog,
    RejectReason,
    RowRejected,
    build_prompt_messages,
    prepare_image,
)
from calibrl_ext.data.prompts import validate_template
from calibrl_ext.data.schema import REWARD_STYLE
from calibrl_ext.eval.adapters import BENCHMARKS, PLACEHOLDER_POLICIES, AdapterContext, BenchmarkRow
from calibrl_ext.eval.schema import eval_id, eval_schema
from calibrl_ext.eval.sources import MalformedRecord, read_records

#: The ``ability`` column of every evaluation row.
ABILITY = "math"


class BenchmarkBuildError(ValueError):
    """A setting that cannot work; the message names the flag and the fix."""


@dataclass
class BenchmarkBuildConfig:
    """Settings of one benchmark build (each field is one CLI flag of ``build_benchmarks.py``).

    Attributes:
        benchmark: a key of :data:`calibrl_ext.eval.adapters.BENCHMARKS`.
        input: the benchmark as it lies on disk (see :mod:`calibrl_ext.eval.sources`).
        out_dir: output folder.
        image_root: folder that relative image paths resolve against. Default: the input's folder.
        split: split label (``extra_info.split``, ``data_source``). Default: the benchmark's.
        input_splits: splits to read from a save_to_disk DatasetDict (``["all"]`` for all).
        name: output file stem. Default ``<benchmark>_<split>``.
        prompt_template: user-text template with ``{question}`` (default: training's template).
        use_official_query: use MathVista ``query`` / MathVerse ``query_cot`` as the question.
        mathvision_placeholders: ``keep`` or ``strip`` MATH-V's ``<imageN>`` markers.
        max_pixels / min_pixels: resize images outside these bounds (default: never resize).
        limit: stop after this many input records (smoke runs).
    """

    benchmark: str
    input: str
    out_dir: str
    image_root: str | None = None
    split: str | None = None
    input_splits: list[str] = field(default_factory=list)
    name: str | None = None
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    use_official_query: bool = False
    mathvision_placeholders: str = "keep"
    max_pixels: int | None = None
    min_pixels: int | None = None
    limit: int | None = None

    def validate(self) -> None:
        """Raise :class:`BenchmarkBuildError` naming the flag, before any record is read."""
        if self.benchmark not in BENCHMARKS:
            raise BenchmarkBuildError(f"--benchmark {self.benchmark!r} is not one of {sorted(BENCHMARKS)}")
        if not Path(self.input).expanduser().exists():
            raise BenchmarkBuildError(f"--input {self.input} does not exist")
        if self.image_root is not None and not Path(self.image_root).expanduser().is_dir():
            raise BenchmarkBuildError(f"--image-root {self.image_root} is not a folder")
        if self.mathvision_placeholders not in PLACEHOLDER_POLICIES:
            raise BenchmarkBuildError(f"--mathvision-placeholders must be one of {PLACEHOLDER_POLICIES}")
        try:
            validate_template(self.prompt_template)
        except ValueError as error:
            raise BenchmarkBuildError(str(error)) from None
        for flag, value in (("--max-pixels", self.max_pixels), ("--min-pixels", self.min_pixels), ("--limit", self.limit)):
            if value is not None and value < 1:
                raise BenchmarkBuildError(f"{flag} must be >= 1, got {value}")
        if self.split is not None and not self.split.strip():
            raise BenchmarkBuildError("--split must not be empty")

    @property
    def resolved_split(self) -> str:
        return self.split or BENCHMARKS[self.benchmark].default_split

    @property
    def stem(self) -> str:
        return self.name or f"{self.benchmark}_{self.resolved_split}"


@dataclass
class BenchmarkBuildSummary:
    """What a build did (also written as ``<name>.summary.json``)."""

    benchmark: str
    split: str
    input: str
    parquet: str
    rejects_file: str
    records_read: int
    rows_written: int
    rejected: dict[str, int]
    rows_per_data_source: dict[str, int]
    answer_types: dict[str, int]
    prompt_template: str
    licence: str
    seconds: float


def _row(adapted: BenchmarkRow, config: BenchmarkBuildConfig, image_root: Path | None, index: int) -> tuple[dict, int]:
    try:
        if not adapted.keep_empty_gold:
            adapted.spec.check_gold(adapted.gold)
    except ValueError as error:
        raise RowRejected(RejectReason.BAD_GROUND_TRUTH, f"{adapted.record_id}: {error}") from None
    images = [
        prepare_image(value, image_root=image_root, min_pixels=config.min_pixels, max_pixels=config.max_pixels)
        for value in adapted.images
    ]
    prompt = build_prompt_messages(adapted.question, len(images), config.prompt_template)
    row = {
        "data_source": adapted.data_source,
        "prompt": prompt,
        "images": [image.struct() for image in images],
        "ability": ABILITY,
        "reward_model": {"style": REWARD_STYLE, "ground_truth": adapted.gold},
        "extra_info": {
            "split": adapted.split or config.resolved_split,
            "index": index,
            "eval_id": eval_id(adapted.data_source, adapted.record_id),
            "benchmark": config.benchmark,
            "record_id": adapted.record_id,
            "answer_spec": adapted.spec.to_json(),
            "group": json.dumps(adapted.group, ensure_ascii=False, sort_keys=True),
            "metadata": json.dumps(adapted.metadata, ensure_ascii=False, sort_keys=True, default=str),
            "question": adapted.question_for_eval,
            "answer": adapted.raw_answer,
        },
    }
    return row, sum(len(image.data) for image in images)


def build_benchmark(config: BenchmarkBuildConfig) -> BenchmarkBuildSummary:
    """Build ``<out_dir>/<name>.parquet`` (+ rejects and summary) from one benchmark input."""
    config.validate()
    started = time.monotonic()
    benchmark = BENCHMARKS[config.benchmark]
    split = config.resolved_split
    try:
        records = read_records(config.input, config.input_splits or None)
    except ValueError as error:
        raise BenchmarkBuildError(str(error)) from None
    input_path = Path(config.input).expanduser()
    image_root = Path(config.image_root).expanduser() if config.image_root else (input_path if input_path.is_dir() else input_path.parent)
    context = AdapterContext(split, config.use_official_query, config.mathvision_placeholders)
    out_dir = Path(config.out_dir)
    parquet_path = out_dir / f"{config.stem}.parquet"
    rejects_path = out_dir / f"{config.stem}.rejects.jsonl"
    provenance = {
        "benchmark": config.benchmark,
        "title": benchmark.title,
        "split": split,
        "input": str(input_path),
        "input_splits": config.input_splits,
        "prompt_template": config.prompt_template,
        "use_official_query": config.use_official_query,
        "mathvision_placeholders": config.mathvision_placeholders,
        "licence": benchmark.licence,
        "calibrl_version": __version__,
    }
    records_read = 0
    per_source: Counter[str] = Counter()
    answer_types: Counter[str] = Counter()
    seen_ids: set[str] = set()
    with RejectLog(rejects_path) as rejects, ParquetStreamWriter(parquet_path, eval_schema(provenance)) as writer:
        for record in records:
            if config.limit is not None and records_read >= config.limit:
                break
            records_read += 1
            if isinstance(record, MalformedRecord):
                rejects.add(Reject(f"{config.benchmark}:{record.position}", input_path.name, RejectReason.MALFORMED_ROW, record.message))
                continue
            fallback_id = f"{config.benchmark}:{record.get('_key', record.get('_index'))}"
            try:
                adapted = benchmark.adapter(record, context)
                key = eval_id(adapted.data_source, adapted.record_id)
                if key in seen_ids:
                    raise RowRejected(RejectReason.DUPLICATE_ID, f"eval_id {key} occurs twice in the input; ids must be unique")
                row, payload = _row(adapted, config, image_root, sum(per_source.values()))
            except RowRejected as rejected:
                rejects.add(Reject(fallback_id, input_path.name, rejected.reason, rejected.message))
                continue
            seen_ids.add(key)
            writer.write(row, payload_bytes=payload)
            per_source[adapted.data_source] += 1
            answer_types[adapted.spec.type] += 1
        rejected = dict(rejects.counts)
    summary = BenchmarkBuildSummary(
        benchmark=config.benchmark,
        split=split,
        input=str(input_path),
        parquet=str(parquet_path),
        rejects_file=str(rejects_path),
        records_read=records_read,
        rows_written=sum(per_source.values()),
        rejected=rejected,
        rows_per_data_source=dict(sorted(per_source.items())),
        answer_types=dict(sorted(answer_types.items())),
        prompt_template=config.prompt_template,
        licence=benchmark.licence,
        seconds=round(time.monotonic() - started, 2),
    )
    (out_dir / f"{config.stem}.summary.json").write_text(json.dumps(asdict(summary), indent=2, ensure_ascii=False) + "\n")
    return summary
