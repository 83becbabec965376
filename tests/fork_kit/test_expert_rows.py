"""fork_kit.append_expert_rows / after_old_log_prob on DataProto batches: text, Qwen2.5-VL M-RoPE, InternVL inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from calibrl_ext import fork_kit
from verl import DataProto

EOS, PAD = 2, 0
PROMPT, RESPONSE = 4, 5


def _batch(position_ids=None, prompt=None, non_tensors=None, rows=4):
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(10, 50, (rows, PROMPT), generator=gen) if prompt is None else prompt
    prompt[:, 0] = torch.where(torch.arange(rows) % 2 == 1, PAD, prompt[:, 0])
    prompt_attention = (prompt != PAD).long()
    response_attention = (torch.arange(RESPONSE) < torch.tensor([5, 3, 2, 4])[:rows, None]).long()
    responses = torch.randint(10, 50, (rows, RESPONSE), generator=gen) * response_attention
    attention = torch.cat([prompt_attention, response_attention], -1)
    if position_ids is None:
        position_ids = torch.clip(torch.cumsum(attention, -1) - 1, min=0)
    return DataProto.from_dict(
        tensors={"input_ids": torch.cat([prompt, responses], -1), "attention_mask": attention,
                 "position_ids": position_ids, "responses": responses, "prompts": prompt,
                 "response_mask": response_attention},
        non_tensors={"uid": np.array(["g0", "g0", "g1", "g1"][:rows], dtype=object), **(non_tensors or {})},
        meta_info={"temperature": 1.0},
    )  # fmt: skip


def test_text_expert_row_holds_solution_eos_prompt_copy_and_continued_positions():
    """Per group one expert row: solution + EOS as responses (cut to the response length: the EOS is lost then),
    pad ids after it, the group's prompt, attention / response masks over exactly those tokens, positions continuing
    the prompt's last position, the group's uid and every non-tensor column of its first row."""
    mm = np.empty(4, dtype=object)
    for i in range(4):
        mm[i] = {"pixel_values": torch.full((2, 3), float(i))}  # InternVL / Qwen-VL keep pixels here
    batch = _batch(non_tensors={"multi_modal_inputs": mm, "data_source": np.array(["a", "a", "b", "b"], dtype=object)})
    out = fork_kit.append_expert_rows(batch, [[5, 6], None, [7, 8, 9, 10, 11, 12], None], EOS, PAD, world_size=4)
    assert list(out.non_tensor_batch[fork_kit.ROW_KIND]) == [0, 0, 0, 0, 1, 1, 2, 2]  # 6 rows padded to 8
    e0, e1 = out[4], out[5]
    assert e0.batch["responses"].tolist() == [5, 6, EOS, PAD, PAD]
    assert e1.batch["responses"].tolist() == [7, 8, 9, 10, 11]  # cut: the EOS does not fit
    assert out.meta_info["calibrl_truncated_expert_rows"] == 1
    assert e0.batch["response_mask"].tolist() == [1, 1, 1, 0, 0]
    for row, source in ((e0, 0), (e1, 2)):
        src = batch[source]
        assert torch.equal(row.batch["input_ids"][:PROMPT], src.batch["input_ids"][:PROMPT])
        assert torch.equal(row.batch["prompts"], src.batch["prompts"])
        assert torch.equal(row.batch["attention_mask"][PROMPT:], row.batch["response_mask"])
        last = src.batch["position_ids"][PROMPT - 1]
        assert row.batch["position_ids"][PROMPT:].tolist() == list(range(int(last) + 1, int(last) + 1 + RESPONSE))
        assert row.non_tensor_batch["uid"] == src.non_tensor_batch["uid"]
        assert torch.equal(row.non_tensor_batch["multi_modal_inputs"]["pixel_values"],
                           src.non_tensor_batch["multi_modal_inputs"]["pixel_values"])  # fmt: skip
        assert row.non_tensor_batch["data_source"] == src.non_tensor_batch["data_source"]
    pad = out[len(out) - 1]
    assert pad.batch["response_mask"].sum() == 0 and pad.batch["attention_mask"][PROMPT:].sum() == 0
    assert pad.non_tensor_batch["uid"] not in set(batch.non_tensor_batch["uid"])


def test_pad_and_expert_rows_never_reach_the_update_and_luffy_keeps_experts():
    """after_old_log_prob: CalibRL keeps on-policy rows only (row count still a multiple of the world size), LUFFY
    keeps the expert rows too; pad rows get no advantage and no tokens either way."""
    batch = fork_kit.append_expert_rows(_batch(), [[5, 6], None, [7], None], EOS, PAD, world_size=3)
    mask = batch.batch["response_mask"].float()
    batch.batch["old_log_probs"] = -torch.ones_like(mask) * mask
    scores = torch.zeros_like(mask)
    scores[:, 0] = torch.tensor([1.1, 0.0, 0.0, 0.0, 1.1, 1.1])
    batch.batch["token_level_scores"] = scores
    calibrl, metrics = fork_kit.after_old_log_prob(batch, fork_kit.ForkSettings(), world_size=2,
                                                   entropys=torch.rand(mask.shape))  # fmt: skip
    assert len(calibrl) == 4 and (calibrl.non_tensor_batch[fork_kit.ROW_KIND] == 0).all()
    assert metrics["calibrl/expert_rows"] == 2.0 and "actor/entropy" in metrics
    assert calibrl.batch["advantages"][:, 0].tolist() == pytest.approx([0.55, -0.55, 0.0, 0.0])
    luffy, _ = fork_kit.after_old_log_prob(batch, fork_kit.ForkSettings(loss_mode="luffy"), world_size=3)
    kinds = luffy.non_tensor_batch[fork_kit.ROW_KIND]
    assert list(kinds) == [0, 0, 0, 0, 1, 1]
    assert luffy.batch[fork_kit.ACTOR_SELECT_KEYS[3]].tolist() == [False] * 4 + [True] * 2


def test_misuse_fails_with_the_fix():
    """A batch already past the reward, a second append, or LUFFY with rollout log-probs fail naming the fix."""
    batch = _batch()
    batch.batch["token_level_scores"] = torch.zeros(4, RESPONSE)
    with pytest.raises(ValueError, match="before the reward"):
        fork_kit.append_expert_rows(batch, [[5]] * 4, EOS, PAD)
    out = fork_kit.append_expert_rows(_batch(), [[5]] * 4, EOS, PAD)
    with pytest.raises(ValueError, match="already has expert rows"):
        fork_kit.append_expert_rows(out, [[5]] * len(out), EOS, PAD)
    with_rollout = _batch()
    with_rollout.batch["rollout_log_probs"] = -torch.ones(4, RESPONSE)
    out = fork_kit.append_expert_rows(with_rollout, [[5]] * 4, EOS, PAD)
    out.batch["old_log_probs"] = torch.zeros(len(out), RESPONSE)
    out.batch["token_level_scores"] = torch.zeros(len(out), RESPONSE)
    with pytest.raises(ValueError, match="rollout correction"):
        fork_kit.after_old_log_prob(out, fork_kit.ForkSettings(loss_mode="rlplus"))
    with pytest.raises(ValueError, match="ForkSettings.lam"):
        fork_kit.ForkSettings(lam=-1.0)


@pytest.fixture(scope="module")
def qwen25_vl_rope():
    """transformers' own Qwen2.5-VL get_rope_index on a tiny config (model on the meta device: config only)."""
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

    config = Qwen2_5_VLConfig(
        text_config={"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
                     "num_key_value_heads": 1, "intermediate_size": 32,
                     "rope_scaling": {"type": "mrope", "mrope_section": [2, 1, 1]}},
        vision_config={"depth": 1, "hidden_size": 16, "out_hidden_size": 16, "num_heads": 2, "spatial_merge_size": 2},
        image_token_id=60,
    )  # fmt: skip
    with torch.device("meta"):
        model = Qwen2_5_VLModel(config)

    def rope_index_fn(input_ids, attention_mask, multi_modal_inputs):
        token_type = (input_ids == config.image_token_id).int()
        grid = multi_modal_inputs.get("image_grid_thw")
        positions, _ = model.get_rope_index(input_ids, token_type, image_grid_thw=grid, attention_mask=attention_mask)
        return positions

    return rope_index_fn


