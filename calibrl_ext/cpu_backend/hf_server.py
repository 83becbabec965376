"""The ``hf`` rollout server: a Ray actor that serves verl's agent loop with transformers ``generate`` on CPU.

verl's agent loop calls ``server.generate.remote(prompt_ids=..., sampling_params=..., request_id=...,
image_data=...)`` (through ``LLMServerClient`` and the load balancer) and expects a
``verl.workers.rollout.replica.TokenOutput``: the generated token ids (EOS included), one log-prob per token when
``sampling_params["logprobs"]`` is true, and ``extra_fields["global_steps"]`` (an int: the weight version).
The server holds the same HF class the FSDP actor trains (``verl.utils.model.get_hf_auto_model_class``), so the
actor's weight generator yields exactly this model's ``state_dict()`` names; :class:`~calibrl_ext.cpu_backend.
adapter.HFServerAdapter` pushes them with :meth:`HFRolloutServer.load_weights` after every update.

Sampling parameters (``sampling_params`` of the agent loop, built from ``actor_rollout_ref.rollout.*``):

======================  ==============================================================================
verl                    HF ``generate``
======================  ==============================================================================
``temperature``         ``temperature``; ``0`` means greedy (``do_sample=False``)
``top_p``               ``top_p`` (``1`` disables it)
``top_k``               ``top_k``; ``<= 0`` disables it
``repetition_penalty``  ``repetition_penalty``
``max_tokens`` /        ``max_new_tokens``; without either (the sync trainer), as vLLM:
``max_new_tokens``      ``min(response_length, prompt_length + response_length - len(prompt))``, clamped to
                        ``[1, max_model_len - len(prompt)]``
``logprobs``            log-probs are returned (else ``None``)
n                       the agent loop sends n separate requests
======================  ==============================================================================

Sampling is reproducible whatever order the agent loop's concurrent requests arrive in
(:class:`RequestSeeds`): each request draws from a generator seeded by ``actor_rollout_ref.rollout.seed``, the
served weight version, the request's content (prompt ids and image pixels) and how many requests with that same
content this weight version has already served. Requests of one prompt are exchangeable, so a group gets the same
set of responses in every run with the same seed and weights, and two runs (or two study arms) with the same seed
validate on identical samples before training. Across replicas (``rollout.n_gpus`` > 1 on the CPU backend) the
load balancer's choice of replica is not reproducible, so neither are the samples.

Log-probs are ``log_softmax(raw_logits / T)`` at the sampled token (T = temperature, or 1 when greedy), i.e. the
quantity the actor recomputes, NOT the distribution after top-k/top-p or token suppression. That keeps
``training/rollout_probs_diff_*`` a pure check of weight sync.

Options (``+actor_rollout_ref.rollout.engine_kwargs.hf.<name>=<value>``): see :class:`HFEngineOptions`.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
import os
from dataclasses import dataclass, fields
from typing import Any, Optional

import torch

logger = logging.getLogger(__name__)
# Like verl's own modules: INFO unless VERL_LOGGING_LEVEL says otherwise (start-up and weight-push lines).
logger.setLevel(os.getenv("VERL_LOGGING_LEVEL", "INFO"))

#: Key under ``actor_rollout_ref.rollout.engine_kwargs`` that holds :class:`HFEngineOptions`.
ENGINE_KWARGS_KEY = "hf"

#: Token attributes of an HF config / tokenizer that mark vision placeholders. A model that samples one
#: makes verl treat response tokens as image tokens: the agent loop's position-id computation fails and
#: verl silently drops the whole group (see :attr:`HFEngineOptions.suppress_vision_tokens`).
VISION_TOKEN_CONFIG_ATTRIBUTES: tuple[str, ...] = (
    "image_token_id",
    "video_token_id",
    "vision_start_token_id",
    "vision_end_token_id",
    "image_token_index",
    "video_token_index",
)
#: InternVL keeps its image delimiters on the tokenizer (``<img>``, ``</img>``, ``<IMG_CONTEXT>``, ``<video>``).
VISION_TOKEN_TOKENIZER_ATTRIBUTES: tuple[str, ...] = (
    "start_image_token_id",
    "end_image_token_id",
    "context_image_token_id",
    "video_token_id",
    "image_token_id",
)


@dataclass(frozen=True)
class HFEngineOptions:
    """Options of the ``hf`` rollout engine, from ``actor_rollout_ref.rollout.engine_kwargs.hf``.

    Unknown keys are rejected when the server starts, naming the key.
    """

    #: Never sample vision placeholder / delimiter tokens (the ids in VISION_TOKEN_*_ATTRIBUTES). Needed for
    #: random-init tiny VLMs, harmless for trained ones (they do not emit them). Log-probs still come from the
    #: unsuppressed distribution, so they match the actor's.
    suppress_vision_tokens: bool = True
    #: Torch intra-op threads of the server process. Generation of a tiny model is dominated by per-token
    #: overhead, and the server shares the host with the trainer processes, so 1 is fastest on small hosts.
    num_threads: int = 1
    #: Weight dtype of the served model; the FSDP actor trains in float32 on CPU, so the default keeps the
    #: rollout-vs-actor log-prob difference at rounding level.
    dtype: str = "float32"
    #: Negative control for tests ONLY: after the first push the adapter keeps the server on stale weights,
    #: so ``training/rollout_probs_diff_*`` must grow. Never set it for a real run.
    debug_skip_weight_sync: bool = False

    @classmethod
    def from_engine_kwargs(cls, engine_kwargs: Optional[dict]) -> "HFEngineOptions":
        raw = dict((engine_kwargs or {}).get(ENGINE_KWARGS_KEY) or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(
                f"actor_rollout_ref.rollout.engine_kwargs.{ENGINE_KWARGS_KEY} has unknown key(s) {unknown}; "
                f"the hf rollout engine accepts {sorted(known)}"
            )
        options = cls(**raw)
        if not hasattr(torch, options.dtype) or not isinstance(getattr(torch, options.dtype), torch.dtype):
            raise ValueError(
                f"actor_rollout_ref.rollout.engine_kwargs.{ENGINE_KWARGS_KEY}.dtype={options.dtype!r} is not a torch "
                "dtype name; use float32 (default) or bfloat16"
            )
        if options.num_threads < 1:
            raise ValueError(
                f"actor_rollout_ref.rollout.engine_kwargs.{ENGINE_KWARGS_KEY}.num_threads must be >= 1, "
                f"got {options.num_threads}"
            )
        return options


def max_new_tokens_for(
    prompt_len: int, sampling_params: dict, *, prompt_length: int, response_length: int, max_model_len: int
) -> int:
    """Token budget of one request, with vLLM's arithmetic so both backends cut responses alike."""
    room = max_model_len - prompt_len
    if room < 1:
        raise ValueError(
            f"prompt of {prompt_len} tokens leaves no room to generate within the model's context of "
            f"{max_model_len} tokens; lower data.max_prompt_length or raise max_position_embeddings"
        )
    if "max_tokens" in sampling_params:
        budget = int(sampling_params["max_tokens"])
    elif "max_new_tokens" in sampling_params:
        budget = int(sampling_params["max_new_tokens"])
    else:
        budget = min(response_length, prompt_length + response_length - prompt_len)
    return max(1, min(budget, room))


