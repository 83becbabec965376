"""Fixes of verl 0.9.1 bugs that every platform hits (GPU with vLLM as much as the CPU backend), applied at plugin
import in every verl process (driver, TaskRunner, agent-loop and FSDP workers) by :mod:`calibrl_ext.plugin`.

Each fix names the verl function it replaces and why, checks verl's own function by BEHAVIOUR at import (not by
version string) and removes itself when verl no longer needs it, logging which way it went. (The CPU backend's
own patches live in :mod:`calibrl_ext.cpu_backend.verl_patches`; InternVL3's in :mod:`calibrl_ext.internvl`.)

1. ``verl.utils.tensordict_utils.maybe_fix_3d_position_ids`` (verl issue 7899; upstream PRs 7901 and 7767, not in
   a release). Qwen2.5-VL's per-sample mRoPE ``position_ids`` are ``(R, L)`` (R = 4: text + 3 mRoPE rows).
   TransferQueue packs a batch of them with ``torch.nested.as_nested_tensor(layout=torch.jagged)``. With sequence
   lengths that differ, torch makes the sequence axis ragged (``_ragged_idx=2``, values ``(R, sum L_i)``); when
   every sample has the same total length L, nothing is ragged and torch takes the ROW axis
   (``_ragged_idx=1``, values ``(B * R, L)``, offsets ``[0, R, 2R, ...]``). verl's function sets
   ``_ragged_idx = 2`` unconditionally (meant for a tensor whose index a TensorDict consolidate + pickle round trip
   reset to 1 while its values stay ``(R, sum L_i)``), which makes the equal-length tensor inconsistent:
   ``unbind()`` in ``index_select_tensor_dict`` (the actor update's mini-batch iterator) raises
   ``split_with_sizes expects split_sizes to sum exactly to L``, and ``chunk_tensordict`` (the log-prob path)
   catches the same error and silently builds WRONG position ids from a padded copy. The replacement reads the
   packed layout: when the row axis was taken as ragged it rebuilds the nested tensor with the sequence axis
   ragged (values ``(R, B * L)``, offsets ``[0, L, 2L, ...]``); any other layout gets verl's behaviour.
   verl binds the name at import in ``verl.workers.engine_workers``, ``verl.workers.engine.base`` and
   ``verl.workers.engine_workers_tinker`` (``from verl.utils.tensordict_utils import maybe_fix_3d_position_ids``);
   the plugin is imported by ``import verl`` before those modules, and a module already imported is rebound.
"""

from __future__ import annotations

import logging
import sys

import torch

logger = logging.getLogger(__name__)

#: Attribute set on every replacement, so applying the fixes twice replaces nothing twice.
_FIX_MARK = "__calibrl_verl_fix__"
#: verl modules that bind ``maybe_fix_3d_position_ids`` by name at import (verl 0.9.1, checked with grep).
POSITION_IDS_FIX_BINDERS: tuple[str, ...] = (
    "verl.utils.tensordict_utils",
    "verl.workers.engine_workers",
    "verl.workers.engine.base",
    "verl.workers.engine_workers_tinker",
)
#: Shape (R, L) of each sample, and batch size, of the equal-length probe run through verl's function at import.
PROBE_SAMPLE_SHAPE = (4, 3)
PROBE_BATCH_SIZE = 2

#: Outcome of :func:`apply_fixes` per fix, for tests and logs: ``"applied"`` or ``"not needed"``.
FIX_STATUS: dict[str, str] = {}
#: verl's own function per fix, as found at the first :func:`apply_fixes` (for the probe's tests).
VERL_ORIGINALS: dict[str, object] = {}


def _is_fix(fn) -> bool:
    return getattr(fn, _FIX_MARK, False)


# ------------------------------------------------------------------------------------------------------------
# 1. mRoPE position_ids of a batch whose samples all have the same length
# ------------------------------------------------------------------------------------------------------------
def rows_taken_as_ragged(position_ids: torch.Tensor) -> bool:
    """Whether a 3-D jagged ``position_ids`` (B, R, L_i) is packed with its ROW axis ragged.

    The packed values tell the layouts apart: with the row axis ragged they are ``(B * R, L)`` and the offsets end
    at ``B * R`` (values' dim 0); with the sequence axis ragged they are ``(R, sum L_i)`` and the offsets end at
    ``sum L_i`` (values' dim 1), whatever ``_ragged_idx`` a pickle round trip left. When both dims equal the end
    offset (``L == B * R``), a sequence-ragged reading would need the batch's total token count to equal its row
    count R (3 or 4), which no real batch of more than one sample has; for one sample both readings are the same
    tensor, so verl's behaviour is kept.
    """
    values = position_ids.values()
    total = int(position_ids.offsets()[-1])
    batch_size = position_ids.offsets().numel() - 1
    rows_ragged = values.shape[0] == total
    sequence_ragged = values.shape[1] == total
    if rows_ragged and sequence_ragged:
        return batch_size > 1
    return rows_ragged and not sequence_ragged


