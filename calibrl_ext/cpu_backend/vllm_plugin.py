"""vLLM general plugin (entry point ``vllm.general_plugins: calibrl_cpu_reloadable_linear``): reloadable linear
layers for verl's weight push into vLLM on the CPU platform. Does nothing on any other vLLM platform.

Why: on CPU, vLLM 0.31 pre-packs every linear weight at load time
(``vllm.model_executor.layers.utils.dispatch_cpu_unquantized_gemm``: oneDNN / sgl-kernel packed copies) and, for
the linear layers, replaces ``layer.weight`` by an empty Parameter. verl's in-place reload
(``model.load_weights`` on every push) then fails with ``AttributeError: 'Parameter' object has no attribute
'weight_loader'``, and even where the weight survives (the lm_head, ``remove_weight=False``) the packed copy
computed at load time is what the layer multiplies with, so the pushed weights would never be used.

What: that dispatch function is replaced, in every vLLM process before the model loads (vLLM loads general
plugins in the API server, engine core and worker processes), by one that keeps ``layer.weight`` and computes
the layer with ``torch.nn.functional.linear`` on the live weight (the fallback vLLM itself uses when oneDNN is
unavailable). Non-2D weights (conv / MoE experts) keep vLLM's own handling. Costs: no pre-packed GEMM, which is
irrelevant for the tiny models this backend runs.

Off switch (diagnostics, and the fail-fast test): vLLM's own ``VLLM_PLUGINS`` (a comma-separated allow-list of
plugin names; ``VLLM_PLUGINS=""`` loads none).
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

#: Entry-point name in setup.py (what ``VLLM_PLUGINS`` lists to allow it).
PLUGIN_NAME = "calibrl_cpu_reloadable_linear"
#: Marker attribute set on the replacement (makes :func:`register` idempotent and lets tests check it).
REPLACED_MARKER = "_calibrl_reloadable_linear"


def reloadable_cpu_gemm_dispatch(original):
    """Wrap vLLM's ``dispatch_cpu_unquantized_gemm(layer, remove_weight)``: 2-D weights are kept in place and
    computed with ``F.linear(x, weight, bias)`` on the live ``layer.weight`` (x: (tokens, in), weight:
    (out, in), output (tokens, out)); anything else goes to ``original``."""
    import torch

    def dispatch(layer: torch.nn.Module, remove_weight: bool) -> None:
        weight = layer.weight
        if weight.is_meta or weight.ndim == 2:
            layer.cpu_linear = torch.nn.functional.linear
            return
        original(layer, remove_weight)

    setattr(dispatch, REPLACED_MARKER, True)
    return dispatch


def register() -> None:
    """vLLM calls this in every process that loads general plugins; a no-op unless the platform is CPU."""
    from vllm.platforms import current_platform

    if not current_platform.is_cpu():
        return
    import vllm.model_executor.layers.utils as layer_utils

    if getattr(layer_utils.dispatch_cpu_unquantized_gemm, REPLACED_MARKER, False):
        return
    layer_utils.dispatch_cpu_unquantized_gemm = reloadable_cpu_gemm_dispatch(layer_utils.dispatch_cpu_unquantized_gemm)
    logger.info("calibrl: vLLM CPU linear layers compute on the live weight (reloadable by verl's weight push)")
