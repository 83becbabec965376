"""THE set of environment variables and Hydra overrides that runs a verl entry point on the CPU backend.

Importing it is cheap (no verl import). Everything that launches verl on CPU uses this module (the launcher,
``examples/run_tiny_cpu_grpo.sh``, the CPU demo, the eval dry run, the e2e tests), so a fix lands everywhere at
once. From Python::

    from calibrl_ext.cpu_backend.overrides import cpu_env, cpu_overrides
    env = {**os.environ, **cpu_env()}
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo", *cpu_overrides(), *my_overrides]

From a shell script::

    eval "$(python -m calibrl_ext.cpu_backend.overrides --env)"      # exports the environment
    mapfile -t CPU_OVERRIDES < <(python -m calibrl_ext.cpu_backend.overrides)
    python -m verl.trainer.main_ppo "${CPU_OVERRIDES[@]}" my.key=value ...

Caller overrides placed AFTER these win (Hydra applies overrides left to right). What each value is for is written
next to it; ``docs/cpu_dry_run.md`` explains the set as a whole.
"""

from __future__ import annotations

import argparse
import shlex
from dataclasses import dataclass
from pathlib import Path

#: Rollout backend name registered by :mod:`calibrl_ext.cpu_backend.register`.
ROLLOUT_NAME = "hf"
#: verl's own vLLM rollout (needs the vLLM-on-CPU environment .venv-vllm/, see docs/vllm_cpu.md).
VLLM_ROLLOUT_NAME = "vllm"
#: Rollout backends a CPU run can use (:attr:`CpuRunShape.rollout`).
ROLLOUTS: tuple[str, ...] = (ROLLOUT_NAME, VLLM_ROLLOUT_NAME)
#: GiB of host memory each vLLM engine reserves for its KV cache (``VLLM_CPU_KVCACHE_SPACE``; vLLM's default 4
#: GiB per engine would take a third of a 24 GiB host with 2 training processes). 1 GiB holds ~10^5 tokens of
#: the tiny models.
VLLM_CPU_KVCACHE_SPACE_GIB = 1
#: verl's weight-push bucket (``checkpoint_engine.update_weights_bucket_megabytes``): a shared-memory segment
#: of this size per push on CPU; verl's default 2048 MB would be a 2 GiB /dev/shm segment per replica.
VLLM_UPDATE_WEIGHTS_BUCKET_MB = 64
#: vLLM's scheduler token budget per step (verl's default 8192 sizes buffers for GPU batches).
VLLM_MAX_NUM_BATCHED_TOKENS = 1024
#: Plugin module every verl process must import (also loaded by the ``verl.plugins`` entry point once the
#: package is pip-installed; importing it twice is harmless, and this way an import error is loud).
PLUGIN_MODULE = "calibrl_ext.plugin"
#: Logical CPU slots Ray advertises. Ray only counts them; verl's actors (TaskRunner, workers, agent loop,
#: reward loop, load balancer, TransferQueue controller and storage) each take one, and with fewer slots than
#: actors the run hangs forever instead of failing, so this is generous on purpose.
DEFAULT_RAY_NUM_CPUS = 16
#: TransferQueue storage actors (verl's default 8 each take a Ray slot and a process on a 2-core host).
TRANSFER_QUEUE_STORAGE_UNITS = 1
#: Default seconds between two replay-buffer polls of TransferQueue (verl's built-in buffer sleeps 2 s).
DEFAULT_POLL_INTERVAL_S = 0.1
#: Key of ``trainer.v1.sampler.sampler_kwargs`` read by ``FastPollReplayBuffer``.
POLL_INTERVAL_KEY = "poll_interval_s"


@dataclass(frozen=True)
class CpuRunShape:
    """The few numbers of a CPU run that callers choose.

    Attributes:
        n_procs: training processes (FSDP ranks); each takes one fake Ray "GPU" slot. With the rollout's
            tensor parallel size 1 each rank also gets its own rollout replica (HF server).
        ray_num_cpus: logical CPU slots for Ray (see DEFAULT_RAY_NUM_CPUS).
        poll_interval_s: seconds between two replay-buffer polls of TransferQueue while a batch is generated
            (verl's built-in buffer sleeps a fixed 2 s).
        rollout: ``"hf"`` (calibrl's HF-generate server, runs in the main .venv) or ``"vllm"`` (verl's real
            vLLM server replicas; the process must run in .venv-vllm/, built by
            ``scripts/bootstrap_vllm_venv.sh``).
    """

    n_procs: int = 1
    ray_num_cpus: int = DEFAULT_RAY_NUM_CPUS
    poll_interval_s: float = DEFAULT_POLL_INTERVAL_S
    rollout: str = ROLLOUT_NAME

    def __post_init__(self) -> None:
        if self.n_procs < 1:
            raise ValueError(f"n_procs must be >= 1, got {self.n_procs}")
        if self.ray_num_cpus < 8:
            raise ValueError(
                f"ray_num_cpus={self.ray_num_cpus} is too few logical slots for verl's actors (the run would hang); "
                f"use >= 8 (default {DEFAULT_RAY_NUM_CPUS})"
            )
        if self.poll_interval_s <= 0:
            raise ValueError(f"poll_interval_s must be > 0, got {self.poll_interval_s}")
        if self.rollout not in ROLLOUTS:
            raise ValueError(f"rollout={self.rollout!r} is not a CPU rollout backend; choose one of {ROLLOUTS}")


