"""Rejected rows: why a row was not written, and how to fix it.

Every input row ends up either in an output parquet or as one line of the rejects file
(JSONL), so a build accounts for all of its input. A line looks like::

    {"row_id": "virl:17", "source": "39Krelease.parquet", "reason": "image_missing",
     "message": "image file not found: /data/virl/images/17-0.jpg",
     "fix": "check --image-root: relative image paths are resolved against it ..."}

``reason`` is one of :class:`RejectReason`'s values; ``fix`` is the reason's standard advice.
The writer is reusable (``data_prep/build_benchmarks.py`` imports it).
"""

from __future__ import annotations

import enum
import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path


class RejectReason(str, enum.Enum):
    """Why a row was rejected. The value is the code written to the rejects file."""

    IMAGE_MISSING = "image_missing"
    IMAGE_UNREADABLE = "image_unreadable"
    IMAGE_CORRUPT = "image_corrupt"
    NO_IMAGES = "no_images"
    PLACEHOLDER_MISMATCH = "placeholder_mismatch"
    MISSING_GROUND_TRUTH = "missing_ground_truth"
    BAD_GROUND_TRUTH = "bad_ground_truth"
    EMPTY_QUESTION = "empty_question"
    UNSUPPORTED_PROMPT = "unsupported_prompt"
    UNKNOWN_SPLIT = "unknown_split"
    MALFORMED_ROW = "malformed_row"
    MISSING_EXPERT = "missing_expert"
    EXPERT_BAD_FORMAT = "expert_bad_format"
    EXPERT_FAILS_REWARD = "expert_fails_reward"
    DUPLICATE = "duplicate"
    DUPLICATE_ID = "duplicate_id"
    PROMPT_OVERLONG = "prompt_overlong"
    EXPERT_OVERLONG = "expert_overlong"

    @property
    def fix(self) -> str:
        """The standard advice for this reason (the row's message says what exactly was wrong)."""
        return _FIXES[self]


_FIXES: dict[RejectReason, str] = {
    RejectReason.IMAGE_MISSING: (
        "check --image-root: relative image paths are resolved against it (default: the folder of the input "
        "file); unzip the dataset's image archive there"
    ),
    RejectReason.IMAGE_UNREADABLE: "make the image file readable by this user (permissions, broken link, I/O error)",
    RejectReason.IMAGE_CORRUPT: "re-download or re-export the image; PIL could not decode its bytes",
    RejectReason.NO_IMAGES: (
        "give the row an image, or pass --allow-text-only to keep text-only rows (verl's VL forward breaks on a "
        "micro-batch with no image at all, so mix them only if you know your batches)"
    ),
    RejectReason.PLACEHOLDER_MISMATCH: (
        "make the number of <image> placeholders in the question equal the number of images, or remove all "
        "placeholders so that they are inserted at the start of the question"
    ),
    RejectReason.MISSING_GROUND_TRUTH: "fill the answer column (--answer-col) for this row, or drop the row upstream",
    RejectReason.BAD_GROUND_TRUTH: (
        "give one ground truth per row as a string or number (reward_model.ground_truth is a single string)"
    ),
    RejectReason.MALFORMED_ROW: "fix the record in the input file (each JSONL line must be one JSON object)",
    RejectReason.EMPTY_QUESTION: "fill the question column (--question-col) for this row",
    RejectReason.UNSUPPORTED_PROMPT: (
        "give the question as a string, or as chat messages with exactly one user message whose content is a "
        "string or a list of {type: text|image} parts"
    ),
    RejectReason.UNKNOWN_SPLIT: (
        "use train / val (or validation, test, dev) in the --split-col column, or leave --split-col unset to "
        "split by --val-ratio"
    ),
    RejectReason.MISSING_EXPERT: (
        "supply an expert solution for this id, or keep the row without one (the default --missing-expert keep: "
        "its group then trains as plain GRPO)"
    ),
    RejectReason.EXPERT_BAD_FORMAT: (
        "write the expert as <think>...</think><answer>...</answer>; with --expert-format rewrap (the default) an "
        "expert is rewrapped when it has an <answer> tag or a final \\boxed{...}, otherwise it is rejected"
    ),
    RejectReason.EXPERT_FAILS_REWARD: (
        "the expert's answer does not match the ground truth under calibrl_ext.reward; fix the expert or the "
        "ground truth, or keep the row: without the expert (--failing-expert blank, the default) or with it "
        "(--failing-expert keep)"
    ),
    RejectReason.DUPLICATE: (
        "this row repeats an earlier row (same question text and images); remove it upstream, or pass --keep-duplicates"
    ),
    RejectReason.DUPLICATE_ID: (
        "ids in --id-col must be unique (the expert join and the row ids depend on it); de-duplicate the ids "
        "upstream, or pass --keep-duplicates"
    ),
    RejectReason.PROMPT_OVERLONG: (
        "raise --max-prompt-length (and data.max_prompt_length in the run) or lower --max-pixels so that images "
        "expand to fewer tokens"
    ),
    RejectReason.EXPERT_OVERLONG: (
        "raise --max-response-length (and data.max_response_length in the run), or pass --overlong-expert keep to "
        "keep the row (the recipe then truncates the expert, as the released code did)"
    ),
}


@dataclass(frozen=True)
class Reject:
    """One rejected input row.

    Attributes:
        row_id: the row's stable id (the --id-col value, or ``<input>:<position>``).
        source: the input the row came from (file or folder name; ``demo`` for the embedded dataset).
        reason: why it was rejected.
        message: what exactly was wrong with this row (a path, a count, a value).
    """

    row_id: str
    source: str
    reason: RejectReason
    message: str

    def to_json(self) -> str:
        record = asdict(self)
        record["reason"] = self.reason.value
        record["fix"] = self.reason.fix
        return json.dumps(record, ensure_ascii=False)


class RowRejected(Exception):
    """Raised inside per-row processing; the pipeline turns it into a :class:`Reject`."""

    def __init__(self, reason: RejectReason, message: str):
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason
        self.message = message


class RejectLog:
    """Appends rejects to a JSONL file and counts them per reason.

    The file is created (empty) on open, so an empty rejects file means "nothing rejected" rather
    than "never ran". Use as a context manager.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.counts: Counter[str] = Counter()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")

    def add(self, reject: Reject) -> None:
        self._file.write(reject.to_json() + "\n")
        self.counts[reject.reason.value] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RejectLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def read_rejects(path: str | Path) -> list[dict]:
    """Load a rejects file written by :class:`RejectLog` (one dict per rejected row)."""
    with Path(path).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]
