"""The legacy-fork snippets of docs/verl_fork.md run as written against verl's DataProto."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from calibrl_ext import core

DOC = Path(__file__).resolve().parents[2] / "docs" / "verl_fork.md"


def _snippet(name: str) -> str:
    match = re.search(rf"<!-- snippet: {name} -->\s*```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert match, f"snippet {name} not found in {DOC}"
    return match.group(1)


def _legacy_batch():
    from verl import DataProto

    gen = torch.Generator().manual_seed(0)
    n_rows, T = 6, 5
    mask = torch.ones(n_rows, T)
    mask[1, 3:] = 0
    mask[2, 2:] = 0  # expert row of group "a" is 2 tokens long
    scores = torch.zeros(n_rows, T)
    scores[:, -1] = torch.tensor([1.1, 0.0, 1.1, 0.1, 1.1, 0.0])
    return DataProto.from_dict(
        tensors={"response_mask": mask, "token_level_scores": scores,
                 "old_log_probs": (torch.randn(n_rows, T, generator=gen) - 1) * mask},
        non_tensors={"uid": np.array(["a", "a", "a", "b", "b", "b"], dtype=object),
                     "is_expert": np.array([False, False, True, False, False, True])},
    )  # fmt: skip


def test_legacy_driver_and_actor_snippets_run_and_match_core():
    """The driver snippet writes the calibrl fields and drops the expert rows; the actor snippet then gives the same
    loss as core.calibrl_policy_loss over the full batch (expert rows excluded) - so the documented code is right."""
    batch = _legacy_batch()
    full = batch.batch.clone()
    is_expert = torch.as_tensor(batch.non_tensor_batch["is_expert"])
    uid = batch.non_tensor_batch["uid"]
    namespace = {"batch": batch}
    exec(_snippet("legacy-driver"), namespace)
    batch = namespace["batch"]
    assert len(batch) == 4 and not batch.non_tensor_batch["is_expert"].any()
    for key in ("calibrl_expert_baseline", "calibrl_calibration_mask", "calibrl_passed", "advantages"):
        assert key in batch.batch.keys()

    model_inputs = batch.batch
    log_prob = (model_inputs["old_log_probs"] + 0.1).requires_grad_()
    actor_ns = {
        "torch": torch, "model_inputs": model_inputs, "old_log_prob": model_inputs["old_log_probs"],
        "log_prob": log_prob, "advantages": model_inputs["advantages"], "response_mask": model_inputs["response_mask"],
        "clip_ratio_low": 0.2, "clip_ratio_high": 0.2, "clip_ratio_c": 3.0, "loss_agg_mode": "token-mean",
    }  # fmt: skip
    exec(_snippet("legacy-actor"), actor_ns)
    pg_loss = actor_ns["pg_loss"]
    pg_loss.backward()
    assert torch.isfinite(pg_loss) and torch.isfinite(log_prob.grad).all()

    scores = full["token_level_scores"].sum(-1)
    adv = core.group_advantages(scores, uid, is_expert).unsqueeze(-1) * full["response_mask"]
    full_log_prob = full["old_log_probs"] + 0.1
    expected, _ = core.calibrl_policy_loss(
        full["old_log_probs"], full_log_prob, adv, full["response_mask"],
        core.expert_baseline(full["old_log_probs"], full["response_mask"], uid, is_expert), scores > 0.1, is_expert,
    )  # fmt: skip
    assert pg_loss.item() == pytest.approx(expected.item(), rel=1e-6)
