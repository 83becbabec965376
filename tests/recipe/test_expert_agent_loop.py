"""The calibrl_expert agent loop on a real tiny tokenizer and verl's single-turn prompt path."""

import asyncio

import pytest
from omegaconf import OmegaConf
from recipe.calibrl.expert_agent_loop import (
    EXPERT_FLAG,
    TRUNCATED_FLAG,
    CalibRLExpertAgentLoop,
    ExpertSolutionError,
    expert_token_ids,
)
from verl.experimental.agent_loop.agent_loop import DictConfigWrap
from verl.utils.dataset.rl_dataset import RLHFDataset
from verl.workers.rollout.replica import TokenOutput

SOLUTION = "<think>2 + 2 = 4</think><answer>4</answer>"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from calibrl_ext.tiny_models import build_tiny_model
    from transformers import AutoTokenizer

    path = build_tiny_model("qwen2", tmp_path_factory.mktemp("tiny") / "qwen2")
    return AutoTokenizer.from_pretrained(path)


class RecordingServer:
    """Records generate calls; answers with three fixed tokens (stands for the rollout server)."""

    def __init__(self):
        self.calls = 0

    async def generate(self, request_id, *, prompt_ids, sampling_params, **kwargs):
        self.calls += 1
        return TokenOutput(token_ids=[5, 6, 7], log_probs=[-1.0, -1.0, -1.0],
                           extra_fields={"global_steps": 3, "min_global_steps": 3, "max_global_steps": 3})  # fmt: skip


def _loop(tokenizer, server, response_length=64, n=2, calibrl=None):
    config = OmegaConf.create(
        {
            "actor_rollout_ref": {
                "rollout": {"n": n, "prompt_length": 64, "response_length": response_length,
                            "multi_turn": {"tool_config_path": None}},
                "model": {"path": "unused", "tokenizer_path": "unused"},
            },
            "data": {"tool_config_path": None, "apply_chat_template_kwargs": {}},
            "calibrl": calibrl or {"expert_column": "expert_solution"},
        }
    )  # fmt: skip
    return CalibRLExpertAgentLoop(
        trainer_config=DictConfigWrap(config), server_manager=server, tokenizer=tokenizer, processor=None,
        dataset_cls=RLHFDataset, data_config=DictConfigWrap(config.data), hf_model_type="qwen2",
    )  # fmt: skip


def _run(tokenizer, server, session_id, solution=SOLUTION, row=None, **loop_kwargs):
    """Build the loop inside the event loop (verl's agent loops bind to the running loop) and run one session."""
    kwargs = {"raw_prompt": [{"role": "user", "content": "What is 2 + 2?"}], "session_id": session_id,
              "global_steps": 4, "expert_solution": solution, **(row or {})}  # fmt: skip

    async def run_session():
        return await _loop(tokenizer, server, **loop_kwargs).run({"logprobs": True, "temperature": 1.0}, **kwargs)

    return asyncio.run(run_session())


def test_expert_session_returns_the_solution_without_a_server_call(tokenizer):
    """Session n (= rollout.n) carries the expert solution tokenized without chat template plus EOS, with zero
    rollout log-probs, weight-version fields, and the expert flag; the server is never called."""
    server = RecordingServer()
    out = _run(tokenizer, server, session_id=2)
    assert server.calls == 0
    expected = tokenizer.encode(SOLUTION, add_special_tokens=False) + [tokenizer.eos_token_id]
    assert out.response_ids == expected and out.response_mask == [1] * len(expected)
    assert out.response_logprobs == [0.0] * len(expected)
    assert out.extra_fields[EXPERT_FLAG] is True and out.extra_fields[TRUNCATED_FLAG] is False
    assert out.extra_fields["min_global_steps"] == out.extra_fields["max_global_steps"] == 3
    assert tokenizer.decode(out.response_ids, skip_special_tokens=True) == SOLUTION


def test_rollout_sessions_use_the_server_and_share_the_prompt(tokenizer):
    """Sessions 0..n-1 are ordinary rollouts (server called) with the same prompt ids as the expert row and the same
    extra_fields keys (TransferQueue drops fields missing on any row)."""
    server = RecordingServer()
    rollout = _run(tokenizer, server, session_id=0)
    expert = _run(tokenizer, server, session_id=2)
    assert server.calls == 1
    assert rollout.response_ids == [5, 6, 7] and rollout.extra_fields[EXPERT_FLAG] is False
    assert rollout.prompt_ids == expert.prompt_ids
    assert set(rollout.extra_fields) == set(expert.extra_fields)


def test_long_solution_is_cut_at_the_response_length(tokenizer):
    """A solution longer than the response limit is cut there (losing its EOS, like a rollout hitting the limit)
    and flagged as truncated."""
    ids, truncated = expert_token_ids(tokenizer, SOLUTION * 20, response_length=16)
    assert len(ids) == 16 and truncated and ids[-1] != tokenizer.eos_token_id
    out = _run(tokenizer, RecordingServer(), session_id=2, solution=SOLUTION * 20, response_length=16)
    assert len(out.response_ids) == 16 and out.extra_fields[TRUNCATED_FLAG] is True


def test_bad_sessions_and_empty_solutions_fail_loudly(tokenizer):
    """An expert session without a solution, or a session beyond n, raises naming the cause."""
    with pytest.raises(ExpertSolutionError, match="expert solution is empty"):
        _run(tokenizer, RecordingServer(), session_id=2, solution="")
    with pytest.raises(ExpertSolutionError, match="only sessions 0..2"):
        _run(tokenizer, RecordingServer(), session_id=3)


def test_several_experts_get_one_session_each_in_list_order(tokenizer):
    """With calibrl.max_experts_per_prompt > 1, session n + j carries solution j of expert_list_column (empty
    entries skipped, at most the cap); a session past the prompt's experts fails naming the sessions that exist."""
    second = "<think>Two and two make four.</think><answer>4</answer>"
    calibrl = {"max_experts_per_prompt": 2, "expert_list_column": "expert_solutions"}
    row = {"expert_solutions": ["", SOLUTION, second, "<think>x</think><answer>4</answer>"]}
    server = RecordingServer()
    for j, text in enumerate([SOLUTION, second]):
        out = _run(tokenizer, server, session_id=2 + j, row=row, calibrl=calibrl)
        assert tokenizer.decode(out.response_ids, skip_special_tokens=True) == text
        assert out.extra_fields[EXPERT_FLAG] is True
    assert server.calls == 0
    with pytest.raises(ExpertSolutionError, match="0..3 exist"):
        _run(tokenizer, server, session_id=4, row=row, calibrl=calibrl)
