"""The output parquet schema: verl's columns plus the expert solution CalibRL needs.

One row per prompt (docs/data_prep.md has the table):

- ``data_source`` (str): dataset name; verl reports validation metrics per data_source.
- ``prompt`` (list of {role, content}): chat messages; the user text holds one ``<image>`` per image
  and the instruction suffix (:mod:`calibrl_ext.data.prompts`).
- ``images`` (list of {bytes, path}): encoded images, in placeholder order.
- ``ability`` (str): task family label verl carries along (``math`` by default).
- ``reward_model`` ({style: "rule", ground_truth: str}).
- ``extra_info`` (struct): ``split``, ``index`` (position in its split file), ``row_id`` (stable input
  id), ``input_name`` (input it came from), ``question`` / ``answer`` (raw), ``expert_status``,
  ``expert_pass``, ``expert_rewrapped``, ``failed_expert`` (a blanked failing expert's text, else ""),
  ``prompt_tokens`` / ``expert_tokens`` (-1 when no
  ``--tokenizer``), then every ``--keep-col`` as a string.
- ``expert_solution`` (str): the expert trajectory e in ``<think>…</think><answer>…</answer>``
  format; ``""`` (never null) when the prompt has none.
- ``expert_solutions`` (list of str), only in ``--max-experts K`` builds (K > 1): every kept expert, in input
  order (``[]`` when none); ``expert_solution`` is its first element (or ``""``), so single-expert consumers
  (the fork kit, ``calibrl.max_experts_per_prompt=1``) read these files unchanged. ``extra_info`` then
  describes the first expert (its status, pass, tokens).

``expert_pass`` is what the released code's ``pass_ratio`` column recorded (it used an expert only
when ``pass_ratio > 0``): True when the expert's answer passes ``calibrl_ext.reward`` against the
ground truth. By default (``--failing-expert blank``) a failing expert is moved out of
``expert_solution`` into ``extra_info.failed_expert``, so ``expert_solution != ""`` alone tells a
consumer whether the prompt has a usable expert, as ``pass_ratio > 0`` did.
"""

from __future__ import annotations

import enum

import pyarrow as pa

#: Value of ``reward_model.style``: a rule-based (verifiable) reward.
REWARD_STYLE = "rule"

#: Split names written to ``extra_info.split`` and used as output file stems.
TRAIN_SPLIT = "train"
VAL_SPLIT = "val"
SPLITS = (TRAIN_SPLIT, VAL_SPLIT)

#: ``extra_info.prompt_tokens`` / ``expert_tokens`` when no tokenizer was given.
NOT_COUNTED = -1


class ExpertStatus(str, enum.Enum):
    """``extra_info.expert_status``: what became of the row's expert solution."""

    OK = "ok"  #: present, well formatted as given, passes the reward
    MISSING = "missing"  #: no expert for this prompt; ``expert_solution`` is ""
    REWRAPPED = "rewrapped"  #: rewrapped into <think>/<answer> by data prep; passes the reward
    #: present and formatted, but its answer fails the reward (expert_pass False); by default its text is moved
    #: to ``extra_info.failed_expert`` and ``expert_solution`` is "" (--failing-expert blank)
    FAILS_REWARD = "fails_reward"
    UNCHECKED = "unchecked"  #: --skip-expert-check: reward not run, expert_pass True (released default)


IMAGE_STRUCT = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
MESSAGE_STRUCT = pa.struct([("role", pa.string()), ("content", pa.string())])
REWARD_MODEL_STRUCT = pa.struct([("style", pa.string()), ("ground_truth", pa.string())])

#: Fixed ``extra_info`` fields, in order; ``--keep-col`` columns follow as strings.
EXTRA_INFO_FIELDS: tuple[tuple[str, pa.DataType], ...] = (
    ("split", pa.string()),
    ("index", pa.int64()),
    ("row_id", pa.string()),
    ("input_name", pa.string()),
    ("question", pa.string()),
    ("answer", pa.string()),
    ("expert_status", pa.string()),
    ("expert_pass", pa.bool_()),
    ("expert_rewrapped", pa.bool_()),
    ("failed_expert", pa.string()),
    ("prompt_tokens", pa.int64()),
    ("expert_tokens", pa.int64()),
)

EXPERT_COLUMN = "expert_solution"
#: The list column of ``--max-experts`` builds (the recipe's ``calibrl.expert_list_column`` default).
EXPERT_LIST_COLUMN = "expert_solutions"


def output_schema(keep_cols: tuple[str, ...] | list[str] = (), multi_expert: bool = False) -> pa.Schema:
    """The arrow schema of a train/val parquet; ``keep_cols`` become extra string fields of ``extra_info``;
    ``multi_expert`` (``--max-experts`` > 1) adds the ``expert_solutions`` list column."""
    fixed_names = {name for name, _ in EXTRA_INFO_FIELDS}
    clashes = sorted(set(keep_cols) & fixed_names)
    if clashes:
        raise ValueError(f"--keep-col {clashes} clash with fixed extra_info fields {sorted(fixed_names)}; rename them")
    extra_info = pa.struct(list(EXTRA_INFO_FIELDS) + [(name, pa.string()) for name in keep_cols])
    return pa.schema(
        [
            ("data_source", pa.string()),
            ("prompt", pa.list_(MESSAGE_STRUCT)),
            ("images", pa.list_(IMAGE_STRUCT)),
            ("ability", pa.string()),
            ("reward_model", REWARD_MODEL_STRUCT),
            ("extra_info", extra_info),
            (EXPERT_COLUMN, pa.string()),
        ]
        + ([(EXPERT_LIST_COLUMN, pa.list_(pa.string()))] if multi_expert else [])
    )
