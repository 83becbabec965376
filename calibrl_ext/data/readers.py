"""Input readers: every shape users have, read in chunks of rows (bounded memory).

:func:`open_input` recognises:

- an HF ``datasets`` folder written by ``save_to_disk`` (a ``Dataset``, or a ``DatasetDict`` with
  ``--input-split``): its arrow files are read batch by batch; images stay ``{bytes, path}`` structs
  (never decoded here);
- a ``.parquet`` file, or a folder of them (read row group by row group);
- an ``.arrow`` file (IPC stream or file format, as written by ``datasets``), or a folder of them;
- a ``.jsonl`` file (one object per line; image columns hold paths relative to ``--image-root``),
  or a ``.json`` file holding a list of objects (loaded whole: use JSONL for big data).

Every reader yields records (dicts) carrying only the requested columns, plus their position
in the input. A JSONL line that is not a JSON object is yielded as a :class:`MalformedRecord`
so that the pipeline rejects it with its line number instead of stopping.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

#: How many JSONL records are scanned for column names at start-up.
JSONL_SCHEMA_SCAN_ROWS = 1000

#: Parquet files are read with ``pre_buffer=False``: with pyarrow's pre-buffering, ``iter_batches`` keeps
#: every column chunk it has read alive until the file is closed (measured: memory grew with the whole
#: 570 MB file), which would defeat streaming.
PARQUET_READ_OPTIONS = {"pre_buffer": False}


@dataclass(frozen=True)
class MalformedRecord:
    """A row the reader could not parse (e.g. a JSONL line that is not a JSON object)."""

    message: str


@dataclass
class InputSource:
    """One input, opened and described, not yet read.

    Attributes:
        name: short name used in row ids (``<name>:<position>``) and rejects.
        path: the file or folder.
        columns: top-level column names.
        struct_fields: sub-field names of struct columns (for dotted column paths).
        num_rows: rows in the input when cheap to know (progress bar total), else None.
        image_root: folder relative image paths resolve against by default.
        iter_records: ``(columns, chunk_rows) -> iterator of record chunks``.
    """

    name: str
    path: Path
    columns: list[str]
    struct_fields: dict[str, list[str]]
    num_rows: int | None
    image_root: Path | None
    iter_records: Callable[[list[str], int], Iterator[list[dict | MalformedRecord]]]


def _struct_fields(schema: pa.Schema) -> dict[str, list[str]]:
    return {f.name: [sub.name for sub in f.type] for f in schema if pa.types.is_struct(f.type)}


def _parquet_source(files: list[Path], name: str, root: Path) -> InputSource:
    schema = pq.read_schema(files[0])
    for other in files[1:]:
        if pq.read_schema(other).names != schema.names:
            raise ValueError(f"parquet files under {root} have different columns: {files[0]} vs {other}")
    num_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in files)

    def iter_records(columns: list[str], chunk_rows: int):
        for file in files:
            parquet = pq.ParquetFile(file, **PARQUET_READ_OPTIONS)
            for batch in parquet.iter_batches(batch_size=chunk_rows, columns=columns):
                yield batch.to_pylist()

    return InputSource(
        name, root, schema.names, _struct_fields(schema), num_rows, root if root.is_dir() else root.parent, iter_records
    )


def _open_arrow(path: Path):
    """A record-batch reader for an arrow IPC file in either format (datasets writes the stream format).

    Plain file reads, not a memory map: mapped pages of a file read once count in the resident set
    until the kernel needs them, so memory would look like it grows with the input.
    """
    try:
        return pa.ipc.open_stream(pa.OSFile(str(path)))
    except pa.ArrowInvalid:
        return pa.ipc.open_file(pa.OSFile(str(path)))


def _batches(reader) -> Iterator[pa.RecordBatch]:
    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        for index in range(reader.num_record_batches):
            yield reader.get_batch(index)
    else:
        yield from reader


def _rechunk(batches: Iterable[pa.RecordBatch | pa.Table], columns: list[str], chunk_rows: int):
    """Re-slice arrow batches of any size into lists of at most ``chunk_rows`` records."""
    for batch in batches:
        selected = batch.select(columns)
        for start in range(0, selected.num_rows, chunk_rows):
            yield selected.slice(start, chunk_rows).to_pylist()


def _arrow_source(files: list[Path], name: str, root: Path) -> InputSource:
    schema = _open_arrow(files[0]).schema

    def iter_records(columns: list[str], chunk_rows: int):
        for file in files:
            yield from _rechunk(_batches(_open_arrow(file)), columns, chunk_rows)

    return InputSource(
        name, root, schema.names, _struct_fields(schema), None, root if root.is_dir() else root.parent, iter_records
    )


def _hf_disk_source(path: Path, split: str | None) -> InputSource:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if split is None or split not in loaded:
            raise ValueError(
                f"{path} is a DatasetDict with splits {list(loaded)}; choose one with --input-split "
                f"(run once per split, e.g. --input-split train, then --val-input {path} --input-split test)"
            )
        dataset = loaded[split]
    else:
        if split is not None:
            raise ValueError(f"--input-split {split!r} given but {path} holds a single Dataset, not a DatasetDict")
        dataset = loaded
    schema = dataset.data.schema
    # save_to_disk writes plain arrow stream files; read them as files (see _open_arrow) unless the dataset
    # has an indices mapping (a selection over its files), which only datasets itself can apply.
    files = [Path(entry["filename"]) for entry in dataset.cache_files]
    stream_files = getattr(dataset, "_indices", None) is None and bool(files) and all(f.exists() for f in files)

    def iter_records(columns: list[str], chunk_rows: int):
        if stream_files:
            for file in files:
                yield from _rechunk(_batches(_open_arrow(file)), columns, chunk_rows)
            return
        arrow = dataset.select_columns(columns).with_format("arrow")
        for table in arrow.iter(batch_size=chunk_rows):
            yield table.to_pylist()

    name = path.name + (f"[{split}]" if split else "")
    return InputSource(name, path, schema.names, _struct_fields(schema), len(dataset), path, iter_records)


def _jsonl_source(path: Path) -> InputSource:
    columns: dict[str, None] = {}
    is_json_list = path.suffix.lower() == ".json"
    if is_json_list:
        with path.open(encoding="utf-8") as handle:
            records = json.load(handle)
        if not isinstance(records, list):
            raise ValueError(f"{path}: a .json input must hold a list of objects (use .jsonl for one object per line)")
        for record in records[:JSONL_SCHEMA_SCAN_ROWS]:
            if isinstance(record, dict):
                columns.update(dict.fromkeys(record))
    else:
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle):
                if number >= JSONL_SCHEMA_SCAN_ROWS:
                    break
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(record, dict):
                    columns.update(dict.fromkeys(record))

    def parse_lines() -> Iterator[dict | MalformedRecord]:
        if is_json_list:
            for position, record in enumerate(records):
                yield record if isinstance(record, dict) else MalformedRecord(f"item {position} is not a JSON object")
            return
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue  # blank lines are not rows
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    yield MalformedRecord(f"line {number} is not valid JSON: {error}")
                    continue
                yield record if isinstance(record, dict) else MalformedRecord(f"line {number} is not a JSON object")

    def iter_records(wanted: list[str], chunk_rows: int):
        chunk: list[dict | MalformedRecord] = []
        for record in parse_lines():
            if isinstance(record, dict):
                record = {column: record.get(column) for column in wanted}
            chunk.append(record)
            if len(chunk) >= chunk_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    num_rows = len(records) if is_json_list else None
    return InputSource(path.name, path, list(columns), {}, num_rows, path.parent, iter_records)


def records_source(
    name: str, records: Callable[[], Iterable[dict[str, Any]]], columns: list[str], num_rows: int | None = None
) -> InputSource:
    """An input made of in-memory records (the embedded demo; Python callers with PIL images).

    ``records`` is a zero-argument callable returning a fresh iterable, so the source can be read
    more than once.
    """

    def iter_records(wanted: list[str], chunk_rows: int):
        chunk: list[dict] = []
        for record in records():
            chunk.append({column: record.get(column) for column in wanted})
            if len(chunk) >= chunk_rows:
                yield chunk
                chunk = []
        if chunk:
            yield chunk

    return InputSource(name, Path(name), list(columns), {}, num_rows, None, iter_records)


ACCEPTED_SHAPES = (
    "an HF datasets folder (save_to_disk), a .parquet file or folder of them, an .arrow file or folder of them, "
    "a .jsonl file, or a .json list"
)


def open_input(path: str | Path, split: str | None = None) -> InputSource:
    """Recognise and open one input (see the module docstring); raises ``ValueError`` at start-up if unusable."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"input {path} does not exist; expected {ACCEPTED_SHAPES}")
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            return _hf_disk_source(path, split)
        parquet_files = sorted(path.rglob("*.parquet"))
        if parquet_files:
            return _parquet_source(parquet_files, path.name, path)
        arrow_files = sorted(path.rglob("*.arrow"))
        if arrow_files:
            return _arrow_source(arrow_files, path.name, path)
        raise ValueError(f"input folder {path} holds no dataset; expected {ACCEPTED_SHAPES}")
    if split is not None:
        raise ValueError(f"--input-split only applies to a save_to_disk DatasetDict folder, not to the file {path}")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        return _parquet_source([path], path.name, path)
    if suffix == ".arrow":
        return _arrow_source([path], path.name, path)
    if suffix in (".jsonl", ".json"):
        return _jsonl_source(path)
    raise ValueError(f"input {path}: unsupported file type {suffix!r}; expected {ACCEPTED_SHAPES}")
