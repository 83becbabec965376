"""Deterministic train/val assignment.

A row goes to validation when a seeded hash of its stable row id falls below ``val_ratio``. The
decision depends on nothing but (seed, row id), so it does not change with ``--num-proc``, chunk
size, row order or which other rows were rejected, and it needs no pass over the data first.
The validation share is therefore ``val_ratio`` in expectation, not exactly.

A ``--split-col`` overrides the hash with the input's own split names.
"""

from __future__ import annotations

import hashlib

from calibrl_ext.data.rejects import RejectReason, RowRejected
from calibrl_ext.data.schema import TRAIN_SPLIT, VAL_SPLIT

#: Input split names (lower-cased) accepted in a --split-col column, and where they go.
SPLIT_ALIASES: dict[str, str] = {
    "train": TRAIN_SPLIT,
    "training": TRAIN_SPLIT,
    "val": VAL_SPLIT,
    "valid": VAL_SPLIT,
    "validation": VAL_SPLIT,
    "dev": VAL_SPLIT,
    "test": VAL_SPLIT,
}

_HASH_SPACE = 2**64


def hashed_split(row_id: str, val_ratio: float, seed: int) -> str:
    """``"val"`` when the seeded hash of ``row_id`` is below ``val_ratio``, else ``"train"``."""
    digest = hashlib.blake2b(f"{seed}\x00{row_id}".encode(), digest_size=8).digest()
    return VAL_SPLIT if int.from_bytes(digest, "big") < val_ratio * _HASH_SPACE else TRAIN_SPLIT


def split_from_value(value: object) -> str:
    """Map a ``--split-col`` value to train/val; raises :class:`RowRejected` on an unknown name."""
    name = str(value).strip().lower() if value is not None else ""
    if name not in SPLIT_ALIASES:
        raise RowRejected(RejectReason.UNKNOWN_SPLIT, f"split value {value!r} is not one of {sorted(SPLIT_ALIASES)}")
    return SPLIT_ALIASES[name]
