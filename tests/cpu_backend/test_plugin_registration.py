"""The CPU backend's registrations reach Ray worker processes (where verl's TaskRunner, actor workers and rollout
servers run) through both of verl's plugin mechanisms."""

import importlib.metadata
import os

import pytest

pytestmark = pytest.mark.ray

#: verl.plugins entry point of this package (active once it is pip-installed, as `make setup` does).
ENTRY_POINT_INSTALLED = any(
    ep.value == "calibrl_ext.plugin" for ep in importlib.metadata.entry_points(group="verl.plugins")
)


def _registrations_in_a_ray_worker(env: dict[str, str]) -> dict:
    import ray

    @ray.remote(num_cpus=0)
    def probe():
        import os

        import verl  # noqa: F401  (loads plugins per the worker's environment)
        import verl.models.transformers.qwen2_vl as verl_qwen2_vl
        from verl.plugin.platform import PlatformRegistry
        from verl.workers.rollout.base import _ROLLOUT_REGISTRY
        from verl.workers.rollout.replica import RolloutReplicaRegistry

        return {
            "pid": os.getpid(),
            "platform": "cpu" in PlatformRegistry.registered_names(),
            "replica": "hf" in RolloutReplicaRegistry._registry,
            "adapter": ("hf", "async") in _ROLLOUT_REGISTRY,
            "patched": getattr(verl_qwen2_vl._get_input_embeds, "__calibrl_patch__", False),
        }

    return ray.get(probe.options(runtime_env={"env_vars": env}).remote(), timeout=300)


@pytest.fixture(scope="module")
def ray_cluster(repo_env):
    import ray

    ray.init(
        num_cpus=1,
        include_dashboard=False,
        log_to_driver=False,
        runtime_env={"env_vars": {"PYTHONPATH": repo_env()["PYTHONPATH"]}},
    )
    yield
    ray.shutdown()


def test_env_var_mechanism_registers_in_ray_workers(ray_cluster):
    """VERL_USE_EXTERNAL_MODULES=calibrl_ext.plugin (what the CPU environment sets) registers platform, replica,
    adapter and patches inside a Ray worker; with both mechanisms off nothing is registered (control)."""
    on = _registrations_in_a_ray_worker(
        {"VERL_USE_EXTERNAL_PLUGINS": "none", "VERL_USE_EXTERNAL_MODULES": "calibrl_ext.plugin"}
    )
    off = _registrations_in_a_ray_worker({"VERL_USE_EXTERNAL_PLUGINS": "none", "VERL_USE_EXTERNAL_MODULES": ""})
    assert on["pid"] != os.getpid()
    assert on["platform"] and on["replica"] and on["adapter"] and on["patched"]
    assert not (off["platform"] or off["replica"] or off["adapter"] or off["patched"])


@pytest.mark.skipif(not ENTRY_POINT_INSTALLED, reason="calibrl is not pip-installed: no verl.plugins entry point")
def test_entry_point_mechanism_registers_in_ray_workers(ray_cluster):
    """The verl.plugins entry point alone (no environment variable) registers the same in a Ray worker."""
    result = _registrations_in_a_ray_worker({"VERL_USE_EXTERNAL_PLUGINS": "auto", "VERL_USE_EXTERNAL_MODULES": ""})
    assert result["platform"] and result["replica"] and result["adapter"] and result["patched"]