def generate_kwargs_for(
    sampling_params: dict,
    *,
    max_new_tokens: int,
    eos_token_ids: list[int],
    pad_token_id: Optional[int],
    suppress_token_ids: list[int],
    ignore_eos: bool = False,
) -> dict:
    """Map verl's ``sampling_params`` onto keyword arguments of ``model.generate`` (see the module table)."""
    temperature = float(sampling_params.get("temperature", 1.0))
    top_k = int(sampling_params.get("top_k", -1) or -1)
    kwargs: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens,
        do_sample=temperature > 0,
        # top_k=0 / top_p=1 / temperature=1 each switch their HF logits warper off entirely.
        top_k=top_k if top_k > 0 else 0,
        top_p=float(sampling_params.get("top_p", 1.0)),
        repetition_penalty=float(sampling_params.get("repetition_penalty", 1.0)),
        eos_token_id=list(eos_token_ids),
        pad_token_id=pad_token_id,
        output_logits=True,
        return_dict_in_generate=True,
    )
    if temperature > 0:
        kwargs["temperature"] = temperature
    if ignore_eos:
        # HF's way to never stop early: EOS is masked until the budget is used (log-probs stay unmasked).
        kwargs["min_new_tokens"] = max_new_tokens
    if suppress_token_ids:
        kwargs["suppress_tokens"] = list(suppress_token_ids)
    return kwargs


