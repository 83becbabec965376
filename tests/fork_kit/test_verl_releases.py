"""The fork kit inside REAL verl releases (0.7.0 and 0.5.0 from PyPI) equals the project's verl 0.9 path.

Each release runs in a subprocess (``_release_runner.py``) with only its own unpacked wheel providing ``verl``
(verl 0.9.1's environment provides torch / transformers / tensordict; two shims there, both documented in the
runner: a transformers 5 alias for 0.7.0's import of ``AutoModelForVision2Seq`` and a CPU memory report for 0.5's
GPU-memory logging decorator). The runner edits the release's real ``dp_actor.py`` with the snippets of
docs/verl_fork.md where the guide says, runs the driver snippets on the names the release's ``RayPPOTrainer.fit`` has,
and runs the release's ``compute_log_prob`` and ``update_policy`` on a tiny Qwen2. This module then computes the
project's verl 0.9 path on the same rows and compares.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
RUNNER = Path(__file__).with_name("_release_runner.py")
RELEASES = ("0.7.0", "0.5.0")
#: Bound on one release run (measured about 15 s on the 2-core machine).
RUN_TIMEOUT_S = 300


@pytest.fixture(scope="module", params=RELEASES)
def release_run(request, tmp_path_factory, release_source):
    version = request.param
    src = release_source(version)
    out = tmp_path_factory.mktemp(f"verl-{version}") / "run.pt"
    env = {**os.environ, "PYTHONPATH": str(src), "VERL_USE_EXTERNAL_PLUGINS": "none"}
    cmd = [sys.executable, str(RUNNER), str(src), version, str(ROOT / "docs" / "verl_fork.md"), str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT_S, env=env, cwd=ROOT)
    assert result.returncode == 0, f"verl {version} run failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return torch.load(out, weights_only=False)


def _response_log_probs(model, rows: dict, autocast_dtype) -> torch.Tensor:
    """log pi(response) as the releases' dp_actor computes it without remove-padding: ``[bs, R]``."""
    from verl.utils.torch_functional import logprobs_from_logits

    response_length = rows["responses"].shape[-1]
    half = autocast_dtype in (torch.bfloat16, torch.float16)  # CPU autocast ignores float32, as in the release
    with torch.autocast(device_type="cpu", dtype=autocast_dtype, enabled=half):
        logits = model(input_ids=rows["input_ids"], attention_mask=rows["attention_mask"],
                       position_ids=rows["position_ids"], use_cache=False).logits  # fmt: skip
        logits = logits[:, -response_length - 1 : -1, :]
        return logprobs_from_logits(logits, rows["responses"])


def _verl_09_path(run):
    """The recipe's path on the same batch: core's baseline / mask / advantages and the registered 'calibrl' loss
    of calibrl_ext.verl_losses over every real row (expert rows flagged, not removed). Returns (loss, grads)."""
    from calibrl_ext import core, verl_losses
    from omegaconf import OmegaConf
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY
    from verl.utils.config import omega_conf_to_dataclass

    full, kinds = run["full"], run["full_non_tensors"]["calibrl_row_kind"]
    real = np.flatnonzero(kinds != 2)
    rows = {key: value[real] for key, value in full.items()}
    uid = run["full_non_tensors"]["uid"][real]
    is_expert = torch.as_tensor(kinds[real] == 1)
    mask = rows["response_mask"].float()
    old = rows["old_log_probs"]
    scores = rows["token_level_scores"].sum(-1)
    advantages = core.group_advantages(scores, uid, is_expert).unsqueeze(-1) * mask

    model = Qwen2ForCausalLM(Qwen2Config(**run["model_config"])).float()
    model.load_state_dict(run["initial_state"])
    model.train()
    on_policy = np.flatnonzero(kinds[real] == 0)
    assert np.array_equal(real[on_policy], run["on_policy_rows"])
    # The on-policy rows are forwarded as the release's update forwards them (same rows, same order, same autocast);
    # expert rows carry their old log-probs (the registered loss gives them no gradient).
    log_prob = old.clone()
    on_policy_rows = {key: value[on_policy] for key, value in rows.items()}
    log_prob[on_policy] = _response_log_probs(model, on_policy_rows, run["forward_autocast"])

    on_tokens = mask * (~is_expert).float()[:, None]
    config = omega_conf_to_dataclass(OmegaConf.create({
        "_target_": "verl.workers.config.FSDPActorConfig", "strategy": "fsdp", "ppo_mini_batch_size": 6,
        "ppo_micro_batch_size_per_gpu": 6, "rollout_n": 1, "loss_agg_mode": "token-mean", "clip_ratio": 0.2,
        "clip_ratio_low": 0.2, "clip_ratio_high": 0.2, "clip_ratio_c": 3.0,
        "policy_loss": {"_target_": "calibrl_ext.config.CalibRLPolicyLossConfig", "loss_mode": "calibrl"},
    }))  # fmt: skip
    config.global_batch_info.update(dp_size=1, batch_num_tokens=int(on_tokens.sum()), global_batch_size=len(on_policy))
    extras = {
        verl_losses.EXPERT_BASELINE: core.expert_baseline(old, mask, uid, is_expert),
        verl_losses.CALIBRATION_MASK: core.calibration_mask(mask, uid, is_expert),
        verl_losses.PASSED: scores > 0.1,
        verl_losses.IS_EXPERT: is_expert,
    }
    with verl_losses.micro_batch_extras(**extras):
        loss, _ = POLICY_LOSS_REGISTRY["calibrl"](
            old_log_prob=old, log_prob=log_prob, advantages=advantages, response_mask=mask,
            loss_agg_mode="token-mean", config=config,
        )  # fmt: skip
    loss.backward()
    return loss.detach(), {name: p.grad for name, p in model.named_parameters()}


