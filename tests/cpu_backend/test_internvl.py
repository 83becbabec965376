"""calibrl_ext.internvl: verl loads the InternVL processor and rebuilds InternVL training inputs without decoding the
prompt; Qwen-VL goes through verl's code unchanged. Each fix has a control showing verl's own code fails."""

import types
import warnings

import pytest
import torch
from PIL import Image

import calibrl_ext.internvl as internvl


@pytest.fixture(scope="module")
def internvl_dir(tiny_model):
    return str(tiny_model("internvl3"))


@pytest.fixture(scope="module")
def processor(internvl_dir):
    from verl.utils import hf_processor

    return hf_processor(internvl_dir)


def _expanded_prompt(processor, n_images=1, size=56):
    content = [{"type": "image"}] * n_images + [{"type": "text", "text": "What color is it?"}]
    text = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    images = [Image.new("RGB", (size, size), (10 * i, 200, 30)) for i in range(n_images)]
    batch = processor(text=[text], images=images, return_tensors="pt")
    return batch["input_ids"][0], images, batch["pixel_values"]


def test_verl_hf_processor_returns_the_internvl_processor(internvl_dir, processor):
    """verl's hf_processor (and HFModelConfig, which uses it) yields InternVLProcessor with the config attached;
    verl's original function returns None with a warning (the control)."""
    from verl.utils import hf_processor
    from verl.workers.config import HFModelConfig

    assert internvl.is_internvl_processor(processor) and processor.config.model_type == "internvl"
    config = HFModelConfig(path=internvl_dir, override_config={"attn_implementation": "sdpa"})
    assert internvl.is_internvl_processor(config.processor)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert hf_processor.__wrapped__(internvl_dir) is None
    assert any("Unsupported processor type: InternVLProcessor" in str(w.message) for w in caught)


def test_other_models_still_go_through_verls_loader(tiny_model):
    """A Qwen2.5-VL checkpoint gets verl's own processor, with get_rope_index bound; a text model gets None."""
    from verl.utils import hf_processor

    qwen = hf_processor(str(tiny_model("qwen2_5_vl")))
    assert type(qwen).__name__ == "Qwen2_5_VLProcessor" and hasattr(qwen, "get_rope_index")
    assert hf_processor(str(tiny_model("qwen2"))) is None


def test_rlhf_dataset_reads_internvl_rows(processor, internvl_dir, color_parquet, tmp_path):
    """verl's RLHFDataset accepts image rows with the InternVL processor (it asserted before the fix)."""
    from omegaconf import OmegaConf
    from verl.utils import hf_tokenizer
    from verl.utils.dataset.rl_dataset import RLHFDataset

    path = color_parquet(tmp_path / "rows.parquet", 3)
    config = OmegaConf.create({"image_key": "images", "max_prompt_length": 256, "return_raw_chat": True})
    dataset = RLHFDataset(str(path), hf_tokenizer(internvl_dir), config, processor=processor)
    row = dataset[0]
    assert any(item.get("type") == "image" for item in row["raw_prompt"][0]["content"])


def _worker_and_output(processor, images):
    worker = types.SimpleNamespace(
        processor=processor, tokenizer=processor.tokenizer, _get_mm_processor_kwargs=lambda audios: {}
    )
    output = types.SimpleNamespace(multi_modal_data={"images": images}, mm_processor_kwargs=None)
    return worker, output


@pytest.mark.parametrize("n_images", [1, 2])
def test_training_inputs_are_rebuilt_from_the_images(processor, n_images):
    """For expanded prompt ids (+ a response), the patched agent-loop method returns exactly the processor's
    pixel_values and nothing the model cannot take; verl's original decode-based method raises (the control)."""
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker

    prompt_ids, images, pixel_values = _expanded_prompt(processor, n_images)
    input_ids = torch.cat([prompt_ids, torch.tensor([5, 6, 7])])
    worker, output = _worker_and_output(processor, images)
    inputs = AgentLoopWorker._compute_multi_modal_inputs(worker, output, input_ids.unsqueeze(0))
    assert set(inputs) == {"pixel_values"} and torch.equal(inputs["pixel_values"], pixel_values)
    with pytest.raises(ValueError, match="Number of image placeholders"):
        AgentLoopWorker._compute_multi_modal_inputs.__wrapped__(worker, output, input_ids.unsqueeze(0))