def token_log_probs(step_logits: torch.Tensor, token_ids: torch.Tensor, temperature: float) -> torch.Tensor:
    """Log-probs of the sampled tokens under ``softmax(raw_logits / T)``.

    Args:
        step_logits: (num_new_tokens, vocab) raw logits, one row per generated position.
        token_ids: (num_new_tokens,) the generated tokens.
        temperature: sampling temperature; 0 (greedy) is scored at T = 1.
    Returns:
        (num_new_tokens,) float32 log-probs.
    """
    scale = temperature if temperature > 0 else 1.0
    log_probs = torch.log_softmax(step_logits.float() / scale, dim=-1)
    return log_probs.gather(-1, token_ids.long().unsqueeze(-1)).squeeze(-1)


class RequestSeeds:
    """Per-request sampling seeds that do not depend on the order requests arrive in.

    The seed of a request is a hash of (base seed, replica rank, weight version, content digest, k), where k counts
    the earlier requests with the same content under the same weight version; the counts restart when the version
    changes. Content = the prompt token ids and the pixels of every image. Each replica counts on its own, so the
    rank is part of the hash: the n requests of one group may be spread over replicas (verl's load balancer), and
    without it the first request on every replica would draw the same sample.
    """

    def __init__(self, base_seed: int, replica_rank: int = 0):
        self.base_seed = int(base_seed)
        self.replica_rank = int(replica_rank)
        self.version: Optional[int] = None
        self._served: dict[bytes, int] = {}

    @staticmethod
    def content_digest(prompt_ids: list[int], image_data: Optional[list]) -> bytes:
        digest = hashlib.blake2b(digest_size=16)
        digest.update(b",".join(str(int(token)).encode() for token in prompt_ids))
        for image in image_data or []:
            digest.update(b"|image|")
            tobytes = getattr(image, "tobytes", None)  # PIL images and numpy arrays
            if tobytes is not None:
                digest.update(str(getattr(image, "size", "")).encode() + str(getattr(image, "mode", "")).encode())
                digest.update(tobytes())
            else:
                digest.update(repr(image).encode())
        return digest.digest()

    def next_seed(self, version: Optional[int], prompt_ids: list[int], image_data: Optional[list]) -> int:
        """The seed of the next request with this content under weight ``version`` (63 bits, for ``manual_seed``)."""
        if version != self.version:
            self.version = version
            self._served.clear()
        content = self.content_digest(prompt_ids, image_data)
        served = self._served.get(content, 0)
        self._served[content] = served + 1
        digest = hashlib.blake2b(digest_size=8)
        replica = f"r{self.replica_rank}|" if self.replica_rank else ""  # replica 0 keeps the single-replica hash
        digest.update(f"{self.base_seed}|{replica}{self.version}|{served}|".encode() + content)
        return int.from_bytes(digest.digest(), "little") >> 1


def vision_token_ids(hf_config: Any, tokenizer: Any) -> list[int]:
    """Ids of the vision placeholder / delimiter tokens of a model (empty for a text-only model)."""
    ids: set[int] = set()
    for attribute in VISION_TOKEN_CONFIG_ATTRIBUTES:
        value = getattr(hf_config, attribute, None)
        if isinstance(value, int) and value >= 0:
            ids.add(value)
    if ids:  # a VLM: its tokenizer may name more delimiters (InternVL)
        for attribute in VISION_TOKEN_TOKENIZER_ATTRIBUTES:
            value = getattr(tokenizer, attribute, None)
            if isinstance(value, int) and value >= 0:
                ids.add(value)
    return sorted(ids)


