"""The guide's EasyR1 and released-CalibRL-fork snippets, run on exactly the names those forks have at the call site.

Neither fork is on the package registry, so these tests pin the kit against their documented call sites (read from
hiyouga/EasyR1 ``verl/workers/actor/dp_actor.py::DataParallelPPOActor.update_policy`` and zhh6425/CalibRL
``src/dp_actor.py::DataParallelPPOActor.update_policy`` / ``src/core_algos.py``): the snippet may read only the
locals listed below (plus the guide's ``settings`` snippet), and the fork's own scaling line is applied after it.
The reference is the project's verl 0.9 path (the registered ``calibrl`` loss, expert rows flagged, not removed).
"""

from __future__ import annotations

import ast
import builtins
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from calibrl_ext import core, fork_kit, verl_losses
from omegaconf import OmegaConf
from verl import DataProto

DOC = Path(__file__).resolve().parents[2] / "docs" / "verl_fork.md"

#: Locals of EasyR1's update_policy at the compute_policy_loss call (hiyouga/EasyR1, verl/workers/actor/dp_actor.py).
EASYR1_LOCALS = {"self", "data", "temperature", "select_keys", "non_tensor_select_keys", "mini_batches", "metrics",
                 "mini_batch", "total_response_tokens", "micro_batches", "micro_batch", "model_inputs",
                 "response_mask", "old_log_probs", "advantages", "log_probs"}  # fmt: skip
#: Locals of the released fork's update_policy at the compute_mix_policy_loss call (zhh6425/CalibRL src/dp_actor.py).
RELEASED_LOCALS = {"self", "data", "temperature", "multi_turn", "global_steps", "select_keys", "batch",
                   "has_multi_modal_inputs", "dataloader", "metrics", "epoch", "batch_idx", "mini_batch",
                   "micro_batches", "responses", "response_length", "attention_mask", "response_mask", "old_log_prob",
                   "advantages", "clip_ratio", "clip_ratio_low", "clip_ratio_high", "clip_ratio_c", "entropy_coeff",
                   "loss_agg_mode", "calculate_entropy", "calculate_entropy_micro_batch", "entropy",
                   "log_prob"}  # fmt: skip
#: Locals of the released fork's RayPPOTrainer.fit where the advantage is computed.
RELEASED_FIT_LOCALS = {"self", "batch", "metrics", "timing_raw"}


