"""``actor_rollout_ref.actor.freeze_vision_tower``: verl's key, honoured for the FSDP engine calibrl trains with.

verl 0.9.1 declares the key (``verl/trainer/config/actor/actor.yaml``, ``ActorConfig.freeze_vision_tower``, default
False) but no engine reads it (``grep -rn freeze_vision_tower verl/`` finds only the config files): with
``freeze_vision_tower=True`` the FSDP actor still trains the vision tower, silently. This module makes the key do what
it says. Applied at plugin import in every verl process (:mod:`calibrl_ext.plugin`), it wraps two verl methods:

1. ``verl.workers.engine_workers.ActorRolloutRefWorker.init_model``: records the actor's ``freeze_vision_tower`` in
   the worker process before the engines are built (the engine only sees ``actor.fsdp_config``, not the actor's
   own keys).
2. ``verl.workers.engine.fsdp.transformer_impl.FSDPEngine._build_module``: after verl loads the HF model, and before
   FSDP wraps it and the optimizer is built, every parameter of the vision tower gets ``requires_grad=False``. The
   tower then receives no gradient and AdamW skips it (no update, no weight decay, no optimizer state). The rest of
   the model (language model, embeddings, LM head) trains as before.

The vision tower is every sub-module whose attribute name is in :data:`VISION_TOWER_ATTRIBUTES` (Qwen2-VL /
Qwen2.5-VL: ``model.visual``, which holds the patch merger that projects into the language model, so the merger is
frozen too; InternVL3 (HF-native): ``model.vision_tower``; its ``multi_modal_projector`` stays trainable). A model
without one (text-only) with the key set fails at model build, naming the key.

With LoRA (``actor_rollout_ref.model.lora_rank > 0``) PEFT already freezes every base weight and the launch scripts
exclude the tower from the adapters, so the key changes nothing there.
"""

from __future__ import annotations

import functools
import logging
import os

import torch

logger = logging.getLogger(__name__)
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))

#: Attribute names of vision encoders in the HF classes calibrl supports (Qwen2-VL/2.5-VL, InternVL3 HF-native;
#: ``vision_model`` covers the remote-code InternVL and most other VLMs).
VISION_TOWER_ATTRIBUTES: tuple[str, ...] = ("visual", "vision_tower", "vision_model")
#: The verl key, as users write it.
CONFIG_KEY = "actor_rollout_ref.actor.freeze_vision_tower"
_PATCH_MARK = "__calibrl_vision_freeze__"

#: Set by the wrapped ``init_model`` in the worker process: the actor asked for a frozen tower.
_requested = False


def vision_tower_modules(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    """The outermost sub-modules of ``model`` named like a vision tower (see :data:`VISION_TOWER_ATTRIBUTES`)."""
    found: list[tuple[str, torch.nn.Module]] = []
    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in VISION_TOWER_ATTRIBUTES and not any(name.startswith(f"{p}.") for p, _ in found):
            found.append((name, module))
    return found


def freeze_vision_tower(model: torch.nn.Module) -> int:
    """Set ``requires_grad=False`` on every vision-tower parameter of ``model``; returns how many tensors it froze.

    Raises:
        ValueError: ``model`` has no vision tower (the key makes no sense for it).
    """
    towers = vision_tower_modules(model)
    if not towers:
        raise ValueError(
            f"{CONFIG_KEY}=True but {type(model).__name__} has no vision tower (no sub-module named one of "
            f"{list(VISION_TOWER_ATTRIBUTES)}); set {CONFIG_KEY}=False for a text-only model"
        )
    frozen = 0
    for _, tower in towers:
        for param in tower.parameters():
            param.requires_grad_(False)
            frozen += 1
    logger.info("%s: froze %d tensors of %s", CONFIG_KEY, frozen, [name for name, _ in towers])
    return frozen


def freeze_if_requested(engine, module: torch.nn.Module) -> torch.nn.Module:
    """What the wrapped ``FSDPEngine._build_module`` does with verl's freshly loaded ``module``: freeze its tower when
    the actor asked for it. The reference engine (forward only) is built in the same ``init_model``: it never trains,
    so it is left alone."""
    if _requested and not getattr(engine.engine_config, "forward_only", False):
        freeze_vision_tower(module)
    return module


def _wrap_init_model(worker_cls) -> None:
    original = worker_cls.init_model
    if getattr(original, _PATCH_MARK, False):
        return

    @functools.wraps(original)  # keeps verl's @register dispatch attributes
    def init_model(self, *args, **kwargs):
        global _requested
        _requested = "actor" in getattr(self, "role", "") and bool(self.config.actor.get("freeze_vision_tower", False))
        return original(self, *args, **kwargs)

    setattr(init_model, _PATCH_MARK, True)
    worker_cls.init_model = init_model


def _wrap_build_module(engine_cls) -> None:
    original = engine_cls._build_module
    if getattr(original, _PATCH_MARK, False):
        return

    @functools.wraps(original)
    def _build_module(self, *args, **kwargs):
        return freeze_if_requested(self, original(self, *args, **kwargs))

    setattr(_build_module, _PATCH_MARK, True)
    engine_cls._build_module = _build_module


def apply() -> None:
    """Wrap verl's two methods (see the module docstring). Idempotent."""
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngine
    from verl.workers.engine_workers import ActorRolloutRefWorker

    _wrap_init_model(ActorRolloutRefWorker)
    _wrap_build_module(FSDPEngine)


apply()
