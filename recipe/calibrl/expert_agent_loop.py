"""The agent loop that adds the expert trajectory to a training group (registered as ``calibrl_expert``).

The trainer selects this loop, and asks for ``n + k`` sessions, only for training prompts that get ``k >= 1`` expert
rows this step (``CalibRLTrainer._next_train_batch``; k = 1 as released, up to ``calibrl.max_experts_per_prompt``
with several solutions per prompt); validation batches never carry it, so validation groups have no expert row by
construction. Sessions ``0..n-1`` are ordinary rollouts. Session ``n + j`` is expert solution j: the same prompt
path as every rollout (chat template, images, multimodal inputs, verl's continuous-token merge), but the "generated"
tokens are the expert solution, tokenized WITHOUT a chat template, with EOS appended and cut to the response
length (METHOD §Notation); no server call is made. The row is then scored by the reward function exactly like the
rollouts, and gets its old log-probs in the trainer's one old-log-prob pass.
"""

from __future__ import annotations

from typing import Any

from verl.experimental.agent_loop.agent_loop import AgentLoopOutput, register
from verl.experimental.agent_loop.single_turn_agent_loop import SingleTurnAgentLoop
from verl.workers.rollout.replica import TokenOutput

#: Name under which verl's agent-loop registry knows this loop (the ``agent_name`` of a training prompt).
AGENT_NAME = "calibrl_expert"

#: ``extra_fields`` keys every row of a training group carries (so all rows have the same field set).
EXPERT_FLAG = "calibrl_expert"
TRUNCATED_FLAG = "calibrl_expert_truncated"


class ExpertSolutionError(ValueError):
    """A prompt was scheduled for an expert row but has no usable expert solution."""


def prompt_expert_solutions(row: dict[str, Any], calibrl_config) -> list[str]:
    """The expert solutions of one prompt, in order, that become expert rows (at most the cap).

    Args:
        row: the prompt's dataset fields (the agent loop's kwargs, or one row of the trainer's batch).
        calibrl_config: the ``calibrl:`` config section (dict-like).

    Returns:
        ``[expert_column]`` (or ``[]`` when it is empty) with ``max_experts_per_prompt`` 1, as released; otherwise the
        non-empty strings of ``expert_list_column``, the first ``max_experts_per_prompt`` of them.
    """
    cap = int(_config_get(calibrl_config, "max_experts_per_prompt") or 1)
    if cap <= 1:
        solution = row.get(_config_get(calibrl_config, "expert_column") or "expert_solution")
        return [solution] if isinstance(solution, str) and solution.strip() else []
    values = row.get(_config_get(calibrl_config, "expert_list_column") or "expert_solutions")
    if values is None or isinstance(values, str):
        values = [] if values is None else [values]  # a plain string column: one expert
    return [value for value in list(values) if isinstance(value, str) and value.strip()][:cap]


def expert_token_ids(tokenizer, solution: str, response_length: int) -> tuple[list[int], bool]:
    """Token ids of an expert solution as the expert row's response.

    Args:
        tokenizer: the policy's tokenizer.
        solution: the expert's ``<think>…</think><answer>…</answer>`` text.
        response_length: ``rollout.response_length`` (max response tokens).

    Returns:
        ``(ids, truncated)``: ``encode(solution, add_special_tokens=False) + [eos]`` cut to ``response_length``
        (a solution that does not fit loses its tail and its EOS, like a rollout that hits the limit), and whether
        it was cut.
    """
    if not isinstance(solution, str) or not solution.strip():
        raise ExpertSolutionError(
            "the expert row was requested for a prompt whose expert solution is empty; rebuild the data with "
            "data_prep/build_parquet.py (it writes '' for prompts without an expert) or check calibrl.expert_column"
        )
    if tokenizer.eos_token_id is None:
        raise ExpertSolutionError("the tokenizer has no eos_token_id; the expert row needs one to end its response")
    ids = list(tokenizer.encode(solution, add_special_tokens=False)) + [tokenizer.eos_token_id]
    truncated = len(ids) > response_length
    return ids[:response_length], truncated


#: ``extra_fields`` that verl 0.9.1's vLLM server (``vLLMHttpServer.generate``) adds to every finished request,
#: with the value the expert row gets: no server call was made, so no prefix-cache hit.
VLLM_SERVER_EXTRA_FIELDS: dict[str, Any] = {"num_cached_tokens": 0}
#: ... and those it adds when MTP speculative decoding is on for the rollout (``rollout.mtp.enable`` and
#: ``rollout.mtp.enable_rollout``): the expert row drafted and verified nothing.
VLLM_SPEC_DECODE_EXTRA_FIELDS: dict[str, Any] = {
    "spec_num_draft_tokens": 0,
    "spec_num_accepted_tokens": 0,
    "spec_num_verify_steps": 0,
}


