"""Append one expert row per prompt group to a legacy verl / EasyR1 rollout batch (before the old-log-prob pass).

A legacy batch (``DataProto``) holds, per row: ``input_ids`` / ``attention_mask`` ``[L]`` (left-padded prompt of
length P followed by the right-padded response of length R), ``position_ids`` ``[L]`` (text) or ``[C, L]``
(Qwen2-VL / Qwen2.5-VL M-RoPE, C = 3, or 4 where the fork prepends text positions), ``responses`` ``[R]``, optional
``prompts`` ``[P]`` and ``response_mask`` ``[R]``; non-tensor columns (``uid``, ``multi_modal_inputs``,
``reward_model``, ...). The expert row of a group copies the prompt part and every non-tensor column of the group's
first row (so InternVL / Qwen-VL pixel inputs and the ground truth travel with it) and puts the tokenized expert
solution + EOS in the response part. No verl import: the batch's own class builds the result (``from_dict``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np
import torch

#: Non-tensor column the kit adds: what each row is (the driver step and the pads' exclusion read it).
ROW_KIND = "calibrl_row_kind"
ON_POLICY, EXPERT, PAD = 0, 1, 2

#: Tensor keys the kit knows how to build for an expert row; any other key present at append time is an error
#: (append before the step that computes it, e.g. before the reward or the old-log-prob pass).
_KNOWN_KEYS = (
    "input_ids", "attention_mask", "position_ids", "responses", "prompts", "response_mask", "rollout_log_probs",
)  # fmt: skip

#: Signature of the injected rope-index function: ``(input_ids [1, L], attention_mask [1, L], multi_modal_inputs)``
#: -> position ids ``[C, 1, L]`` (what transformers' ``get_rope_index`` returns first) for the whole row.
RopeIndexFn = Callable[[torch.Tensor, torch.Tensor, dict], torch.Tensor]


def _text_response_positions(prompt_positions: torch.Tensor, response_length: int) -> torch.Tensor:
    """Positions of the response part continuing the prompt's last position (what verl's rollouts write)."""
    delta = torch.arange(1, response_length + 1, dtype=prompt_positions.dtype)
    return prompt_positions[..., -1:] + delta


def _row_from_template(
    template: dict[str, torch.Tensor], response: torch.Tensor, response_valid: torch.Tensor, prompt_length: int
) -> dict[str, torch.Tensor]:
    """An expert row: ``template``'s prompt part, ``response`` ``[R]`` (valid where ``response_valid``) after it."""
    row = {}
    prompt_ids = template["input_ids"][:prompt_length]
    prompt_attention = template["attention_mask"][:prompt_length]
    row["input_ids"] = torch.cat([prompt_ids, response.to(prompt_ids.dtype)])
    row["attention_mask"] = torch.cat([prompt_attention, response_valid.to(prompt_attention.dtype)])
    row["responses"] = response.to(template["responses"].dtype)
    if "prompts" in template:
        row["prompts"] = template["prompts"].clone()
    if "response_mask" in template:
        row["response_mask"] = response_valid.to(template["response_mask"].dtype)
    if "rollout_log_probs" in template:
        # The rollout never sampled the expert row: it has no rollout log-probs. Zeros keep the batch rectangular;
        # the driver step removes the row before rollout correction reads them (LUFFY / RL-PLUS refuse the combination).
        row["rollout_log_probs"] = torch.zeros_like(template["rollout_log_probs"])
    prompt_positions = template["position_ids"][..., :prompt_length]
    row["position_ids"] = torch.cat(
        [prompt_positions, _text_response_positions(prompt_positions, response.shape[0])], dim=-1
    )
    return row


def _check_keys(tensors) -> None:
    unknown = [key for key in tensors.keys() if key not in _KNOWN_KEYS]
    if unknown:
        raise ValueError(
            f"append_expert_rows: the batch already holds {unknown}, which the kit cannot fill for an expert row. "
            "Append the expert rows right after the rollout is merged into the batch (before the reward, the "
            "old-log-prob pass and rollout correction), as docs/verl_fork.md says."
        )
    missing = [key for key in ("input_ids", "attention_mask", "position_ids", "responses") if key not in tensors.keys()]
    if missing:
        raise ValueError(f"append_expert_rows: the batch lacks {missing}; it must be a generated rollout batch")


