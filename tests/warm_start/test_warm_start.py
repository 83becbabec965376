"""SFT warm start: trains on response tokens only, reloads, is deterministic, caches, fails with clear errors."""

from __future__ import annotations

import logging

import pytest
import torch

from calibrl_ext import warm_start as ws

#: Small but real runs: the loss must move within these few steps (lr above the default, for a clear margin).
STEPS = 12
BATCH = 4
LR = 1e-2


def _run(model, data, out, **overrides):
    kwargs = {"steps": STEPS, "learning_rate": LR, "batch_size": BATCH, **overrides}
    return ws.warm_start(model, data, out, **kwargs)


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.fixture(scope="module")
def vl_run(tiny_model, sft_data, tmp_path_factory):
    """One warm start of the tiny Qwen2.5-VL on 8 image rows (shared by the tests that only read its output)."""
    return _run(tiny_model("qwen2_5_vl"), sft_data["vl"], tmp_path_factory.mktemp("vl") / "out")


def test_loss_on_probe_rows_decreases(vl_run):
    """The response-token loss on the fixed probe rows after training is well below the loss before it."""
    result = ws.read_stamp(vl_run)["result"]
    assert result["loss_after"] < 0.8 * result["loss_before"], result
    assert result["rows_used"] == 8 and result["rows_skipped_without_solution"] == 0


def test_output_reloads_with_from_pretrained_and_generates(vl_run, tiny_model, sft_data):
    """Model, tokenizer and processor reload from the output directory alone; the weights differ from the input's
    (training changed them) and the reloaded model generates from an image prompt rendered the verl way."""
    from transformers import AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    model = AutoModelForImageTextToText.from_pretrained(vl_run)
    tokenizer = AutoTokenizer.from_pretrained(vl_run)
    processor = AutoProcessor.from_pretrained(vl_run)
    assert tokenizer.eos_token == "<|im_end|>" and processor.tokenizer.eos_token == "<|im_end|>"
    before, after = _weights(tiny_model("qwen2_5_vl")), _weights(vl_run)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[name], after[name]) for name in before)

    loaded = ws._load_model(vl_run)
    renderer = ws._PromptRenderer(sft_data["vl"], loaded[1], loaded[2], loaded[3], 1)
    _, prompt_ids, features = renderer.render(0)
    batch, _ = ws._collate([ws._Example(prompt_ids, len(prompt_ids), features)], 0, ws._forward_params(model))
    output = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert output.shape[1] > len(prompt_ids)


def test_examples_are_verl_prompt_plus_solution_and_eos(tiny_model, sft_data):
    """An example is verl's rendered prompt (image placeholders expanded to one pad token per merged patch, ending
    with the assistant header) followed by encode(expert_solution) + eos; the loss mask covers exactly that
    response, and the prompt carries the image features."""
    from io import BytesIO

    from PIL import Image

    model_dir = tiny_model("qwen2_5_vl")
    _, tokenizer, processor, config = ws._load_model(model_dir)
    renderer = ws._PromptRenderer(sft_data["vl"], tokenizer, processor, config, 2)
    examples, _ = ws._build_examples(renderer, tokenizer, model_dir, None)
    raw = renderer.raw_row(0)
    example = examples[0]
    prompt, response = example.input_ids[: example.prompt_length], example.input_ids[example.prompt_length :]
    assert response == tokenizer.encode(raw["expert_solution"], add_special_tokens=False) + [tokenizer.eos_token_id]

    question = raw["prompt"][0]["content"].removeprefix("<image>")
    image = Image.open(BytesIO(raw["images"][0]["bytes"]))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}]
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert prompt == list(processor(text=[text], images=[image])["input_ids"][0])
    assert tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")
    merged_patches = int(example.features["image_grid_thw"].prod()) // processor.image_processor.merge_size**2
    assert prompt.count(tokenizer.convert_tokens_to_ids("<|image_pad|>")) == merged_patches > 0

    _, mask = ws._collate(examples, tokenizer.pad_token_id, frozenset())
    assert mask[0, : len(prompt)].sum() == 0 and mask[0].sum() == len(response)

    cut, _ = ws._build_examples(renderer, tokenizer, model_dir, 5)
    assert cut[0].input_ids == prompt + response[:5]


