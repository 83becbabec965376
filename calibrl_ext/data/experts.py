"""Expert solutions: normalise, join from a side file, check the format, check the answer.

The expert trajectory e (docs/method.md, Notation) is a written solution in the policy's own output
format ``<think>…</think><answer>…</answer>``. It arrives in several shapes:

- a plain string (CalibRL's released ``solution`` column);
- a list of chat messages, e.g. LUFFY's ``target`` = ``[{"role": "assistant", "content": ...}]``
  (the first assistant message is used; the released code took element 0);
- a ``{"content": ...}`` dict;
- or a separate JSONL/parquet file (e.g. GPT-4o outputs) joined on an id column.

Format and answer checks use the project's reward function (``calibrl_ext.reward``:
``is_well_formatted``, ``extract_answer``, ``compute_score``), never a checker of their own.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

#: Column names tried, in order, for the expert text when none is given (input or side file).
EXPERT_COLUMN_CANDIDATES = ("expert_solution", "solution", "target")

#: Fields of the reward module data prep relies on.
REWARD_FUNCTIONS = ("compute_score", "is_well_formatted", "extract_answer")

_BOXED = "\\boxed{"


def reward_module():
    """Import ``calibrl_ext.reward`` and check that it has what data prep calls.

    Raises:
        ImportError: with the fix (at start-up; the build has not read a row yet).
    """
    try:
        from calibrl_ext import reward
    except ImportError as error:
        raise ImportError(
            f"calibrl_ext.reward cannot be imported ({error}); data prep checks experts with the project's reward "
            "function. Install the package (`pip install -e .`) or pass --skip-expert-check"
        ) from error
    missing = [name for name in REWARD_FUNCTIONS if not callable(getattr(reward, name, None))]
    if missing:
        raise ImportError(f"calibrl_ext.reward lacks {missing}; data prep needs {list(REWARD_FUNCTIONS)}")
    return reward


def expert_text(value: Any) -> str | None:
    """The expert solution in ``value`` as a string, or None when there is none.

    Accepts a string, a ``{"content": ...}`` dict, or a list of messages / strings (the first
    assistant message wins, else the first element). Empty strings and NaN count as missing.
    """
    if value is None:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, dict):
        return expert_text(value.get("content"))
    if isinstance(value, list | tuple):
        if not value:
            return None
        assistant = [m for m in value if isinstance(m, dict) and m.get("role") == "assistant"]
        return expert_text(assistant[0] if assistant else value[0])
    return str(value)


def expert_candidates(value: Any) -> list[Any]:
    """The expert solutions of a ``--max-experts`` row, in order: a list's elements (each later normalised by
    :func:`expert_text`), a single value as one, nothing for None/NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, list | tuple):
        return list(value)
    if hasattr(value, "tolist") and not isinstance(value, str):  # a numpy array from a parquet list column
        return list(value.tolist())
    return [value]


def unwrap_boxed_answer(answer: str) -> str:
    """``\\boxed{X}`` -> ``X`` when the whole ground truth is one box (ViRL39K's style); else unchanged."""
    from calibrl_ext.answers import extract_boxed

    stripped = answer.strip()
    if stripped.startswith(_BOXED) and stripped.endswith("}"):
        inner = extract_boxed(stripped)
        if inner is not None and inner == stripped[len(_BOXED) : -1].strip():
            return inner
    return answer


_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def _strip_tags(text: str) -> str:
    for tag in _TAGS:
        text = text.replace(tag, "")
    return text.strip()


def rewrap_expert(text: str) -> str | None:
    """Rewrite ``text`` as ``<think>…</think><answer>…</answer>``, or None when no answer can be found.

    The answer is the one the reward function extracts from the last ``<answer>`` tag
    (``calibrl_ext.reward.extract_answer``); failing that, the last ``\\boxed{...}``
    (``calibrl_ext.answers.extract_boxed``). The reasoning is the text before that answer tag (or
    the whole text), stripped of format tags.
    """
    from calibrl_ext.answers import extract_boxed
    from calibrl_ext.reward import extract_answer

    answer = extract_answer(text)
    if answer is not None:
        # The same tag pair extract_answer read: the last </answer> and the nearest <answer> before it.
        reasoning = _strip_tags(text[: text.rfind("<answer>", 0, text.rfind("</answer>"))])
    else:
        answer = extract_boxed(text)
        reasoning = _strip_tags(text)
    if answer is None or not answer.strip():
        return None
    return f"<think>\n{reasoning}\n</think>\n<answer>{answer.strip()}</answer>"


