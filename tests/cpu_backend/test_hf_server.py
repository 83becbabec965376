"""The hf rollout server outside Ray: sampling mapping, token budget, log-probs equal to a teacher-forced forward,
vision-token suppression with unsuppressed log-probs, images, and weight loading."""

import asyncio

import pytest
import torch
from omegaconf import OmegaConf

from calibrl_ext.cpu_backend.hf_server import (
    HFEngineOptions,
    HFRolloutServer,
    generate_kwargs_for,
    max_new_tokens_for,
    token_log_probs,
    vision_token_ids,
)

PROMPT_LENGTH, RESPONSE_LENGTH = 256, 12


@pytest.fixture(scope="module")
def server_for(tiny_model):
    """``server_for(arch, **hf_options)`` -> a launched HFRolloutServer (plain object, no Ray)."""
    cache = {}

    def build(arch, **options):
        key = (arch, tuple(sorted(options.items())))
        if key not in cache:
            rollout = OmegaConf.create(
                {
                    "name": "hf",
                    "prompt_length": PROMPT_LENGTH,
                    "response_length": RESPONSE_LENGTH,
                    "tensor_model_parallel_size": 1,
                    "engine_kwargs": {"hf": options},
                }
            )
            model = OmegaConf.create(
                {"path": str(tiny_model(arch)), "override_config": {"attn_implementation": "sdpa"}}
            )
            server = HFRolloutServer(config=rollout, model_config=model, replica_rank=0)
            asyncio.run(server.launch_server())
            cache[key] = server
        return cache[key]

    return build


def _prompt(server, text="What color is it?", image=False):
    content = [{"type": "image"}, {"type": "text", "text": text}] if image else text
    messages = [{"role": "user", "content": content}]
    if image:
        from PIL import Image

        picture = Image.new("RGB", (56, 56), (20, 200, 20))
        rendered = server.processor.apply_chat_template(messages, add_generation_prompt=True)
        ids = server.processor(text=[rendered], images=[picture], return_tensors="pt")["input_ids"][0].tolist()
        return ids, [picture]
    rendered = server.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return server.tokenizer(rendered).input_ids, None


def _generate(server, prompt_ids, images=None, **sampling):
    params = {"temperature": 1.0, "top_p": 1.0, "top_k": -1, "repetition_penalty": 1.0, "logprobs": True, **sampling}
    request = server.generate(prompt_ids=prompt_ids, sampling_params=params, request_id="r", image_data=images)
    return asyncio.run(request)


def _teacher_forced_log_probs(server, prompt_ids, token_ids, images, temperature):
    """(len(token_ids),) log-probs of the response under a single forward over prompt + response."""
    inputs = server._model_inputs(prompt_ids + token_ids, images, None)
    if "mm_token_type_ids" in inputs:  # type ids of the prompt, zeros (text) for the response
        prompt_types = server._model_inputs(prompt_ids, images, None)["mm_token_type_ids"]
        inputs["mm_token_type_ids"] = torch.cat(
            [prompt_types, torch.zeros((1, len(token_ids)), dtype=prompt_types.dtype)], dim=1
        )
    with torch.no_grad():
        logits = server.model(**inputs).logits[0, len(prompt_ids) - 1 : -1]
    return token_log_probs(logits, torch.tensor(token_ids), temperature)


@pytest.mark.parametrize("arch,image", [("qwen2", False), ("qwen2_5_vl", True)])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_log_probs_match_a_teacher_forced_forward(server_for, arch, image, temperature):
    """Returned log-probs equal log_softmax(logits / T) of a full forward over prompt + response (what verl's actor
    recomputes), one per returned token; the response never exceeds the budget."""
    server = server_for(arch)
    prompt_ids, images = _prompt(server, image=image)
    out = _generate(server, prompt_ids, images, temperature=temperature)
    assert 1 <= len(out.token_ids) <= RESPONSE_LENGTH
    assert len(out.log_probs) == len(out.token_ids)
    expected = _teacher_forced_log_probs(server, prompt_ids, out.token_ids, images, temperature)
    assert torch.allclose(torch.tensor(out.log_probs), expected, atol=1e-4), (out.log_probs, expected.tolist())


def test_greedy_is_deterministic_and_logprobs_are_optional(server_for):
    """temperature 0 means greedy: two requests give the same tokens; logprobs=False returns None."""
    server = server_for("qwen2")
    prompt_ids, _ = _prompt(server)
    first = _generate(server, prompt_ids, temperature=0.0)
    second = _generate(server, prompt_ids, temperature=0.0, logprobs=False)
    assert first.token_ids == second.token_ids
    assert first.log_probs is not None and second.log_probs is None
    assert first.stop_reason == "completed"