def test_response_only_projection_equals_full_logits_loss(tiny_model, sft_data):
    """Projecting only the response positions gives the same loss as the full logits with masked prompt tokens."""
    import torch.nn.functional as F

    model, tokenizer, processor, config = ws._load_model(tiny_model("qwen2_5_vl"))
    renderer = ws._PromptRenderer(sft_data["vl"], tokenizer, processor, config, 3)
    examples, _ = ws._build_examples(renderer, tokenizer, tiny_model("qwen2_5_vl"), None)
    batch, mask = ws._collate(examples, tokenizer.pad_token_id, ws._forward_params(model.base_model))
    assert {"pixel_values", "image_grid_thw", "mm_token_type_ids"} <= batch.keys()
    with torch.no_grad():
        fast = ws._response_loss(model, batch, mask)
        logits = model(**batch).logits[:, :-1]
        token_loss = F.cross_entropy(logits.flatten(0, 1), batch["input_ids"][:, 1:].flatten(), reduction="none")
        full = (token_loss * mask[:, 1:].flatten()).sum() / mask[:, 1:].sum()
    assert torch.allclose(fast, full, atol=1e-5), (fast, full)


def test_same_seed_gives_identical_weights(vl_run, tiny_model, sft_data, tmp_path):
    """A second run with the same inputs and seed writes bit-identical weights; another seed writes other ones."""
    model = tiny_model("qwen2_5_vl")
    again = _weights(_run(model, sft_data["vl"], tmp_path / "again"))
    first = _weights(vl_run)
    assert all(torch.equal(first[name], again[name]) for name in first)
    other = _weights(_run(model, sft_data["vl"], tmp_path / "seed1", seed=1))
    assert any(not torch.equal(first[name], other[name]) for name in first)


def test_cache_hit_returns_the_output_without_training(tiny_model, sft_data, monkeypatch, tmp_path):
    """Same inputs -> the existing output is returned and nothing is trained (weights untouched); another
    hyper-parameter -> another default directory, and a fixed out_dir is retrained in place."""
    model = tiny_model("qwen2")
    first = _run(model, sft_data["text"], None, steps=2)
    assert first.parent == tmp_path / "warm_start_cache" and first.name.startswith(model.name + "-")
    mtime = (first / "model.safetensors").stat().st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("trained on a cache hit")

    with monkeypatch.context() as patch:
        patch.setattr(ws, "_train_and_save", no_training)
        assert _run(model, sft_data["text"], None, steps=2) == first
    assert (first / "model.safetensors").stat().st_mtime_ns == mtime

    second = _run(model, sft_data["text"], None, steps=3)
    assert second != first and ws.read_stamp(second)["key"] != ws.read_stamp(first)["key"]

    fixed = tmp_path / "fixed"
    _run(model, sft_data["text"], fixed, steps=2)
    key = ws.read_stamp(fixed)["key"]
    assert key == ws.read_stamp(first)["key"]  # the key does not depend on where the output goes
    _run(model, sft_data["text"], fixed, steps=3)
    assert ws.read_stamp(fixed)["key"] == ws.read_stamp(second)["key"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".fixed.")]  # no temporary directory left


@pytest.mark.parametrize("arch, data, auto_class", [("qwen2", "text", "AutoModelForCausalLM"),
                                                     ("internvl3", "vl", "AutoModelForImageTextToText")])
def test_other_archs_train_and_reload(arch, data, auto_class, tiny_model, sft_data, tmp_path):
    """The text-only tiny Qwen2 (rows without images) and the tiny InternVL3 (image rows) train, lowering the loss,
    and their outputs reload with the matching Auto class and tokenizer."""
    import transformers

    out = _run(tiny_model(arch), sft_data[data], tmp_path / arch)
    result = ws.read_stamp(out)["result"]
    assert result["loss_after"] < 0.8 * result["loss_before"], result
    getattr(transformers, auto_class).from_pretrained(out)
    assert transformers.AutoTokenizer.from_pretrained(out).eos_token == "<|im_end|>"


def test_rows_without_solution_are_skipped_and_counted(tiny_model, sft_parquet, tmp_path, caplog):
    """Rows with an empty expert_solution are left out, counted in the stamp and reported in a warning."""
    data = sft_parquet("some_empty.parquet", 6, images=False, empty_solution_rows=(1, 4))
    with caplog.at_level(logging.WARNING, logger=ws.__name__):
        out = _run(tiny_model("qwen2"), data, tmp_path / "out", steps=1)
    result = ws.read_stamp(out)["result"]
    assert (result["rows_used"], result["rows_skipped_without_solution"]) == (4, 2)
    assert "skipped 2 of 6 rows without an expert_solution" in caplog.text


