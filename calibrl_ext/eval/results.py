"""Join verl's validation dumps back to the evaluation parquets.

verl's trainer writes one JSON line per generated response to ``<trainer.validation_data_dir>/<step>.jsonl``
(``_validate`` → ``_dump_generations``): ``input``, ``output``, ``gts``, ``score``, ``step``, every key of
the reward's dict (``acc``, ``format``, ``pred``, ``eval_id``, …) and ``uid`` (``<uid>_<session>_<index>``,
the session being the sample number within the prompt's n). It does NOT write ``data_source`` or
``extra_info``: the join key is ``eval_id``, which :func:`calibrl_ext.reward.compute_score` copies from
``extra_info`` into its result. Rows present in the parquets but absent from the dump (verl filtered an
overlong prompt, or a generation failed) keep no samples and count as wrong; the report says how many.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from calibrl_ext.eval.metrics import EvalRow
from calibrl_ext.eval.schema import read_provenance


class ResultsError(ValueError):
    """Dumps or parquets that cannot be joined; the message says which file and the fix."""


@dataclass
class EvalEntry:
    """All rows of one (benchmark, split): what one line of the report covers."""

    benchmark: str
    split: str
    rows: list[EvalRow] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)
    parquets: list[str] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.benchmark}_{self.split}"

    @property
    def data_sources(self) -> list[str]:
        return sorted({row.data_source for row in self.rows})


@dataclass
class RunResults:
    """One evaluation run, joined.

    Attributes:
        entries: by ``<benchmark>_<split>``.
        n: samples per prompt (the most sessions seen on any row, or the run's ``n``).
        dump_file: the dump that was read.
        dump_lines: responses in the dump.
        unmatched: dump lines whose ``eval_id`` is in none of the parquets.
        mean_format: share of responses that were well formatted.
    """

    entries: dict[str, EvalEntry]
    n: int
    dump_file: str
    dump_lines: int
    unmatched: int
    mean_format: float | None


def session_of(dump_uid: str, fallback: int) -> int:
    """The sample number of a dump line from its ``uid`` (``<uid>_<session>_<index>``)."""
    parts = str(dump_uid).rsplit("_", 2)
    if len(parts) == 3 and parts[1].isdigit():
        return int(parts[1])
    return fallback


def find_dump(generations: str | Path, step: int | None = None) -> Path:
    """The dump file to read: ``generations`` itself if a file, else ``<dir>/<step>.jsonl`` (default: the
    highest step present)."""
    path = Path(generations)
    if path.is_file():
        return path
    if not path.is_dir():
        raise ResultsError(
            f"no validation dump at {path}: run verl with trainer.validation_data_dir={path} "
            "(examples/eval.sh sets it to <out>/generations)"
        )
    steps = sorted((int(p.stem), p) for p in path.glob("*.jsonl") if p.stem.isdigit())
    if not steps:
        raise ResultsError(f"{path} holds no <step>.jsonl validation dump; did the run reach validation?")
    if step is None:
        return steps[-1][1]
    for found, file in steps:
        if found == step:
            return file
    raise ResultsError(f"{path} has no dump for step {step}; steps present: {[s for s, _ in steps]}")


def check_eval_parquets(paths: list[str]) -> None:
    """Raise :class:`ResultsError` unless every path is an evaluation parquet (``extra_info.eval_id``), so
    that a run is refused before it starts rather than after it, when the report cannot join it."""
    for path in paths:
        if not Path(path).is_file():
            raise ResultsError(f"evaluation parquet {path} does not exist")
        schema = pq.read_schema(path)
        extra_info = schema.field("extra_info").type if "extra_info" in schema.names else None
        if extra_info is None or not hasattr(extra_info, "get_field_index") or extra_info.get_field_index("eval_id") < 0:
            raise ResultsError(
                f"{path} is not an evaluation parquet (no extra_info.eval_id, so its responses cannot be joined back "
                "to benchmark rows): build it with data_prep/build_benchmarks.py"
            )


def load_parquet_rows(paths: list[str]) -> dict[str, EvalEntry]:
    """Empty-sample :class:`EvalRow` objects for every row of the evaluation parquets, by entry."""
    entries: dict[str, EvalEntry] = {}
    for path in paths:
        if not Path(path).is_file():
            raise ResultsError(f"evaluation parquet {path} does not exist")
        table = pq.read_table(path, columns=["data_source", "extra_info"])
        provenance = read_provenance(path)
        for record in table.to_pylist():
            info = record["extra_info"] or {}
            if not info.get("eval_id"):
                raise ResultsError(
                    f"{path} has rows without extra_info.eval_id: build it with data_prep/build_benchmarks.py"
                )
            benchmark = info.get("benchmark") or provenance.get("benchmark") or "unknown"
            split = info.get("split") or provenance.get("split") or ""
            entry = entries.setdefault(f"{benchmark}_{split}", EvalEntry(benchmark, split, provenance=provenance))
            if path not in entry.parquets:
                entry.parquets.append(path)
            entry.rows.append(
                EvalRow(
                    eval_id=info["eval_id"],
                    benchmark=benchmark,
                    split=split,
                    data_source=record["data_source"],
                    group=json.loads(info.get("group") or "{}"),
                )
            )
    return entries


def load_run(generations: str | Path, parquets: list[str], step: int | None = None, n: int | None = None) -> RunResults:
    """Read a validation dump and join it to the parquets' rows by ``eval_id``."""
    dump_file = find_dump(generations, step)
    entries = load_parquet_rows(parquets)
    by_id = {row.eval_id: row for entry in entries.values() for row in entry.rows}
    if len(by_id) != sum(len(entry.rows) for entry in entries.values()):
        raise ResultsError("the evaluation parquets share eval_ids: pass each benchmark parquet once")
    lines = unmatched = 0
    formats: list[float] = []
    next_session: dict[str, int] = {}
    with dump_file.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            record = json.loads(line)
            lines += 1
            if "eval_id" not in record or "acc" not in record:
                raise ResultsError(
                    f"{dump_file}:{line_number} has no 'eval_id'/'acc': the run must score with "
                    "reward.custom_reward_function.path=pkg://calibrl_ext.reward (name=compute_score)"
                )
            row = by_id.get(record["eval_id"])
            if row is None:
                unmatched += 1
                continue
            fallback = next_session.get(row.eval_id, 0)
            session = session_of(record.get("uid", ""), fallback)
            next_session[row.eval_id] = max(fallback, session) + 1
            if session in row.samples:
                raise ResultsError(f"{dump_file}:{line_number}: {row.eval_id} has two responses for sample {session}")
            row.samples[session] = float(record["acc"] or 0.0)
            if record.get("format") is not None:
                formats.append(float(record["format"]))
    seen = max((len(row.samples) for row in by_id.values()), default=0)
    return RunResults(
        entries=entries,
        n=max(n or 0, seen, 1),
        dump_file=str(dump_file),
        dump_lines=lines,
        unmatched=unmatched,
        mean_format=sum(formats) / len(formats) if formats else None,
    )