def test_weights_load_and_global_steps_are_reported(server_for):
    """load_weights swaps the served weights (greedy output changes) and sets the int global_steps the trainer
    reads from extra_fields; loading the original weights back restores the output."""
    server = server_for("qwen2")
    prompt_ids, _ = _prompt(server)
    original = {k: v.clone() for k, v in server.model.state_dict().items()}
    before = _generate(server, prompt_ids, temperature=0.0, logprobs=True)
    generator = torch.Generator().manual_seed(0)
    perturbed = {k: v + 0.5 * torch.randn(v.shape, generator=generator) for k, v in original.items()}
    assert asyncio.run(server.load_weights(perturbed, global_steps=7)) == len(perturbed)
    after = _generate(server, prompt_ids, temperature=0.0)
    assert after.extra_fields["global_steps"] == 7 and isinstance(after.extra_fields["global_steps"], int)
    assert after.log_probs != before.log_probs
    asyncio.run(server.load_weights(original, global_steps=8))
    assert _generate(server, prompt_ids, temperature=0.0).log_probs == before.log_probs


def test_weight_names_from_another_model_are_rejected(server_for):
    """A state dict whose names do not match the served class raises, naming the mismatch, instead of loading
    part of it."""
    server = server_for("qwen2")
    bad = {"model.not_a_layer.weight": torch.zeros(2)}
    with pytest.raises(RuntimeError, match="unexpected"):
        asyncio.run(server.load_weights(bad, global_steps=1))


def test_vision_tokens_are_suppressed_but_scored_unsuppressed(server_for):
    """With a model biased towards <|image_pad|>, the server never samples a vision token, and the returned
    log-probs are those of the UNSUPPRESSED distribution (so they stay equal to the actor's)."""
    server = server_for("qwen2_5_vl")
    suppressed = vision_token_ids(server.model.config, server.tokenizer)
    image_pad = server.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert image_pad in suppressed
    original = {k: v.clone() for k, v in server.model.state_dict().items()}
    biased = dict(original)
    head = "lm_head.weight"
    biased[head] = original[head].clone()
    biased[head][image_pad] = 5.0  # tied with the embedding: logits of <|image_pad|> dominate everywhere
    asyncio.run(server.load_weights(biased, global_steps=1))
    try:
        prompt_ids, images = _prompt(server, image=True)
        out = _generate(server, prompt_ids, images, temperature=1.0)
        assert not set(out.token_ids) & set(suppressed)
        expected = _teacher_forced_log_probs(server, prompt_ids, out.token_ids, images, 1.0)
        assert torch.allclose(torch.tensor(out.log_probs), expected, atol=1e-4)
        assert max(out.log_probs) < -2.0  # most of the unsuppressed mass sits on the suppressed token
    finally:
        asyncio.run(server.load_weights(original, global_steps=2))


def test_without_suppression_a_biased_model_samples_vision_tokens(server_for):
    """Control for the suppression test: with suppress_vision_tokens=False the same bias makes the server emit
    <|image_pad|> (so the suppression test could fail)."""
    server = server_for("qwen2_5_vl", suppress_vision_tokens=False)
    image_pad = server.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    state = {k: v.clone() for k, v in server.model.state_dict().items()}
    state["lm_head.weight"][image_pad] = 5.0
    asyncio.run(server.load_weights(state, global_steps=1))
    prompt_ids, images = _prompt(server, image=True)
    assert image_pad in _generate(server, prompt_ids, images, temperature=1.0).token_ids


def test_images_without_a_processor_are_rejected(server_for):
    """A text-only checkpoint asked to look at an image fails with a message naming the model, not deep in HF."""
    from PIL import Image

    server = server_for("qwen2")
    prompt_ids, _ = _prompt(server)
    with pytest.raises(ValueError, match="no image processor"):
        _generate(server, prompt_ids, [Image.new("RGB", (56, 56))])


def test_token_budget_follows_vllm_arithmetic():
    """min(response_length, prompt_length + response_length - len(prompt)), an explicit max_tokens wins, and the
    result is clamped to [1, context room]; no room at all is an error naming the fix."""
    kw = dict(prompt_length=100, response_length=20, max_model_len=4096)
    assert max_new_tokens_for(50, {}, **kw) == 20
    assert max_new_tokens_for(110, {}, **kw) == 10
    assert max_new_tokens_for(130, {}, **kw) == 1
    assert max_new_tokens_for(50, {"max_tokens": 5}, **kw) == 5
    assert max_new_tokens_for(50, {"max_new_tokens": 7}, **kw) == 7
    assert max_new_tokens_for(4090, {"max_tokens": 50}, **kw) == 6
    with pytest.raises(ValueError, match="max_prompt_length"):
        max_new_tokens_for(4096, {}, **kw)


