"""calibrl_ext.verl_fixes: verl 0.9.1's ``maybe_fix_3d_position_ids`` on mRoPE position_ids packed by TransferQueue.

Everything here runs verl's and TransferQueue's real code (no mocks): the batch is packed by TransferQueue's storage
manager, optionally sent through TransferQueue's wire codec or a TensorDict consolidate + pickle round trip, fixed
by the function that ``verl.workers.engine_workers`` calls, then split by verl's update iterator
(``index_select_tensor_dict``) and log-prob path (``chunk_tensordict``). Without the fix the equal-length cases
fail (the update raises, the log-prob chunks hold wrong position ids).
"""

from __future__ import annotations

import importlib
import pickle

import pytest
import torch
from tensordict import TensorDict

import calibrl_ext.plugin  # noqa: F401  (applies the fixes as verl's plugin loader does)
from calibrl_ext import verl_fixes

#: mRoPE rows per sample (text + 3 rotary rows, Qwen2.5-VL).
ROWS = 4
EQUAL_LENGTHS = [7, 7, 7, 7]
UNEQUAL_LENGTHS = [7, 3, 9, 5]


def _samples(lengths: list[int]) -> list[torch.Tensor]:
    """One (ROWS, L) position-id tensor per sample, distinct values so a mix-up shows."""
    return [torch.arange(ROWS * length).view(ROWS, length) + 1000 * i for i, length in enumerate(lengths)]


def _packed_by_transfer_queue(samples: list[torch.Tensor], transport: str) -> TensorDict:
    """The batch as the actor worker receives it: packed by TransferQueue's storage manager, then carried by
    ``transport`` ("none", "tq_codec": TransferQueue's msgpack wire codec, "pickle": consolidate + pickle)."""
    from transfer_queue.storage.managers.simple_storage_manager import AsyncSimpleStorageManager
    from transfer_queue.utils import serial_utils

    data = TensorDict(
        {
            "position_ids": AsyncSimpleStorageManager._pack_field_values(samples),
            "input_ids": AsyncSimpleStorageManager._pack_field_values([s[0] for s in samples]),
        },
        batch_size=[len(samples)],
    )
    if transport == "tq_codec":
        data = serial_utils.decode(serial_utils.encode(data))
    elif transport == "pickle":
        data = pickle.loads(pickle.dumps(data.consolidate()))
    return data


def _verl_bound_fix():
    """The function verl's actor worker calls (bound by name at its import)."""
    import verl.workers.engine_workers as engine_workers

    return engine_workers.maybe_fix_3d_position_ids


@pytest.mark.parametrize("transport", ["none", "tq_codec", "pickle"])
@pytest.mark.parametrize("lengths", [EQUAL_LENGTHS, UNEQUAL_LENGTHS], ids=["equal_lengths", "unequal_lengths"])
def test_update_path_selects_every_sample_unchanged(lengths, transport):
    """After the position-ids fix verl's worker calls, the update's mini-batch selection (index_select_tensor_dict)
    holds exactly the samples that were packed, for equal and unequal lengths, straight from TransferQueue, through
    its wire codec, and through consolidate + pickle (verl 0.9.1 alone raises split_with_sizes on equal lengths)."""
    from verl.utils.tensordict_utils import index_select_tensor_dict

    samples = _samples(lengths)
    data = _packed_by_transfer_queue(samples, transport)
    _verl_bound_fix()(data)
    selected = index_select_tensor_dict(data, [2, 0, 3])["position_ids"].unbind()
    assert [s.tolist() for s in selected] == [samples[i].tolist() for i in (2, 0, 3)]


