"""Benchmark: cost of CalibRL's two loss paths against verl's ``vanilla`` PPO loss on the same batch.

Prints figures; asserts nothing. Four losses run with the same inputs, forward + backward w.r.t. the log-probs, on
CPU in float32, interleaved call by call in ONE run (issue target: each CalibRL path <= 1.3x vanilla): verl's
``vanilla`` and the registered ``calibrl`` loss through verl's registry, the fork path
``calibrl_ext.core.calibrl_policy_loss`` (pure torch), and, for reference, the fork kit's actor-side loss
``calibrl_ext.fork_kit.actor_loss.calibrl_token_loss`` (what docs/verl_fork.md's call sites run; it aggregates per
micro-batch, so it gets no global batch info). Each ratio is printed twice: ratio of the medians, and median of the
per-round ratios (one round = one call of each loss, back to back; steadier when the machine's load drifts).

    .venv/bin/python bench/loss_overhead.py [--rows 64] [--tokens 4096] [--repeats 20]
"""

import argparse
import os
import statistics
import time

import torch
from omegaconf import OmegaConf
from verl.trainer.ppo.core_algos import get_policy_loss_fn
from verl.utils.config import omega_conf_to_dataclass

import calibrl_ext.plugin  # noqa: F401  (registers the losses)
from calibrl_ext import core, verl_losses
from calibrl_ext.fork_kit import driver as fork_driver
from calibrl_ext.fork_kit.actor_loss import calibrl_token_loss
from calibrl_ext.fork_kit.settings import ForkSettings

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


def make_fork_kit_timer(inputs: dict, extras: dict):
    """Like :func:`make_timer` for the fork kit's actor-side loss (verl 0.6-0.7 / EasyR1 / released-fork call sites)."""
    mask = inputs["response_mask"]
    model_inputs = {
        fork_driver.EXPERT_BASELINE: extras[verl_losses.EXPERT_BASELINE],
        fork_driver.CALIBRATION_MASK: extras[verl_losses.CALIBRATION_MASK],
        fork_driver.PASSED: extras[verl_losses.PASSED],
        fork_driver.IS_EXPERT: torch.zeros(mask.shape[0], dtype=torch.bool),
    }
    settings = ForkSettings()

    def run_once() -> float:
        log_prob = inputs["log_prob"].detach().requires_grad_()
        start = time.perf_counter()
        loss, _ = calibrl_token_loss(
            inputs["old_log_prob"], log_prob, inputs["advantages"], mask, model_inputs, settings, 0.2, 0.2, 3.0
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
    runs = {
        "vanilla (verl PPO)": make_timer("vanilla", inputs, extras),
        "calibrl registered (verl_losses)": make_timer("calibrl", inputs, extras),
        "calibrl fork path (core.calibrl_policy_loss)": make_fork_timer(inputs, extras),
        "fork kit actor loss (calibrl_token_loss)": make_fork_kit_timer(inputs, extras),
    }
    for _ in range(WARMUP_CALLS):
        for run in runs.values():
            run()
    times = {name: [] for name in runs}
    for _ in range(args.repeats):
        for name, run in runs.items():
            times[name].append(run())
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"batch {args.rows} x {args.tokens} float32, threads {torch.get_num_threads()}, {args.repeats} runs each, "
          f"load average {load}")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        print(f"{name:46s} fwd+bwd median {median * 1e3:8.2f} ms")
    vanilla_name = next(iter(runs))
    labels = {
        "calibrl registered (verl_losses)": "registered / vanilla",
        "calibrl fork path (core.calibrl_policy_loss)": "fork path / vanilla",
        "fork kit actor loss (calibrl_token_loss)": "fork kit / vanilla (reference)",
    }
    for name, label in labels.items():
        paired = statistics.median(t / v for t, v in zip(times[name], times[vanilla_name]))
        target = "" if "reference" in label else "   (target <= 1.3)"
        print(f"ratio {label:31s} {medians[name] / medians[vanilla_name]:.3f}   median of per-round ratios "
              f"{paired:.3f}{target}")


if __name__ == "__main__":
    main()
