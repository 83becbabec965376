"""Run the fork kit inside ONE real verl release (a subprocess with only that release's source on sys.path).

Not a test module: ``test_verl_releases.py`` starts it as ``python _release_runner.py <release src> <version>
<docs/verl_fork.md> <out.pt>``. verl 0.9.1's environment supplies torch / transformers / tensordict; the release's
own files supply ``verl``. The release's real ``dp_actor.py`` is edited with the guide's snippets exactly where the
guide says (and nowhere else), then its real ``DataProto``, ``compute_response_mask``, ``compute_log_prob``,
``update_policy`` and ``compute_grpo_outcome_advantage`` run on a tiny Qwen2 on CPU. The driver snippets run on the
names ``RayPPOTrainer.fit`` has at that point; the runner checks that every name they read is a local of the
release's real ``fit`` (or a module global after the guide's ``settings`` snippet). Results go to ``out.pt``.
"""

from __future__ import annotations

import ast
import builtins
import re
import sys
import textwrap
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

SRC, VERSION, DOC, OUT = sys.argv[1:5]
RELEASE = tuple(int(x) for x in VERSION.split(".")[:2])
RESPONSE_LENGTH, PROMPT_LENGTH = 6, 4


def snippet(name: str) -> str:
    match = re.search(rf"<!-- snippet: {re.escape(name)} -->\s*```python\n(.*?)```", Path(DOC).read_text(), re.DOTALL)
    if not match:
        raise SystemExit(f"snippet {name!r} not found in {DOC}")
    return match.group(1)


def shim_transformers() -> None:
    """verl 0.7.0's verl.utils.model imports AutoModelForVision2Seq, which transformers 5 removed (unused here)."""
    import transformers

    try:
        from transformers import AutoModelForVision2Seq  # noqa: F401
    except ImportError:
        transformers.AutoModelForVision2Seq = transformers.AutoModelForImageTextToText


def shim_memory_logger() -> None:
    """verl 0.5's GPUMemoryLogger (a logging decorator on compute_log_prob / update_policy) reads device memory
    counters that ``torch.cpu`` lacks; on CPU it reports zeros instead (logging only, no effect on the maths)."""
    from verl.utils.profiler import performance

    if not hasattr(torch.cpu, "memory_allocated"):
        performance._get_current_mem_info = lambda *args, **kwargs: ("0", "0", "0", "0")


def free_names(code: str) -> set[str]:
    """Names the snippet reads before (or without) binding them itself."""
    tree = ast.parse(code)
    bound, read = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            (bound if isinstance(node.ctx, ast.Store) else read).add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.comprehension):
            bound.update(n.id for n in ast.walk(node.target) if isinstance(n, ast.Name))
    return read - bound - set(dir(builtins))


def self_attributes(code: str) -> set[str]:
    tree = ast.parse(code)
    return {
        node.attr for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "self"
    }  # fmt: skip


def indent_like(code: str, column: int) -> list[str]:
    return [(" " * column + line) if line.strip() else "" for line in code.rstrip("\n").split("\n")]


def edited_dp_actor_source() -> tuple[str, str]:
    """The release's dp_actor.py with the guide's three edits; raises unless each applies exactly once."""
    path = Path(SRC) / "verl" / "workers" / "actor" / "dp_actor.py"
    lines = path.read_text().split("\n")
    tree = ast.parse("\n".join(lines))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "DataParallelPPOActor")
    update = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "update_policy")
    nodes = list(ast.walk(update))
    if RELEASE >= (0, 6):
        targets = [n for n in nodes if isinstance(n, ast.Assign) and isinstance(n.value, ast.Call)
                   and isinstance(n.value.func, ast.Name) and n.value.func.id == "policy_loss_fn"]  # fmt: skip
        loss_snippet = snippet("verl-actor-0.6")
    else:
        targets = [n for n in nodes if isinstance(n, ast.If) and "loss_mode" in ast.unparse(n.test)
                   and "vanilla" in ast.unparse(n.test)]  # fmt: skip
        loss_snippet = snippet("verl-actor-0.4")
    selects = [n for n in nodes if isinstance(n, ast.Assign) and ast.unparse(n).startswith("data = data.select(")]
    if len(targets) != 1 or len(selects) != 1:
        raise SystemExit(f"verl {VERSION}: the guide's edit points are not unique ({len(targets)}, {len(selects)})")
    (target,), (select,) = targets, selects
    # Apply bottom-up so earlier line numbers stay valid.
    edits = sorted(
        [(target.lineno, target.end_lineno, indent_like(loss_snippet, target.col_offset)),
         (select.lineno, select.lineno - 1, indent_like(snippet("verl-select-keys"), select.col_offset))],
        reverse=True,
    )  # fmt: skip
    for start, end, new in edits:
        lines[start - 1 : end] = new
    lines[cls.lineno - 1 : cls.lineno - 1] = snippet("settings").split("\n")
    return "\n".join(lines), str(path)