class HFRolloutServer:
    """Async Ray actor body (the replica wraps it in ``ray.remote``); one per rollout replica.

    Lifecycle: ``launch_server`` loads the model from ``model_config.local_path``; the adapter then calls
    ``load_weights`` with the actor's weights (first at ``global_steps=0``, before any generation). Generation
    requests run one at a time in a worker thread under an asyncio lock, so control calls (sleep, weight
    updates) are still served between requests.
    """

    def __init__(self, config: Any, model_config: Any, replica_rank: int, node_rank: int = 0, **kwargs: Any):
        from verl.utils.config import omega_conf_to_dataclass
        from verl.workers.config import HFModelConfig, RolloutConfig

        self.config: RolloutConfig = omega_conf_to_dataclass(config, dataclass_type=RolloutConfig)
        self.model_config: HFModelConfig = omega_conf_to_dataclass(model_config, dataclass_type=HFModelConfig)
        self.replica_rank = replica_rank
        self.node_rank = node_rank
        self.options = HFEngineOptions.from_engine_kwargs(self.config.engine_kwargs)
        self.global_steps: Optional[int] = None
        self.model = None
        self._lock = asyncio.Lock()
        self._seeds = RequestSeeds(self.config.seed if self.config.seed is not None else 0, replica_rank)

    # ----------------------------------------------------------------------------------------------------
    # start-up
    # ----------------------------------------------------------------------------------------------------
    async def launch_server(self, **kwargs: Any) -> None:
        from verl.utils.model import get_hf_auto_model_class

        torch.set_num_threads(self.options.num_threads)
        hf_config = self.model_config.hf_config
        model_cls = get_hf_auto_model_class(hf_config)
        self.model = model_cls.from_pretrained(
            self.model_config.local_path,
            config=hf_config,
            dtype=getattr(torch, self.options.dtype),
            attn_implementation="sdpa",
            trust_remote_code=self.model_config.trust_remote_code,
        )
        self.model.eval()
        self.tokenizer = self.model_config.tokenizer
        self.processor = self.model_config.processor
        self.max_model_len = self.config.max_model_len or _max_position_embeddings(hf_config)
        self.eos_token_ids = _eos_token_ids(self.model_config, self.tokenizer)
        self.pad_token_id = self.tokenizer.pad_token_id if self.tokenizer is not None else None
        self.suppress_token_ids = (
            vision_token_ids(hf_config, self.tokenizer) if self.options.suppress_vision_tokens else []
        )
        self._forward_params = set(inspect.signature(self.model.forward).parameters)
        logger.info(
            "hf rollout server %d: %s from %s (%s), suppressing %d vision token ids",
            self.replica_rank,
            model_cls.__name__,
            self.model_config.local_path,
            self.options.dtype,
            len(self.suppress_token_ids),
        )

    def get_server_address(self) -> str:
        return f"{_node_ip()}:{self.replica_rank}"

    # ----------------------------------------------------------------------------------------------------
    # generation
    # ----------------------------------------------------------------------------------------------------
    async def generate(
        self,
        prompt_ids: list[int],
        sampling_params: dict[str, Any],
        request_id: str,
        image_data: Optional[list] = None,
        video_data: Optional[list] = None,
        audio_data: Optional[list] = None,
        mm_processor_kwargs: Optional[dict] = None,
        **kwargs: Any,
    ):
        from verl.workers.rollout.replica import TokenOutput

        if self.model is None:
            raise RuntimeError("hf rollout server: generate() before launch_server()")
        if video_data:
            raise NotImplementedError(
                "hf rollout server: video inputs are not supported on the CPU backend; drop the videos column "
                "(data.video_key) for the dry run"
            )
        if audio_data:
            raise NotImplementedError("hf rollout server: audio inputs are not supported on the CPU backend")
        sampling_params = dict(sampling_params)
        max_new_tokens = max_new_tokens_for(
            len(prompt_ids),
            sampling_params,
            prompt_length=self.config.prompt_length,
            response_length=self.config.response_length,
            max_model_len=self.max_model_len,
        )
        generate_kwargs = generate_kwargs_for(
            sampling_params,
            max_new_tokens=max_new_tokens,
            eos_token_ids=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
            suppress_token_ids=self.suppress_token_ids,
            ignore_eos=self.config.ignore_eos,
        )
        model_inputs = self._model_inputs(prompt_ids, image_data, mm_processor_kwargs)
        temperature = float(sampling_params.get("temperature", 1.0))
        async with self._lock:
            seed = self._seeds.next_seed(self.global_steps, prompt_ids, image_data)
            loop = asyncio.get_running_loop()
            token_ids, log_probs = await loop.run_in_executor(
                None, self._generate_blocking, model_inputs, generate_kwargs, temperature, seed
            )
        return TokenOutput(
            token_ids=token_ids,
            log_probs=log_probs if sampling_params.get("logprobs") else None,
            stop_reason="completed",
            extra_fields={"global_steps": self.global_steps},
        )

    def _model_inputs(self, prompt_ids: list[int], image_data: Optional[list], mm_processor_kwargs) -> dict:
        """Tensors for one request: input_ids (1, prompt_len) plus the vision inputs of its images.

        ``prompt_ids`` arrive with the image placeholders already expanded (verl's continuous-token builder
        renders the prompt through the processor), so only the pixel side is computed here, with the same
        image processor the agent loop uses for the training inputs.
        """
        input_ids = torch.tensor([prompt_ids], dtype=torch.long)
        inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if not image_data:
            return inputs
        if self.processor is None or not hasattr(self.processor, "image_processor"):
            raise ValueError(
                f"hf rollout server: the request has {len(image_data)} image(s) but the model at "
                f"{self.model_config.local_path} has no image processor (verl's hf_processor returned "
                f"{type(self.processor).__name__}); use a VLM checkpoint with processor files"
            )
        features = self.processor.image_processor(images=image_data, return_tensors="pt", **(mm_processor_kwargs or {}))
        inputs.update({k: v for k, v in features.items() if k in self._forward_params})
        if "mm_token_type_ids" in self._forward_params and hasattr(self.processor, "create_mm_token_type_ids"):
            # Qwen2.5-VL (transformers 5) computes its 3-D rope positions from these: 1 marks image tokens.
            inputs["mm_token_type_ids"] = torch.tensor(self.processor.create_mm_token_type_ids([prompt_ids]))
        return inputs

    @torch.no_grad()
    def _generate_blocking(self, model_inputs: dict, generate_kwargs: dict, temperature: float, seed: int):
        # HF generate samples from the global generator; requests run one at a time under the lock.
        torch.manual_seed(seed)
        prompt_len = model_inputs["input_ids"].shape[1]
        output = self.model.generate(**model_inputs, **generate_kwargs)
        new_tokens = output.sequences[0, prompt_len:]
        # generate() of one sequence stops at the first EOS and pads nothing; keep the EOS, as vLLM does.
        step_logits = torch.cat([step[0:1] for step in output.logits], dim=0)[: new_tokens.shape[0]]
        log_probs = token_log_probs(step_logits, new_tokens, temperature)
        return new_tokens.tolist(), log_probs.tolist()

    # ----------------------------------------------------------------------------------------------------
    # weights
    # ----------------------------------------------------------------------------------------------------
    async def load_weights(self, state_dict: dict[str, torch.Tensor], global_steps: Optional[int] = None) -> int:
        """Copy the actor's full HF-named tensors into the served model; returns the number of tensors loaded.

        Every model parameter must be present except tied aliases (``lm_head.weight`` of a tied embedding);
        an unknown name means actor and server hold different classes, which is an error, not a skip.
        Names may carry PEFT's ``.base_layer`` infix (verl's first LoRA sync sends the base weights that way,
        ``verl.utils.fsdp_utils.replace_lora_wrapper``); they load into the base layers, whether or not the
        served model already holds an adapter.
        """
        async with self._lock:
            targets = _base_weight_names(self.model)
            incoming = {_strip_base_layer(name): name for name in state_dict}
            unexpected = sorted(set(incoming) - set(targets))
            aliases = {_strip_base_layer(name) for name in _tied_aliases(_unwrapped(self.model))}
            missing = sorted(set(targets) - set(incoming) - aliases)
            if unexpected or missing:
                raise RuntimeError(
                    f"hf rollout server: weight names from the actor do not match {type(self.model).__name__}: "
                    f"{len(unexpected)} unexpected (first {unexpected[:3]}), {len(missing)} missing "
                    f"(first {missing[:3]}). Actor and rollout must load the same checkpoint class."
                )
            renamed = {targets[clean]: state_dict[name] for clean, name in incoming.items()}
            with torch.no_grad():
                _unwrapped(self.model).load_state_dict(renamed, strict=False)
            if global_steps is not None:
                self.global_steps = int(global_steps)
        return len(state_dict)

    async def load_lora_adapter(
        self, adapter_tensors: dict[str, torch.Tensor], peft_config: Any, global_steps: Optional[int] = None
    ) -> int:
        """Serve the actor's LoRA adapter on top of the base weights (verl's adapter sync, ``base_sync_done``).

        As verl's vLLM worker does (``remove_lora`` then ``add_lora`` with the tensors and the PEFT config), the
        previous adapter is replaced as a whole: on the first call the served model is wrapped with PEFT using
        ``peft_config`` (a ``peft.LoraConfig`` or its dict), then every call loads all adapter tensors.

        Args:
            adapter_tensors: ``get_peft_model_state_dict`` of the actor's PeftModel, e.g.
                ``base_model.model.model.language_model.layers.0.self_attn.q_proj.lora_A.weight`` (r, in).
            peft_config: the actor's adapter config; a different rank / alpha / target set than the adapter already
                served is an error (vLLM's ``max_lora_rank`` is fixed at launch too).
        Returns:
            the number of adapter tensors loaded.
        """
        from peft import LoraConfig, PeftModel, get_peft_model
        from peft.utils.save_and_load import get_peft_model_state_dict, set_peft_model_state_dict

        config = _lora_config(peft_config, LoraConfig)
        async with self._lock:
            if not isinstance(self.model, PeftModel):
                self.model = get_peft_model(self.model, config)
                self.model.eval()
                self._forward_params = set(inspect.signature(self.model.get_base_model().forward).parameters)
                self._lora_signature = _lora_signature(config)
            elif _lora_signature(config) != self._lora_signature:
                raise RuntimeError(
                    f"hf rollout server: the actor's LoRA config changed from {self._lora_signature} to "
                    f"{_lora_signature(config)} during the run; restart the run to serve a different adapter shape"
                )
            expected = set(get_peft_model_state_dict(self.model))
            unexpected = sorted(set(adapter_tensors) - expected)
            missing = sorted(expected - set(adapter_tensors))
            if unexpected or missing:
                raise RuntimeError(
                    f"hf rollout server: LoRA tensor names from the actor do not match the served adapter: "
                    f"{len(unexpected)} unexpected (first {unexpected[:3]}), {len(missing)} missing "
                    f"(first {missing[:3]}). Actor and rollout must wrap the same checkpoint class."
                )
            dtype = getattr(torch, self.options.dtype)
            with torch.no_grad():
                set_peft_model_state_dict(self.model, {k: v.to(dtype) for k, v in adapter_tensors.items()})
            if global_steps is not None:
                self.global_steps = int(global_steps)
        return len(adapter_tensors)

    async def set_global_steps(self, global_steps: int) -> None:
        self.global_steps = int(global_steps)

    async def get_global_steps(self) -> Optional[int]:
        return self.global_steps

    # ----------------------------------------------------------------------------------------------------
    # lifecycle calls verl makes on every backend: nothing to free or pause on CPU
    # ----------------------------------------------------------------------------------------------------
    async def sleep(self, **kwargs: Any) -> None:
        return None

    async def wake_up(self, tags: Optional[list[str]] = None, **kwargs: Any) -> None:
        return None

    async def clear_kv_cache(self, **kwargs: Any) -> None:
        return None

    async def release_kv_cache(self, **kwargs: Any) -> None:
        return None

    async def resume_kv_cache(self, **kwargs: Any) -> None:
        return None

    async def abort_all_requests(self, reject_request: bool = False, **kwargs: Any) -> dict:
        # Requests run to completion one at a time; there is never a partial one to abort.
        return {"aborted_count": 0, "request_ids": []}

    async def resume_generation(self, **kwargs: Any) -> None:
        return None

    async def wait_for_requests_to_drain(self, **kwargs: Any) -> None:
        async with self._lock:
            return None

    async def start_profile(self, **kwargs: Any) -> None:
        return None

    async def stop_profile(self, **kwargs: Any) -> None:
        return None