def test_release_update_equals_the_verl_09_path(release_run):
    """Following the guide inside a real verl release (its dp_actor edited with the guide's snippets, its
    compute_log_prob / update_policy run on a tiny model) gives the loss and every parameter gradient of the project's
    verl 0.9 path on the same batch: the kit appended the expert rows, computed their baseline in the same
    old-log-prob pass, and removed them (and the world-size pad row) before the update."""
    run = release_run
    assert Path(run["verl_file"]).parts[-3].startswith(f"src-{run['version']}")
    kinds = run["full_non_tensors"]["calibrl_row_kind"]
    assert list(kinds) == [0] * 6 + [1, 1, 2], "2 expert rows + 1 pad row to a multiple of world size 3"
    assert run["update_rows"] == 6 and (run["update_kinds"] == 0).all()
    loss, grads = _verl_09_path(run)
    pg_loss = run["update_metrics"]["actor/pg_loss"]
    pg_loss = pg_loss[0] if isinstance(pg_loss, list) else pg_loss
    assert pg_loss == pytest.approx(float(loss), rel=1e-5, abs=1e-7)
    assert set(grads) == set(run["grads"])
    for name, grad in grads.items():
        torch.testing.assert_close(run["grads"][name], grad, rtol=1e-5, atol=1e-7, msg=lambda m: f"{name}: {m}")
    assert max(float(g.abs().max()) for g in grads.values()) > 1e-3  # the comparison is not between zeros


def test_release_advantages_and_logs(release_run):
    """The kit's on-policy advantages equal the release's own compute_grpo_outcome_advantage (Dr.GRPO) on the
    on-policy rows, and actor/entropy is reported over on-policy tokens only (legacy fit's value includes experts)."""
    run = release_run
    torch.testing.assert_close(run["kit_advantages"], run["release_advantages"])
    full, kinds = run["full"], run["full_non_tensors"]["calibrl_row_kind"]
    assert run["driver_metrics"]["calibrl/expert_rows"] == 2.0
    mask = full["response_mask"].float()
    on_policy_tokens = mask * torch.as_tensor(kinds == 0).float()[:, None]
    entropys = full["entropys"].float()
    on_policy_entropy = float((entropys * on_policy_tokens).sum() / on_policy_tokens.sum())
    every_row_entropy = float((entropys * mask).sum() / mask.sum())  # what legacy fit logs
    # A random tiny model's entropies are all near log(vocab): the two values differ by ~3e-5, far above float32's
    # ~1e-6 here, so the tolerance below still tells them apart.
    assert run["driver_metrics"]["actor/entropy"] == pytest.approx(on_policy_entropy, abs=2e-6)
    assert abs(on_policy_entropy - every_row_entropy) > 1e-5
