"""Streaming parquet writer: rows in, row groups out, bounded memory.

Rows are buffered until a row group is full (:data:`DEFAULT_ROW_GROUP_ROWS` rows or
:data:`DEFAULT_ROW_GROUP_BYTES` of payload, whichever comes first), then written as one row group
and dropped. Memory is therefore bounded by one row group, whatever the dataset size.

The file is written to ``<path>.tmp`` and renamed on :meth:`close`, so an interrupted build never
leaves a truncated file that looks finished. Reusable by other CLIs (benchmarks): give it any
arrow schema.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

#: Rows per row group (upper bound). Readers such as ``datasets`` load whole row groups.
DEFAULT_ROW_GROUP_ROWS = 256

#: Buffered payload (approximate bytes, images included) that closes a row group early, so that a
#: dataset of large images still flushes often.
DEFAULT_ROW_GROUP_BYTES = 64 * 2**20

#: Parquet compression codec. Images are already compressed; zstd still shrinks the text columns.
COMPRESSION = "zstd"


class ParquetStreamWriter:
    """Write rows (dicts matching ``schema``) to one parquet file in bounded memory.

    Args:
        path: final file path (parent folders are created).
        schema: arrow schema the rows follow.
        row_group_rows: rows per row group, at most.
        row_group_bytes: approximate buffered bytes that close a row group early.

    Use as a context manager, or call :meth:`close` (it renames the temporary file into place);
    :meth:`abort` deletes the temporary file instead.
    """

    def __init__(
        self,
        path: str | Path,
        schema: pa.Schema,
        row_group_rows: int = DEFAULT_ROW_GROUP_ROWS,
        row_group_bytes: int = DEFAULT_ROW_GROUP_BYTES,
    ):
        if row_group_rows < 1 or row_group_bytes < 1:
            raise ValueError(f"row_group_rows ({row_group_rows}) and row_group_bytes ({row_group_bytes}) must be >= 1")
        self.path = Path(path)
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.row_group_bytes = row_group_bytes
        self.rows_written = 0
        self._buffer: list[dict[str, Any]] = []
        self._buffer_bytes = 0
        self._tmp_path = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = pq.ParquetWriter(self._tmp_path, schema, compression=COMPRESSION)

    def write(self, row: dict[str, Any], payload_bytes: int = 0) -> None:
        """Buffer one row; ``payload_bytes`` (e.g. its image bytes) counts toward the row-group budget."""
        self._buffer.append(row)
        self._buffer_bytes += payload_bytes
        if len(self._buffer) >= self.row_group_rows or self._buffer_bytes >= self.row_group_bytes:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows as one row group."""
        if not self._buffer:
            return
        table = pa.Table.from_pylist(self._buffer, schema=self.schema)
        self._writer.write_table(table, row_group_size=len(self._buffer))
        self.rows_written += len(self._buffer)
        self._buffer = []
        self._buffer_bytes = 0

    def close(self) -> Path:
        """Flush, finish the file and move it into place; returns the final path."""
        self.flush()
        self._writer.close()
        os.replace(self._tmp_path, self.path)
        return self.path

    def abort(self) -> None:
        """Drop buffered rows and delete the temporary file (the final path is left untouched)."""
        self._buffer = []
        self._writer.close()
        self._tmp_path.unlink(missing_ok=True)

    def __enter__(self) -> ParquetStreamWriter:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