def append_expert_rows(
    batch,
    expert_token_ids: Sequence[Optional[Sequence[int]]],
    eos_token_id: int,
    pad_token_id: int,
    world_size: int = 1,
    rope_index_fn: Optional[RopeIndexFn] = None,
):
    """Return a new batch (the input's class) with one expert row appended per group that has a solution.

    Args:
        batch: ``DataProto``-style object: ``.batch`` (tensors ``[N, ...]``), ``.non_tensor_batch`` (numpy ``[N]``,
            with ``uid``), ``.meta_info``, and a ``from_dict(tensors, non_tensors, meta_info)`` classmethod.
        expert_token_ids: ``[N]`` per row, the tokenized expert solution (without EOS) or None; the group's first
            non-None entry is used.
        eos_token_id, pad_token_id: appended after the solution / written past its end.
        world_size: the result's row count is padded to a multiple of this with PAD rows (a copy of the first
            row with an all-zero response mask, row kind :data:`PAD`, a uid of its own) that every later step
            of the kit excludes.
        rope_index_fn: for Qwen2-VL / Qwen2.5-VL, the family's rope-index function (see :data:`RopeIndexFn`) to
            compute the expert row's 3-D M-RoPE ids from the full row; the kit then checks that the ids equal
            the prompt's own and places them in the fork's layout (3 channels, or 4 with the text channel first).
            Without it, the response positions continue the prompt's last position, which is what verl's
            rollouts write for every model family.

    Returns:
        the new batch; ``non_tensor_batch[ROW_KIND]`` marks on-policy / expert / pad rows, and
        ``meta_info["calibrl_truncated_expert_rows"]`` counts solutions cut to the response length.
    """
    tensors, non_tensors = batch.batch, batch.non_tensor_batch
    _check_keys(tensors)
    if "uid" not in non_tensors:
        raise ValueError("append_expert_rows: non_tensor_batch has no 'uid'; add it before (legacy fit does)")
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    n_rows = tensors["input_ids"].shape[0]
    if len(expert_token_ids) != n_rows:
        raise ValueError(f"expert_token_ids has {len(expert_token_ids)} entries, the batch {n_rows} rows")
    if ROW_KIND in non_tensors:
        raise ValueError("append_expert_rows: the batch already has expert rows (calibrl_row_kind is set)")
    response_length = tensors["responses"].shape[-1]
    prompt_length = tensors["input_ids"].shape[-1] - response_length
    keys = list(tensors.keys())

    first_row_of_group: dict[Any, int] = {}
    solution_of_group: dict[Any, Sequence[int]] = {}
    for index, (uid, ids) in enumerate(zip(non_tensors["uid"], expert_token_ids)):
        first_row_of_group.setdefault(uid, index)
        if ids is not None and uid not in solution_of_group:
            solution_of_group[uid] = ids

    new_rows, sources, truncated = [], [], 0
    for uid, ids in solution_of_group.items():
        source = first_row_of_group[uid]
        template = {key: tensors[key][source] for key in keys}
        ids = list(ids) + [eos_token_id]
        truncated += len(ids) > response_length
        ids = ids[:response_length]
        response = torch.full((response_length,), pad_token_id, dtype=torch.long)
        response[: len(ids)] = torch.as_tensor(ids, dtype=torch.long)
        valid = torch.zeros(response_length, dtype=torch.long)
        valid[: len(ids)] = 1
        row = _row_from_template(template, response, valid, prompt_length)
        if rope_index_fn is not None:
            multi_modal = non_tensors["multi_modal_inputs"][source] if "multi_modal_inputs" in non_tensors else None
            row["position_ids"] = _rope_positions(
                rope_index_fn, row, template["position_ids"], prompt_length, multi_modal
            )
        new_rows.append(row)
        sources.append(source)

    n_total = n_rows + len(new_rows)
    n_pads = (-n_total) % world_size
    pad_rows = [pad_row({key: tensors[key][0] for key in keys}, prompt_length) for _ in range(n_pads)]
    added = new_rows + pad_rows
    out_tensors = {key: torch.cat([tensors[key]] + [row[key].unsqueeze(0) for row in added]) for key in keys}
    out_non_tensors = {}
    for key, column in non_tensors.items():
        extra = [column[s] for s in sources] + [column[0] for _ in range(n_pads)]
        out_non_tensors[key] = _concat_column(column, extra)
    out_non_tensors["uid"][n_total:] = [f"calibrl-pad-{i}" for i in range(n_pads)]
    kinds = [ON_POLICY] * n_rows + [EXPERT] * len(new_rows) + [PAD] * n_pads
    out_non_tensors[ROW_KIND] = np.array(kinds, dtype=np.int8)
    meta_info = dict(batch.meta_info)
    meta_info["calibrl_truncated_expert_rows"] = int(truncated)
    return type(batch).from_dict(tensors=out_tensors, non_tensors=out_non_tensors, meta_info=meta_info)