#: PEFT's infix for the wrapped base layer of an adapted module (``q_proj.base_layer.weight``).
BASE_LAYER_INFIX = ".base_layer"


def _strip_base_layer(name: str) -> str:
    return name.replace(BASE_LAYER_INFIX, "")


def _base_weight_names(model: torch.nn.Module) -> dict[str, str]:
    """Plain HF name -> state_dict name of every base weight of ``model``, a plain HF model or a PeftModel."""
    return {_strip_base_layer(name): name for name in _unwrapped(model).state_dict() if ".lora_" not in name}


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The HF model inside a PeftModel (its modules hold the LoRA layers), or ``model`` itself."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _lora_config(peft_config: Any, config_cls: type) -> Any:
    """A ``peft.LoraConfig`` from the object verl's engine hands over (a LoraConfig, or its ``to_dict()``)."""
    if isinstance(peft_config, config_cls):
        return peft_config
    if isinstance(peft_config, dict):
        from dataclasses import fields as dataclass_fields

        known = {f.name for f in dataclass_fields(config_cls)}
        return config_cls(**{k: v for k, v in peft_config.items() if k in known})
    raise TypeError(f"hf rollout server: peft_config must be a peft.LoraConfig or a dict, got {type(peft_config)}")


def _lora_signature(config: Any) -> tuple:
    """What fixes the adapter's tensor shapes and scaling: rank, alpha, targets, exclusions."""
    targets = config.target_modules
    return (config.r, config.lora_alpha, tuple(sorted(targets)) if isinstance(targets, (set, list)) else targets,
            config.exclude_modules)  # fmt: skip


