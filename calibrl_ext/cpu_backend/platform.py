"""verl platform ``cpu``: lets verl's FSDP workers, Ray placement and device calls run on a CPU-only host.

Selected ONLY by ``VERL_PLATFORM=cpu`` (the launcher's environment sets it): verl's auto-detection
(``verl.plugin.platform.platform_manager._detect_platform_name``) probes every registered platform's
``is_platform_available`` when ``VERL_PLATFORM`` is unset, and this one always answers ``False`` there, so
registering it never changes what a GPU (or any other) run picks.

What each piece is for:

- ``device_name == "cpu"`` and ``current_device() == "cpu"``: verl moves tensors with
  ``.to(get_device_id())``, builds device meshes with ``init_device_mesh(get_device_name(), ...)`` and
  all-gathers the weight generator onto ``get_device_id()``; an int id would mean ``cuda:N``.
- ``communication_backend_name() == "gloo"``: no NCCL on CPU (see verl_patches for the duplicate
  "cpu:gloo,cpu:gloo" backend string verl builds from it).
- ``ray_resource_name() == "GPU"``: verl's resource pools ask Ray for one accelerator slot per worker;
  the overrides start Ray with as many fake ``num_gpus`` slots as training processes
  (:mod:`calibrl_ext.cpu_backend.overrides`). Ray only counts them; nothing touches CUDA.
- ``device_module``: verl calls ``get_torch_device().empty_cache()``, ``.synchronize()``, memory queries and
  ``.get_device_name()`` (flops counter) all over; :class:`CpuDeviceModule` answers them on CPU.
"""

from __future__ import annotations

import os
import types
from contextlib import contextmanager
from typing import Any, Optional

import torch
from verl.plugin.platform import PlatformBase, PlatformRegistry

#: Name under which the platform is registered, and the value of ``VERL_PLATFORM`` that selects it.
PLATFORM_NAME = "cpu"
#: Ray resource that verl's placement groups reserve per training process (faked with ``ray_init.num_gpus``).
RAY_SLOT_RESOURCE = "GPU"


def cpu_platform_selected() -> bool:
    """True when this process runs with ``VERL_PLATFORM=cpu`` (the only way this platform is used)."""
    return os.environ.get("VERL_PLATFORM", "").strip().lower() == PLATFORM_NAME


class CpuDeviceModule(types.ModuleType):
    """Stands in for ``torch.cuda`` where verl calls ``get_torch_device().<fn>()``.

    Memory figures are process-free host memory (psutil) or 0 for allocator statistics, which have no CPU
    meaning; cache and stream calls are no-ops. Anything not defined here falls through to ``torch.cpu``
    (``Stream``, ``current_stream``, ``stream``...).
    """

    def __init__(self) -> None:
        super().__init__("calibrl_ext.cpu_backend.platform.cpu_device_module")

    def __getattr__(self, name: str) -> Any:
        return getattr(torch.cpu, name)

    # availability and identity
    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def device_count() -> int:
        return 1

    @staticmethod
    def current_device() -> str:
        return "cpu"

    @staticmethod
    def set_device(device: Any) -> None:
        return None

    @staticmethod
    def get_device_name(device: Any = None) -> str:
        # verl.utils.flops_counter.get_device_flops matches this against its GPU table; "CPU" is its own key.
        return "CPU"

    @staticmethod
    def get_device_capability(device: Any = None) -> tuple[Optional[int], Optional[int]]:
        return (None, None)

    # synchronisation and caches: nothing to wait for or release on CPU
    @staticmethod
    def synchronize(device: Any = None) -> None:
        return None

    @staticmethod
    def empty_cache() -> None:
        return None

    @staticmethod
    def ipc_collect() -> None:
        return None

    @staticmethod
    def set_per_process_memory_fraction(fraction: float, device: Any = None) -> None:
        return None

    @staticmethod
    def reset_peak_memory_stats(device: Any = None) -> None:
        return None

    @staticmethod
    def reset_accumulated_memory_stats(device: Any = None) -> None:
        return None

    # memory queries: caching-allocator statistics do not exist on CPU
    @staticmethod
    def memory_allocated(device: Any = None) -> int:
        return 0

    @staticmethod
    def memory_reserved(device: Any = None) -> int:
        return 0

    @staticmethod
    def max_memory_allocated(device: Any = None) -> int:
        return 0

    @staticmethod
    def max_memory_reserved(device: Any = None) -> int:
        return 0

    @staticmethod
    def mem_get_info(device: Any = None) -> tuple[int, int]:
        import psutil

        memory = psutil.virtual_memory()
        return memory.available, memory.total

    @staticmethod
    def get_device_properties(device: Any = None) -> types.SimpleNamespace:
        import psutil

        return types.SimpleNamespace(name="CPU", total_memory=psutil.virtual_memory().total)

    # random state: the CPU generator is torch's default generator
    @staticmethod
    def manual_seed(seed: int) -> None:
        torch.manual_seed(seed)

    @staticmethod
    def manual_seed_all(seed: int) -> None:
        torch.manual_seed(seed)

    @staticmethod
    def get_rng_state(device: Any = None) -> torch.Tensor:
        return torch.get_rng_state()

    @staticmethod
    def set_rng_state(state: torch.Tensor, device: Any = None) -> None:
        torch.set_rng_state(state)


