"""verl's ``actor.freeze_vision_tower`` on the FSDP engine (calibrl_ext.vision_freeze), outside Ray: which modules
are the tower, that an optimizer step leaves them unchanged while the language model moves, and that the plugin's
wrappers sit on verl's classes and freeze only when the actor asked for it."""

import pytest
import torch


@pytest.fixture(scope="module")
def tiny_vlm_class_and_path():
    from transformers import AutoConfig
    from verl.utils.model import get_hf_auto_model_class

    from calibrl_ext.tiny_models import cached_tiny_model

    path = cached_tiny_model("qwen2_5_vl")
    return get_hf_auto_model_class(AutoConfig.from_pretrained(path)), path


def _step(model: torch.nn.Module) -> None:
    """One AdamW step (weight decay on, as in the recipe) on a loss that reaches the vision tower: image features
    pass through the tower into the language model."""
    config = model.config
    vision = config.vision_config
    t, h, w = 1, 4, 4
    pixels = torch.randn(t * h * w, vision.in_channels * vision.temporal_patch_size * vision.patch_size**2)
    grid = torch.tensor([[t, h, w]])
    image_tokens = t * h * w // vision.spatial_merge_size**2
    input_ids = torch.tensor([[config.vision_start_token_id] + [config.image_token_id] * image_tokens + [5, 6, 7]])
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.01)
    out = model(input_ids=input_ids, pixel_values=pixels, image_grid_thw=grid, labels=input_ids)
    out.loss.backward()
    optimizer.step()


def test_frozen_tower_stays_and_language_model_trains(tiny_vlm_class_and_path):
    """After freeze_vision_tower and an optimizer step on an image input, every tower parameter is bit-identical
    and the language model's parameters changed. Without the freeze the same step moves the tower (the control)."""
    from calibrl_ext.vision_freeze import freeze_vision_tower, vision_tower_modules

    model_class, path = tiny_vlm_class_and_path
    for freeze in (True, False):
        model = model_class.from_pretrained(path, dtype=torch.float32)
        assert [name for name, _ in vision_tower_modules(model)] == ["model.visual"]
        if freeze:
            assert freeze_vision_tower(model) == len(list(model.model.visual.parameters()))
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        _step(model)
        tower_moved = any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if ".visual." in n)
        lm_moved = any(not torch.equal(p, before[n]) for n, p in model.named_parameters() if "language_model" in n)
        assert lm_moved
        assert tower_moved is not freeze


def test_text_only_model_refuses_the_key():
    """freeze_vision_tower=True on a model without a vision tower fails naming verl's key."""
    from transformers import AutoConfig
    from verl.utils.model import get_hf_auto_model_class

    from calibrl_ext.tiny_models import cached_tiny_model
    from calibrl_ext.vision_freeze import freeze_vision_tower

    path = cached_tiny_model("qwen2")
    model = get_hf_auto_model_class(AutoConfig.from_pretrained(path)).from_pretrained(path)
    with pytest.raises(ValueError, match="actor_rollout_ref.actor.freeze_vision_tower"):
        freeze_vision_tower(model)


def test_plugin_wraps_verls_engine_and_freezes_only_the_actor_on_request(tiny_vlm_class_and_path, monkeypatch):
    """The plugin wrapped verl's ActorRolloutRefWorker.init_model (keeping verl's dispatch attributes) and
    FSDPEngine._build_module; what the wrapper does with the built module freezes the tower only when the actor
    requested it, and never for a forward-only (reference) engine."""
    import types

    import calibrl_ext.plugin  # noqa: F401
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngine
    from verl.workers.engine_workers import ActorRolloutRefWorker

    from calibrl_ext import vision_freeze

    assert getattr(ActorRolloutRefWorker.init_model, "__calibrl_vision_freeze__", False)
    assert any(k.startswith("attrs_") for k in vars(ActorRolloutRefWorker.init_model))  # verl's @register marks
    assert getattr(FSDPEngine._build_module, "__calibrl_vision_freeze__", False)
    model_class, path = tiny_vlm_class_and_path

    def trainable_tower(requested: bool, forward_only: bool) -> bool:
        monkeypatch.setattr(vision_freeze, "_requested", requested)
        engine = types.SimpleNamespace(engine_config=types.SimpleNamespace(forward_only=forward_only))
        module = vision_freeze.freeze_if_requested(engine, model_class.from_pretrained(path))
        return any(p.requires_grad for p in module.model.visual.parameters())

    assert trainable_tower(requested=False, forward_only=False)
    assert trainable_tower(requested=True, forward_only=True)
    assert not trainable_tower(requested=True, forward_only=False)