def server_extra_fields(rollout_config, weights_version: int) -> dict[str, Any]:
    """The ``extra_fields`` a rollout row of this run carries from its server, with the expert row's values.

    Every server (calibrl's ``hf``, verl's ``vllm``) returns ``global_steps`` and verl's server manager adds
    ``min_global_steps``/``max_global_steps``; verl's vLLM server adds ``num_cached_tokens`` and, with MTP on
    for the rollout, the ``spec_*`` counters. All rows of a group must have the same keys: TransferQueue stores
    each row's ``extra_fields`` and a key missing on one row breaks or silently drops the field for the batch.
    """
    fields: dict[str, Any] = {
        "global_steps": weights_version,
        "min_global_steps": weights_version,
        "max_global_steps": weights_version,
    }
    if _config_get(rollout_config, "name") == "vllm":
        fields.update(VLLM_SERVER_EXTRA_FIELDS)
        mtp = _config_get(rollout_config, "mtp")
        if mtp is not None and _config_get(mtp, "enable") and _config_get(mtp, "enable_rollout"):
            fields.update(VLLM_SPEC_DECODE_EXTRA_FIELDS)
    return fields


def _config_get(config, key: str):
    """``config[key]`` for a DictConfig, a dict or a dataclass (verl passes either), None if absent."""
    if config is None:
        return None
    if isinstance(config, dict) or hasattr(config, "get"):
        try:
            return config.get(key)
        except Exception:  # a dataclass whose .get is not a mapping get
            pass
    return getattr(config, key, None)


class _ExpertTokens:
    """Stands in for the LLM client for the expert session: "generates" the expert's tokens without a server.

    Returns the same ``TokenOutput`` fields as the run's server would (zero log-probs when log-probs are
    requested, and :func:`server_extra_fields`: the weight-version fields the trainer turns into TransferQueue
    tags plus the backend's own keys), so the expert row has exactly the field set of the rollouts.
    """

    def __init__(self, token_ids: list[int], extra_fields: dict[str, Any]):
        self.token_ids = token_ids
        self.extra_fields = extra_fields

    async def generate(self, request_id: str, *, prompt_ids, sampling_params: dict[str, Any], **kwargs) -> TokenOutput:
        return TokenOutput(
            token_ids=list(self.token_ids),
            log_probs=[0.0] * len(self.token_ids) if sampling_params.get("logprobs") else None,
            stop_reason="completed",
            extra_fields=dict(self.extra_fields),
        )


@register(AGENT_NAME)
class CalibRLExpertAgentLoop(SingleTurnAgentLoop):
    """Single-turn rollouts for sessions ``0..n-1``; expert trajectory j for session ``n + j``."""

    async def run(self, sampling_params: dict[str, Any], **kwargs) -> AgentLoopOutput:
        session_id = int(kwargs["session_id"])
        num_rollouts = int(self.rollout_config.n)
        if session_id < num_rollouts:
            output = await super().run(sampling_params, **kwargs)
            output.extra_fields.update({EXPERT_FLAG: False, TRUNCATED_FLAG: False})
            return output
        solutions = prompt_expert_solutions(kwargs, self.config.get("calibrl", {}))
        expert_index = session_id - num_rollouts
        if expert_index >= max(len(solutions), 1):
            raise ExpertSolutionError(
                f"session {session_id} of a calibrl_expert group: only sessions 0..{num_rollouts + len(solutions) - 1} "
                f"exist (rollout.n={num_rollouts} rollouts + {len(solutions)} expert solution(s) of this prompt)"
            )
        solution = solutions[expert_index] if solutions else None
        token_ids, truncated = expert_token_ids(self.tokenizer, solution, self.response_length)
        # In the sync trainer the server generating step s holds the weights pushed after step s - 1.
        weights_version = max(int(kwargs["global_steps"]) - 1, 0)
        extra_fields = server_extra_fields(self.rollout_config, weights_version)
        self.server_manager = _ExpertTokens(token_ids, extra_fields)  # this loop instance serves one session
        output = await super().run(sampling_params, **kwargs)
        output.extra_fields.update({EXPERT_FLAG: True, TRUNCATED_FLAG: truncated})
        return output