def load_edited_actor():
    source, path = edited_dp_actor_source()
    import verl.workers.actor  # noqa: F401  (the package, unedited)

    module = types.ModuleType("verl.workers.actor.dp_actor")
    module.__file__ = path
    sys.modules[module.__name__] = module
    exec(compile(source, path, "exec"), module.__dict__)
    return module.DataParallelPPOActor


def actor_config(rows: int):
    common = {
        "strategy": "fsdp", "ppo_mini_batch_size": rows, "ppo_micro_batch_size_per_gpu": rows, "ppo_epochs": 1,
        "use_dynamic_bsz": False, "clip_ratio": 0.2, "clip_ratio_low": 0.2, "clip_ratio_high": 0.2,
        "clip_ratio_c": 3.0, "loss_agg_mode": "token-mean", "entropy_coeff": 0.0, "use_kl_loss": False,
        "grad_clip": 1.0e9, "ulysses_sequence_parallel_size": 1, "use_torch_compile": False,
        "entropy_from_logits_with_chunking": False, "policy_loss": {"loss_mode": "vanilla"},
        "fsdp_config": {"dtype": "float32"}, "use_remove_padding": False, "use_fused_kernels": False,
    }  # fmt: skip
    from omegaconf import OmegaConf

    if RELEASE >= (0, 6):  # the worker hands the actor a dataclass built with omega_conf_to_dataclass
        from verl.utils.config import omega_conf_to_dataclass

        cfg = {key: value for key, value in common.items() if key not in ("use_remove_padding", "use_fused_kernels")}
        cfg.update({
            "_target_": "verl.workers.config.FSDPActorConfig", "rollout_n": 1,
            "policy_loss": {"_target_": "verl.workers.config.PolicyLossConfig", "loss_mode": "vanilla"},
            "fsdp_config": {"_target_": "verl.workers.config.FSDPEngineConfig", "dtype": "float32"},
        })  # fmt: skip
        return omega_conf_to_dataclass(OmegaConf.create(cfg))
    return OmegaConf.create({**common, "entropy_checkpointing": False, "ppo_max_token_len_per_gpu": 4096,
                             "kl_loss_coef": 0.0, "kl_loss_type": "low_var_kl"})  # the 0.5 dp_actor.yaml keys it reads


