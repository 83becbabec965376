"""The evaluation parquet: verl's validation columns, one ``extra_info`` schema for every benchmark.

One row per benchmark record (``docs/evaluation.md`` has the table):

- ``data_source`` (str): the benchmark and split, plus MathVerse's version
  (``mathvista_testmini``, ``mathverse_testmini/vision_only``, …); verl reports ``val-core`` metrics
  per data_source.
- ``prompt`` (list of {role, content}): the same instruction template as training, ``<image>`` per image.
- ``images`` (list of {bytes, path}): the record's images (empty for text-only benchmarks).
- ``ability`` (str): ``"math"``.
- ``reward_model`` ({style: "rule", ground_truth: str}): the gold answer as the reward compares it
  (a choice letter for choice questions).
- ``extra_info`` (struct, the same fields for every benchmark so that several parquets load together
  in verl's ``RLHFDataset``; nested data is JSON text):

  - ``split`` (str), ``index`` (int64, row position in this file);
  - ``eval_id`` (str): ``<data_source>/<record id>``, unique; ``compute_score`` returns it, which is how
    reports join verl's validation dumps back to these rows;
  - ``benchmark`` (str), ``record_id`` (str): the benchmark's own unique id;
  - ``answer_spec`` (str, JSON): :class:`calibrl_ext.answers.AnswerSpec`, read by ``compute_score``;
  - ``group`` (str, JSON): keys the official aggregates need (MathVerse ``problem_index`` and
    ``problem_version``; We-Math ``ID`` and ``key``; DynaMath ``seed`` and ``variant``);
  - ``metadata`` (str, JSON): fields kept for breakdowns (subject, level, category, …);
  - ``question`` (str): the question for a judge (MathVerse ``question_for_eval`` when present);
  - ``answer`` (str): the gold answer exactly as the benchmark stores it.

The file's schema metadata (key :data:`PARQUET_METADATA_KEY`) records how it was built: benchmark,
split, prompt template, input path, licence. Reports read it back.
"""

from __future__ import annotations

import json
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from calibrl_ext.data.schema import IMAGE_STRUCT, MESSAGE_STRUCT, REWARD_MODEL_STRUCT

#: Key of the build provenance (JSON) in the parquet file's schema metadata.
PARQUET_METADATA_KEY = b"calibrl_eval"

EVAL_EXTRA_INFO = pa.struct(
    [
        ("split", pa.string()),
        ("index", pa.int64()),
        ("eval_id", pa.string()),
        ("benchmark", pa.string()),
        ("record_id", pa.string()),
        ("answer_spec", pa.string()),
        ("group", pa.string()),
        ("metadata", pa.string()),
        ("question", pa.string()),
        ("answer", pa.string()),
    ]
)


def eval_schema(provenance: dict[str, Any] | None = None) -> pa.Schema:
    """The arrow schema of an evaluation parquet, with ``provenance`` stored as file metadata."""
    schema = pa.schema(
        [
            ("data_source", pa.string()),
            ("prompt", pa.list_(MESSAGE_STRUCT)),
            ("images", pa.list_(IMAGE_STRUCT)),
            ("ability", pa.string()),
            ("reward_model", REWARD_MODEL_STRUCT),
            ("extra_info", EVAL_EXTRA_INFO),
        ]
    )
    if provenance is not None:
        schema = schema.with_metadata({PARQUET_METADATA_KEY: json.dumps(provenance, ensure_ascii=False)})
    return schema


def read_provenance(path: str) -> dict[str, Any]:
    """The build provenance stored in an evaluation parquet ({} for a parquet this project did not build)."""
    metadata = pq.read_schema(path).metadata or {}
    raw = metadata.get(PARQUET_METADATA_KEY)
    return json.loads(raw) if raw else {}


def eval_id(data_source: str, record_id: str) -> str:
    """The row key that joins validation dumps to rows: ``<data_source>/<record id>``."""
    return f"{data_source}/{record_id}"