@dataclass
class ExpertFile:
    """Expert solutions from a side file, keyed by id (joined onto input rows by ``--id-col``).

    Attributes:
        path: the JSONL / JSON / parquet file.
        id_col: its id column; ids are compared as strings.
        text_col: its expert column.
        by_id: id -> expert text (first occurrence wins); with ``multi`` id -> list of every row's value, in file
            order (several experts per prompt, ``--max-experts``).
        multi: keep every row of an id instead of the first.
        duplicate_ids: rows of an id already seen (ignored unless ``multi``).
        used_ids: ids joined onto some input row so far.
    """

    path: Path
    id_col: str
    text_col: str
    by_id: dict[str, Any] = field(default_factory=dict)
    multi: bool = False
    duplicate_ids: int = 0
    used_ids: set[str] = field(default_factory=set)

    def lookup(self, row_id: str) -> Any:
        value = self.by_id.get(row_id)
        if value is not None:
            self.used_ids.add(row_id)
        return value

    @property
    def unused_ids(self) -> list[str]:
        return [key for key in self.by_id if key not in self.used_ids]


def _side_file_records(path: Path, columns: list[str] | None) -> tuple[list[str], Any]:
    """(column names, iterator of dict records) of a JSONL / JSON / parquet side file."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        parquet = pq.ParquetFile(path, pre_buffer=False)  # see readers.PARQUET_READ_OPTIONS
        names = parquet.schema_arrow.names

        def parquet_records():
            for batch in parquet.iter_batches(batch_size=1024, columns=columns):
                yield from batch.to_pylist()

        return names, parquet_records()
    if suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as handle:
            if suffix == ".json":
                records = json.load(handle)
                if not isinstance(records, list):
                    raise ValueError(f"--expert-file {path}: a .json file must hold a list of objects")
            else:
                records = []
                for number, line in enumerate(handle, start=1):
                    if not line.strip():
                        continue
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as error:
                        raise ValueError(f"--expert-file {path} line {number} is not valid JSON: {error}") from None
        names = sorted({key for record in records if isinstance(record, dict) for key in record})
        return names, iter(records)
    raise ValueError(f"--expert-file {path}: unsupported extension {suffix!r}; use .jsonl, .json or .parquet")


def load_expert_file(path: str | Path, id_col: str, text_col: str | None = None, multi: bool = False) -> ExpertFile:
    """Read a side file of expert solutions into memory (texts only: tens of MB for ~40k experts).

    With ``multi`` every row of an id is kept (a list per id, file order): several experts per prompt.

    Raises:
        ValueError / FileNotFoundError: at start-up, naming the file, the missing column and the flag.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--expert-file {path} does not exist")
    names, _ = _side_file_records(path, None)
    if id_col not in names:
        raise ValueError(f"--expert-file {path} has no id column {id_col!r} (columns: {names}); set --expert-id-col")
    if text_col is None:
        text_col = next((name for name in EXPERT_COLUMN_CANDIDATES if name in names), None)
        if text_col is None:
            raise ValueError(
                f"--expert-file {path} has none of the expert columns {list(EXPERT_COLUMN_CANDIDATES)} "
                f"(columns: {names}); set --expert-file-col"
            )
    elif text_col not in names:
        raise ValueError(f"--expert-file {path} has no column {text_col!r} (columns: {names}); fix --expert-file-col")
    experts = ExpertFile(path=path, id_col=id_col, text_col=text_col, multi=multi)
    _, records = _side_file_records(path, [id_col, text_col])
    for record in records:
        if not isinstance(record, dict) or record.get(id_col) is None:
            raise ValueError(f"--expert-file {path}: a record has no {id_col!r} value: {str(record)[:200]}")
        key = str(record[id_col])
        if multi:
            experts.by_id.setdefault(key, []).append(record.get(text_col))
            continue
        if key in experts.by_id:
            experts.duplicate_ids += 1
            continue
        experts.by_id[key] = record.get(text_col)
    return experts