def snippet(name: str) -> str:
    match = re.search(rf"<!-- snippet: {re.escape(name)} -->\s*```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    assert match, f"snippet {name} not found in {DOC}"
    return match.group(1)


def free_names(code: str) -> set[str]:
    tree = ast.parse(code)
    bound = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    read = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    return read - bound - set(dir(builtins))


def run_snippet(name: str, allowed: set[str], names: dict) -> dict:
    """Run a snippet with the module globals the guide's ``settings`` snippet adds plus ``names`` (the fork's locals);
    fails if the snippet reads a name outside ``allowed`` or the settings snippet."""
    module_globals: dict = {}
    exec(snippet("settings"), module_globals)
    code = snippet(name)
    assert free_names(code) <= allowed | set(module_globals), free_names(code) - allowed - set(module_globals)
    assert set(names) <= allowed
    namespace = {**module_globals, **names}
    exec(code, namespace)
    return namespace


def _rollout_batch(tokenizer_eos=1, pad=0, n_groups=2, n=3, prompt_length=3, response_length=5):
    gen = torch.Generator().manual_seed(3)
    rows = n_groups * n
    lengths = torch.tensor([5, 2, 4, 3, 5, 1])
    response_attention = (torch.arange(response_length) < lengths[:, None]).long()
    responses = torch.randint(5, 50, (rows, response_length), generator=gen) * response_attention
    prompt = torch.randint(5, 50, (rows, prompt_length), generator=gen)
    attention = torch.cat([torch.ones(rows, prompt_length, dtype=torch.long), response_attention], -1)
    return DataProto.from_dict(
        tensors={"input_ids": torch.cat([prompt, responses], -1), "attention_mask": attention,
                 "position_ids": torch.cumsum(attention, -1) - 1, "responses": responses,
                 "response_mask": response_attention},
        non_tensors={"uid": np.array(["a"] * n + ["b"] * n, dtype=object)},
        meta_info={"temperature": 1.0},
    )  # fmt: skip


def _after_old_log_prob_batch(settings):
    """Appended, 'old-log-prob'-passed and rewarded batch -> the kit's actor batch, plus the full batch."""
    batch = fork_kit.append_expert_rows(_rollout_batch(), [[7, 8, 9]] * 3 + [[11, 12]] * 3, eos_token_id=1,
                                        pad_token_id=0, world_size=1)  # fmt: skip
    gen = torch.Generator().manual_seed(4)
    mask = batch.batch["response_mask"].float()
    batch.batch["old_log_probs"] = (-torch.rand(mask.shape, generator=gen) * 3) * mask
    scores = torch.zeros(mask.shape)
    scores[:, 0] = torch.tensor([1.1, 0.0, 1.1, 0.1, 0.0, 0.0, 1.1, 1.1])
    batch.batch["token_level_scores"] = scores
    full = {key: batch.batch[key].clone() for key in batch.batch.keys()}
    full["kind"] = torch.as_tensor(batch.non_tensor_batch[fork_kit.ROW_KIND])
    full_uid = batch.non_tensor_batch["uid"].copy()
    actor_batch, _ = fork_kit.after_old_log_prob(batch, settings)
    return actor_batch, full, full_uid


def _verl_09_loss(full, uid, new_log_probs_on_policy):
    """The registered 'calibrl' loss of verl 0.9 over every row (expert rows flagged): the recipe's path."""
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
    from verl.utils.config import omega_conf_to_dataclass

    is_expert = full["kind"] == fork_kit.EXPERT
    mask = full["response_mask"].float()
    old = full["old_log_probs"]
    scores = full["token_level_scores"].sum(-1)
    log_prob = old.clone()
    log_prob[~is_expert] = new_log_probs_on_policy
    on_tokens = mask * (~is_expert).float()[:, None]
    config = omega_conf_to_dataclass(OmegaConf.create({
        "_target_": "verl.workers.config.FSDPActorConfig", "strategy": "fsdp", "ppo_mini_batch_size": 6,
        "ppo_micro_batch_size_per_gpu": 3, "rollout_n": 1, "loss_agg_mode": "token-mean",
        "policy_loss": {"_target_": "calibrl_ext.config.CalibRLPolicyLossConfig", "loss_mode": "calibrl"},
    }))  # fmt: skip
    config.global_batch_info.update(dp_size=1, batch_num_tokens=int(on_tokens.sum()), global_batch_size=6)
    extras = {
        verl_losses.EXPERT_BASELINE: core.expert_baseline(old, mask, uid, is_expert),
        verl_losses.CALIBRATION_MASK: core.calibration_mask(mask, uid, is_expert),
        verl_losses.PASSED: scores > 0.1,
        verl_losses.IS_EXPERT: is_expert,
    }
    advantages = core.group_advantages(scores, uid, is_expert).unsqueeze(-1) * mask
    with verl_losses.micro_batch_extras(**extras):
        loss, _ = POLICY_LOSS_REGISTRY["calibrl"](
            old_log_prob=old, log_prob=log_prob, advantages=advantages, response_mask=mask,
            loss_agg_mode="token-mean", config=config,
        )  # fmt: skip
    return loss


def test_driver_field_names_are_the_registered_losses_names():
    """The kit writes the per-row fields under the names calibrl_ext.verl_losses reads for calibrl / luffy / rlplus
    (one contract, two paths; chord / hpt fields are this package's driver only)."""
    assert fork_kit.ACTOR_SELECT_KEYS == verl_losses.CALIBRL_FIELDS
    assert set(verl_losses.CALIBRL_FIELDS) <= set(verl_losses.BATCH_FIELDS)


def test_easyr1_snippet_with_its_global_token_rescaling_equals_the_verl_09_loss():
    """EasyR1: the snippet on EasyR1's locals, per micro-batch, followed by EasyR1's own line
    ``loss * sum(response_mask) * world_size / total_response_tokens``, sums over two micro-batches of unequal token
    counts to the verl 0.9 loss and gradient of the whole mini-batch (expert rows removed by the driver step)."""
    settings = fork_kit.ForkSettings()
    actor_batch, full, uid = _after_old_log_prob_batch(settings)
    assert len(actor_batch) == 6 and (actor_batch.non_tensor_batch[fork_kit.ROW_KIND] == fork_kit.ON_POLICY).all()
    gen = torch.Generator().manual_seed(5)
    mask = actor_batch.batch["response_mask"].float()
    new = (actor_batch.batch["old_log_probs"] + 0.3 * torch.randn(mask.shape, generator=gen)) * mask
    new.requires_grad_()
    self = SimpleNamespace(world_size=1, config=SimpleNamespace(clip_ratio_low=0.2, clip_ratio_high=0.2,
                           clip_ratio_dual=3.0, loss_avg_mode="token"))  # fmt: skip
    total_response_tokens = torch.sum(actor_batch.batch["response_mask"])
    total = 0.0
    for rows in (slice(0, 2), slice(2, 6)):
        model_inputs = {key: actor_batch.batch[key][rows] for key in actor_batch.batch.keys()}
        names = {"self": self, "model_inputs": model_inputs, "response_mask": model_inputs["response_mask"],
                 "old_log_probs": model_inputs["old_log_probs"], "advantages": model_inputs["advantages"],
                 "log_probs": new[rows], "total_response_tokens": total_response_tokens}  # fmt: skip
        pg_loss = run_snippet("easyr1-actor", EASYR1_LOCALS, names)["pg_loss"]
        response_mask = model_inputs["response_mask"]
        loss = pg_loss * torch.sum(response_mask) * self.world_size / total_response_tokens  # EasyR1's line
        total = total + loss
    (grad,) = torch.autograd.grad(total, new)

    on_policy_new = new.detach().clone().requires_grad_()
    expected = _verl_09_loss(full, uid, on_policy_new)
    (expected_grad,) = torch.autograd.grad(expected, on_policy_new)
    torch.testing.assert_close(total.detach(), expected.detach())
    torch.testing.assert_close(grad, expected_grad)
    assert grad.abs().max() > 0


def test_released_fork_snippets_give_its_loss_dict_without_the_guided_loss_line():
    """Released CalibRL fork: its expert rows (pref_mask.any(-1)) are marked by the driver snippet; the actor snippet
    on the fork's locals returns the keys its update_policy reads and NO 'guided_loss' (its +0.1*guided_loss line is
    deleted), and with its '/ gradient_accumulation' scaling over one micro-batch the loss and gradient are the verl
    0.9 path's."""
    batch = _rollout_batch()
    n_rows, response_length = batch.batch["responses"].shape
    with_experts = fork_kit.append_expert_rows(batch, [[7, 8, 9]] * 3 + [[11, 12]] * 3, eos_token_id=1, pad_token_id=0)
    # The released fork builds its own batch: expert rows marked only by pref_mask, no calibrl_row_kind column.
    kind = with_experts.non_tensor_batch.pop(fork_kit.ROW_KIND)
    pref_mask = torch.as_tensor(kind == fork_kit.EXPERT)[:, None] & with_experts.batch["response_mask"].bool()
    with_experts.batch["pref_mask"] = pref_mask.long()
    gen = torch.Generator().manual_seed(4)
    mask = with_experts.batch["response_mask"].float()
    with_experts.batch["old_log_probs"] = (-torch.rand(mask.shape, generator=gen) * 3) * mask
    scores = torch.zeros(mask.shape)
    scores[:, 0] = torch.tensor([1.1, 0.0, 1.1, 0.1, 0.0, 0.0, 1.1, 1.1])
    with_experts.batch["token_level_scores"] = scores
    full = {key: with_experts.batch[key].clone() for key in with_experts.batch.keys()}
    full["kind"] = torch.as_tensor(kind)
    uid = with_experts.non_tensor_batch["uid"].copy()

    metrics: dict = {}
    trainer = SimpleNamespace(actor_rollout_wg=SimpleNamespace(world_size=2))
    batch = run_snippet("released-driver", RELEASED_FIT_LOCALS, {"self": trainer, "batch": with_experts,
                                                                  "metrics": metrics})["batch"]  # fmt: skip
    assert len(batch) == 6 and metrics["calibrl/expert_rows"] == 2.0

    data = {key: batch.batch[key] for key in batch.batch.keys()}
    new = (data["old_log_probs"] + 0.2).requires_grad_()
    self = SimpleNamespace(gradient_accumulation=1)
    names = {"self": self, "data": data, "response_mask": data["response_mask"], "old_log_prob": data["old_log_probs"],
             "advantages": data["advantages"], "clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.2,
             "clip_ratio_c": 3.0, "loss_agg_mode": "token-mean", "log_prob": new}  # fmt: skip
    loss_dict = run_snippet("released-actor", RELEASED_LOCALS, names)["loss_dict"]
    assert {"pg_loss", "pg_clipfrac", "ppo_kl", "pg_clipfrac_lower"} <= set(loss_dict)
    assert "guided_loss" not in loss_dict
    loss = loss_dict["pg_loss"] / self.gradient_accumulation  # the fork's scaling line
    (grad,) = torch.autograd.grad(loss, new)
    on_policy_new = new.detach().clone().requires_grad_()
    expected = _verl_09_loss(full, uid, on_policy_new)
    (expected_grad,) = torch.autograd.grad(expected, on_policy_new)
    torch.testing.assert_close(loss.detach(), expected.detach())
    torch.testing.assert_close(grad, expected_grad)
    assert float(loss_dict["calibration_loss"]) != 0.0
