"""Reading benchmark records from the forms users have on disk.

- the official repositories' JSON: a dict keyed by id (MathVista ``testmini.json``, LogicVista
  ``dataset.json``, DynaMath ``dataset.json``; the key is kept as ``_key``) or a list of objects
  (MathVerse, We-Math);
- JSON Lines (MATH-V ``data/test.jsonl``);
- a ``.parquet`` file or a folder of them (HF hub downloads);
- an HF ``datasets`` folder written by ``save_to_disk``: a ``Dataset``, or a ``DatasetDict`` read split
  by split (``splits``; each record gets ``_split``).

Every record also gets ``_index``, its position in the input. Embedded images stay ``{bytes, path}``
structs (never decoded here). A JSONL line that is not an object comes out as :class:`MalformedRecord`
so that the build rejects it with its line number instead of stopping.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

#: Records read from arrow/parquet per batch (bounds memory when images are embedded).
READ_BATCH_ROWS = 64

ACCEPTED_FORMS = (
    "a .json file (dict keyed by id, or list), a .jsonl file, a .parquet file or folder of them, "
    "or an HF datasets folder written by save_to_disk"
)


@dataclass(frozen=True)
class MalformedRecord:
    """An input entry that is not a record (the build rejects it with this message)."""

    position: int
    message: str


def _json_records(path: Path) -> Iterator[dict | MalformedRecord]:
    """Loads and checks the file now (errors at start-up); the returned iterator yields the records."""
    with path.open(encoding="utf-8") as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON: {error}") from None
    if isinstance(data, dict):
        items = list(data.items())
        if not all(isinstance(value, dict) for _, value in items[:10]):
            raise ValueError(f"{path}: a .json dict must map ids to record objects (like MathVista's testmini.json)")

        def keyed() -> Iterator[dict | MalformedRecord]:
            for position, (key, value) in enumerate(items):
                if isinstance(value, dict):
                    yield {**value, "_key": str(key), "_index": position}
                else:
                    yield MalformedRecord(position, f"entry {key!r} is not a JSON object")

        return keyed()
    if isinstance(data, list):

        def listed() -> Iterator[dict | MalformedRecord]:
            for position, value in enumerate(data):
                if isinstance(value, dict):
                    yield {**value, "_index": position}
                else:
                    yield MalformedRecord(position, f"item {position} is not a JSON object")

        return listed()
    raise ValueError(f"{path}: expected a JSON object or list at the top level, got {type(data).__name__}")


def _jsonl_records(path: Path) -> Iterator[dict | MalformedRecord]:
    position = 0
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                yield MalformedRecord(position, f"line {line_number} is not valid JSON: {error}")
            else:
                if isinstance(value, dict):
                    yield {**value, "_index": position}
                else:
                    yield MalformedRecord(position, f"line {line_number} is not a JSON object")
            position += 1


def _parquet_records(files: list[Path]) -> Iterator[dict]:
    position = 0
    for file in files:
        for batch in pq.ParquetFile(file).iter_batches(batch_size=READ_BATCH_ROWS):
            for record in batch.to_pylist():
                yield {**record, "_index": position}
                position += 1


def _hf_disk_records(path: Path, splits: list[str] | None) -> Iterator[dict]:
    """Opens the dataset and checks the splits now (errors at start-up); the iterator yields the records."""
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        available = list(loaded)
        if not splits:
            raise ValueError(
                f"{path} is a DatasetDict with splits {available}; choose with --input-split "
                "(repeat it, e.g. for DynaMath's sample_variant1 … sample_variant10, or pass --input-split all)"
            )
        chosen = available if splits == ["all"] else splits
        unknown = [split for split in chosen if split not in loaded]
        if unknown:
            raise ValueError(f"--input-split {unknown} not in {path}; available: {available}")
        parts = [(split, loaded[split]) for split in chosen]
    else:
        if splits:
            raise ValueError(f"--input-split {splits} given but {path} holds a single Dataset, not a DatasetDict")
        parts = [(None, loaded)]

    def records() -> Iterator[dict]:
        position = 0
        for split, dataset in parts:
            for table in dataset.with_format("arrow").iter(batch_size=READ_BATCH_ROWS):
                for record in table.to_pylist():
                    record = {**record, "_index": position}
                    if split is not None:
                        record["_split"] = split
                    yield record
                    position += 1

    return records()


def read_records(path: str | Path, splits: list[str] | None = None) -> Iterator[dict | MalformedRecord]:
    """All records of one input (see the module docstring). Raises at the first call on an unusable input."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist; expected {ACCEPTED_FORMS}")
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return _hf_disk_records(path, splits)
        parquet_files = sorted(path.rglob("*.parquet"))
        if parquet_files:
            _reject_splits(splits, path)
            return _parquet_records(parquet_files)
        raise ValueError(f"input folder {path} holds no dataset; expected {ACCEPTED_FORMS}")
    _reject_splits(splits, path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        return _json_records(path)
    if suffix == ".jsonl":
        return _jsonl_records(path)
    if suffix == ".parquet":
        return _parquet_records([path])
    raise ValueError(f"input {path}: unsupported file type {suffix!r}; expected {ACCEPTED_FORMS}")


def _reject_splits(splits: list[str] | None, path: Path) -> None:
    if splits:
        raise ValueError(
            f"--input-split only applies to a save_to_disk DatasetDict folder, not to {path}; "
            "for a parquet or JSON input pass the file of the split you want"
        )


def field(record: dict[str, Any], *names: str) -> Any:
    """The first of ``names`` present (not None) in ``record``, else None (benchmarks rename fields)."""
    for name in names:
        value = record.get(name)
        if value is not None:
            return value
    return None