@pytest.mark.parametrize("text_channel", [False, True], ids=["3-channel", "4-channel"])
def test_qwen25_vl_expert_row_positions_come_from_the_family_rope_index(qwen25_vl_rope, text_channel):
    """With a Qwen2.5-VL prompt holding an image (2 x 2 merged patches), the expert row's M-RoPE ids are the family's
    get_rope_index of the full row (prompt ids equal the batch's own, response ids continue from the largest),
    in verl's 3-channel and 4-channel (text positions first) layouts."""
    prompt_length, rows = 8, 2
    prompt = torch.tensor([[0, 21, 60, 60, 60, 60, 22, 23]] * rows)  # left pad, image of 4 tokens, text
    attention_prompt = (prompt != 0).long()
    grid = torch.tensor([[1, 4, 4]])  # t, h, w patches -> 4 tokens after the 2x2 merge
    mm = np.empty(rows, dtype=object)
    for i in range(rows):
        mm[i] = {"image_grid_thw": grid}
    response = torch.tensor([[30, 31, 32, 0, 0], [33, 34, 0, 0, 0]])
    response_attention = (response != 0).long()
    attention = torch.cat([attention_prompt, response_attention], -1)
    input_ids = torch.cat([prompt, response], -1)
    prompt_positions = torch.stack([qwen25_vl_rope(prompt[i : i + 1], attention_prompt[i : i + 1], mm[i])[:, 0]
                                    for i in range(rows)])  # fmt: skip  [rows, 3, P]
    delta = torch.arange(1, RESPONSE + 1)
    positions = torch.cat([prompt_positions, prompt_positions[..., -1:] + delta], -1)
    if text_channel:
        text = torch.clip(torch.cumsum(attention, -1) - 1, min=0).unsqueeze(1)
        positions = torch.cat([text, positions], 1)
    batch = DataProto.from_dict(
        tensors={"input_ids": input_ids, "attention_mask": attention, "position_ids": positions, "responses": response},
        non_tensors={"uid": np.array(["g", "g"], dtype=object), "multi_modal_inputs": mm},
    )  # fmt: skip
    out = fork_kit.append_expert_rows(batch, [[40, 41], None], EOS, PAD, rope_index_fn=qwen25_vl_rope)
    expert = out[2]
    full_rope = qwen25_vl_rope(expert.batch["input_ids"][None], expert.batch["attention_mask"][None], mm[0])[:, 0]
    ids = expert.batch["position_ids"]
    rope_part = ids[1:] if text_channel else ids
    valid = expert.batch["attention_mask"].bool()
    assert torch.equal(rope_part[:, valid], full_rope[:, valid])
    assert torch.equal(rope_part[:, :prompt_length][:, valid[:prompt_length]],
                       positions[0, -3:, :prompt_length][:, valid[:prompt_length]])  # fmt: skip
    assert rope_part[0, prompt_length].item() == int(prompt_positions[0].max()) + 1
