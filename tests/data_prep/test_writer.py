"""The streaming parquet writer: row groups bounded by rows and bytes, atomic finish, clean abort."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from calibrl_ext.data import ParquetStreamWriter

SCHEMA = pa.schema([("i", pa.int64()), ("blob", pa.binary())])


def test_row_groups_are_bounded_by_rows_and_bytes(tmp_path):
    """No row group exceeds row_group_rows rows, and a byte budget closes groups early; all rows survive in order."""
    path = tmp_path / "x.parquet"
    with ParquetStreamWriter(path, SCHEMA, row_group_rows=4, row_group_bytes=1000) as writer:
        for i in range(10):
            writer.write({"i": i, "blob": b"x" * 10}, payload_bytes=10)
        for i in range(10, 13):
            writer.write({"i": i, "blob": b"y" * 600}, payload_bytes=600)
    metadata = pq.ParquetFile(path).metadata
    sizes = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
    assert sizes == [4, 4, 4, 1] and max(sizes) <= 4
    assert pq.read_table(path).column("i").to_pylist() == list(range(13))


def test_file_appears_only_when_closed_and_abort_leaves_nothing(tmp_path):
    """Rows go to <path>.tmp until close() renames it; an exception inside the context deletes the temp file."""
    path = tmp_path / "x.parquet"
    writer = ParquetStreamWriter(path, SCHEMA, row_group_rows=1)
    writer.write({"i": 1, "blob": b""})
    assert not path.exists() and (tmp_path / "x.parquet.tmp").exists()
    writer.close()
    assert path.exists() and not (tmp_path / "x.parquet.tmp").exists()

    with pytest.raises(RuntimeError):
        with ParquetStreamWriter(tmp_path / "y.parquet", SCHEMA) as other:
            other.write({"i": 2, "blob": b""})
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == [path]


def test_invalid_bounds_are_rejected(tmp_path):
    """Row-group bounds below 1 are a ValueError, not a silent infinite buffer."""
    with pytest.raises(ValueError, match="row_group_rows"):
        ParquetStreamWriter(tmp_path / "x.parquet", SCHEMA, row_group_rows=0)