def test_error_parquet_without_expert_column(tiny_model, sft_parquet, tmp_path):
    """A parquet without the expert_solution column fails before any model is loaded, naming the data tool."""
    data = sft_parquet("no_expert.parquet", 2, images=False, expert=False)
    with pytest.raises(ws.WarmStartError, match="no 'expert_solution' column.*build_parquet.py"):
        _run(tiny_model("qwen2"), data, tmp_path / "out")


def test_error_no_row_has_a_solution(tiny_model, sft_parquet, tmp_path):
    """A parquet whose every expert_solution is empty fails (nothing to train on) and writes no output."""
    data = sft_parquet("all_empty.parquet", 3, images=False, empty_solution_rows=(0, 1, 2))
    with pytest.raises(ws.WarmStartError, match="none of the 3 rows .* non-empty 'expert_solution'"):
        _run(tiny_model("qwen2"), data, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_error_missing_parquet(tiny_model, tmp_path):
    """A parquet path that does not exist fails, naming the command that builds the demo data."""
    with pytest.raises(ws.WarmStartError, match="not found.*data_prep/build_parquet.py"):
        _run(tiny_model("qwen2"), tmp_path / "missing.parquet", tmp_path / "out")


def test_error_model_dir_that_does_not_load(sft_data, tmp_path):
    """A directory without config.json, and one whose weights are corrupt, both fail naming the tiny-model command."""
    with pytest.raises(ws.WarmStartError, match="no config.json.*calibrl_ext.tiny_models"):
        _run(tmp_path / "nothing", sft_data["text"], tmp_path / "out")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "qwen2"}')
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ws.WarmStartError, match="cannot load the model at .*broken.*calibrl_ext.tiny_models"):
        _run(broken, sft_data["text"], tmp_path / "out")


def test_error_images_for_a_text_only_model(tiny_model, sft_data, tmp_path):
    """Image rows with a model that has no image processor fail, naming a VL checkpoint as the fix."""
    with pytest.raises(ws.WarmStartError, match="has images but the model .* no image processor.*qwen2_5_vl"):
        _run(tiny_model("qwen2"), sft_data["vl"], tmp_path / "out")


def test_error_out_dir_that_is_not_a_warm_start_output(tiny_model, sft_data, tmp_path):
    """An existing non-empty directory without a stamp (or the model itself) is never overwritten."""
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "precious.txt").write_text("keep")
    with pytest.raises(ws.WarmStartError, match="not a warm-start output"):
        _run(tiny_model("qwen2"), sft_data["text"], taken)
    assert (taken / "precious.txt").read_text() == "keep"
    with pytest.raises(ws.WarmStartError, match="is the input model directory"):
        _run(tiny_model("qwen2"), sft_data["text"], tiny_model("qwen2"))


@pytest.mark.parametrize(
    "overrides, match",
    [
        ({"steps": 0}, "steps=0"),
        ({"learning_rate": 0.0}, "learning_rate=0.0"),
        ({"batch_size": 0}, "batch_size=0"),
        ({"max_rows": 0}, "max_rows=0"),
        ({"max_response_length": 0}, "max_response_length=0"),
    ],
)
def test_error_bad_hyper_parameter(overrides, match, tiny_model, sft_data, tmp_path):
    """Each out-of-range hyper-parameter fails at once with its name and value."""
    with pytest.raises(ws.WarmStartError, match=match):
        _run(tiny_model("qwen2"), sft_data["text"], tmp_path / "out", **overrides)


def test_cli_prints_the_output_path_last_and_exits_2_on_errors(tiny_model, sft_data, tmp_path, capsys):
    """The CLI's last stdout line is the output directory (progress goes to stderr); a bad input exits 2 with
    the error on stderr and nothing on stdout."""
    out = tmp_path / "cli"
    args = ["--model", str(tiny_model("qwen2")), "--data", str(sft_data["text"]), "--out", str(out)]
    assert ws.main([*args, "--steps", "2", "--batch-size", "2"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1] == str(out.resolve())
    assert "loss after" in captured.err

    assert ws.main(["--model", str(tmp_path / "nothing"), "--data", str(sft_data["text"])]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and "warm_start: error: model directory" in captured.err
