"""InternVL3 (transformers-native ``model_type="internvl"``) for verl 0.9.1: the fixes verl needs, on any device.

verl 0.9.1 has no InternVL support (``grep -ri internvl verl/`` finds nothing). With an HF-native InternVL3
checkpoint (``OpenGVLab/InternVL3-*-hf`` layout, or ``python -m calibrl_ext.tiny_models --arch internvl3``) it
fails in three places; this module, registered through :mod:`calibrl_ext.plugin`, replaces the three verl
functions involved, acting on InternVL processors only (every other model goes through verl's code unchanged):

1. ``verl.utils.tokenizer.hf_processor`` (re-exported as ``verl.utils.hf_processor``) only accepts a whitelist of
   processor classes; for ``InternVLProcessor`` it raises inside a broad ``except`` that turns the error into a
   warning and returns None. ``HFModelConfig.processor`` is then None and ``RLHFDataset`` stops with "processor is
   needed to process multimodal data". The replacement loads the InternVL processor itself (InternVL uses 1-D
   positions, so there is no ``get_rope_index`` to bind, which is the whitelist's purpose).
2. ``AgentLoopWorker._compute_multi_modal_inputs`` (``verl/experimental/agent_loop/agent_loop.py``) rebuilds the
   training inputs by decoding the prompt with ``skip_special_tokens=True`` and running the processor on that text.
   InternVL's image delimiters ``<img>`` / ``<IMG_CONTEXT>`` / ``</img>`` are special tokens, so the decoded text
   has no image placeholder left and ``InternVLProcessor`` raises "Number of image placeholders in the prompt does
   not match the number of images". The prompt ids are already expanded correctly, so the replacement computes
   only the pixel side (``pixel_values``) with the processor's image processor, and checks that the number of
   ``<IMG_CONTEXT>`` tokens in the ids matches the tiles.
3. ``verl.workers.rollout.utils.qwen2_5_vl_dedup_image_tokens``, which verl's vLLM server applies to every prompt
   before vLLM expands the images, collapses Qwen-VL's runs only; InternVL's expanded ids would be expanded a second
   time by vLLM. The replacement collapses each ``<img> <IMG_CONTEXT>+ </img>`` run to the one ``<IMG_CONTEXT>``
   vLLM's InternVL processor expands (:func:`collapse_internvl_image_tokens`).

It also maps ``internvl`` to verl's generic VL prompt builder (a registry entry; see
:func:`_register_continuous_token_family`), and, in multi-rank training processes only, makes transformers'
``InternVLModel.forward`` run its vision tower on a dummy tile for micro-batches without images, as verl does for
Qwen-VL (:func:`_patch_internvl_text_only_forward`; without it FSDP ranks deadlock or abort). What was run through
vLLM on CPU and what a GPU run may still need is in ``docs/internvl3.md``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import torch

logger = logging.getLogger(__name__)

#: ``config.json`` model types handled here.
INTERNVL_MODEL_TYPES: frozenset[str] = frozenset({"internvl"})
#: Outputs of InternVL's image processor that are model inputs (``num_patches`` is the processor's own
#: bookkeeping for expanding the prompt and must not reach ``forward``).
INTERNVL_MODEL_IMAGE_KEYS: tuple[str, ...] = ("pixel_values",)
#: Attribute set on each replacement, so importing twice patches nothing twice.
_PATCH_MARK = "__calibrl_patch__"


def is_internvl_processor(processor: Any) -> bool:
    """True for transformers' ``InternVLProcessor`` (and subclasses)."""
    try:
        from transformers import InternVLProcessor
    except ImportError:  # a transformers without InternVL: nothing of this module applies
        return False
    return isinstance(processor, InternVLProcessor)