@pytest.mark.parametrize("transport", ["none", "tq_codec", "pickle"])
@pytest.mark.parametrize("lengths", [EQUAL_LENGTHS, UNEQUAL_LENGTHS], ids=["equal_lengths", "unequal_lengths"])
def test_log_prob_path_never_falls_back_to_wrong_position_ids(lengths, transport):
    """The log-prob micro-batches (chunk_tensordict) hold exactly the packed samples. With verl 0.9.1 alone an
    equal-length batch fails here: chunk_tensordict catches unbind's error and falls back to a padded rebuild that
    either raises or yields wrong position ids, depending on the shapes."""
    from verl.utils.tensordict_utils import chunk_tensordict

    samples = _samples(lengths)
    data = _packed_by_transfer_queue(samples, transport)
    _verl_bound_fix()(data)
    for chunk_index, chunk in enumerate(chunk_tensordict(data, 2)):
        got = chunk["position_ids"].unbind()
        assert [s.tolist() for s in got] == [s.tolist() for s in samples[2 * chunk_index : 2 * chunk_index + 2]]


def test_equal_length_layout_is_rebuilt_sequence_ragged():
    """An equal-length batch (TransferQueue made the row axis ragged) is rebuilt with the sequence axis ragged:
    values (ROWS, B * L), offsets [0, L, 2L, ...], the layout of an unequal-length batch."""
    samples = _samples(EQUAL_LENGTHS)
    data = _packed_by_transfer_queue(samples, "none")
    assert verl_fixes.rows_taken_as_ragged(data["position_ids"])  # the layout the bug comes from
    verl_fixes.maybe_fix_3d_position_ids(data)
    fixed = data["position_ids"]
    assert fixed._ragged_idx == 2 and tuple(fixed.values().shape) == (ROWS, sum(EQUAL_LENGTHS))
    assert fixed.offsets().tolist() == [0, 7, 14, 21, 28]
    assert not verl_fixes.rows_taken_as_ragged(fixed)  # applying it again changes nothing


def test_other_layouts_keep_verls_behaviour():
    """Unequal lengths (directly and after consolidate + pickle, which resets _ragged_idx to 1) get verl's
    ``_ragged_idx = 2`` on the same values: the replacement does not rebuild them."""
    for transport in ("none", "pickle"):
        data = _packed_by_transfer_queue(_samples(UNEQUAL_LENGTHS), transport)
        before = data["position_ids"]
        assert not verl_fixes.rows_taken_as_ragged(before)
        verl_fixes.maybe_fix_3d_position_ids(data)
        assert data["position_ids"] is before and before._ragged_idx == 2


def test_one_sample_batch_is_consistent():
    """A single sample (both readings of the layout describe the same tensor) unbinds to itself."""
    samples = _samples([ROWS])  # L == B * R: the ambiguous shape
    data = _packed_by_transfer_queue(samples, "none")
    verl_fixes.maybe_fix_3d_position_ids(data)
    assert [s.tolist() for s in data["position_ids"].unbind()] == [samples[0].tolist()]


def test_every_verl_binding_is_the_fix_when_verl_needs_it():
    """The probe decides: verl 0.9.1's own function fails it, so every module that binds the name by import calls
    calibrl's replacement; if a verl release passes the probe, nothing is replaced."""
    original = verl_fixes.VERL_ORIGINALS["maybe_fix_3d_position_ids"]
    needed = not verl_fixes.verl_handles_equal_length_position_ids(original)
    assert verl_fixes.verl_handles_equal_length_position_ids(verl_fixes.maybe_fix_3d_position_ids)
    assert verl_fixes.FIX_STATUS["maybe_fix_3d_position_ids"] == ("applied" if needed else "not needed")
    for module_name in verl_fixes.POSITION_IDS_FIX_BINDERS:
        bound = importlib.import_module(module_name).maybe_fix_3d_position_ids
        assert bound is (verl_fixes.maybe_fix_3d_position_ids if needed else original), module_name


def test_verl_0_9_1_still_needs_the_fix():
    """verl 0.9.1's function breaks an equal-length batch (the bug this fix carries). When this fails after a verl
    upgrade, the probe has already turned the fix off: drop the fix and its docs lines."""
    assert not verl_fixes.verl_handles_equal_length_position_ids(verl_fixes.VERL_ORIGINALS["maybe_fix_3d_position_ids"])
