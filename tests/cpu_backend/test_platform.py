"""The CPU platform is selected only by VERL_PLATFORM=cpu, leaves verl's registries alone, and gives verl's
distributed and device calls what they need on CPU."""

import json
import subprocess
import sys

import pytest


def _in_fresh_process(code: str, repo_env, **env) -> dict:
    """Run ``code`` (which prints one JSON line last) in a new interpreter with ``env``; return the JSON."""
    out = subprocess.run(
        [sys.executable, "-c", code], env=repo_env(**env), capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_cpu_platform_is_registered_but_never_auto_detected(monkeypatch):
    """Auto-detection (VERL_PLATFORM unset) never returns "cpu", even on this GPU-less host; VERL_PLATFORM=cpu
    selects it."""
    from verl.plugin.platform.platform_manager import PlatformRegistry, _detect_platform_name

    from calibrl_ext.cpu_backend.platform import CpuPlatform

    assert PlatformRegistry.get("cpu") is CpuPlatform
    assert CpuPlatform().is_platform_available(use_smi_check=True) is False
    assert CpuPlatform().is_platform_available(use_smi_check=False) is False
    monkeypatch.delenv("VERL_PLATFORM", raising=False)
    assert _detect_platform_name() != "cpu"
    monkeypatch.setenv("VERL_PLATFORM", "cpu")
    assert _detect_platform_name() == "cpu"


def test_registration_leaves_verls_registries_intact():
    """verl's own platforms, rollout backends and engine keys are still there and unchanged; only "cpu" and "hf"
    were added (no engine is registered for device "cpu")."""
    import verl.workers.engine.fsdp.transformer_impl  # noqa: F401  (registers verl's FSDP engines)
    from verl.plugin.platform.platform_cuda import PlatformCUDA
    from verl.plugin.platform.platform_manager import PlatformRegistry
    from verl.workers.engine.base import EngineRegistry
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY
    from verl.workers.rollout.replica import RolloutReplicaRegistry

    import calibrl_ext.cpu_backend.register as register

    assert PlatformRegistry.get("nvidia") is PlatformCUDA
    assert {"nvidia", "huawei", "cpu"} <= set(PlatformRegistry.registered_names())
    assert _ROLLOUT_REGISTRY[("vllm", "async")] == "verl.workers.rollout.vllm_rollout.ServerAdapter"
    assert _ROLLOUT_REGISTRY[("hf", "async")] == register.ADAPTER_PATH
    assert {"vllm", "sglang", "trtllm", "hf"} <= set(RolloutReplicaRegistry._registry)
    assert RolloutReplicaRegistry.get("hf").__name__ == "HFRolloutReplica"
    fsdp_keys = set(EngineRegistry._engines["language_model"]["fsdp2"])
    assert "cpu" not in fsdp_keys and "cuda" in fsdp_keys


def test_a_second_registration_of_hf_to_another_adapter_is_refused(monkeypatch):
    """If another plugin already owns rollout name "hf", registering fails loudly instead of overwriting it."""
    from verl.workers.rollout.base import _ROLLOUT_REGISTRY

    import calibrl_ext.cpu_backend.register as register

    monkeypatch.setitem(_ROLLOUT_REGISTRY, ("hf", "async"), "someone.else.Adapter")
    with pytest.raises(RuntimeError, match="already registered"):
        register._register()


def test_verl_runs_its_device_and_distributed_calls_on_the_cpu_platform(repo_env):
    """With VERL_PLATFORM=cpu in a fresh process: verl's platform is CpuPlatform, its process-group initialiser
    brings up gloo (an all-reduce works), the flops counter and memory helpers run, and EngineRegistry resolves the
    FSDP engine through VERL_ENGINE_DEVICE."""
    code = """
import json, torch, torch.distributed as dist
import verl
from verl.plugin.platform import get_platform
from verl.utils.device import get_device_id, get_device_name, get_torch_device
from verl.utils.distributed import initialize_global_process_group_ray
from verl.utils.flops_counter import get_device_flops
from verl.utils.profiler.performance import log_gpu_memory_usage
from verl.utils.memory_utils import aggressive_empty_cache
import verl.workers.engine.fsdp.transformer_impl
from verl.workers.engine.base import EngineRegistry
initialize_global_process_group_ray()
t = torch.ones(3)
dist.all_reduce(t)
log_gpu_memory_usage("probe", level=0)
aggressive_empty_cache()
get_torch_device().synchronize(); get_torch_device().empty_cache()
print(json.dumps({
    "platform": type(get_platform()).__name__, "device": get_device_name(), "device_id": get_device_id(),
    "backend": dist.get_backend(), "sum": t.tolist(), "flops": get_device_flops(),
    "engine": EngineRegistry.get_engine_cls("language_model", "fsdp2").__name__,
    "tensor_device": str(torch.zeros(1).to(get_device_id()).device),
}))
dist.destroy_process_group()
"""
    result = _in_fresh_process(
        code,
        repo_env,
        VERL_PLATFORM="cpu",
        VERL_ENGINE_DEVICE="cuda",
        VERL_USE_EXTERNAL_MODULES="calibrl_ext.cpu_backend.register",
        RANK="0",
        WORLD_SIZE="1",
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT="29517",
    )
    assert result["platform"] == "CpuPlatform" and result["device"] == "cpu" and result["device_id"] == "cpu"
    assert result["backend"] == "cpu:gloo" and result["sum"] == [1.0, 1.0, 1.0]
    assert result["engine"] == "FSDPEngineWithLMHead" and result["tensor_device"] == "cpu"
    assert result["flops"] > 0


def test_verls_torchrun_process_group_initialiser_brings_up_gloo_on_the_cpu_platform(repo_env):
    """verl's SFT trainer (torchrun) calls initialize_global_process_group, which builds "cpu:gloo,cpu:gloo" on the
    CPU platform (rejected by torch, see the control below); patched, it brings up gloo and returns verl's
    (local_rank, rank, world_size)."""
    code = """
import json, torch, torch.distributed as dist
import verl
from verl.utils.distributed import initialize_global_process_group
ranks = initialize_global_process_group()
t = torch.ones(2)
dist.all_reduce(t)
print(json.dumps({"ranks": list(ranks), "backend": dist.get_backend(), "sum": t.tolist()}))
dist.destroy_process_group()
"""
    result = _in_fresh_process(
        code, repo_env, VERL_PLATFORM="cpu", VERL_ENGINE_DEVICE="cuda",
        VERL_USE_EXTERNAL_MODULES="calibrl_ext.cpu_backend.register", LOCAL_RANK="0", RANK="0", WORLD_SIZE="1",
        MASTER_ADDR="127.0.0.1", MASTER_PORT="29518",
    )  # fmt: skip
    assert result == {"ranks": [0, 0, 1], "backend": "cpu:gloo", "sum": [1.0, 1.0]}


def test_without_verl_platform_nothing_cpu_specific_is_active(repo_env):
    """A process with the plugin loaded but no VERL_PLATFORM keeps verl's own platform choice and verl's own
    process-group initialiser (the CPU-only patch is not applied), as a GPU run would."""
    code = """
import json, verl
from verl.plugin.platform import get_platform
import verl.utils.distributed as d
print(json.dumps({"platform": type(get_platform()).__name__,
                  "patched": getattr(d.initialize_global_process_group_ray, "__calibrl_patch__", False)}))
"""
    result = _in_fresh_process(
        code, repo_env, VERL_PLATFORM="", VERL_USE_EXTERNAL_MODULES="calibrl_ext.cpu_backend.register"
    )
    assert result == {"platform": "PlatformCUDA", "patched": False}


def test_the_backend_string_verl_builds_on_cpu_is_what_torch_rejects():
    """Why verl_patches replaces the backend: torch refuses verl's "cpu:gloo,cpu:gloo" (the control for the
    process-group test above)."""
    from torch.distributed.distributed_c10d import BackendConfig

    with pytest.raises(ValueError, match="Duplicate device type cpu"):
        BackendConfig("cpu:gloo,cpu:gloo")
