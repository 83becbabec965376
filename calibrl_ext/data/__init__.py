"""The data library: multimodal datasets + expert solutions -> verl parquet (``data_prep/build_parquet.py``).

Public pieces (reusable by other CLIs such as ``data_prep/build_benchmarks.py``):

- :func:`build` / :class:`BuildConfig` / :class:`BuildSummary`: one whole build;
- :class:`ParquetStreamWriter`: bounded-memory parquet writer (:mod:`calibrl_ext.data.writer`);
- :func:`prepare_image` / :class:`PreparedImage`: read, verify, resize, encode ``{bytes, path}``
  (:mod:`calibrl_ext.data.images`);
- :class:`RejectLog` / :class:`Reject` / :class:`RejectReason` / :class:`RowRejected`: the rejects
  file (:mod:`calibrl_ext.data.rejects`);
- :func:`build_prompt_messages` and :data:`PAPER_INSTRUCTION_SUFFIX` (:mod:`calibrl_ext.data.prompts`);
- :func:`output_schema` and :class:`ExpertStatus` (:mod:`calibrl_ext.data.schema`);
- :func:`generate_demo_records` / :class:`DemoConfig`: the embedded demo dataset.

The schema of the files is documented in ``docs/data_prep.md``.
"""

from calibrl_ext.data.config import BuildConfig, ConfigError
from calibrl_ext.data.demo import DemoConfig, generate_demo_records
from calibrl_ext.data.images import PreparedImage, prepare_image
from calibrl_ext.data.pipeline import BuildError, BuildSummary, build
from calibrl_ext.data.presets import PRESETS, ColumnMapping
from calibrl_ext.data.prompts import DEFAULT_PROMPT_TEMPLATE, PAPER_INSTRUCTION_SUFFIX, build_prompt_messages
from calibrl_ext.data.rejects import Reject, RejectLog, RejectReason, RowRejected, read_rejects
from calibrl_ext.data.schema import EXPERT_COLUMN, ExpertStatus, output_schema
from calibrl_ext.data.writer import ParquetStreamWriter

__all__ = [
    "BuildConfig",
    "BuildError",
    "BuildSummary",
    "ColumnMapping",
    "ConfigError",
    "DEFAULT_PROMPT_TEMPLATE",
    "DemoConfig",
    "EXPERT_COLUMN",
    "ExpertStatus",
    "PAPER_INSTRUCTION_SUFFIX",
    "PRESETS",
    "ParquetStreamWriter",
    "PreparedImage",
    "Reject",
    "RejectLog",
    "RejectReason",
    "RowRejected",
    "build",
    "build_prompt_messages",
    "generate_demo_records",
    "output_schema",
    "prepare_image",
    "read_rejects",
]