def test_sampling_params_map_onto_hf_generate():
    """temperature 0 -> greedy; top_k <= 0 -> off (0); top_p, repetition penalty pass through; ignore_eos forces
    the full budget; raw logits are requested for the log-probs."""
    base = dict(max_new_tokens=9, eos_token_ids=[2, 0], pad_token_id=0, suppress_token_ids=[9, 12])
    sampled = generate_kwargs_for({"temperature": 0.8, "top_p": 0.9, "top_k": -1, "repetition_penalty": 1.1}, **base)
    assert sampled["do_sample"] and sampled["temperature"] == 0.8 and sampled["top_p"] == 0.9
    assert sampled["top_k"] == 0 and sampled["repetition_penalty"] == 1.1
    assert sampled["suppress_tokens"] == [9, 12] and sampled["output_logits"] and "min_new_tokens" not in sampled
    greedy = generate_kwargs_for({"temperature": 0, "top_k": 5}, **base, ignore_eos=True)
    assert not greedy["do_sample"] and "temperature" not in greedy and greedy["top_k"] == 5
    assert greedy["min_new_tokens"] == 9


def test_engine_options_reject_unknown_keys():
    """A typo under engine_kwargs.hf fails at start-up naming the key and the accepted ones."""
    assert HFEngineOptions.from_engine_kwargs({"vllm": {"x": 1}}) == HFEngineOptions()
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['supress_vision_tokens'\]"):
        HFEngineOptions.from_engine_kwargs({"hf": {"supress_vision_tokens": False}})
    with pytest.raises(ValueError, match="dtype"):
        HFEngineOptions.from_engine_kwargs({"hf": {"dtype": "float33"}})


#: The launch scripts' LoRA exclusion (examples/calibrl_gpu.sh LORA_EXCLUDE_MODULES): no adapter on the vision tower.
LORA_EXCLUDE = ".*(visual|vision_tower|vision_model|multi_modal_projector|mlp1).*"


