"""Per-GPU memory of a verl 0.9.1 run (FSDP actor colocated with a vLLM rollout engine), from its config alone.

verl's hybrid engine runs two phases on every GPU, and the peak is the larger one (docs/memory.md derives each term):

* rollout: vLLM holds ``gpu_memory_utilization`` of the GPU (its weights under tensor parallelism, its KV cache and
  activation peak), next to whatever the actor keeps resident: its sharded parameters unless
  ``fsdp_config.param_offload`` and its optimizer state unless ``fsdp_config.optimizer_offload``.
* training: vLLM sleeps (``free_cache_engine``: weights and KV cache released); the actor has its sharded
  parameters, gradients and optimizer state on the GPU (verl loads offloaded state back for the update), the
  FSDP units it gathers, the activations of one micro-batch (one checkpoint per layer plus one layer being
  recomputed with gradient checkpointing) and the logits / log-prob buffers over the vocabulary.

Every constant below is a field of :class:`PlannerSettings`, settable under ``calibrl.memory_plan`` or on the CLI.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from calibrl_ext.plan.model_shape import ModelShape

GIB = 1024**3


@dataclass
class PlannerSettings:
    """The planner's keys (``calibrl.memory_plan.<key>`` in a run's config; all optional).

    Attributes:
        enable: run the planner in the recipe's start-up checks.
        strict: a plan that does not fit is an error at start-up instead of a warning.
        gpu_memory_gib: memory of one GPU (80 for A100/H100 80 GB, 40, 141 for H200...).
        reserve_gib: CUDA context, NCCL buffers and allocator fragmentation per GPU, outside both phases' terms.
        logits_bytes_train: bytes per (token, vocabulary entry) during the update: bf16 logits (2) + fp32
            log-softmax (4) + fp32 gradient of the logits (4).
        logits_bytes_forward: the same for a forward-only log-prob pass (old / reference log-probs): 2 + 4.
        vllm_overhead_gib: vLLM's activation peak and CUDA graphs inside its ``gpu_memory_utilization`` budget.
    """

    enable: bool = True
    strict: bool = False
    gpu_memory_gib: float = 80.0
    reserve_gib: float = 2.0
    logits_bytes_train: float = 10.0
    logits_bytes_forward: float = 6.0
    vllm_overhead_gib: float = 2.0

    @classmethod
    def from_mapping(cls, section) -> "PlannerSettings":
        section = dict(section or {})
        unknown = sorted(set(section) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(
                f"calibrl.memory_plan has unknown keys {unknown}; known: {sorted(cls.__dataclass_fields__)}."
            )
        return cls(**section)


@dataclass
class MemoryPlan:
    """The estimate: per-GPU terms of each phase (bytes), the verdict and what to change."""

    model: str
    gpu_memory_gib: float
    rollout_terms: dict[str, float]
    train_terms: dict[str, float]
    kv_cache_tokens: int
    max_sequence_tokens: int
    expert_share: float
    problems: list[str] = field(default_factory=list)
    suggestions: list[str] = field(default_factory=list)

    @property
    def rollout_total(self) -> float:
        return sum(self.rollout_terms.values())

    @property
    def train_total(self) -> float:
        return sum(self.train_terms.values())

    @property
    def peak(self) -> float:
        return max(self.rollout_total, self.train_total)

    @property
    def fits(self) -> bool:
        return not self.problems

    def largest_terms(self, count: int = 3) -> list[tuple[str, float]]:
        terms = self.train_terms if self.train_total >= self.rollout_total else self.rollout_terms
        return sorted(terms.items(), key=lambda item: -item[1])[:count]

    def report(self) -> str:
        gib = lambda value: f"{value / GIB:6.1f} GiB"  # noqa: E731
        lines = [f"memory plan: {self.model} on {self.gpu_memory_gib:g} GiB GPUs (per GPU)"]
        for title, terms, total in (
            ("rollout phase", self.rollout_terms, self.rollout_total),
            ("training phase", self.train_terms, self.train_total),
        ):
            lines.append(f"  {title}: {gib(total)}")
            lines += [f"    {name:<34} {gib(value)}" for name, value in terms.items()]
        lines.append(
            f"  KV cache per vLLM engine: {self.kv_cache_tokens} tokens = "
            f"{self.kv_cache_tokens / max(self.max_sequence_tokens, 1):.1f} full-length sequences "
            f"({self.max_sequence_tokens} tokens each)"
        )
        lines.append(
            f"  expert rows: +{self.expert_share:.0%} of the actor's rows per step (more micro-batches, same peak)"
        )
        largest = ", ".join(f"{name} {value / GIB:.1f} GiB" for name, value in self.largest_terms())
        lines.append(f"  largest terms: {largest}")
        if self.fits:
            lines.append(f"  verdict: FITS (peak {self.peak / GIB:.1f} of {self.gpu_memory_gib:g} GiB)")
        else:
            lines.append(f"  verdict: DOES NOT FIT (peak {self.peak / GIB:.1f} of {self.gpu_memory_gib:g} GiB)")
            lines += [f"    - {problem}" for problem in self.problems]
            lines += [f"    change: {suggestion}" for suggestion in self.suggestions]
        return "\n".join(lines)


def _get(node, dotted: str, default=None):
    for part in dotted.split("."):
        if node is None:
            return default
        node = node.get(part, None) if hasattr(node, "get") else None
    return default if node is None else node


def trainable_params(shape: ModelShape, lora_rank: int, freeze_vision_tower: bool) -> int:
    """Parameters with gradients and optimizer state: the LoRA adapters (all linear layers of the language model,
    verl's ``target_modules=all-linear`` with the vision tower excluded), or the full model less a frozen tower."""
    if lora_rank > 0:
        return lora_rank * shape.lora_params_per_rank
    return shape.total_params - (shape.vision_params if freeze_vision_tower else 0)


def plan_memory(config, shape: ModelShape, settings: PlannerSettings, rows_per_group_extra: int = 1) -> MemoryPlan:
    """Estimate the per-GPU memory of ``config`` (a composed verl/recipe config) for ``shape``.

    Args:
        rows_per_group_extra: rows added to each group besides the n rollouts (the expert rows: 1, or
            ``calibrl.max_experts_per_prompt``, in the expert-row modes; else 0).
    """
    arc = config.actor_rollout_ref
    world = int(_get(config, "trainer.n_gpus_per_node", 1)) * int(_get(config, "trainer.nnodes", 1))
    fsdp_size = int(_get(arc, "actor.fsdp_config.fsdp_size", -1))
    shards = world if fsdp_size <= 0 else min(fsdp_size, world)
    param_bytes = 4 if str(_get(arc, "actor.fsdp_config.model_dtype", "fp32")) in ("fp32", "float32") else 2
    lora_rank = int(_get(arc, "model.lora_rank", 0) or 0)
    freeze_tower = bool(_get(arc, "actor.freeze_vision_tower", False))
    trainable = trainable_params(shape, lora_rank, freeze_tower)
    param_offload = bool(_get(arc, "actor.fsdp_config.param_offload", False))
    optimizer_offload = bool(_get(arc, "actor.fsdp_config.optimizer_offload", False))
    sp = int(_get(arc, "actor.ulysses_sequence_parallel_size", 1) or 1)
    seq_len = int(_get(config, "data.max_prompt_length", 0)) + int(_get(config, "data.max_response_length", 0))
    if bool(_get(arc, "actor.use_dynamic_bsz", False)):
        train_tokens = int(_get(arc, "actor.ppo_max_token_len_per_gpu", seq_len))
        logprob_tokens = int(_get(arc, "rollout.log_prob_max_token_len_per_gpu", train_tokens))
    else:
        micro = int(_get(arc, "actor.ppo_micro_batch_size_per_gpu", 1) or 1)
        train_tokens = micro * seq_len // sp
        logprob_tokens = int(_get(arc, "rollout.log_prob_micro_batch_size_per_gpu", micro) or micro) * seq_len // sp
    h, inter, layers, vocab = shape.hidden_size, shape.intermediate_size, shape.num_layers, shape.vocab_size

    params = shape.total_params * param_bytes / shards
    optimizer = trainable * 8 / shards  # Adam's two fp32 moments
    per_layer_params = (shape.text_params - vocab * h) / layers
    gathered = 2 * (2 * per_layer_params + 2 * vocab * h)  # bf16: two decoder layers (prefetch) + the root unit
    # One bf16 checkpoint (h) per layer; the layer being recomputed holds ~8h + 4I values and their gradients.
    layer_live = 2 * 2 * (8 * h + 4 * inter)
    if bool(_get(arc, "model.enable_gradient_checkpointing", True)):
        activations = train_tokens * (2 * h * layers + layer_live)
    else:
        activations = train_tokens * layer_live * layers
    logits = max(
        train_tokens * vocab * settings.logits_bytes_train, logprob_tokens * vocab * settings.logits_bytes_forward
    )
    reserve = settings.reserve_gib * GIB
    train_terms = {
        "actor parameters (sharded)": params,
        "actor gradients (sharded)": trainable * param_bytes / shards,
        "actor optimizer state (sharded)": optimizer,
        "FSDP gathered units (bf16)": gathered,
        "activations (micro-batch)": activations,
        "logits / log-prob buffers": logits,
        "CUDA context and reserve": reserve,
    }
    use_ref = bool(_get(arc, "actor.use_kl_loss", False)) or bool(_get(config, "algorithm.use_kl_in_reward", False))
    if use_ref and lora_rank == 0 and not bool(_get(arc, "ref.fsdp_config.param_offload", False)):
        train_terms["reference model (bf16, sharded)"] = shape.total_params * 2 / shards

    tp = int(_get(arc, "rollout.tensor_model_parallel_size", 1))
    utilization = float(_get(arc, "rollout.gpu_memory_utilization", 0.5))
    gpu = settings.gpu_memory_gib * GIB
    vllm_budget = utilization * gpu
    vllm_weights = shape.total_params * 2 / tp
    kv_cache = vllm_budget - vllm_weights - settings.vllm_overhead_gib * GIB
    kv_tokens = max(int(kv_cache // shape.kv_bytes_per_token) * tp, 0)  # the cache is split over the TP ranks
    rollout_terms = {
        "vLLM budget (gpu_memory_utilization)": vllm_budget,
        "actor parameters resident": 0.0 if param_offload else params,
        "actor optimizer state resident": 0.0 if optimizer_offload else optimizer,
        "CUDA context and reserve": reserve,
    }
    if _get(arc, "rollout.free_cache_engine", True) is False:  # vLLM keeps its weights and KV cache while training
        train_terms["vLLM budget kept (free_cache_engine=False)"] = vllm_budget
    n = int(_get(arc, "rollout.n", 1))
    plan = MemoryPlan(
        model=shape.name,
        gpu_memory_gib=settings.gpu_memory_gib,
        rollout_terms=rollout_terms,
        train_terms=train_terms,
        kv_cache_tokens=kv_tokens,
        max_sequence_tokens=seq_len,
        expert_share=rows_per_group_extra / max(n, 1),
    )
    _judge(plan, gpu, kv_cache, seq_len, tp, world, param_offload, optimizer_offload, sp, train_tokens, lora_rank)
    return plan


def _judge(plan, gpu, kv_cache, seq_len, tp, world, param_offload, optimizer_offload, sp, train_tokens, lora_rank):
    """Fill the plan's problems and the keys to change."""
    if tp > world:
        plan.problems.append(f"rollout tensor_model_parallel_size={tp} exceeds the {world} GPUs")
    if kv_cache <= 0:
        plan.problems.append(
            "vLLM's budget does not hold its weights: gpu_memory_utilization * GPU memory < weights / TP + overhead"
        )
        plan.suggestions.append(
            "raise actor_rollout_ref.rollout.gpu_memory_utilization or "
            "actor_rollout_ref.rollout.tensor_model_parallel_size"
        )
    elif plan.kv_cache_tokens < seq_len:
        plan.problems.append(
            f"the KV cache holds {plan.kv_cache_tokens} tokens, less than one sequence of {seq_len} "
            "(vLLM refuses to start)"
        )
        plan.suggestions.append(
            "raise actor_rollout_ref.rollout.gpu_memory_utilization or tensor_model_parallel_size, or lower "
            "data.max_prompt_length / data.max_response_length"
        )
    if plan.rollout_total > gpu:
        plan.problems.append(
            f"rollout phase {plan.rollout_total / GIB:.1f} GiB > {gpu / GIB:g} GiB: vLLM's share plus the actor's "
            "resident state"
        )
        changes = []
        if not param_offload:
            changes.append("actor_rollout_ref.actor.fsdp_config.param_offload=True")
        if not optimizer_offload:
            changes.append("actor_rollout_ref.actor.fsdp_config.optimizer_offload=True")
        changes.append("lower actor_rollout_ref.rollout.gpu_memory_utilization")
        plan.suggestions.append(", ".join(changes))
    if plan.train_total > gpu:
        plan.problems.append(f"training phase {plan.train_total / GIB:.1f} GiB > {gpu / GIB:g} GiB")
        by_size = dict(plan.train_terms)
        token_terms = by_size["activations (micro-batch)"] + by_size["logits / log-prob buffers"]
        state_terms = sum(v for k, v in by_size.items() if k.startswith("actor"))
        if token_terms >= state_terms:
            plan.suggestions.append(
                f"lower actor_rollout_ref.actor.ppo_max_token_len_per_gpu (now {train_tokens}; >= one sequence of "
                f"{seq_len // sp} tokens per GPU) and rollout.log_prob_max_token_len_per_gpu, or raise "
                f"actor_rollout_ref.actor.ulysses_sequence_parallel_size (now {sp})"
            )
        else:
            plan.suggestions.append(
                "more GPUs (trainer.nnodes), actor_rollout_ref.model.lora_rank > 0"
                + ("" if lora_rank else ", or actor_rollout_ref.actor.freeze_vision_tower=True")
            )
