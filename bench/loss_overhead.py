"""Benchmark: cost of CalibRL's two loss paths against verl's ``vanilla`` PPO loss on the same batch.

Prints figures; asserts nothing. Three losses run with the same inputs and global batch info, forward + backward
w.r.t. the log-probs, on CPU in float32, interleaved call by call in ONE run (issue target: each ratio <= 1.3):
verl's ``vanilla`` and the registered ``calibrl`` loss through verl's registry, and the fork path
``calibrl_ext.core.calibrl_policy_loss`` (pure torch, docs/verl_fork.md).

    .venv/bin/python bench/loss_overhead.py [--rows 64] [--tokens 4096] [--repeats 20]
"""

import argparse
import statistics
import time

import torch
from omegaconf import OmegaConf
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.utils.config import omega_conf_to_dataclass

import calibrl_ext.plugin  # noqa: F401  (registers the losses)
from calibrl_ext import core, verl_losses

#: Untimed calls of each loss before measuring (allocator and dispatcher warm-up).
WARMUP_CALLS = 3


def build_config(loss_mode: str):
    return omega_conf_to_dataclass(
        OmegaConf.create(
            {
                "_target_": "verl.workers.config.FSDPActorConfig",
                "strategy": "fsdp",
                "ppo_mini_batch_size": 1,
                "ppo_micro_batch_size_per_gpu": 1,
                "rollout_n": 1,
                "policy_loss": {"_target_": "calibrl_ext.config.CalibRLPolicyLossConfig", "loss_mode": loss_mode},
            }
        )
    )


def make_timer(loss_mode: str, inputs: dict, extras: dict):
    """A function that runs the registered loss once (forward + backward) and returns its wall time in seconds."""
    config = build_config(loss_mode)
    mask = inputs["response_mask"]
    config.global_batch_info.update(dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=mask.shape[0])
    loss_fn = get_policy_loss_fn(loss_mode)

    def run_once() -> float:
        log_prob = inputs["log_prob"].detach().requires_grad_()
        start = time.perf_counter()
        with verl_losses.micro_batch_extras(**extras):
            loss, _ = loss_fn(
                old_log_prob=inputs["old_log_prob"],
                log_prob=log_prob,
                advantages=inputs["advantages"],
                response_mask=mask,
                loss_agg_mode="token-mean",
                config=config,
            )
        loss.backward()
        return time.perf_counter() - start

    return run_once


def make_fork_timer(inputs: dict, extras: dict):
    """Like :func:`make_timer` for the fork path ``calibrl_ext.core.calibrl_policy_loss`` (same inputs)."""
    mask = inputs["response_mask"]
    is_expert = torch.zeros(mask.shape[0], dtype=torch.bool)
    batch_info = {"dp_size": 1, "batch_num_tokens": int(mask.sum()), "global_batch_size": mask.shape[0]}

    def run_once() -> float:
        log_prob = inputs["log_prob"].detach().requires_grad_()
        start = time.perf_counter()
        loss, _ = core.calibrl_policy_loss(
            inputs["old_log_prob"],
            log_prob,
            inputs["advantages"],
            mask,
            extras[verl_losses.EXPERT_BASELINE],
            extras[verl_losses.PASSED],
            is_expert,
            calibration_token_mask=extras[verl_losses.CALIBRATION_MASK],
            **batch_info,
        )
        loss.backward()
        return time.perf_counter() - start

    return run_once


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=64, help="batch rows (default 64)")
    parser.add_argument("--tokens", type=int, default=4096, help="response positions per row (default 4096)")
    parser.add_argument("--repeats", type=int, default=40, help="timed calls per loss (default 40)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1: steadier on a shared machine; 0 keeps torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    shape = (args.rows, args.tokens)
    lengths = torch.randint(args.tokens // 4, args.tokens + 1, (args.rows,), generator=gen)
    # verl's ppo_loss hands the policy loss a bool mask (data["response_mask"].to(bool)).
    mask = torch.arange(args.tokens)[None] < lengths[:, None]
    old = torch.randn(shape, generator=gen) - 1.0
    inputs = {
        "old_log_prob": old,
        "log_prob": old + 0.1 * torch.randn(shape, generator=gen),
        "advantages": torch.randn(args.rows, 1, generator=gen) * mask,
        "response_mask": mask,
    }
    extras = {
        verl_losses.EXPERT_BASELINE: torch.randn(shape, generator=gen) - 1.0,
        verl_losses.PASSED: torch.rand(args.rows, generator=gen) > 0.5,
        verl_losses.CALIBRATION_MASK: mask,
    }
    # Alternate the losses call by call so drift in machine load affects all equally; medians resist spikes.
    run_vanilla, run_calibrl = make_timer("vanilla", inputs, extras), make_timer("calibrl", inputs, extras)
    run_fork = make_fork_timer(inputs, extras)
    for _ in range(WARMUP_CALLS):
        run_vanilla(), run_calibrl(), run_fork()
    vanilla, calibrl, fork = [], [], []
    for _ in range(args.repeats):
        vanilla.append(run_vanilla())
        calibrl.append(run_calibrl())
        fork.append(run_fork())
    v, c, f = statistics.median(vanilla), statistics.median(calibrl), statistics.median(fork)
    print(f"batch {args.rows} x {args.tokens} float32, threads {torch.get_num_threads()}, {len(vanilla)} runs each")
    print(f"vanilla (verl PPO)                    fwd+bwd median {v * 1e3:8.2f} ms")
    print(f"calibrl registered (verl_losses)      fwd+bwd median {c * 1e3:8.2f} ms")
    print(f"calibrl fork path (core.calibrl_policy_loss) median {f * 1e3:8.2f} ms")
    print(f"ratio registered / vanilla   {c / v:.3f}   (target <= 1.3)")
    print(f"ratio fork path / vanilla    {f / v:.3f}   (target <= 1.3)")

if __name__ == "__main__":
    main()
