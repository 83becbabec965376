"""``HFRolloutReplica``: the ``hf`` backend's ``RolloutReplica``, created by verl's ``LLMServerManager``.

verl builds ``actor_world_size // (tp * dp * pp)`` replicas in the TaskRunner process and calls
``init_hybrid(worker_group)``, which lands in :meth:`HFRolloutReplica.launch_servers`. Each replica starts one
:class:`~calibrl_ext.cpu_backend.hf_server.HFRolloutServer` actor on the node of its first worker, named so that
the workers' :class:`~calibrl_ext.cpu_backend.adapter.HFServerAdapter` can find it. The server takes no Ray CPU
slot (``num_cpus=0``): on a small host every slot is already spoken for by verl's own actors, and generation and
training never overlap in the sync trainer.
"""

from __future__ import annotations

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from verl.workers.rollout.replica import RolloutMode, RolloutReplica

from calibrl_ext.cpu_backend.adapter import SERVER_NAME_TEMPLATE
from calibrl_ext.cpu_backend.hf_server import HFRolloutServer

#: Ray CPU slots reserved by each server actor (see the module docstring).
SERVER_NUM_CPUS = 0


class HFRolloutReplica(RolloutReplica):
    """One HF-generate server per replica, hybrid mode only (rollout shares the actor's processes)."""

    async def launch_servers(self) -> None:
        if self.rollout_mode != RolloutMode.HYBRID:
            raise NotImplementedError(
                f"hf rollout backend: rollout mode {self.rollout_mode} is not supported; only the hybrid engine "
                "(actor_rollout_ref.hybrid_engine=True, trainer.v1.trainer_mode=sync) runs on the CPU backend"
            )
        if self.is_reward_model or self.is_teacher_model:
            raise NotImplementedError("hf rollout backend: generative reward or teacher models are not supported")
        node_id = await self.workers[0].__ray_call__.remote(lambda worker: ray.get_runtime_context().get_node_id())
        server = (
            ray.remote(HFRolloutServer)
            .options(
                name=SERVER_NAME_TEMPLATE.format(replica_rank=self.replica_rank, node_rank=0),
                num_cpus=SERVER_NUM_CPUS,
                scheduling_strategy=NodeAffinitySchedulingStrategy(node_id=node_id, soft=False),
                max_concurrency=self.max_concurrency,
            )
            .remote(config=self.config, model_config=self.model_config, replica_rank=self.replica_rank)
        )
        await server.launch_server.remote()
        self.servers = [server]
        self._server_handle = server
        # A key for verl's load balancer only: requests go through Ray actor calls, there is no HTTP endpoint.
        self._server_address = await server.get_server_address.remote()