def main() -> None:
    from transformers import Qwen2Config, Qwen2ForCausalLM  # before the shim: resolving a model class resets it

    shim_transformers()
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group("gloo", init_method="tcp://127.0.0.1:0", rank=0, world_size=1)
    import verl
    from verl import DataProto
    from verl.trainer.ppo import core_algos, ray_trainer

    shim_memory_logger()
    assert Path(verl.__file__).resolve().is_relative_to(Path(SRC).resolve()), verl.__file__
    sys.path.insert(0, str(Path(DOC).resolve().parents[1]))
    from calibrl_ext.tiny_models import build_tokenizer

    tokenizer = build_tokenizer("qwen2")
    torch.manual_seed(0)
    model_config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=False,
    )  # fmt: skip
    model = Qwen2ForCausalLM(model_config).float()
    initial_state = {k: v.clone() for k, v in model.state_dict().items()}

    # A generated rollout batch as fit has it after `batch = batch.union(gen_batch_output)`: 2 prompts x 3 rollouts.
    gen = torch.Generator().manual_seed(1)
    n_groups, n = 2, 3
    rows = n_groups * n
    prompt = torch.randint(30, len(tokenizer), (rows, PROMPT_LENGTH), generator=gen)
    prompt_attention = torch.ones(rows, PROMPT_LENGTH, dtype=torch.long)
    prompt_attention[n:, 0] = 0  # group 2's prompt is one token shorter (left padding)
    prompt[n:, 0] = tokenizer.pad_token_id
    response_lengths = torch.tensor([6, 3, 5, 2, 6, 4])
    response_attention = (torch.arange(RESPONSE_LENGTH) < response_lengths[:, None]).long()
    responses = torch.randint(30, len(tokenizer), (rows, RESPONSE_LENGTH), generator=gen)
    responses = torch.where(response_attention.bool(), responses, torch.full_like(responses, tokenizer.pad_token_id))
    attention = torch.cat([prompt_attention, response_attention], -1)
    position = torch.clip(torch.cumsum(attention, -1) - 1, min=0)
    batch = DataProto.from_dict(
        tensors={"prompts": prompt, "responses": responses, "input_ids": torch.cat([prompt, responses], -1),
                 "attention_mask": attention, "position_ids": position},
        non_tensors={"uid": np.array(["p0"] * n + ["p1"] * n, dtype=object),
                     "expert_solution": np.array(["Solve it: 2 + 2 = 4"] * n + ["x = 3 so the answer is 9"] * n,
                                                 dtype=object)},
        meta_info={"temperature": 1.0},
    )  # fmt: skip
    batch.batch["response_mask"] = ray_trainer.compute_response_mask(batch)

    # The trainer `self` of fit: the snippets may only use attributes the release's RayPPOTrainer has.
    trainer_source = Path(ray_trainer.__file__).read_text()
    trainer = SimpleNamespace(
        tokenizer=tokenizer, actor_rollout_wg=SimpleNamespace(world_size=3),
        config=SimpleNamespace(actor_rollout_ref=SimpleNamespace(actor=SimpleNamespace(loss_agg_mode="token-mean"))),
    )  # fmt: skip
    fit_locals = set(ray_trainer.RayPPOTrainer.fit.__code__.co_varnames)
    driver_globals = dict(vars(ray_trainer))
    exec(snippet("settings"), driver_globals)

    def run_driver_snippet(name: str, names: dict) -> dict:
        code = snippet(name)
        unknown = free_names(code) - fit_locals - set(driver_globals)
        missing_attrs = [a for a in self_attributes(code) if f"self.{a}" not in trainer_source]
        if unknown or missing_attrs:
            raise SystemExit(f"snippet {name} reads names verl {VERSION}'s fit lacks: {unknown} self.{missing_attrs}")
        namespace = {**driver_globals, **names}
        exec(code, namespace)
        return namespace

    batch = run_driver_snippet("verl-append", {"self": trainer, "batch": batch})["batch"]

    actor_cls = load_edited_actor()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    captured: dict[str, torch.Tensor] = {}
    optimizer.register_step_pre_hook(
        lambda opt, args, kwargs: captured.update({k: p.grad.clone() for k, p in model.named_parameters()})
    )
    actor = actor_cls(config=actor_config(rows), actor_module=model, actor_optimizer=optimizer)

    # fit's old-log-prob block: the worker wraps compute_log_prob's output into a DataProto.
    batch.meta_info.update(micro_batch_size=len(batch), temperature=1.0, use_dynamic_bsz=False)
    log_probs, entropys = actor.compute_log_prob(batch, calculate_entropy=True)
    old_log_prob = DataProto.from_dict(tensors={"old_log_probs": log_probs, "entropys": entropys})
    entropys = old_log_prob.batch["entropys"]
    old_log_prob.batch.pop("entropys")
    batch = batch.union(old_log_prob)
    # The reward (a reward function's job in fit): 1.1 for rows 0, 2, the expert rows; 0.1 for row 3.
    kind = batch.non_tensor_batch["calibrl_row_kind"]
    scores = torch.zeros(len(batch))
    scores[[0, 2]] = 1.1
    scores[3] = 0.1
    scores[np.flatnonzero(kind == 1)] = 1.1
    last = (batch.batch["response_mask"].sum(-1) - 1).clamp(min=0)
    token_scores = torch.zeros_like(batch.batch["response_mask"], dtype=torch.float32)
    token_scores[torch.arange(len(batch)), last] = scores
    batch.batch["token_level_scores"] = token_scores
    batch.batch["token_level_rewards"] = token_scores
    full = {key: batch.batch[key].clone() for key in batch.batch.keys()}
    full["entropys"] = entropys.clone()
    full_non_tensors = {key: np.asarray(value).copy() for key, value in batch.non_tensor_batch.items()}

    metrics: dict = {}
    batch = run_driver_snippet(
        "verl-after-old-log-prob", {"self": trainer, "batch": batch, "entropys": entropys, "metrics": metrics}
    )["batch"]

    # The release's own GRPO estimator (Dr.GRPO: no std) on the on-policy rows alone gives the kit's advantages.
    on_policy = np.flatnonzero(full_non_tensors["calibrl_row_kind"] == 0)
    release_adv, _ = core_algos.compute_grpo_outcome_advantage(
        token_level_rewards=full["token_level_rewards"][on_policy], response_mask=full["response_mask"][on_policy],
        index=full_non_tensors["uid"][on_policy], norm_adv_by_std_in_grpo=False,
    )  # fmt: skip

    batch.meta_info.update(temperature=1.0)
    update_metrics = actor.update_policy(batch)
    torch.save(
        {
            "version": VERSION, "model_config": model_config.to_dict(), "initial_state": initial_state,
            "grads": captured, "update_metrics": update_metrics, "driver_metrics": metrics, "full": full,
            "full_non_tensors": full_non_tensors, "update_rows": len(batch),
            "update_kinds": np.asarray(batch.non_tensor_batch["calibrl_row_kind"]),
            "kit_advantages": batch.batch["advantages"][: len(on_policy)].clone(), "release_advantages": release_adv,
            "verl_file": verl.__file__, "on_policy_rows": on_policy,
            # the dtype the release's _forward_micro_batch autocasts to (0.5: bfloat16 hard-coded; 0.6+: param dtype)
            "forward_autocast": torch.bfloat16 if RELEASE < (0, 6) else actor.param_dtype,
        },
        OUT,
    )  # fmt: skip


if __name__ == "__main__":
    main()