def _trained_lora_actor(server, seed: int):
    """An actor-side PeftModel as verl's FSDP engine builds it (``_build_lora_module``) on the served checkpoint, with
    random non-zero adapter weights standing in for a trained adapter (PEFT initialises B to 0, a no-op)."""
    from peft import LoraConfig, TaskType, get_peft_model
    from verl.utils.model import get_hf_auto_model_class

    model_class = get_hf_auto_model_class(server.model_config.hf_config)
    base = model_class.from_pretrained(server.model_config.local_path, dtype=torch.float32)
    config = LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=8, target_modules="all-linear",
                        exclude_modules=LORA_EXCLUDE, bias="none")  # fmt: skip
    actor = get_peft_model(base, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in actor.named_parameters():
            if "lora_" in name:
                param.copy_(0.3 * torch.randn(param.shape, generator=generator))
    return actor.eval()


def _actor_log_probs(actor, server, prompt_ids, token_ids, images):
    inputs = server._model_inputs(prompt_ids + token_ids, images, None)
    if "mm_token_type_ids" in inputs:
        prompt_types = server._model_inputs(prompt_ids, images, None)["mm_token_type_ids"]
        inputs["mm_token_type_ids"] = torch.cat(
            [prompt_types, torch.zeros((1, len(token_ids)), dtype=prompt_types.dtype)], dim=1
        )
    with torch.no_grad():
        logits = actor(**inputs).logits[0, len(prompt_ids) - 1 : -1]
    return token_log_probs(logits, torch.tensor(token_ids), 1.0)


def test_lora_adapter_sync_matches_the_actor_and_replaces_the_previous_adapter(server_for):
    """verl's LoRA sync on a VLM: the base weights under PEFT's ``.base_layer`` names (verl's first sync with
    load_format=dummy), then the adapter tensors + PEFT config. Afterwards the served log-probs equal the LoRA
    actor's; before the adapter push they do not (the control). A second adapter replaces the first (as verl's
    vLLM worker's remove_lora + add_lora); no adapter lands in the vision tower; a changed rank is refused."""
    from peft.utils.save_and_load import get_peft_model_state_dict
    from verl.utils.fsdp_utils import replace_lora_wrapper

    server = server_for("qwen2_5_vl", dtype="float32")  # its own instance: this test wraps it with PEFT
    prompt_ids, images = _prompt(server, image=True)
    actor = _trained_lora_actor(server, seed=1)
    peft_config = actor.peft_config["default"]
    base = {n.replace(".base_layer", ""): t for n, t in actor.get_base_model().state_dict().items() if "lora_" not in n}
    base = {replace_lora_wrapper(n, peft_config): t for n, t in base.items()}
    assert any(".base_layer." in n for n in base)
    asyncio.run(server.load_weights(base, global_steps=0))

    out = _generate(server, prompt_ids, images)  # base only: the control
    stale = _actor_log_probs(actor, server, prompt_ids, out.token_ids, images)
    assert (torch.tensor(out.log_probs) - stale).abs().max() > 1e-2

    adapter = get_peft_model_state_dict(actor)
    assert adapter and not any("visual" in n for n in adapter)
    assert asyncio.run(server.load_lora_adapter(adapter, peft_config.to_dict(), global_steps=1)) == len(adapter)
    out = _generate(server, prompt_ids, images)
    synced = _actor_log_probs(actor, server, prompt_ids, out.token_ids, images)
    assert out.extra_fields["global_steps"] == 1
    assert torch.allclose(torch.tensor(out.log_probs), synced, atol=1e-4)

    second = _trained_lora_actor(server, seed=2)
    asyncio.run(server.load_lora_adapter(get_peft_model_state_dict(second), peft_config.to_dict(), global_steps=2))
    out = _generate(server, prompt_ids, images)
    assert torch.allclose(torch.tensor(out.log_probs), _actor_log_probs(second, server, prompt_ids, out.token_ids,
                                                                        images), atol=1e-4)  # fmt: skip
    assert not any("lora_" in n for n, _ in server.model.named_parameters() if ".visual." in n)

    wider = {**peft_config.to_dict(), "r": 8}
    with pytest.raises(RuntimeError, match="LoRA config changed"):
        asyncio.run(server.load_lora_adapter(adapter, wider, global_steps=3))


def _image_prompt(server, colour):
    from PIL import Image

    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is it?"}]}]
    picture = Image.new("RGB", (56, 56), colour)
    rendered = server.processor.apply_chat_template(messages, add_generation_prompt=True)
    ids = server.processor(text=[rendered], images=[picture], return_tensors="pt")["input_ids"][0].tolist()
    return ids, [picture]


def test_sampling_does_not_depend_on_request_order(server_for):
    """Two "runs" (fresh request seeds, same seed and weights) that receive the same requests in different orders
    return the same set of responses per prompt; the requests of one prompt still differ from each other; prompts
    whose ids are equal but whose images differ are seeded apart (the shape_colour prompts share their text)."""
    from calibrl_ext.cpu_backend.hf_server import RequestSeeds

    server = server_for("qwen2_5_vl")
    red, green = _image_prompt(server, (220, 50, 47)), _image_prompt(server, (60, 150, 40))
    assert red[0] == green[0]

    def run(order):
        server._seeds = RequestSeeds(server.config.seed)
        responses = {"red": [], "green": []}
        for name in order:
            ids, images = red if name == "red" else green
            responses[name].append(tuple(_generate(server, ids, images, temperature=1.0).token_ids))
        return {name: sorted(group) for name, group in responses.items()}

    first = run(["red", "red", "red", "green", "green", "green"])
    second = run(["green", "red", "green", "red", "green", "red"])
    assert first == second
    assert len(set(first["red"])) > 1, "the requests of one prompt must not repeat one sample"
    seeds = RequestSeeds(0)
    assert seeds.next_seed(0, red[0], red[1]) != seeds.next_seed(0, green[0], green[1])
    assert seeds.next_seed(0, red[0], red[1]) != RequestSeeds(0).next_seed(0, red[0], red[1])  # k-th request
    assert RequestSeeds(0).next_seed(1, red[0], red[1]) != RequestSeeds(0).next_seed(0, red[0], red[1])
    assert RequestSeeds(1).next_seed(0, red[0], red[1]) != RequestSeeds(0).next_seed(0, red[0], red[1])
    # The first request of a prompt on each replica: a group spread over 2 replicas must not get one sample twice
    # (with n = 2 that made every group's rewards equal and every advantage 0).
    assert RequestSeeds(0, replica_rank=1).next_seed(0, red[0], red[1]) != RequestSeeds(0).next_seed(0, red[0], red[1])