def with_sequence_axis_ragged(position_ids: torch.Tensor) -> torch.Tensor:
    """(B, R ragged, L) packed as values ``(B * R, L)`` -> the same samples packed as values ``(R, B * L)`` with
    offsets ``[0, L, 2L, ...]`` and ``_ragged_idx=2``, the layout verl's unbind, index_select and chunk expect."""
    row_counts = position_ids.offsets().diff().tolist()
    samples = position_ids.values().split(row_counts, dim=0)  # B tensors (R, L)
    values = torch.cat(samples, dim=1)
    lengths = torch.tensor([sample.shape[1] for sample in samples], dtype=torch.long, device=values.device)
    offsets = torch.zeros(len(samples) + 1, dtype=torch.long, device=values.device)
    torch.cumsum(lengths, dim=0, out=offsets[1:])
    return torch.nested.nested_tensor_from_jagged(values=values, offsets=offsets, jagged_dim=2)


def maybe_fix_3d_position_ids(data) -> None:
    """Replacement of ``verl.utils.tensordict_utils.maybe_fix_3d_position_ids`` (in place on ``data``, a
    TensorDict): a 3-D nested ``position_ids`` packed with its row axis ragged (an equal-length batch) is rebuilt
    with its sequence axis ragged; any other 3-D nested one gets verl's ``_ragged_idx = 2``."""
    if "position_ids" not in data.keys():
        return
    position_ids = data["position_ids"]
    if not (position_ids.is_nested and position_ids.dim() == 3):
        return
    if rows_taken_as_ragged(position_ids):
        data["position_ids"] = with_sequence_axis_ragged(position_ids)
    else:
        position_ids._ragged_idx = 2


setattr(maybe_fix_3d_position_ids, _FIX_MARK, True)


def verl_handles_equal_length_position_ids(fix_function) -> bool:
    """Probe: after ``fix_function`` on a TensorDict holding an equal-length (B, R, L) batch packed the way
    TransferQueue packs it, ``unbind()`` gives back every sample unchanged."""
    from tensordict import TensorDict

    rows, length = PROBE_SAMPLE_SHAPE
    samples = [torch.arange(rows * length).view(rows, length) + 100 * i for i in range(PROBE_BATCH_SIZE)]
    data = TensorDict(
        {"position_ids": torch.nested.as_nested_tensor(samples, layout=torch.jagged)}, batch_size=[PROBE_BATCH_SIZE]
    )
    try:
        fix_function(data)
        unbound = data["position_ids"].unbind()
    except RuntimeError:
        return False
    return len(unbound) == len(samples) and all(torch.equal(a, b) for a, b in zip(unbound, samples))


def _fix_equal_length_position_ids() -> None:
    import verl.utils.tensordict_utils as tensordict_utils

    current = tensordict_utils.maybe_fix_3d_position_ids
    if _is_fix(current):
        return
    VERL_ORIGINALS["maybe_fix_3d_position_ids"] = current
    if verl_handles_equal_length_position_ids(current):
        FIX_STATUS["maybe_fix_3d_position_ids"] = "not needed"
        logger.info(
            "calibrl: verl's maybe_fix_3d_position_ids keeps equal-length mRoPE position_ids intact (probe passed); "
            "calibrl's replacement is not applied."
        )
        return
    for module_name in POSITION_IDS_FIX_BINDERS:
        module = sys.modules.get(module_name)
        if module is not None and getattr(module, "maybe_fix_3d_position_ids", None) is current:
            module.maybe_fix_3d_position_ids = maybe_fix_3d_position_ids
    FIX_STATUS["maybe_fix_3d_position_ids"] = "applied"
    logger.info(
        "calibrl: verl's maybe_fix_3d_position_ids breaks equal-length mRoPE position_ids (verl issue 7899, probe "
        "failed); calibrl's replacement is applied (calibrl_ext/verl_fixes.py)."
    )


def apply_fixes() -> None:
    """Apply every fix that verl still needs (probed). Idempotent."""
    _fix_equal_length_position_ids()


apply_fixes()
