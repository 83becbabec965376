"""Does a warm-started tiny model learn a task under GRPO, at a given learning rate, temperature and batch? In seconds.

Prints one JSON line per step and per validation. This is a probe for CHOOSING the study's task (docs/study.md, "A
task a tiny model can learn"), not the recipe: no verl, no Ray, one process. It samples with HF ``generate`` (vision
placeholder tokens suppressed, as the CPU backend's hf rollout does), scores with ``calibrl_ext.reward``, and takes
one AdamW step per training step on the GRPO loss: group-normalised advantages ``(r - mean) / (std + 1e-6)`` over
``--n`` samples of each prompt, token-mean of ``-A * log p`` at the sampling temperature (the first PPO epoch, where
the ratio is 1), gradient clipped to 1. AdamW's betas and weight decay are verl's actor defaults. A validation is
``--val-n`` samples of each of the first ``--val-prompts`` validation prompts at ``--temperature``, from a fixed seed.

    .venv/bin/python bench/learnability_probe.py --model outputs/warm_start/<dir> --data data/demo-shape_colour \\
        --lr 1e-4 --temperature 1.3 --steps 16 --val-every 4 --seed 0

A rise here is necessary for the recipe to show one, not sufficient; the study measures the recipe itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

#: verl's actor optimizer defaults (``actor_rollout_ref.actor.optim``).
ADAM_BETAS = (0.9, 0.999)
WEIGHT_DECAY = 0.01
GRAD_CLIP = 1.0
#: Added to the group's reward std, as verl's GRPO advantage.
ADVANTAGE_EPS = 1e-6
#: Validation samples draw from ``manual_seed(VALIDATION_SEED_OFFSET + seed)``, the same before and after training.
VALIDATION_SEED_OFFSET = 10_000


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="warm-started checkpoint (calibrl_ext.warm_start output)")
    parser.add_argument("--data", required=True, help="folder with train.parquet and val.parquet")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--temperature", type=float, default=1.0, help="training and validation sampling")
    parser.add_argument("--steps", type=int, default=16)
    parser.add_argument("--batch-prompts", type=int, default=4, help="prompts per step")
    parser.add_argument("--n", type=int, default=4, help="samples per prompt")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--val-prompts", type=int, default=64)
    parser.add_argument("--val-n", type=int, default=4)
    parser.add_argument("--val-every", type=int, default=0, help="also validate every this-many steps (0: never)")
    parser.add_argument("--seed", type=int, default=0, help="prompt order and sampling")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    args = parser.parse_args(argv)

    import torch

    from calibrl_ext import warm_start as ws
    from calibrl_ext.cpu_backend.hf_server import vision_token_ids
    from calibrl_ext.reward import compute_score

    torch.set_num_threads(args.threads)
    model, tokenizer, processor, config = ws._load_model(Path(args.model).resolve())
    accepted = ws._forward_params(model)
    suppress = vision_token_ids(model.config, tokenizer)
    data = Path(args.data)
    train = ws._PromptRenderer(data / "train.parquet", tokenizer, processor, config, None)
    val = ws._PromptRenderer(data / "val.parquet", tokenizer, processor, config, args.val_prompts)
    rendered: dict[tuple[int, int], tuple] = {}

    def sample(renderer, index: int, n: int):
        key = (id(renderer), index)
        if key not in rendered:
            rendered[key] = renderer.render(index)
        row, prompt_ids, features = rendered[key]
        batch, _ = ws._collate([ws._Example(prompt_ids, len(prompt_ids), features)], tokenizer.pad_token_id, accepted)
        with torch.no_grad():
            output = model.generate(**batch, do_sample=True, temperature=args.temperature, top_k=0, top_p=1.0,
                                    max_new_tokens=args.max_new_tokens, num_return_sequences=n,
                                    pad_token_id=tokenizer.pad_token_id, suppress_tokens=suppress)  # fmt: skip
        results = []
        for sequence in output[:, len(prompt_ids):].tolist():
            if tokenizer.eos_token_id in sequence:
                sequence = sequence[: sequence.index(tokenizer.eos_token_id) + 1]
            text = tokenizer.decode(sequence, skip_special_tokens=True)
            score = compute_score(row["data_source"], text, row["reward_model"]["ground_truth"], row.get("extra_info"))
            results.append((sequence, score))
        return prompt_ids, features, results

    def validate() -> dict[str, float]:
        state = torch.random.get_rng_state()
        torch.manual_seed(VALIDATION_SEED_OFFSET + args.seed)
        model.eval()
        scores = [score for index in range(len(val)) for _, score in sample(val, index, args.val_n)[2]]
        torch.random.set_rng_state(state)
        return {"val_acc": sum(s["acc"] for s in scores) / len(scores),
                "val_format": sum(s["format"] for s in scores) / len(scores)}  # fmt: skip

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=ADAM_BETAS, weight_decay=WEIGHT_DECAY)
    started = time.perf_counter()
    print(json.dumps({"step": 0, **validate(), "seconds": round(time.perf_counter() - started, 1)}), flush=True)
    torch.manual_seed(args.seed)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed)).tolist()
    for step in range(1, args.steps + 1):
        model.eval()
        examples, advantages, rewards = [], [], []
        for k in range(args.batch_prompts):
            prompt_ids, features, results = sample(train, order[((step - 1) * args.batch_prompts + k) % len(order)],
                                                   args.n)  # fmt: skip
            group = torch.tensor([score["score"] for _, score in results], dtype=torch.float32)
            normalised = (group - group.mean()) / (group.std() + ADVANTAGE_EPS)
            rewards += group.tolist()
            for (sequence, _), advantage in zip(results, normalised.tolist()):
                examples.append(ws._Example(prompt_ids + sequence, len(prompt_ids), features))
                advantages.append(advantage)
        model.train()
        batch, response_mask = ws._collate(examples, tokenizer.pad_token_id, accepted)
        hidden = model.base_model(**batch).last_hidden_state[:, :-1]
        logits = model.get_output_embeddings()(hidden).float() / args.temperature
        log_probs = torch.log_softmax(logits, -1).gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
        mask = response_mask[:, 1:]
        loss = -(torch.tensor(advantages)[:, None] * log_probs * mask).sum() / mask.sum()
        optimizer.zero_grad()
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
        optimizer.step()
        record = {"step": step, "reward": sum(rewards) / len(rewards), "grad_norm": float(grad_norm)}
        if step == args.steps or (args.val_every and step % args.val_every == 0):
            record.update(validate())
        record["seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
