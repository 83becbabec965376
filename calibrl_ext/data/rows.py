"""One input row -> one output row or one reject. Runs in worker processes (``--num-proc``).

Checks run in this order, and a row is rejected with the FIRST reason that applies:
ground truth, split, images (read, decode, resize), prompt (question, ``<image>`` count), expert
(presence, format, reward), token lengths. Rows rejected before the worker (duplicate id,
malformed record) pass through unchanged, so outcomes come back in input order whatever
``--num-proc`` is. Duplicate detection (it needs every earlier row) happens in the parent.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from calibrl_ext.data import experts as expert_lib
from calibrl_ext.data.images import DIGEST_BYTES, prepare_image
from calibrl_ext.data.prompts import build_prompt_messages, split_question
from calibrl_ext.data.rejects import Reject, RejectReason, RowRejected
from calibrl_ext.data.schema import EXPERT_LIST_COLUMN, NOT_COUNTED, REWARD_STYLE, ExpertStatus
from calibrl_ext.data.split import hashed_split, split_from_value

#: ``compute_score`` keyword arguments for the expert check: one math-verify worker per data-prep
#: process (the reward's default of 2 per process would oversubscribe ``--num-proc`` processes).
EXPERT_CHECK_REWARD_KWARGS = {"symbolic_workers": 1}


@dataclass(frozen=True)
class RowSettings:
    """The part of :class:`~calibrl_ext.data.config.BuildConfig` a worker needs (picklable)."""

    template: str
    ability: str
    min_pixels: int | None
    max_pixels: int | None
    resize_factor: int
    allow_text_only: bool
    unwrap_boxed_answer: bool
    missing_expert: str
    expert_format: str
    failing_expert: str
    skip_expert_check: bool
    tokenizer: str | None
    max_prompt_length: int
    max_response_length: int
    overlong_expert: str
    val_ratio: float
    split_seed: int
    keep_cols: tuple[str, ...]
    max_experts: int = 1


@dataclass
class RawRow:
    """One input row, its columns already picked by the mapping (built in the parent process).

    Attributes:
        row_id, source: stable id and input name (rejects and extra_info).
        image_root: folder relative image paths of this input resolve against.
        forced_split: ``"val"`` for --val-input rows, else None.
        split_value: the --split-col value (None when no split column).
        reject: set when the parent already rejected the row (it is passed through).
    """

    row_id: str
    source: str
    image_root: Path | None = None
    question: Any = None
    answer: Any = None
    images: Any = None
    expert: Any = None
    data_source: str = ""
    split_value: Any = None
    has_split_column: bool = False
    forced_split: str | None = None
    keep: dict[str, str] = field(default_factory=dict)
    reject: Reject | None = None


@dataclass
class RowOutcome:
    """What became of a row: ``row`` (to write into ``split``) or ``reject``."""

    row_id: str
    row: dict[str, Any] | None = None
    split: str | None = None
    dedup_key: bytes = b""
    payload_bytes: int = 0
    resized_images: int = 0
    expert_overlong: bool = False
    reject: Reject | None = None
    #: ``--max-experts`` builds: one reject per expert that failed its checks (the row may still be written),
    #: experts written, and candidates past the cap (not checked).
    expert_rejects: list[Reject] = field(default_factory=list)
    experts_kept: int = 0
    experts_beyond_cap: int = 0


class _WorkerState:
    """Per-process state: settings, and the reward module / token counter loaded once."""

    settings: RowSettings | None = None
    token_counter = None
    reward = None


def init_worker(settings: RowSettings) -> None:
    """Process initializer: keep the settings and load what every row needs once."""
    _WorkerState.settings = settings
    _WorkerState.reward = expert_lib.reward_module()  # the format check runs even with --skip-expert-check
    # Reset, not only set: with --num-proc 1 this runs in the caller's process, once per build.
    _WorkerState.token_counter = None
    if settings.tokenizer:
        from calibrl_ext.data.tokens import TokenCounter

        _WorkerState.token_counter = TokenCounter(settings.tokenizer)


def ground_truth_text(value: Any, unwrap_boxed: bool) -> str:
    """The ground truth as the string ``reward_model.ground_truth`` holds.

    Integers and integer-valued floats become ``"142"`` (not ``"142.0"``); a one-element list is
    unwrapped; with ``unwrap_boxed`` a whole-string ``\\boxed{X}`` becomes ``X``.

    Raises:
        RowRejected: ``missing_ground_truth`` (null/empty/NaN) or ``bad_ground_truth`` (a list of several).
    """
    if isinstance(value, list | tuple):
        if len(value) != 1:
            raise RowRejected(
                RejectReason.BAD_GROUND_TRUTH, f"the ground truth is a list of {len(value)} values: {str(value)[:200]}"
            )
        value = value[0]
    if value is None or (isinstance(value, float) and math.isnan(value)):
        raise RowRejected(RejectReason.MISSING_GROUND_TRUTH, "the ground truth is missing (null)")
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise RowRejected(RejectReason.BAD_GROUND_TRUTH, f"the ground truth has type {type(value).__name__}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if unwrap_boxed:
        text = expert_lib.unwrap_boxed_answer(text)
    if not text:
        raise RowRejected(RejectReason.MISSING_GROUND_TRUTH, "the ground truth is an empty string")
    return text


def _image_values(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, list | tuple):
        return [item for item in value if item is not None]
    return [value]


@dataclass(frozen=True)
class ExpertFields:
    """What the row's expert becomes: ``text`` goes to ``expert_solution`` ("" = no expert for this prompt),
    ``failed_text`` keeps a blanked failing expert (``--failing-expert blank``) in ``extra_info``."""

    text: str
    status: ExpertStatus
    passed: bool
    rewrapped: bool
    failed_text: str = ""


def _expert_fields(value: Any, ground_truth: str, data_source: str, settings: RowSettings) -> ExpertFields:
    """One expert after the presence, format and reward checks; :class:`RowRejected` per the policies."""
    text = expert_lib.expert_text(value)
    if text is None:
        if settings.missing_expert == "drop":
            raise RowRejected(RejectReason.MISSING_EXPERT, "the row has no expert solution and --missing-expert drop")
        return ExpertFields("", ExpertStatus.MISSING, False, False)
    reward = _WorkerState.reward
    is_well_formatted = reward.is_well_formatted
    rewrapped = False
    if not is_well_formatted(text):
        preview = text.strip()[:80]
        if settings.expert_format == "reject":
            raise RowRejected(
                RejectReason.EXPERT_BAD_FORMAT, f"the expert is not <think>…</think><answer>…</answer>: {preview!r}…"
            )
        wrapped = expert_lib.rewrap_expert(text)
        if wrapped is None or not is_well_formatted(wrapped):
            raise RowRejected(
                RejectReason.EXPERT_BAD_FORMAT,
                f"the expert has neither an <answer> tag nor a \\boxed{{}} answer to rewrap: {preview!r}…",
            )
        text, rewrapped = wrapped, True
    if settings.skip_expert_check:
        return ExpertFields(text, ExpertStatus.UNCHECKED, True, rewrapped)
    result = reward.compute_score(data_source, text, ground_truth, None, **EXPERT_CHECK_REWARD_KWARGS)
    if result["acc"] > 0:
        return ExpertFields(text, ExpertStatus.REWRAPPED if rewrapped else ExpertStatus.OK, True, rewrapped)
    if settings.failing_expert == "drop":
        raise RowRejected(
            RejectReason.EXPERT_FAILS_REWARD,
            f"the expert answers {result.get('pred', '')!r} but the ground truth is {ground_truth!r}",
        )
    if settings.failing_expert == "blank":
        # The released code trained such a prompt without its expert (pass_ratio 0); "" says so to every consumer.
        return ExpertFields("", ExpertStatus.FAILS_REWARD, False, rewrapped, failed_text=text)
    return ExpertFields(text, ExpertStatus.FAILS_REWARD, False, rewrapped)


def process_row(raw: RawRow) -> RowOutcome:
    """Turn one :class:`RawRow` into a :class:`RowOutcome` (never raises :class:`RowRejected`)."""
    if raw.reject is not None:
        return RowOutcome(raw.row_id, reject=raw.reject)
    settings = _WorkerState.settings
    try:
        ground_truth = ground_truth_text(raw.answer, settings.unwrap_boxed_answer)
        if raw.forced_split:
            split = raw.forced_split
        elif raw.has_split_column:
            split = split_from_value(raw.split_value)
        else:
            split = hashed_split(raw.row_id, settings.val_ratio, settings.split_seed)
        images = [
            prepare_image(value, raw.image_root, settings.min_pixels, settings.max_pixels, settings.resize_factor)
            for value in _image_values(raw.images)
        ]
        if not images and not settings.allow_text_only:
            raise RowRejected(RejectReason.NO_IMAGES, "the row has no image")
        messages = build_prompt_messages(raw.question, len(images), settings.template)
        if settings.max_experts > 1:
            experts = _checked_experts(raw, ground_truth, settings)
            expert_fields = experts.first
        else:
            experts = None
            expert_fields = _expert_fields(raw.expert, ground_truth, raw.data_source, settings)
        expert = expert_fields.text
        counter = _WorkerState.token_counter
        prompt_tokens = NOT_COUNTED
        if counter is not None:
            prompt_tokens = counter.prompt_tokens(messages, [image.data for image in images])
            if prompt_tokens > settings.max_prompt_length:
                raise RowRejected(
                    RejectReason.PROMPT_OVERLONG,
                    f"the prompt is {prompt_tokens} tokens, over --max-prompt-length {settings.max_prompt_length}",
                )
        if experts is None:
            expert_tokens, expert_overlong = _expert_length(expert, settings)
        else:
            expert_tokens, expert_overlong = experts.first_tokens, experts.overlong
    except RowRejected as rejected:
        return RowOutcome(
            raw.row_id,
            reject=Reject(raw.row_id, raw.source, rejected.reason, rejected.message),
            expert_rejects=list(getattr(rejected, "expert_rejects", [])),
        )

    _, question_text = split_question(raw.question)
    digest = hashlib.blake2b(digest_size=DIGEST_BYTES)
    digest.update(json.dumps(messages, ensure_ascii=False, sort_keys=True).encode())
    for image in images:
        digest.update(image.source_digest)
    row = {
        "data_source": raw.data_source,
        "prompt": messages,
        "images": [image.struct() for image in images],
        "ability": settings.ability,
        "reward_model": {"style": REWARD_STYLE, "ground_truth": ground_truth},
        "extra_info": {
            "split": split,
            "index": -1,  # the position in its split file, set by the parent when it is written
            "row_id": raw.row_id,
            "input_name": raw.source,
            "question": question_text,
            "answer": ground_truth,
            "expert_status": expert_fields.status.value,
            "expert_pass": expert_fields.passed,
            "expert_rewrapped": expert_fields.rewrapped,
            "failed_expert": expert_fields.failed_text,
            "prompt_tokens": prompt_tokens,
            "expert_tokens": expert_tokens,
            **{name: raw.keep.get(name, "") for name in settings.keep_cols},
        },
        "expert_solution": expert,
    }
    outcome = RowOutcome(
        raw.row_id,
        row=row,
        split=split,
        dedup_key=digest.digest(),
        payload_bytes=sum(len(image.data) for image in images) + len(expert) + len(expert_fields.failed_text),
        resized_images=sum(image.resized for image in images),
        expert_overlong=expert_overlong,
    )
    if experts is not None:
        row[EXPERT_LIST_COLUMN] = experts.texts
        outcome.payload_bytes += sum(len(text) for text in experts.texts[1:])
        outcome.expert_rejects = experts.rejects
        outcome.experts_kept = len(experts.texts)
        outcome.experts_beyond_cap = experts.beyond_cap
    return outcome


def _expert_length(text: str, settings: RowSettings) -> tuple[int, bool]:
    """``(tokens with EOS, over --max-response-length)`` of one expert (``NOT_COUNTED`` without a tokenizer);
    :class:`RowRejected` ``expert_overlong`` with ``--overlong-expert reject``."""
    counter = _WorkerState.token_counter
    if counter is None or not text:
        return NOT_COUNTED, False
    tokens = counter.expert_tokens(text)
    overlong = tokens > settings.max_response_length
    if overlong and settings.overlong_expert == "reject":
        raise RowRejected(
            RejectReason.EXPERT_OVERLONG,
            f"the expert is {tokens} tokens (with EOS), over --max-response-length {settings.max_response_length}",
        )
    return tokens, overlong


@dataclass
class CheckedExperts:
    """The experts of a ``--max-experts`` row after each one's checks.

    Attributes:
        first: what ``extra_info`` and ``expert_solution`` describe: the first kept expert, else the first checked
            candidate's outcome (a blanked failing expert), else ``missing``.
        first_tokens: its token count (``NOT_COUNTED`` without a tokenizer).
        texts: every kept expert, in input order (``expert_solutions``).
        rejects: one :class:`Reject` per expert that failed (row id ``<row_id>#expert<j>``, j from 0).
        beyond_cap: candidates after the first ``max_experts`` (not checked, not written).
        overlong: some kept expert is over ``--max-response-length`` (kept: the recipe truncates it).
    """

    first: ExpertFields
    first_tokens: int
    texts: list[str]
    rejects: list[Reject]
    beyond_cap: int
    overlong: bool


def _checked_experts(raw: RawRow, ground_truth: str, settings: RowSettings) -> CheckedExperts:
    """Check each of the row's first ``max_experts`` expert candidates like a single expert.

    A candidate that fails a check (format, reward with ``--failing-expert drop``, length with
    ``--overlong-expert reject``) is rejected alone, with its reason and fix; the others are kept. Empty candidates
    are no expert. The whole row is rejected only when it would be with one expert: ``missing_expert`` with
    ``--missing-expert drop`` and no candidate, or every candidate rejected (the first one's reason).
    """
    candidates = [value for value in expert_lib.expert_candidates(raw.expert) if expert_lib.expert_text(value)]
    checked, beyond_cap = candidates[: settings.max_experts], max(len(candidates) - settings.max_experts, 0)
    if not checked:
        return CheckedExperts(
            _expert_fields(None, ground_truth, raw.data_source, settings), NOT_COUNTED, [], [], beyond_cap, False
        )
    kept: list[tuple[ExpertFields, int, bool]] = []
    outcomes: list[ExpertFields] = []
    rejects: list[Reject] = []
    for index, value in enumerate(checked):
        try:
            fields = _expert_fields(value, ground_truth, raw.data_source, settings)
            tokens, overlong = _expert_length(fields.text, settings)
        except RowRejected as rejected:
            rejects.append(Reject(f"{raw.row_id}#expert{index}", raw.source, rejected.reason, rejected.message))
            continue
        outcomes.append(fields)
        if fields.text:
            kept.append((fields, tokens, overlong))
    if not outcomes:
        first = rejects[0]
        error = RowRejected(
            first.reason, f"all {len(checked)} experts were rejected (see expert_rejects.jsonl); first: {first.message}"
        )
        error.expert_rejects = rejects  # still logged one by one
        raise error
    first, first_tokens = (kept[0][0], kept[0][1]) if kept else (outcomes[0], NOT_COUNTED)
    blanked = next((fields.failed_text for fields in outcomes if fields.failed_text), "")
    first = dataclasses.replace(first, failed_text=blanked)  # a blanked failing expert stays visible
    return CheckedExperts(
        first=first,
        first_tokens=first_tokens,
        texts=[fields.text for fields, _, _ in kept],
        rejects=rejects,
        beyond_cap=beyond_cap,
        overlong=any(overlong for _, _, overlong in kept),
    )


def process_chunk(chunk: list[RawRow]) -> list[RowOutcome]:
    """Process a chunk of rows in order (the unit of work handed to a worker process).

    An unexpected exception (a bug, not bad input) is re-raised naming the row it happened on.
    """
    outcomes = []
    for raw in chunk:
        try:
            outcomes.append(process_row(raw))
        except Exception as error:
            raise RuntimeError(f"unexpected error on row {raw.row_id} of {raw.source}: {error!r}") from error
    return outcomes
