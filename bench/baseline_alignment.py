"""Driver-side cost of the content-aware baseline (``calibrl.baseline_alignment``): prints figures, asserts nothing.

Two measurements:

1. synthetic groups (default: 48 prompts x 10 rollouts + 1 expert each, 4096-token responses, i.e. a tenth of the
   released recipe's 480 prompts, ``examples/calibrl_gpu.sh``): each rollout is its expert with random token
   insertions, deletions and substitutions (``--edit-rate``), so alignments drift. Times
   ``compute_calibration_fields`` (the whole driver-side baseline computation) with ``position``, ``lcs`` and
   ``window``, and prints the ratio to ``position`` and the cost per row (the cost is linear in rows: multiply by
   the step's rows for another batch size). ``--step-seconds S`` also prints the share of a step that takes S s.
2. ``--metrics run/metrics.jsonl`` (a recipe run's metrics, e.g. the e2e run of tests/recipe/test_e2e_adaptive.py):
   per step, ``timing_s/calibration`` (the driver's calibration-fields block, alignment included) over
   ``timing_s/step``.

    python bench/baseline_alignment.py                         # synthetic, a tenth of the released batch
    python bench/baseline_alignment.py --prompts 4 --length 512  # a quick look
    python bench/baseline_alignment.py --metrics outputs/run/metrics.jsonl
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from recipe.calibrl.calibration_fields import compute_calibration_fields

#: Vocabulary the synthetic token ids are drawn from (Qwen2.5's ~151k).
VOCAB = 151_000


def synthetic_batch(prompts: int, n: int, length: int, edit_rate: float, seed: int):
    """``prompts`` groups of ``n`` rollouts (each its expert with random edits) + the expert; padded ``[N, length]``."""
    gen = torch.Generator().manual_seed(seed)
    rows, uids, is_expert = [], [], []
    for p in range(prompts):
        expert = torch.randint(0, VOCAB, (length,), generator=gen)
        for _ in range(n):
            tokens = []
            for token in expert.tolist():
                draw = float(torch.rand((), generator=gen))
                if draw < edit_rate / 3:  # deletion
                    continue
                if draw < 2 * edit_rate / 3:  # substitution
                    token = int(torch.randint(0, VOCAB, (), generator=gen))
                elif draw < edit_rate:  # insertion before the token
                    tokens.append(int(torch.randint(0, VOCAB, (), generator=gen)))
                tokens.append(token)
            rows.append(torch.tensor(tokens[:length]))
            uids.append(f"p{p}")
            is_expert.append(False)
        rows.append(expert)
        uids.append(f"p{p}")
        is_expert.append(True)
    responses = torch.zeros(len(rows), length, dtype=torch.long)
    mask = torch.zeros(len(rows), length)
    for i, row in enumerate(rows):
        responses[i, : len(row)] = row
        mask[i, : len(row)] = 1
    old = -torch.rand(len(rows), length, generator=gen) * mask
    return old, mask, responses, uids, torch.tensor(is_expert)


def time_alignments(args) -> None:
    old, mask, responses, uids, is_expert = synthetic_batch(args.prompts, args.n, args.length, args.edit_rate, 0)
    rows = len(uids)
    scores, is_pad = torch.ones(rows), torch.zeros(rows, dtype=torch.bool)
    print(f"{args.prompts} prompts x ({args.n} rollouts + 1 expert) = {rows} rows of <= {args.length} tokens, "
          f"edit rate {args.edit_rate}, window {args.window}")  # fmt: skip
    seconds = {}
    for alignment in ("position", "window", "lcs"):
        start = time.perf_counter()
        fields = compute_calibration_fields(
            old, mask, scores, uids, is_expert, is_pad, pass_threshold=0.1, beyond_expert="zero_baseline",
            alignment=alignment, alignment_window=args.window, responses=responses,
        )  # fmt: skip
        seconds[alignment] = time.perf_counter() - start
        on = mask.bool() & ~is_expert.unsqueeze(-1)
        aligned = float((fields.aligned & on).sum()) / float(on.sum())
        line = (f"  {alignment:8s} {seconds[alignment]:8.3f} s  ({1e3 * seconds[alignment] / rows:.2f} ms/row, "
                f"x{seconds[alignment] / seconds['position']:.1f} position)  aligned fraction {aligned:.3f}")  # fmt: skip
        if args.step_seconds:
            line += f"  share of a {args.step_seconds:g} s step: {seconds[alignment] / args.step_seconds:.2%}"
        print(line)


def metrics_ratio(path: Path) -> None:
    for line in path.read_text().splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        m = record.get("data", record)
        if "timing_s/step" in m and "timing_s/calibration" in m:
            step = m.get("training/global_step", record.get("step"))
            print(f"step {step}: calibration {m['timing_s/calibration']:.3f} s / step {m['timing_s/step']:.1f} s = "
                  f"{m['timing_s/calibration'] / m['timing_s/step']:.2%}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=48)
    parser.add_argument("--n", type=int, default=10, help="rollouts per prompt")
    parser.add_argument("--length", type=int, default=4096, help="response tokens")
    parser.add_argument("--edit-rate", type=float, default=0.05, help="per-token edit probability of a rollout")
    parser.add_argument("--window", type=int, default=32, help="calibrl.baseline_alignment_window")
    parser.add_argument("--step-seconds", type=float, default=None, help="a step's wall time, for the share")
    parser.add_argument("--metrics", type=Path, default=None, help="a recipe run's metrics.jsonl instead")
    args = parser.parse_args()
    if args.metrics is not None:
        metrics_ratio(args.metrics)
    else:
        time_alignments(args)


if __name__ == "__main__":
    main()