def test_a_prompt_that_does_not_match_its_images_is_rejected(processor):
    """Image tokens in the ids that the images cannot fill (or an image-less row with image tokens) raise a
    message naming both counts, instead of a shape error deep in the model."""
    prompt_ids, images, _ = _expanded_prompt(processor, 1)
    with pytest.raises(ValueError, match="tiles x image_seq_length"):
        internvl.internvl_multi_modal_inputs(processor, images + images, prompt_ids, None)
    with pytest.raises(ValueError, match="no image"):
        internvl.internvl_multi_modal_inputs(processor, [], prompt_ids, None)
    text_only = torch.tensor(processor.tokenizer("no image here").input_ids)
    assert internvl.internvl_multi_modal_inputs(processor, None, text_only, None) == {}


def test_qwen_rows_keep_verls_own_path(tiny_model):
    """With a Qwen2.5-VL processor the patched method delegates to verl: same keys (image_grid_thw, ...)."""
    from verl.experimental.agent_loop.agent_loop import AgentLoopWorker
    from verl.utils import hf_processor

    qwen = hf_processor(str(tiny_model("qwen2_5_vl")))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Color?"}]}]
    text = qwen.apply_chat_template(messages, add_generation_prompt=True)
    image = Image.new("RGB", (56, 56), (200, 0, 0))
    input_ids = qwen(text=[text], images=[image], return_tensors="pt")["input_ids"]
    worker, output = _worker_and_output(qwen, [image])
    patched = AgentLoopWorker._compute_multi_modal_inputs(worker, output, input_ids)
    original = AgentLoopWorker._compute_multi_modal_inputs.__wrapped__(worker, output, input_ids)
    assert patched.keys() == original.keys() and "image_grid_thw" in patched
    assert all(torch.equal(patched[k], original[k]) for k in patched if isinstance(patched[k], torch.Tensor))


def test_pixels_change_the_log_probs(internvl_dir, processor):
    """Control for the e2e weight-sync check on InternVL: the actor's log-probs with and without the pixels
    differ by far more than the synced bound, so a small rollout-vs-actor difference means the actor saw them."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(internvl_dir)
    prompt_ids, _, pixel_values = _expanded_prompt(processor, 1)
    with torch.no_grad():
        with_pixels = model(input_ids=prompt_ids[None], pixel_values=pixel_values).logits.log_softmax(-1)
        without = model(input_ids=prompt_ids[None]).logits.log_softmax(-1)
    assert (with_pixels[0, -1] - without[0, -1]).abs().max() > 1e-3


def test_the_builder_entry_selects_verls_vl_builder_quietly(processor, caplog):
    """model_type internvl resolves to verl's generic VL prompt builder without the per-request warning."""
    from verl.utils.tokenizer.continuous_token_wiring import infer_continuous_token_model_family

    with caplog.at_level("WARNING"):
        family = infer_continuous_token_model_family(hf_model_type="internvl", has_multimodal_processor=True)
    assert family.value == "vldefault" and "No model-specific" not in caplog.text


def test_dummy_vision_pass_keeps_outputs_and_touches_the_vision_tower(internvl_dir, processor, monkeypatch):
    """In a multi-rank process a text-only forward also runs the vision tower (so FSDP ranks stay in step): the
    logits are unchanged and every vision parameter gets a (zero) gradient; without multiple ranks it is skipped."""
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(internvl_dir)
    input_ids = torch.tensor([processor.tokenizer("a text-only row").input_ids])
    vision = [p for n, p in model.named_parameters() if "vision_tower" in n or "multi_modal_projector" in n]

    def forward_and_grads():
        model.zero_grad(set_to_none=True)
        logits = model(input_ids=input_ids).logits
        logits.sum().backward()
        return logits.detach(), [p.grad for p in vision]

    plain_logits, plain_grads = forward_and_grads()
    assert all(g is None for g in plain_grads)  # single process: the tower is not run
    monkeypatch.setattr(internvl, "_data_parallel_training_process", lambda: True)
    dp_logits, dp_grads = forward_and_grads()
    assert torch.equal(dp_logits, plain_logits)
    assert all(g is not None and torch.count_nonzero(g) == 0 for g in dp_grads)