# ------------------------------------------------------------------------------------------------------------
# 1. verl.utils.tokenizer.hf_processor
# ------------------------------------------------------------------------------------------------------------
def _internvl_config(name_or_path: Any, **kwargs: Any):
    """The checkpoint's config if it is an InternVL one, else None (also when it cannot be read: verl decides)."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(name_or_path, **kwargs)
    except Exception:  # verl's own hf_processor reports unreadable checkpoints its way
        return None
    return config if getattr(config, "model_type", None) in INTERNVL_MODEL_TYPES else None


def _patch_hf_processor() -> None:
    import verl.utils.tokenizer as verl_tokenizer

    original = verl_tokenizer.hf_processor
    if getattr(original, _PATCH_MARK, False):
        return

    def hf_processor(name_or_path, **kwargs):
        config = _internvl_config(name_or_path, **kwargs)
        if config is None:
            return original(name_or_path, **kwargs)
        from transformers import AutoProcessor

        processor = AutoProcessor.from_pretrained(name_or_path, **kwargs)
        if not is_internvl_processor(processor):
            raise ValueError(
                f"{name_or_path}: config.json says model_type={config.model_type!r} but AutoProcessor loaded "
                f"{type(processor).__name__}; an InternVL checkpoint needs the HF-native processor files "
                "(processor_config.json with InternVLProcessor, as in OpenGVLab/InternVL3-*-hf)"
            )
        processor.config = config
        return processor

    hf_processor.__doc__ = original.__doc__
    hf_processor.__wrapped__ = original
    setattr(hf_processor, _PATCH_MARK, True)
    # verl modules bind the name at import (`from verl.utils import hf_processor`): rebind it wherever it is.
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "verl" and getattr(module, "hf_processor", None) is original:
            module.hf_processor = hf_processor


# ------------------------------------------------------------------------------------------------------------
# 2. AgentLoopWorker._compute_multi_modal_inputs
# ------------------------------------------------------------------------------------------------------------
def internvl_multi_modal_inputs(processor: Any, images: list | None, input_ids: torch.Tensor, mm_kwargs: dict | None):
    """Training inputs of one InternVL trajectory from its images, checked against its expanded prompt ids.

    Args:
        processor: an ``InternVLProcessor``.
        images: the trajectory's images (PIL), or None/empty for a text-only row.
        input_ids: (seq_len,) or (1, seq_len) prompt + response ids, image placeholders already expanded.
        mm_kwargs: ``mm_processor_kwargs`` of the row (passed to the image processor), or None.
    Returns:
        ``{"pixel_values": (num_tiles, 3, H, W)}``, or ``{}`` without images.
    """
    context_id = processor.tokenizer.convert_tokens_to_ids(processor.image_token)
    n_context = int((input_ids == context_id).sum())
    if not images:
        if n_context:
            raise ValueError(f"InternVL row has {n_context} {processor.image_token} tokens but no image")
        return {}
    features = processor.image_processor(images=list(images), return_tensors="pt", **(mm_kwargs or {}))
    inputs = {key: features[key] for key in INTERNVL_MODEL_IMAGE_KEYS}
    expected = int(inputs["pixel_values"].shape[0]) * int(processor.image_seq_length)
    if n_context != expected:
        raise ValueError(
            f"InternVL row: {n_context} {processor.image_token} tokens in the prompt ids but {len(images)} image(s) "
            f"give {inputs['pixel_values'].shape[0]} tiles x image_seq_length {processor.image_seq_length} = "
            f"{expected}; the prompt was rendered with another processor configuration"
        )
    return inputs


def _patch_agent_loop_multi_modal_inputs() -> None:
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    original = AgentLoopWorker._compute_multi_modal_inputs
    if getattr(original, _PATCH_MARK, False):
        return

    def _compute_multi_modal_inputs(self, output, input_ids):
        if not is_internvl_processor(getattr(self, "processor", None)):
            return original(self, output, input_ids)
        multi_modal_data = output.multi_modal_data or {}
        if multi_modal_data.get("videos") or multi_modal_data.get("audios"):
            raise NotImplementedError("calibrl's InternVL support covers images only (no videos or audio)")
        return internvl_multi_modal_inputs(
            self.processor, multi_modal_data.get("images"), input_ids, output.mm_processor_kwargs
        )

    _compute_multi_modal_inputs.__doc__ = original.__doc__
    _compute_multi_modal_inputs.__wrapped__ = original
    setattr(_compute_multi_modal_inputs, _PATCH_MARK, True)
    AgentLoopWorker._compute_multi_modal_inputs = _compute_multi_modal_inputs


# ------------------------------------------------------------------------------------------------------------
# 3. verl's rollout servers: image tokens collapsed before vLLM expands them again
# ------------------------------------------------------------------------------------------------------------
def collapse_internvl_image_tokens(prompt_ids: list[int], processor: Any) -> list[int]:
    """Prompt ids with each expanded InternVL image run collapsed to the one placeholder vLLM expands.

    verl's agent loop sends prompt ids rendered by the HF processor, in which each image is already
    ``<img>`` + tiles x ``image_seq_length`` x ``<IMG_CONTEXT>`` + ``</img>``. vLLM's InternVL processor
    (``InternS1MultiModalProcessor``, which serves ``InternVLForConditionalGeneration``) replaces each single
    ``<IMG_CONTEXT>`` of a token prompt by that whole run again, so the expanded ids would be expanded twice.
    Each ``<img> <IMG_CONTEXT>+ </img>`` run becomes one ``<IMG_CONTEXT>``; any other token is kept, so already
    collapsed ids come back unchanged.

    Args:
        prompt_ids: the prompt's token ids (a list of ints).
        processor: an ``InternVLProcessor``.
    Returns:
        the collapsed ids (a new list).
    """
    tokenizer = processor.tokenizer
    start_id, context_id, end_id = (
        tokenizer.convert_tokens_to_ids(token)
        for token in (processor.start_image_token, processor.image_token, processor.end_image_token)
    )
    ids = [int(token) for token in prompt_ids]
    collapsed: list[int] = []
    index = 0
    while index < len(ids):
        if ids[index] == start_id:
            stop = index + 1
            while stop < len(ids) and ids[stop] == context_id:
                stop += 1
            if stop > index + 1 and stop < len(ids) and ids[stop] == end_id:
                collapsed.append(context_id)
                index = stop + 1
                continue
        collapsed.append(ids[index])
        index += 1
    return collapsed


def _patch_rollout_image_token_dedup() -> None:
    """Extend verl's ``qwen2_5_vl_dedup_image_tokens`` (Qwen-VL only) to InternVL processors.

    verl's vLLM (and TensorRT-LLM) server calls it on every request's prompt ids just before vLLM expands
    the images (``vllm_async_server.vLLMHttpServer.generate``); for other processors it returns the ids
    unchanged, which for InternVL means a double expansion (see :func:`collapse_internvl_image_tokens`). The
    replacement collapses InternVL's runs and hands every other processor to verl's function. The HF CPU
    server does not call it: it takes the expanded ids as they are.
    """
    import verl.workers.rollout.utils as rollout_utils

    original = rollout_utils.qwen2_5_vl_dedup_image_tokens
    if getattr(original, _PATCH_MARK, False):
        return

    def qwen2_5_vl_dedup_image_tokens(prompt_ids, processor):
        if is_internvl_processor(processor):
            return collapse_internvl_image_tokens(prompt_ids, processor)
        return original(prompt_ids, processor)

    qwen2_5_vl_dedup_image_tokens.__doc__ = original.__doc__
    qwen2_5_vl_dedup_image_tokens.__wrapped__ = original
    setattr(qwen2_5_vl_dedup_image_tokens, _PATCH_MARK, True)
    # The servers bind the name at import (`from verl.workers.rollout.utils import ...`): rebind it wherever it is;
    # a server module imported later binds the replacement.
    rollout_utils.qwen2_5_vl_dedup_image_tokens = qwen2_5_vl_dedup_image_tokens
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "verl" and getattr(module, "qwen2_5_vl_dedup_image_tokens", None) is original:
            module.qwen2_5_vl_dedup_image_tokens = qwen2_5_vl_dedup_image_tokens


# ------------------------------------------------------------------------------------------------------------
# 4. A registry entry, not a patch: the agent loop's prompt builder
# ------------------------------------------------------------------------------------------------------------
def _register_continuous_token_family() -> None:
    """Map ``internvl`` to verl's generic VL builder (renders through the processor; what verl falls back to).

    Without the entry verl picks the same builder but warns on every request ("No model-specific Continuous
    Token builder is registered ... falling back to vldefault"). ``setdefault``: a later verl entry wins.
    """
    from verl.utils.tokenizer import continuous_token_wiring as wiring

    for model_type in INTERNVL_MODEL_TYPES:
        wiring._MODEL_TYPE_TO_FAMILY.setdefault(model_type, wiring.ContinuousTokenModelFamily.VL_DEFAULT)


# ------------------------------------------------------------------------------------------------------------
# 5. transformers' InternVLModel.forward under data parallelism
# ------------------------------------------------------------------------------------------------------------
def _data_parallel_training_process() -> bool:
    """True in a process of a multi-rank process group (verl's FSDP workers with dp > 1)."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _patch_internvl_text_only_forward() -> None:
    """Run the vision tower on a dummy tile for micro-batches without images, when ranks must stay in step.

    With FSDP every rank all-gathers the vision tower's shards when any rank runs it. A micro-batch without
    images (text-only rows, or verl's pad rows) skips the tower in ``InternVLModel.forward``, so the ranks'
    collectives diverge and gloo/NCCL abort ("Received data size doesn't match"; seen with 2 CPU ranks). verl
    does the same dummy pass for Qwen-VL in its own model patch; it has none for InternVL. The dummy features
    enter with weight 0, so outputs and gradients are unchanged. Single-process runs (rollout servers, one rank)
    are left alone.
    """
    from transformers.models.internvl.modeling_internvl import InternVLModel

    original = InternVLModel.forward
    if getattr(original, _PATCH_MARK, False):
        return

    def forward(self, input_ids=None, pixel_values=None, *args, inputs_embeds=None, **kwargs):
        image_free = pixel_values is None and inputs_embeds is None and input_ids is not None
        if image_free and _data_parallel_training_process():
            inputs_embeds = self.get_input_embeddings()(input_ids)
            vision = self.config.vision_config
            size = vision.image_size
            height, width = (size, size) if isinstance(size, int) else size
            dummy = torch.zeros((1, getattr(vision, "num_channels", 3), height, width), device=inputs_embeds.device)
            features = self.get_image_features(
                pixel_values=dummy,
                vision_feature_layer=self.config.vision_feature_layer,
                vision_feature_select_strategy=self.config.vision_feature_select_strategy,
                return_dict=True,
            ).pooler_output
            inputs_embeds = inputs_embeds + 0.0 * features.mean()
            input_ids = None
        return original(self, input_ids, pixel_values, *args, inputs_embeds=inputs_embeds, **kwargs)

    forward.__doc__ = original.__doc__
    forward.__wrapped__ = original
    setattr(forward, _PATCH_MARK, True)
    InternVLModel.forward = forward


def apply_patches() -> None:
    """Install the replacements and the builder entry (idempotent)."""
    _patch_hf_processor()
    _patch_agent_loop_multi_modal_inputs()
    _patch_rollout_image_token_dedup()
    _register_continuous_token_family()
    _patch_internvl_text_only_forward()


apply_patches()
