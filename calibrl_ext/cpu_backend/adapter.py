"""``HFServerAdapter``: the ``hf`` backend's ``BaseRollout``, living inside every FSDP actor worker.

verl's ``ActorRolloutRefWorker.update_weights`` (naive checkpoint engine, the default) calls, on EVERY rank:
``resume(tags=["weights"])``, ``update_weights(per_tensor_generator, global_steps=...)``, then
``resume(tags=["kv_cache"])``. The generator yields ``(hf_name, full_tensor)``; producing each full tensor is
an all-gather across FSDP ranks, so every rank must drain it to the end. Only the leader rank of each
rollout replica (``rank % rollout_world_size == 0``) keeps the tensors and sends them to its server in one
Ray call (``HFRolloutServer.load_weights``). ``resume``/``release`` have nothing to do on CPU.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, AsyncIterator, Iterable, Optional

import ray
import torch
from verl.workers.rollout.base import BaseRollout
from verl.workers.rollout.utils import ensure_async_iterator

from calibrl_ext.cpu_backend.hf_server import HFEngineOptions

logger = logging.getLogger(__name__)
# Like verl's own modules: INFO unless VERL_LOGGING_LEVEL says otherwise (start-up and weight-push lines).
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))

#: Name of a replica's server actor; the replica creates it, the adapter looks it up (same Ray namespace).
SERVER_NAME_TEMPLATE = "hf_server_{replica_rank}_{node_rank}"


class HFServerAdapter(BaseRollout):
    """Pushes the actor's weights into the replica's :class:`~calibrl_ext.cpu_backend.hf_server.HFRolloutServer`.

    LoRA follows verl's adapter path (``model.lora.merge`` False, the default): the first sync sends the base
    weights (``rollout.load_format=dummy``, the default) and then the adapter tensors with the PEFT config;
    later syncs send the adapter only. With ``model.lora.merge=True`` verl sends merged full weights.

    With the engine option ``debug_skip_weight_sync`` the adapter drains the generator but sends nothing after
    the first sync round (the negative control of the weight-sync test: rollout and actor log-probs drift apart).
    """

    def __init__(self, config: Any, model_config: Any, device_mesh: Any = None, replica_rank: int = -1, **kwargs):
        super().__init__(config, model_config, device_mesh)
        # Parsed here too, so a bad engine option fails when the workers start, before any server exists.
        self.options = HFEngineOptions.from_engine_kwargs(self.config.engine_kwargs)
        rank = int(os.environ.get("RANK", "0"))
        self.rollout_world_size = (
            self.config.tensor_model_parallel_size
            * self.config.data_parallel_size
            * self.config.pipeline_model_parallel_size
        )
        self.replica_rank = replica_rank if replica_rank >= 0 else rank // self.rollout_world_size
        self.is_leader = rank % self.rollout_world_size == 0
        self._server = None
        # Completed sync rounds. A LoRA round is two calls when the server has no base weights yet (base, then
        # adapter); the negative control skips every push after the first ROUND.
        self._rounds = 0

    def _server_handle(self):
        # The server is created by the replica AFTER the workers build their adapters: look it up lazily.
        if self._server is None:
            self._server = ray.get_actor(SERVER_NAME_TEMPLATE.format(replica_rank=self.replica_rank, node_rank=0))
        return self._server

    async def resume(self, tags: list[str]) -> None:
        return None

    async def release(self) -> None:
        return None

    @torch.no_grad()
    async def update_weights(
        self,
        weights: Iterable[tuple[str, torch.Tensor]] | AsyncIterator[tuple[str, torch.Tensor]],
        wire_format: str = "named_tensors",
        global_steps: Optional[int] = None,
        **kwargs: Any,
    ) -> None:
        if wire_format != "named_tensors":
            raise ValueError(
                f"hf rollout backend: wire_format={wire_format!r} is not supported; keep "
                "actor_rollout_ref.rollout.checkpoint_engine.backend=naive"
            )
        peft_config = kwargs.get("peft_config")
        base_sync_done = bool(kwargs.get("base_sync_done", True))
        # verl's three cases (engine_workers.update_weights): peft_config None -> full weights (no LoRA, or LoRA
        # merged: model.lora.merge=True); peft_config and not base_sync_done -> the base weights, named with
        # PEFT's ``.base_layer`` infix; peft_config and base_sync_done -> the adapter tensors only.
        adapter_only = peft_config is not None and base_sync_done
        ends_round = peft_config is None or base_sync_done
        started = time.perf_counter()
        push = self.is_leader and not (self.options.debug_skip_weight_sync and self._rounds > 0)
        state_dict: dict[str, torch.Tensor] = {}
        async for name, tensor in ensure_async_iterator(weights):  # every rank drains: each item is a collective
            if push:
                state_dict[name] = tensor.detach().to("cpu", copy=True)
        if push and adapter_only:
            await self._server_handle().load_lora_adapter.remote(
                state_dict, _transportable(peft_config), global_steps=global_steps
            )
        elif push:
            await self._server_handle().load_weights.remote(state_dict, global_steps=global_steps)
        elif self.is_leader and global_steps is not None:
            await self._server_handle().set_global_steps.remote(global_steps)
        if ends_round:
            self._rounds += 1
        if self.is_leader:
            logger.info(
                "hf rollout: %s %d %s tensors to replica %d (global_steps=%s) in %.3f s",
                "pushed" if push else "skipped pushing",
                len(state_dict),
                "LoRA adapter" if adapter_only else ("LoRA base" if peft_config is not None else "full"),
                self.replica_rank,
                global_steps,
                time.perf_counter() - started,
            )


def _transportable(peft_config: Any) -> Any:
    """The adapter config as a plain dict (``peft.LoraConfig.to_dict()``), as verl's sglang path serialises it."""
    return peft_config.to_dict() if hasattr(peft_config, "to_dict") else dict(peft_config)
