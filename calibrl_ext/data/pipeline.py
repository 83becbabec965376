"""The build: inputs -> validated rows -> train/val parquet, rejects file and summary.

Flow (memory stays bounded by a few chunks and one row group per split, whatever the input size):

1. start-up: validate the config, open every input, resolve its columns, load the expert file,
   check the reward module and the tokenizer. Every error here names the flag to fix;
2. the parent reads records in chunks and turns them into :class:`~calibrl_ext.data.rows.RawRow`
   (row id, expert join, duplicate-id check);
3. worker processes (``num_proc``) validate rows, read/decode/resize images, build prompts and
   check experts and token lengths (:func:`calibrl_ext.data.rows.process_chunk`);
4. the parent drops duplicates, numbers the rows per split and streams them into the writers;
5. the summary (counts per reason, per split, per expert status) goes to ``summary.json``.

Accounting: ``rows_read == sum(rows_written) + sum(rejected)``; the summary asserts it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from calibrl_ext.data import experts as expert_lib
from calibrl_ext.data.config import BuildConfig, ConfigError
from calibrl_ext.data.demo import generate_demo_records
from calibrl_ext.data.parallel import ordered_map
from calibrl_ext.data.presets import PRESETS, ColumnMapping, ResolvedMapping, get_value, resolve_mapping
from calibrl_ext.data.readers import InputSource, MalformedRecord, open_input, records_source
from calibrl_ext.data.rejects import Reject, RejectLog, RejectReason
from calibrl_ext.data.rows import RawRow, RowOutcome, RowSettings, init_worker, process_chunk
from calibrl_ext.data.schema import SPLITS, VAL_SPLIT, output_schema
from calibrl_ext.data.writer import ParquetStreamWriter

logger = logging.getLogger(__name__)

REJECTS_FILE = "rejects.jsonl"
#: ``--max-experts`` builds: one line per rejected expert (row id ``<row_id>#expert<j>``), reason and fix.
EXPERT_REJECTS_FILE = "expert_rejects.jsonl"
SUMMARY_FILE = "summary.json"


class BuildError(RuntimeError):
    """The build ran but produced nothing usable (e.g. every row was rejected)."""


@dataclass
class InputPlan:
    """One opened input with its resolved columns."""

    source: InputSource
    mapping: ResolvedMapping
    forced_split: str | None
    image_root: Path | None
    data_source: str


@dataclass
class BuildSummary:
    """What a build did. ``rows_read == sum(rows_written.values()) + sum(rejected.values())``."""

    out_dir: str
    outputs: dict[str, str] = field(default_factory=dict)
    rejects_path: str = ""
    rows_read: int = 0
    rows_written: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    expert_status: dict[str, dict[str, int]] = field(default_factory=dict)
    experts_overlong: int = 0
    images_resized: int = 0
    expert_file: dict[str, Any] | None = None
    #: ``--max-experts`` builds only: {max_experts, kept, rejected: {reason: n}, beyond_cap, rejects_path}, counted
    #: per EXPERT (the row counts above count rows).
    experts: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def rows_per_second(self) -> float:
        return self.rows_read / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        record = asdict(self)
        record["rows_per_second"] = round(self.rows_per_second, 1)
        return record

    def format(self) -> str:
        """A human-readable report (printed by the CLI at the end)."""
        lines = [
            f"read {self.rows_read} rows in {self.seconds:.1f} s ({self.rows_per_second:.0f} rows/s)",
            "written: "
            + ", ".join(f"{split} {count}" for split, count in self.rows_written.items())
            + f" -> {self.out_dir}",
        ]
        for split, statuses in self.expert_status.items():
            lines.append(f"  {split} experts: " + ", ".join(f"{status} {n}" for status, n in sorted(statuses.items())))
        if self.experts_overlong:
            lines.append(
                f"  experts over --max-response-length (kept; the recipe truncates them): {self.experts_overlong}"
            )
        if self.images_resized:
            lines.append(f"  images resized: {self.images_resized}")
        if self.expert_file:
            lines.append(
                f"  expert file {self.expert_file['path']}: {self.expert_file['ids']} ids, "
                f"{self.expert_file['joined']} joined, {self.expert_file['unused']} unused, "
                f"{self.expert_file['duplicate_ids']} duplicate ids ignored"
            )
        if self.experts:
            lines.append(
                f"  experts (--max-experts {self.experts['max_experts']}): {self.experts['kept']} kept, "
                f"{sum(self.experts['rejected'].values())} rejected {dict(self.experts['rejected'])} -> "
                f"{self.experts['rejects_path']}, {self.experts['beyond_cap']} beyond the cap"
            )
        total_rejected = sum(self.rejected.values())
        lines.append(f"rejected: {total_rejected}" + (f" -> {self.rejects_path}" if total_rejected else ""))
        for reason, count in sorted(self.rejected.items(), key=lambda item: -item[1]):
            lines.append(f"  {reason:<22} {count}")
        return "\n".join(lines)


def row_settings(config: BuildConfig, keep_cols: tuple[str, ...]) -> RowSettings:
    return RowSettings(
        template=config.prompt_template,
        ability=config.ability,
        min_pixels=config.min_pixels,
        max_pixels=config.max_pixels,
        resize_factor=config.resize_factor,
        allow_text_only=config.allow_text_only or bool(config.preset and PRESETS[config.preset].allow_text_only),
        unwrap_boxed_answer=config.unwrap_boxed_answer,
        missing_expert=config.missing_expert,
        expert_format=config.expert_format,
        failing_expert=config.failing_expert,
        skip_expert_check=config.skip_expert_check,
        tokenizer=config.tokenizer,
        max_prompt_length=config.max_prompt_length,
        max_response_length=config.max_response_length,
        overlong_expert=config.overlong_expert,
        val_ratio=config.val_ratio,
        split_seed=config.split_seed,
        keep_cols=keep_cols,
        max_experts=config.max_experts,
    )


def _demo_source(config: BuildConfig) -> InputSource:
    columns = ["id", "data_source", "kind", "question", "answer", "images", "solution", "split"]
    return records_source("demo", lambda: generate_demo_records(config.demo), columns, num_rows=config.demo.rows)


def plan_inputs(config: BuildConfig) -> list[InputPlan]:
    """Open every input and resolve its columns (reads no rows).

    Raises:
        ConfigError: an input that is missing or unusable, or a column that cannot be resolved.
    """
    try:
        return _plan_inputs(config)
    except ConfigError:
        raise
    except (OSError, ValueError) as error:
        raise ConfigError(str(error)) from None


def _plan_inputs(config: BuildConfig) -> list[InputPlan]:
    preset = PRESETS["demo"] if config.is_demo else (PRESETS[config.preset] if config.preset else None)
    allow_text_only = config.allow_text_only or bool(preset and preset.allow_text_only)
    opened: list[tuple[InputSource, str | None]] = []
    if config.is_demo:
        opened.append((_demo_source(config), None))
    for path in config.inputs:
        opened.append((open_input(path, config.input_split), None))
    for path in config.val_inputs:
        opened.append((open_input(path, config.input_split), VAL_SPLIT))
    plans = []
    for source, forced_split in opened:
        mapping = resolve_mapping(
            config.mapping, preset, source.columns, source.name, source.struct_fields, need_images=not allow_text_only
        )
        if config.expert_file and not mapping.mapping.id:
            raise ConfigError(
                f"{source.name}: --expert-file is joined on the input's id column, and none was found among "
                f"{source.columns}; set --id-col"
            )
        image_root = Path(config.image_root) if config.image_root else source.image_root
        data_source = config.data_source or (preset.data_source if preset and preset.data_source else None)
        data_source = data_source or Path(source.name).stem
        plans.append(InputPlan(source, mapping, forced_split, image_root, data_source))
    keep_sets = {plan.mapping.mapping.keep for plan in plans}
    if len(keep_sets) > 1:
        raise ConfigError(
            f"inputs resolve to different --keep-col sets {sorted(keep_sets)}; pass --keep-col explicitly"
        )
    output_schema(plans[0].mapping.mapping.keep)  # raises on a --keep-col that clashes with a fixed field
    return plans


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


class _RowFeeder:
    """Reads every input in order and yields chunks of :class:`RawRow` (runs in the parent)."""

    def __init__(self, config: BuildConfig, plans: list[InputPlan], experts: expert_lib.ExpertFile | None):
        self.config = config
        self.plans = plans
        self.experts = experts
        self.rows_read = 0
        self._seen_ids: set[str] = set()

    def _raw_row(self, plan: InputPlan, record: dict | MalformedRecord, position: int) -> RawRow:
        mapping: ColumnMapping = plan.mapping.mapping
        source = plan.source.name
        if isinstance(record, MalformedRecord):
            row_id = f"{source}:{position}"
            return RawRow(row_id, source, reject=Reject(row_id, source, RejectReason.MALFORMED_ROW, record.message))
        id_value = get_value(record, mapping.id)
        row_id = str(id_value) if id_value is not None else f"{source}:{position}"
        if mapping.id and id_value is not None and not self.config.keep_duplicates:
            if row_id in self._seen_ids:
                message = f"id {row_id!r} ({mapping.id}) was already used by an earlier row"
                return RawRow(row_id, source, reject=Reject(row_id, source, RejectReason.DUPLICATE_ID, message))
            self._seen_ids.add(row_id)
        expert = self.experts.lookup(row_id) if self.experts else get_value(record, mapping.expert)
        data_source = get_value(record, mapping.data_source) if mapping.data_source else None
        return RawRow(
            row_id=row_id,
            source=source,
            image_root=plan.image_root,
            question=get_value(record, mapping.question),
            answer=get_value(record, mapping.answer),
            images=get_value(record, mapping.images),
            expert=expert,
            data_source=str(data_source) if data_source else plan.data_source,
            split_value=get_value(record, mapping.split),
            has_split_column=bool(mapping.split),
            forced_split=plan.forced_split,
            keep={name: _as_text(get_value(record, name)) for name in mapping.keep},
        )

    def chunks(self) -> Iterator[list[RawRow]]:
        limit = self.config.limit
        for plan in self.plans:
            position = 0
            for records in plan.source.iter_records(plan.mapping.mapping.columns(), self.config.chunk_rows):
                chunk = []
                for record in records:
                    if limit is not None and self.rows_read >= limit:
                        break
                    chunk.append(self._raw_row(plan, record, position))
                    position += 1
                    self.rows_read += 1
                if chunk:
                    yield chunk
                if limit is not None and self.rows_read >= limit:
                    return


def _total_rows(config: BuildConfig, plans: list[InputPlan]) -> int | None:
    counts = [plan.source.num_rows for plan in plans]
    if any(count is None for count in counts):
        return config.limit
    total = sum(counts)
    return min(total, config.limit) if config.limit else total


def _check_tokenizer(path: str) -> None:
    from calibrl_ext.data.tokens import TokenCounter

    try:
        counter = TokenCounter(path)
    except (OSError, ValueError) as error:
        raise ConfigError(f"--tokenizer {path}: cannot load a tokenizer there ({error})") from None
    if not counter.counts_image_tokens:
        logger.warning(
            "--tokenizer %s has no multimodal processor: prompt lengths count text tokens only (image tokens are "
            "not expanded), so the prompt check is a lower bound",
            path,
        )


def build(config: BuildConfig) -> BuildSummary:
    """Run one build; returns its summary (also written to ``<out>/summary.json``).

    Raises:
        ConfigError: a setting or input that cannot work (before any row is read).
        BuildError: no row survived validation.
    """
    started = time.perf_counter()
    config.validate()
    plans = plan_inputs(config)
    expert_lib.reward_module()
    experts = None
    if config.expert_file:
        try:
            experts = expert_lib.load_expert_file(
                config.expert_file, config.expert_file_id_col, config.expert_file_col, multi=config.max_experts > 1
            )
        except (OSError, ValueError) as error:
            raise ConfigError(str(error)) from None
    if config.tokenizer:
        _check_tokenizer(config.tokenizer)
    for plan in plans:
        logger.info("input %s: %s", plan.source.name, plan.mapping.describe())

    out_dir = Path(config.resolved_out_dir)
    keep_cols = plans[0].mapping.mapping.keep
    multi_expert = config.max_experts > 1
    schema = output_schema(keep_cols, multi_expert=multi_expert)
    summary = BuildSummary(out_dir=str(out_dir), rejects_path=str(out_dir / REJECTS_FILE))
    feeder = _RowFeeder(config, plans, experts)
    progress = _progress_bar(config, _total_rows(config, plans))
    router = None
    try:
        with contextlib.ExitStack() as logs:
            rejects = logs.enter_context(RejectLog(out_dir / REJECTS_FILE))
            expert_rejects = logs.enter_context(RejectLog(out_dir / EXPERT_REJECTS_FILE)) if multi_expert else None
            router = _OutputRouter(config, out_dir, schema, rejects, summary, expert_rejects)
            outcomes = ordered_map(
                process_chunk, feeder.chunks(), config.num_proc, init_worker, (row_settings(config, keep_cols),)
            )
            for chunk in outcomes:
                for outcome in chunk:
                    router.route(outcome)
                progress.update(len(chunk))
            summary.rejected = dict(rejects.counts)
            if expert_rejects is not None:
                summary.experts = {
                    "max_experts": config.max_experts,
                    "kept": router.experts_kept,
                    "rejected": dict(expert_rejects.counts),
                    "beyond_cap": router.experts_beyond_cap,
                    "rejects_path": str(expert_rejects.path),
                }
        router.close()
    except BaseException:
        if router is not None:
            router.abort()
        raise
    finally:
        progress.close()

    stale_expert_rejects = out_dir / EXPERT_REJECTS_FILE
    if not multi_expert and stale_expert_rejects.exists():
        stale_expert_rejects.unlink()  # an earlier --max-experts build's; this build checked one expert per row
    for split in SPLITS:
        stale = out_dir / f"{split}.parquet"
        if split not in router.writers and stale.exists():
            stale.unlink()  # an earlier build's file would otherwise pass for this build's output
            logger.warning("removed %s from an earlier build: this build wrote no %s rows", stale, split)
    summary.rows_read = feeder.rows_read
    summary.rows_written = {split: router.written[split] for split in SPLITS}
    summary.expert_status = {split: dict(counts) for split, counts in router.statuses.items() if counts}
    if experts is not None:
        summary.expert_file = {
            "path": str(experts.path),
            "ids": len(experts.by_id),
            "joined": len(experts.used_ids),
            "unused": len(experts.unused_ids),
            "duplicate_ids": experts.duplicate_ids,
            "unused_examples": experts.unused_ids[:5],
        }
    summary.seconds = time.perf_counter() - started
    accounted = sum(summary.rows_written.values()) + sum(summary.rejected.values())
    if accounted != summary.rows_read:
        raise BuildError(f"accounting error: read {summary.rows_read} rows but wrote+rejected {accounted}")
    (out_dir / SUMMARY_FILE).write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
    if not any(summary.rows_written.values()):
        raise BuildError(
            f"no row was written: all {summary.rows_read} rows were rejected ({summary.rejected}); see "
            f"{summary.rejects_path} for each row's reason and fix"
        )
    return summary


class _OutputRouter:
    """Routes outcomes in input order: rejects to the rejects file, duplicates dropped, rows numbered per
    split and streamed into that split's writer (opened on its first row)."""

    def __init__(
        self,
        config: BuildConfig,
        out_dir: Path,
        schema,
        rejects: RejectLog,
        summary: BuildSummary,
        expert_rejects: RejectLog | None = None,
    ):
        self.config = config
        self.expert_rejects = expert_rejects
        self.experts_kept = 0
        self.experts_beyond_cap = 0
        self.out_dir = out_dir
        self.schema = schema
        self.rejects = rejects
        self.summary = summary
        self.writers: dict[str, ParquetStreamWriter] = {}
        self.written: Counter[str] = Counter()
        self.statuses: dict[str, Counter[str]] = {split: Counter() for split in SPLITS}
        # dedup key -> row id of its first occurrence: the only state that grows with the dataset
        self.first_seen: dict[bytes, str] = {}

    def route(self, outcome: RowOutcome) -> None:
        if self.expert_rejects is not None:
            for reject in outcome.expert_rejects:
                self.expert_rejects.add(reject)
            self.experts_beyond_cap += outcome.experts_beyond_cap
        if outcome.reject is not None:
            self.rejects.add(outcome.reject)
            return
        row = outcome.row
        if not self.config.keep_duplicates:
            first = self.first_seen.get(outcome.dedup_key)
            if first is not None:
                message = f"same question and images as row {first!r}"
                self.rejects.add(
                    Reject(outcome.row_id, row["extra_info"]["input_name"], RejectReason.DUPLICATE, message)
                )
                return
            self.first_seen[outcome.dedup_key] = outcome.row_id
        split = outcome.split
        if split not in self.writers:
            self.writers[split] = ParquetStreamWriter(
                self.out_dir / f"{split}.parquet", self.schema, self.config.row_group_rows, self.config.row_group_bytes
            )
        row["extra_info"]["index"] = self.written[split]
        self.writers[split].write(row, outcome.payload_bytes)
        self.written[split] += 1
        self.experts_kept += outcome.experts_kept
        self.statuses[split][row["extra_info"]["expert_status"]] += 1
        self.summary.experts_overlong += outcome.expert_overlong
        self.summary.images_resized += outcome.resized_images

    def close(self) -> None:
        """Finish every file (renamed into place); a split that got no row has no file."""
        for split in SPLITS:
            if split in self.writers:
                self.summary.outputs[split] = str(self.writers[split].close())

    def abort(self) -> None:
        for writer in self.writers.values():
            writer.abort()


def _progress_bar(config: BuildConfig, total: int | None):
    from tqdm import tqdm

    return tqdm(total=total, unit="row", desc="build_parquet", disable=not config.progress, smoothing=0.1)
