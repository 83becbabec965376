"""The only place where the CPU backend replaces verl functions at run time. Each patch names the verl function and why.

(Model-specific replacements for InternVL3, needed on GPU too, live in :mod:`calibrl_ext.internvl`.)
Everything else in the CPU backend goes through verl's registries (platform, rollout replica, server adapter)
and documented settings. Two groups, applied by :func:`apply_patches` (called by the registration module in
every process, before verl's workers import the patched names):

CPU only (applied only when ``VERL_PLATFORM=cpu``; a GPU run never sees them):

1. ``verl.utils.distributed.initialize_global_process_group_ray`` builds the backend string
   ``f"cpu:gloo,{get_device_name()}:{get_nccl_backend()}"``. On the CPU platform that is
   ``"cpu:gloo,cpu:gloo"``, which ``torch.distributed.init_process_group`` rejects ("Duplicate device type
   cpu"), and the platform interface has no hook for the string. The wrapper passes ``backend="cpu:gloo"``
   when verl passes none. ``verl.utils.distributed.initialize_global_process_group`` (the torchrun entry of verl's
   SFT trainer, ``verl.trainer.sft_trainer.run_sft``) builds the same string with no backend argument at all; on
   the CPU platform it is replaced by the same ``init_process_group`` call with ``backend="cpu:gloo"`` (same
   timeout, init method and return value; no ``set_device``, there is no device).

3. ``verl.workers.engine.fsdp.transformer_impl.FSDPEngine._build_fsdp_module`` wraps every forward-only engine (the
   reference model of a KL loss or KL penalty) with ``CPUOffloadPolicy(pin_memory=True)``, hard-coded. Pinning
   host memory needs a CUDA driver ("Found no NVIDIA driver"), so a run with a reference model died at start-up on
   CPU. On the CPU platform the parameters already live in host memory and nothing is copied to a device, so the
   module's ``CPUOffloadPolicy`` name is rebound to one that never pins.

Device independent (applied always; they fix verl 0.9.1 with transformers 5.x on GPU too):

2. ``verl.models.transformers.qwen2_vl._get_input_embeds``: for a micro-batch without any image or video
   (text-only rows, or pad rows added by ``upsample_batch_to_divisible_size``) verl runs the vision tower on a
   dummy input so every FSDP rank touches the same parameters, then calls ``image_embeds.mean()`` on the
   tower's raw return value. With transformers 5.x that value is a ``BaseModelOutputWithPooling``, so the
   step dies with ``AttributeError: ... has no attribute 'mean'``. The wrapper handles that case itself
   (same dummy pass, embeddings unpacked with verl's own ``unpack_visual_output``) and delegates every
   micro-batch that has pixels to verl unchanged.
"""

from __future__ import annotations

import logging
import sys

import torch

from calibrl_ext.cpu_backend.platform import cpu_platform_selected

logger = logging.getLogger(__name__)

#: Attribute set on every wrapper, so applying the patches twice wraps nothing twice.
_PATCH_MARK = "__calibrl_patch__"
#: Grid (t, h, w) in patches of the dummy image verl's text-only path pushes through the vision tower
#: (the one verl itself uses: 1 frame of 4 x 4 patches, a multiple of every Qwen-VL merge size).
DUMMY_VISION_GRID_THW = (1, 4, 4)


def _already_patched(fn) -> bool:
    return getattr(fn, _PATCH_MARK, False)


# ------------------------------------------------------------------------------------------------------------
# 1. CPU only: process-group backend string
# ------------------------------------------------------------------------------------------------------------
def _patch_process_group_backend() -> None:
    import verl.utils.distributed as verl_distributed

    original = verl_distributed.initialize_global_process_group_ray
    if _already_patched(original):
        return

    def initialize_global_process_group_ray(timeout_second=None, backend=None):
        if backend is None:
            backend = "cpu:gloo"
        return original(timeout_second=timeout_second, backend=backend)

    setattr(initialize_global_process_group_ray, _PATCH_MARK, True)
    initialize_global_process_group_ray.__doc__ = original.__doc__
    verl_distributed.initialize_global_process_group_ray = initialize_global_process_group_ray
    # engine_workers binds the name at import (`from verl.utils.distributed import ...`); if it is already
    # imported in this process, rebind it there too.
    engine_workers = sys.modules.get("verl.workers.engine_workers")
    if engine_workers is not None:
        engine_workers.initialize_global_process_group_ray = initialize_global_process_group_ray


