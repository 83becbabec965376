"""NEGATIVE CONTROL, never for training: vLLM keeps the checkpoint's weights and ignores every weight push.

Importing this module replaces ``vLLMColocateWorkerExtension._update_weights`` (verl 0.9.1's in-vLLM loader of a
pushed weight bucket) by a no-op in that process. A run opts in by listing it after the plugin in verl's own
``VERL_USE_EXTERNAL_MODULES`` (``calibrl_ext.plugin,calibrl_ext.cpu_backend.vllm_stale_weights``), which verl
imports in every process, vLLM's worker processes included (they import verl for the worker extension).

Why it exists: the vLLM e2e test's weight-push check (``training/rollout_probs_diff_*`` small) must be shown able
to fail; this is the stale rollout it must catch (tests/vllm/test_e2e_vllm_calibrl.py). It is the vLLM counterpart
of the hf backend's ``engine_kwargs.hf.debug_skip_weight_sync``.
"""

from __future__ import annotations

import logging

from verl.workers.rollout.vllm_rollout.utils import vLLMColocateWorkerExtension

logger = logging.getLogger(__name__)

#: Marker set on the replacement (idempotent import).
STALE_MARKER = "_calibrl_stale_weights"


def _ignore_push(self, weights, peft_config, base_sync_done):
    """Drop the bucket: the model keeps the weights it has (those loaded from the checkpoint)."""
    logger.warning("calibrl negative control: ignoring a weight push into vLLM (vllm_stale_weights imported)")


if not getattr(vLLMColocateWorkerExtension._update_weights, STALE_MARKER, False):
    setattr(_ignore_push, STALE_MARKER, True)
    vLLMColocateWorkerExtension._update_weights = _ignore_push
