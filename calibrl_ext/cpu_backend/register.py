"""Registers the CPU backend with verl; imported in every verl process by :mod:`calibrl_ext.plugin`.

- platform ``cpu`` in ``verl.plugin.platform.PlatformRegistry`` (used only with ``VERL_PLATFORM=cpu``);
- rollout ``hf``: ``RolloutReplicaRegistry`` (replica class, loaded lazily in the TaskRunner) and
  ``_ROLLOUT_REGISTRY[("hf", "async")]`` (server adapter, imported by path in every actor worker), the two
  entries verl 0.9.1 resolves ``actor_rollout_ref.rollout.name`` with;
- the patches of :mod:`calibrl_ext.cpu_backend.verl_patches`.

Registering changes nothing for runs that select neither ``VERL_PLATFORM=cpu`` nor ``rollout.name=hf``.
Importing twice is harmless (same names, same objects).
"""

from verl.workers.rollout.base import _ROLLOUT_REGISTRY
from verl.workers.rollout.replica import RolloutReplicaRegistry

from calibrl_ext.cpu_backend import platform as _platform  # noqa: F401  (registers platform "cpu")
from calibrl_ext.cpu_backend.overrides import ROLLOUT_NAME
from calibrl_ext.cpu_backend.verl_patches import apply_patches

#: Dotted path of the server adapter, as verl's ``get_rollout_class`` imports it in each actor worker.
ADAPTER_PATH = "calibrl_ext.cpu_backend.adapter.HFServerAdapter"


def load_replica_class():
    """Loader for ``RolloutReplicaRegistry``: imports the replica only where verl asks for it."""
    from calibrl_ext.cpu_backend.replica import HFRolloutReplica

    return HFRolloutReplica


def _register() -> None:
    existing = _ROLLOUT_REGISTRY.get((ROLLOUT_NAME, "async"))
    if existing is not None and existing != ADAPTER_PATH:
        raise RuntimeError(
            f"verl rollout backend {ROLLOUT_NAME!r} is already registered to {existing}; calibrl's CPU backend "
            f"would overwrite it. Load only one plugin that registers {ROLLOUT_NAME!r}."
        )
    RolloutReplicaRegistry.register(ROLLOUT_NAME, load_replica_class)
    _ROLLOUT_REGISTRY[(ROLLOUT_NAME, "async")] = ADAPTER_PATH
    apply_patches()


_register()