def cpu_env(shape: CpuRunShape | None = None) -> dict[str, str]:
    """Environment variables of a CPU run (merge over ``os.environ``; values are strings)."""
    shape = shape or CpuRunShape()
    env = {
        # Select calibrl's CPU platform; verl never auto-detects it.
        "VERL_PLATFORM": "cpu",
        # verl's FSDP engine is registered for device "cuda"; this documented switch of EngineRegistry picks it
        # for the CPU platform (the engine itself moves tensors with the platform's device name, "cpu").
        "VERL_ENGINE_DEVICE": "cuda",
        # Load calibrl's registrations (platform, hf rollout, losses...) in every process, installed or not.
        "VERL_USE_EXTERNAL_MODULES": PLUGIN_MODULE,
        # No network: tiny models and data are local; a hub lookup would hang or fail late.
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "WANDB_MODE": "disabled",
        # Tokenizers' own thread pool oversubscribes 2 cores next to torch's.
        "TOKENIZERS_PARALLELISM": "false",
        # Full Hydra tracebacks: a config error must name its key.
        "HYDRA_FULL_ERROR": "1",
        # Ray's usage-stats prompt/upload is network access.
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    if shape.rollout == VLLM_ROLLOUT_NAME:
        env.update(vllm_cpu_env())
    return env


def vllm_cpu_env() -> dict[str, str]:
    """Environment variables that verl's vLLM rollout needs on the CPU backend (part of :func:`cpu_env`)."""
    return {
        # KV cache of each vLLM engine, in GiB of host memory (see VLLM_CPU_KVCACHE_SPACE_GIB).
        "VLLM_CPU_KVCACHE_SPACE": str(VLLM_CPU_KVCACHE_SPACE_GIB),
        # vLLM's usage-stats reporting is network access.
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }


def vllm_rollout_overrides() -> list[str]:
    """Hydra overrides that switch a CPU run to verl's vLLM rollout (part of :func:`cpu_overrides`)."""
    return [
        f"actor_rollout_ref.rollout.name={VLLM_ROLLOUT_NAME}",
        # vLLM's sleep mode (verl's default True) is CUDA-only: "Sleep mode is not supported on current platform"
        "++actor_rollout_ref.rollout.enable_sleep_mode=False",
        # no CUDA graphs on CPU (and no torch.compile of the model: the first step would compile C++ for minutes)
        "actor_rollout_ref.rollout.enforce_eager=True",
        # fp32 like the FSDP actor, so rollout and training log-probs agree to ~1e-6 (bf16 would hide a stale push)
        "actor_rollout_ref.rollout.dtype=float32",
        f"actor_rollout_ref.rollout.checkpoint_engine.update_weights_bucket_megabytes={VLLM_UPDATE_WEIGHTS_BUCKET_MB}",
        f"actor_rollout_ref.rollout.max_num_batched_tokens={VLLM_MAX_NUM_BATCHED_TOKENS}",
    ]


def cpu_overrides(shape: CpuRunShape | None = None) -> list[str]:
    """Hydra overrides for ``verl.trainer.main_ppo`` (or a recipe extending ``ppo_trainer``) on CPU."""
    shape = shape or CpuRunShape()
    n = shape.n_procs
    return [
        # --- device and placement: one fake Ray GPU slot per training process, gloo, no NCCL
        "trainer.device=cpu",
        "trainer.nnodes=1",
        f"trainer.n_gpus_per_node={n}",
        f"++ray_kwargs.ray_init.num_gpus={n}",
        f"ray_kwargs.ray_init.num_cpus={shape.ray_num_cpus}",
        # Ray's dashboard is a handful of extra processes competing for the CPU at start-up; nothing reads it
        "++ray_kwargs.ray_init.include_dashboard=False",
        f"transfer_queue.backend.SimpleStorage.num_data_storage_units={TRANSFER_QUEUE_STORAGE_UNITS}",
        # --- training engine: FSDP2 in float32 (bf16 autocast is slow on CPU and would make the actor's
        # log-probs differ from the fp32 rollout server's), sdpa attention (the default asks for flash-attn),
        # no torch.compile (inductor would compile C++ on first use), padded batches (verl's packed VL
        # attention path needs flash-attn)
        "actor_rollout_ref.actor.strategy=fsdp2",
        "actor_rollout_ref.ref.strategy=fsdp2",
        "++actor_rollout_ref.actor.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
        "++actor_rollout_ref.ref.fsdp_config.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
        "++actor_rollout_ref.model.override_config.attn_implementation=sdpa",
        "actor_rollout_ref.actor.use_torch_compile=False",
        "actor_rollout_ref.actor.fsdp_config.use_torch_compile=False",
        "actor_rollout_ref.ref.fsdp_config.use_torch_compile=False",
        "actor_rollout_ref.model.use_remove_padding=False",
        # --- rollout: calibrl's HF-generate server (or verl's vLLM server with shape.rollout="vllm"), one per
        # training process, fp32 log-probs returned
        *([f"actor_rollout_ref.rollout.name={ROLLOUT_NAME}"] if shape.rollout == ROLLOUT_NAME else vllm_rollout_overrides()),
        "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        "actor_rollout_ref.rollout.calculate_log_probs=True",
        "actor_rollout_ref.rollout.checkpoint_engine.backend=naive",
        # --- Ray actors and processes: one each where verl defaults to 8 (each is a process on the host)
        "actor_rollout_ref.rollout.agent.num_workers=1",
        "reward.num_workers=1",
        # DataLoader worker processes get SIGKILLed at exit and log a spurious error; 0 loads in-process
        "data.dataloader_num_workers=0",
        # --- fixed waits: verl's sync replay buffer sleeps 2 s between polls; poll every poll_interval_s
        "trainer.v1.sampler.custom_sampler.path=pkg://calibrl_ext.cpu_backend.replay_buffer",
        "trainer.v1.sampler.custom_sampler.name=FastPollReplayBuffer",
        f"++trainer.v1.sampler.sampler_kwargs.{POLL_INTERVAL_KEY}={shape.poll_interval_s}",
    ]


def cpu_sft_overrides() -> list[str]:
    """Hydra overrides for verl's SFT trainer (``verl.trainer.sft_trainer``) on CPU: the training-engine part of
    :func:`cpu_overrides` in that trainer's key names (FSDP2 in float32, sdpa attention, no torch.compile, padded
    forward passes) plus in-process data loading. Used by the SFT stage of ``calibrl.mode=sft_then_grpo``."""
    return [
        "trainer.device=cpu",
        "engine.strategy=fsdp2",
        "++engine.mixed_precision={param_dtype:fp32,reduce_dtype:fp32,buffer_dtype:fp32}",
        "engine.use_torch_compile=False",
        "++model.override_config.attn_implementation=sdpa",
        "model.use_remove_padding=False",
        "model.enable_gradient_checkpointing=False",
        # DataLoader worker processes (verl's SFT default 8) would each be a process on a 2-core host
        "data.num_workers=0",
    ]


def repo_root() -> Path:
    """Directory that contains the ``calibrl_ext`` package (put on PYTHONPATH for Ray workers)."""
    return Path(__file__).resolve().parent.parent.parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m calibrl_ext.cpu_backend.overrides",
        description="Print the CPU backend's Hydra overrides (one per line), or with --env its environment as "
        "shell export lines.",
    )
    parser.add_argument("--env", action="store_true", help="print `export KEY=VALUE` lines instead of overrides")
    parser.add_argument("--n-procs", type=int, default=1, help="training processes (FSDP ranks), default 1")
    parser.add_argument("--ray-num-cpus", type=int, default=DEFAULT_RAY_NUM_CPUS, help="logical Ray CPU slots")
    parser.add_argument(
        "--poll-interval-s", type=float, default=DEFAULT_POLL_INTERVAL_S, help="replay-buffer poll interval"
    )
    parser.add_argument("--rollout", default=ROLLOUT_NAME, choices=ROLLOUTS, help="rollout backend, default hf")
    args = parser.parse_args(argv)
    try:
        shape = CpuRunShape(args.n_procs, args.ray_num_cpus, args.poll_interval_s, args.rollout)
    except ValueError as exc:
        parser.error(str(exc))
    if args.env:
        env = cpu_env(shape)
        for key, value in env.items():
            print(f"export {key}={shlex.quote(value)}")
        # Ray workers import calibrl_ext from here when the package is not pip-installed.
        print(f'export PYTHONPATH={shlex.quote(str(repo_root()))}"${{PYTHONPATH:+:$PYTHONPATH}}"')
    else:
        print("\n".join(cpu_overrides(shape)))


if __name__ == "__main__":
    main()