def _patch_torchrun_process_group_backend() -> None:
    import verl.utils.distributed as verl_distributed

    original = verl_distributed.initialize_global_process_group
    if _already_patched(original):
        return

    def initialize_global_process_group(timeout_second=36000):
        import os
        from datetime import timedelta

        torch.distributed.init_process_group(
            backend="cpu:gloo",
            timeout=timedelta(seconds=timeout_second),
            init_method=os.environ.get("DIST_INIT_METHOD", None),
        )
        return int(os.environ["LOCAL_RANK"]), int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

    setattr(initialize_global_process_group, _PATCH_MARK, True)
    initialize_global_process_group.__doc__ = original.__doc__
    # sft_trainer.run_sft imports the name when it runs, so rebinding the module attribute reaches it.
    verl_distributed.initialize_global_process_group = initialize_global_process_group


# ------------------------------------------------------------------------------------------------------------
# 2. Device independent: Qwen2-VL / Qwen2.5-VL micro-batches without images under transformers 5.x
# ------------------------------------------------------------------------------------------------------------
def _patch_qwen2_vl_text_only_embeds() -> None:
    import verl.models.transformers.qwen2_vl as verl_qwen2_vl
    from verl.utils.transformers_compat import unpack_visual_output

    original = verl_qwen2_vl._get_input_embeds
    if _already_patched(original):
        return

    def _get_input_embeds(
        model,
        input_ids: torch.Tensor,
        attention_mask=None,
        pixel_values=None,
        pixel_values_videos=None,
        image_grid_thw=None,
        video_grid_thw=None,
    ):
        """input_ids (bs, seq) -> (inputs_embeds (bs, seq, hidden), attention_mask)."""
        if pixel_values is not None or pixel_values_videos is not None:
            return original(
                model, input_ids, attention_mask, pixel_values, pixel_values_videos, image_grid_thw, video_grid_thw
            )
        inputs_embeds = model.get_input_embeddings()(input_ids)
        vision_config = model.config.vision_config
        t, h, w = DUMMY_VISION_GRID_THW
        patch_dim = vision_config.in_channels * vision_config.temporal_patch_size * vision_config.patch_size**2
        dummy_pixels = torch.zeros((t * h * w, patch_dim), dtype=inputs_embeds.dtype, device=inputs_embeds.device)
        dummy_grid = torch.tensor([[t, h, w]], dtype=torch.long, device=inputs_embeds.device)
        dummy_embeds, _ = unpack_visual_output(model.visual(dummy_pixels, grid_thw=dummy_grid))
        # Zero contribution, but the vision tower joins the autograd graph like on ranks that saw images.
        inputs_embeds = inputs_embeds + 0.0 * dummy_embeds.mean()
        if attention_mask is not None:
            attention_mask = attention_mask.to(inputs_embeds.device)
        return inputs_embeds, attention_mask

    setattr(_get_input_embeds, _PATCH_MARK, True)
    verl_qwen2_vl._get_input_embeds = _get_input_embeds


# ------------------------------------------------------------------------------------------------------------
# 3. CPU only: FSDP2 offload policy of forward-only engines (the reference model)
# ------------------------------------------------------------------------------------------------------------
def _patch_reference_offload_pinning() -> None:
    import verl.workers.engine.fsdp.transformer_impl as transformer_impl

    original = transformer_impl.CPUOffloadPolicy
    if original is None or _already_patched(original):
        return

    def cpu_offload_policy_without_pinning(*args, pin_memory: bool = True, **kwargs):
        return original(*args, pin_memory=False, **kwargs)

    setattr(cpu_offload_policy_without_pinning, _PATCH_MARK, True)
    transformer_impl.CPUOffloadPolicy = cpu_offload_policy_without_pinning


def apply_patches() -> None:
    """Apply the device-independent patches, and the CPU-only ones when ``VERL_PLATFORM=cpu``. Idempotent."""
    _patch_qwen2_vl_text_only_embeds()
    if cpu_platform_selected():
        _patch_process_group_backend()
        _patch_torchrun_process_group_backend()
        _patch_reference_offload_pinning()