def _tied_aliases(model: torch.nn.Module) -> set[str]:
    """state_dict names that alias another parameter (e.g. a tied ``lm_head.weight``)."""
    seen: dict[int, str] = {}
    aliases: set[str] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        key = id(tensor)
        if key in seen:
            aliases.add(name)
        else:
            seen[key] = name
    return aliases


def _max_position_embeddings(hf_config: Any) -> int:
    text_config = getattr(hf_config, "text_config", None) or hf_config
    value = getattr(text_config, "max_position_embeddings", None) or getattr(hf_config, "max_position_embeddings", None)
    if not value:
        raise ValueError(
            "hf rollout server: the model config has no max_position_embeddings; set "
            "actor_rollout_ref.rollout.max_model_len"
        )
    return int(value)


def _eos_token_ids(model_config: Any, tokenizer: Any) -> list[int]:
    candidates = []
    generation_config = getattr(model_config, "generation_config", None)
    if generation_config is not None and generation_config.eos_token_id is not None:
        candidates.append(generation_config.eos_token_id)
    if tokenizer is not None and tokenizer.eos_token_id is not None:
        candidates.append(tokenizer.eos_token_id)
    ids: list[int] = []
    for value in candidates:
        for token_id in value if isinstance(value, (list, tuple)) else [value]:
            if token_id not in ids:
                ids.append(int(token_id))
    if not ids:
        raise ValueError("hf rollout server: neither generation_config.json nor the tokenizer defines an EOS token")
    return ids


def _node_ip() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # outside Ray (unit tests): the address is only a unique key
        return os.environ.get("HOSTNAME", "localhost")