def _concat_column(column: np.ndarray, extra: list) -> np.ndarray:
    """``column`` followed by ``extra``; numeric columns keep their dtype, all others become object arrays."""
    if column.dtype.kind in "biuf":
        return np.concatenate([column, np.asarray(extra, dtype=column.dtype).reshape((len(extra),) + column.shape[1:])])
    out = np.empty(len(column) + len(extra), dtype=object)
    for index, value in enumerate(list(column) + extra):
        out[index] = value
    return out


def pad_row(template: dict[str, torch.Tensor], prompt_length: int) -> dict[str, torch.Tensor]:
    """A PAD row: ``template`` with its response switched off (attention and response mask 0 on the response)."""
    row = {key: value.clone() for key, value in template.items()}
    row["attention_mask"][prompt_length:] = 0
    if "response_mask" in row:
        row["response_mask"].zero_()
    return row


def _rope_positions(
    rope_index_fn: RopeIndexFn,
    row: dict[str, torch.Tensor],
    template_positions: torch.Tensor,
    prompt_length: int,
    multi_modal_inputs: Optional[dict],
) -> torch.Tensor:
    """The expert row's M-RoPE ids from the family's rope-index function, in the fork's channel layout."""
    if template_positions.ndim != 2:
        raise ValueError(
            f"rope_index_fn was given but the batch's position_ids are {tuple(template_positions.shape)} per row "
            "(text layout [L]); pass rope_index_fn only for Qwen2-VL / Qwen2.5-VL batches ([C, L] position ids)"
        )
    mm = dict(multi_modal_inputs or {})
    rope = rope_index_fn(row["input_ids"].unsqueeze(0), row["attention_mask"].unsqueeze(0), mm)
    rope = torch.as_tensor(rope)
    rope = rope.reshape(rope.shape[0], -1).to(template_positions.dtype)  # [3, L]
    channels = template_positions.shape[0]
    if channels == rope.shape[0] + 1:  # verl >= 0.6 layout: text positions first, then the 3 M-RoPE channels
        text = _text_positions(row["attention_mask"]).to(rope.dtype).unsqueeze(0)
        rope = torch.cat([text, rope], dim=0)
    elif channels != rope.shape[0]:
        raise ValueError(f"rope_index_fn returned {rope.shape[0]} channels, the batch has {channels}")
    valid_prompt = row["attention_mask"][:prompt_length].bool()
    ours = rope[:, :prompt_length][:, valid_prompt]
    if not torch.equal(ours, template_positions[:, :prompt_length][:, valid_prompt]):
        raise ValueError(
            "rope_index_fn gives the expert row prompt positions that differ from the batch's own: it is not the "
            "function that built this batch's position_ids (pass the model family's get_rope_index, with the "
            "prompt's multi_modal_inputs such as image_grid_thw)"
        )
    return rope


def _text_positions(attention_mask: torch.Tensor) -> torch.Tensor:
    return torch.clip(torch.cumsum(attention_mask, dim=-1) - 1, min=0)
