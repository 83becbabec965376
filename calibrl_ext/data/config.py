"""Every setting of a build, in one dataclass (the CLI maps each flag to one field).

:meth:`BuildConfig.validate` runs before any row is read and raises :class:`ConfigError` naming the
flag and the fix.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from calibrl_ext.data.demo import DemoConfig
from calibrl_ext.data.images import DEFAULT_RESIZE_FACTOR
from calibrl_ext.data.presets import PRESETS, ColumnMapping
from calibrl_ext.data.prompts import DEFAULT_PROMPT_TEMPLATE, validate_template
from calibrl_ext.data.writer import DEFAULT_ROW_GROUP_BYTES, DEFAULT_ROW_GROUP_ROWS

#: Where the embedded demo dataset is written when --out is not given.
DEMO_OUT_DIR = "data/demo"

#: Choices of the policy flags (first = default).
MISSING_EXPERT_POLICIES = ("keep", "drop")
EXPERT_FORMAT_POLICIES = ("rewrap", "reject")
FAILING_EXPERT_POLICIES = ("blank", "keep", "drop")
OVERLONG_EXPERT_POLICIES = ("keep", "reject")


class ConfigError(ValueError):
    """A setting that cannot work; the message names the flag and the fix."""


@dataclass
class BuildConfig:
    """Settings of one ``build_parquet`` run.

    Inputs
        inputs: input paths whose rows are split train/val by ``val_ratio`` (or ``mapping.split``).
            Empty: build the embedded demo dataset. Default ``[]``.
        val_inputs: input paths whose rows all go to validation. Default ``[]``.
        input_split: split to read from a ``save_to_disk`` DatasetDict folder. Default None.
        preset: a key of :data:`calibrl_ext.data.presets.PRESETS`. Default None (auto-detect).
        mapping: explicit columns (None fields fall back to the preset, then auto-detection).
        image_root: folder relative image paths resolve against. Default None: each input's folder.
        expert_file: JSONL/JSON/parquet of expert solutions joined on ``mapping.id``. Default None.
        expert_file_id_col: id column of ``expert_file``. Default ``"id"``.
        expert_file_col: expert column of ``expert_file``. Default None (auto: expert_solution,
            solution, target).
        max_experts: the most expert solutions kept per prompt. 1 (default): one expert, as released, and the
            output schema is unchanged. Above 1: the expert column is read as a LIST of solutions (a string counts as
            one; each element a string, a ``{"content": ...}`` dict or a message), an ``expert_file`` keeps every
            row of an id (file order) instead of the first; the first ``max_experts`` candidates are each validated
            like a single expert (a rejected one is logged in ``expert_rejects.jsonl``, the others are kept) and
            the kept ones go to the list column ``expert_solutions`` (``expert_solution`` = the first kept one).
        limit: stop after this many input rows (smoke runs). Default None (all).

    Output
        out_dir: folder for train.parquet, val.parquet, rejects.jsonl, summary.json. Default
            ``data/demo`` for the demo; required otherwise.
        data_source: constant data_source when no per-row column. Default: the preset's, else the
            input's name.
        ability: the ``ability`` column. Default ``"math"``.
        prompt_template: user-text template with ``{question}``. Default: question, blank line,
            the paper's instruction suffix.
        val_ratio: share of rows hashed into validation (when no split column). Default 0.05.
        split_seed: seed of that hash. Default 0.
        row_group_rows / row_group_bytes: parquet row-group bounds (rows / buffered bytes).

    Validation policies
        allow_text_only: keep rows with no image (else reject ``no_images``). Default False.
        unwrap_boxed_answer: ``\\boxed{X}`` ground truths become ``X``. Default True.
        missing_expert: ``keep`` (status missing, group trains as GRPO) or ``drop``. Default keep.
        expert_format: ``rewrap`` a badly formatted expert when an answer can be found, or
            ``reject`` it. Default rewrap.
        failing_expert: an expert whose answer fails the reward: ``blank`` (row kept, expert moved to
            ``extra_info.failed_expert``, ``expert_solution`` "": the group trains as plain GRPO, as the
            released code's pass_ratio 0 did), ``keep`` (expert kept and used, flagged expert_pass False)
            or ``drop`` (row rejected). Default blank.
        skip_expert_check: do not run the reward on experts (status ``unchecked``). Default False.
        keep_duplicates: keep repeated rows and ids. Default False.
        tokenizer: model folder for the overlong checks. Default None (no token checks).
        max_prompt_length / max_response_length: token limits of those checks. Defaults 20480 / 4096
            (the released recipe).
        overlong_expert: ``keep`` (recipe truncates, as released) or ``reject``. Default keep.

    Images and speed
        min_pixels / max_pixels: resize images outside these bounds. Default None (never resize).
        resize_factor: a resized side is a multiple of this. Default 28.
        num_proc: processes for image / expert / token work. Default 1 (in-process).
        chunk_rows: rows per work unit handed to a process. Default 64.
        progress: show a tqdm bar. Default True.

    Demo
        demo: settings of the embedded demo dataset (used when ``inputs`` is empty).
    """

    inputs: list[str] = field(default_factory=list)
    val_inputs: list[str] = field(default_factory=list)
    input_split: str | None = None
    preset: str | None = None
    mapping: ColumnMapping = field(default_factory=ColumnMapping)
    image_root: str | None = None
    expert_file: str | None = None
    expert_file_id_col: str = "id"
    expert_file_col: str | None = None
    max_experts: int = 1
    limit: int | None = None

    out_dir: str | None = None
    data_source: str | None = None
    ability: str = "math"
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    val_ratio: float = 0.05
    split_seed: int = 0
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS
    row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES

    allow_text_only: bool = False
    unwrap_boxed_answer: bool = True
    missing_expert: str = "keep"
    expert_format: str = "rewrap"
    failing_expert: str = "blank"
    skip_expert_check: bool = False
    keep_duplicates: bool = False
    tokenizer: str | None = None
    max_prompt_length: int = 20480
    max_response_length: int = 4096
    overlong_expert: str = "keep"

    min_pixels: int | None = None
    max_pixels: int | None = None
    resize_factor: int = DEFAULT_RESIZE_FACTOR
    num_proc: int = 1
    chunk_rows: int = 64
    progress: bool = True

    demo: DemoConfig = field(default_factory=DemoConfig)

    @property
    def is_demo(self) -> bool:
        return not self.inputs and not self.val_inputs

    @property
    def resolved_out_dir(self) -> str:
        return self.out_dir or DEMO_OUT_DIR

    def validate(self) -> None:
        """Raise :class:`ConfigError` for any setting that cannot work (before reading a row)."""
        if not self.is_demo and not self.out_dir:
            raise ConfigError("--out is required with --input/--val-input (the demo alone defaults to data/demo)")
        if self.is_demo and (self.preset not in (None, "demo") or self.expert_file):
            raise ConfigError("--preset / --expert-file need an --input; without one the embedded demo is built")
        if self.preset is not None and self.preset not in PRESETS:
            raise ConfigError(f"--preset {self.preset!r} is unknown; choose one of {sorted(PRESETS)}")
        if not 0.0 <= self.val_ratio <= 1.0:
            raise ConfigError(f"--val-ratio must be in [0, 1], got {self.val_ratio}")
        for name, value, choices in (
            ("--missing-expert", self.missing_expert, MISSING_EXPERT_POLICIES),
            ("--expert-format", self.expert_format, EXPERT_FORMAT_POLICIES),
            ("--failing-expert", self.failing_expert, FAILING_EXPERT_POLICIES),
            ("--overlong-expert", self.overlong_expert, OVERLONG_EXPERT_POLICIES),
        ):
            if value not in choices:
                raise ConfigError(f"{name} must be one of {choices}, got {value!r}")
        for name, value in (
            ("--num-proc", self.num_proc),
            ("--chunk-rows", self.chunk_rows),
            ("--row-group-rows", self.row_group_rows),
            ("--row-group-bytes", self.row_group_bytes),
            ("--resize-factor", self.resize_factor),
            ("--max-prompt-length", self.max_prompt_length),
            ("--max-response-length", self.max_response_length),
        ):
            if value < 1:
                raise ConfigError(f"{name} must be >= 1, got {value}")
        if isinstance(self.max_experts, bool) or not isinstance(self.max_experts, int) or self.max_experts < 1:
            raise ConfigError(f"--max-experts must be an integer >= 1, got {self.max_experts!r}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {self.limit}")
        for name, value in (("--min-pixels", self.min_pixels), ("--max-pixels", self.max_pixels)):
            if value is not None and value < self.resize_factor**2:
                raise ConfigError(f"{name} must be >= --resize-factor squared ({self.resize_factor**2}), got {value}")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise ConfigError(f"--min-pixels ({self.min_pixels}) must not exceed --max-pixels ({self.max_pixels})")
        try:
            validate_template(self.prompt_template)
        except ValueError as error:
            raise ConfigError(str(error)) from None
        if self.is_demo:
            try:
                self.demo.validate()
            except ValueError as error:
                raise ConfigError(str(error)) from None