_DEVICE_MODULE = CpuDeviceModule()


@PlatformRegistry.register(platform=PLATFORM_NAME)
class CpuPlatform(PlatformBase):
    """verl platform for CPU-only hosts (gloo, no accelerator). Never auto-detected; see the module docstring."""

    @property
    def device_name(self) -> str:
        return "cpu"

    @property
    def vendor_name(self) -> str:
        return "cpu"

    @property
    def device_module(self) -> types.ModuleType:
        return _DEVICE_MODULE

    def is_available(self) -> bool:
        return True

    def is_platform_available(self, use_smi_check: bool = False) -> bool:
        # Auto-detection must never pick CPU: a GPU host whose probe fails would otherwise silently train on CPU.
        return False

    def current_device(self) -> str:  # verl annotates int; "cpu" is what .to() / torch.device() need here
        return "cpu"

    def device_count(self) -> int:
        return 1

    def set_device(self, device_index: int) -> None:
        return None

    def synchronize(self, device_index: Optional[int] = None) -> None:
        return None

    def manual_seed(self, seed: int) -> None:
        torch.manual_seed(seed)

    def manual_seed_all(self, seed: int) -> None:
        torch.manual_seed(seed)

    def set_allocator_settings(self, settings: str) -> None:
        # "expandable_segments:..." configures the CUDA caching allocator; the CPU allocator has no such knob.
        return None

    def empty_cache(self) -> None:
        return None

    def get_device_capability(self, device_index: int = 0) -> tuple[Optional[int], Optional[int]]:
        return (None, None)

    def communication_backend_name(self) -> str:
        return "gloo"

    def visible_devices_envvar(self) -> str:
        # Ray sets CUDA_VISIBLE_DEVICES for the fake GPU slots; nothing reads it on CPU.
        return "CUDA_VISIBLE_DEVICES"

    @contextmanager
    def nvtx_range(self, msg: str):
        yield

    def profiler_start(self) -> None:
        return None

    def profiler_stop(self) -> None:
        return None

    def ray_resource_name(self) -> str:
        return RAY_SLOT_RESOURCE

    def ray_resource_options(self, num_gpus: float) -> dict[str, Any]:
        return {"num_gpus": num_gpus}

    def ray_noset_envvars(self) -> list[str]:
        return []

    def is_ipc_supported(self) -> bool:
        # Weights reach the HF rollout server as a Ray call, never through CUDA IPC.
        return False

    def cudart(self) -> Any:
        return None
