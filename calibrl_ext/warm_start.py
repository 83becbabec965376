"""SFT warm start: teacher-force a (tiny) policy on the expert solutions before RL, so RL sees varied rewards.

A random-init tiny model never writes ``<think>…</think><answer>…</answer>``, so every reward of a CPU demo run is
0, every advantage is 0 and CalibRL's calibration term is 0. The paper's SFT-then-RL baseline, in miniature, fixes
that: a short supervised fine-tuning on the training rows' ``expert_solution`` teaches the format and, sometimes,
the right answer. See ``docs/warm_start.md`` for the measured figures.

What is trained, exactly as the policy sees it at RL time:

- prompt: the row's ``prompt`` messages rendered by verl's own code: ``RLHFDataset`` turns ``<image>`` placeholders
  into image content parts, ``process_multi_modal_info`` extracts the images and verl's continuous-token builder
  renders the chat template through the processor (image placeholders expanded, ``pixel_values`` and
  ``image_grid_thw`` computed) -- the same calls as ``SingleTurnAgentLoop``;
- response: ``tokenizer.encode(expert_solution, add_special_tokens=False) + [eos]`` (the expert row of
  ``recipe/calibrl/expert_agent_loop.py``);
- loss: token-mean cross-entropy on the response tokens only (prompt and padding are masked out).

Python API::

    from calibrl_ext.warm_start import warm_start, sample_rewards
    out = warm_start("tiny_models/qwen2_5_vl-small-s0", "data/demo/train.parquet", None)   # cached output
    print(sample_rewards(out, "data/demo/val.parquet"))      # format rate, accuracy, reward spread per group

CLI (the last stdout line is the output directory; progress and losses go to stderr)::

    MODEL=$(python -m calibrl_ext.warm_start --model "$MODEL" --data data/demo/train.parquet | tail -n 1)
    python -m calibrl_ext.warm_start --model DIR --data data/demo/train.parquet --eval data/demo/val.parquet

Caching: the output is keyed by the inputs (model files, parquet file, hyper-parameters, library versions). Without
``out_dir`` it goes to ``<cache root>/<model name>-<key>``; an existing output with the same key (read from its
:data:`STAMP_FILE`) is returned without training. Outputs are written to a temporary sibling and renamed into place.

Meant for tiny models on CPU: the model is trained and saved in float32, on one process, without gradient
checkpointing or sharding.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import inspect
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_LEARNING_RATE",
    "DEFAULT_STEPS",
    "WarmStartError",
    "WarmStartHyperParams",
    "read_stamp",
    "sample_rewards",
    "warm_start",
]

#: Optimizer steps of the default warm start. Tuned on the tiny Qwen2.5-VL and the demo data (docs/warm_start.md):
#: 200 x 8 rows (about 6 epochs of the 256 demo rows) makes about 40% of temperature-1 samples well formatted and
#: a few correct, so most groups of 4 samples get different rewards; 300 steps reach ~80% format but fewer groups
#: with different rewards, 120 steps too few well-formatted samples.
DEFAULT_STEPS = 200
#: Peak AdamW learning rate (a tiny random model needs a large one; a pretrained model would want ~1e-5).
DEFAULT_LEARNING_RATE = 3e-3
#: Rows per optimizer step (prompt + expert response each). 8 rows learn as fast per step as 16 at half the cost.
DEFAULT_BATCH_SIZE = 8
#: Default torch seed: the row order of every epoch comes from it, so one seed gives one set of weights.
DEFAULT_SEED = 0

#: AdamW weight decay.
WEIGHT_DECAY = 0.0
#: Gradient-norm clip (the released RL recipe's value).
GRAD_CLIP_NORM = 1.0
#: Fraction of the steps with a linear learning-rate warm-up from 0; a cosine decay to 0 follows.
WARMUP_FRACTION = 0.1
#: Rows of the fixed subset on which the loss before and after training is measured (no gradient).
LOSS_PROBE_ROWS = 64
#: Log the running training loss every this many steps.
LOG_EVERY_STEPS = 25
#: torch intra-op threads while training and sampling. A tiny model's ops are too small to gain from threads, and on
#: a busy machine waiting for a second thread made each step ~15x slower (docs/warm_start.md); one thread also
#: makes the weights independent of the machine's core count.
TORCH_THREADS = 1

#: Parquet columns read (verl's RL layout plus the expert column that data_prep/build_parquet.py writes).
PROMPT_KEY = "prompt"
IMAGE_KEY = "images"
EXPERT_COLUMN = "expert_solution"

#: Written into every output directory: the cache key's inputs and the training results.
STAMP_FILE = "calibrl_warm_start.json"
#: Bump when a change here changes the trained weights, so cached outputs are retrained.
WARM_START_VERSION = 1
#: Files up to this size are fingerprinted by content (SHA-256), larger ones by size and modification time.
CONTENT_HASH_MAX_BYTES = 64 * 1024 * 1024
#: Hex digits of the cache key in a default output directory name.
KEY_DIGITS = 12
#: Default cache root: ``<repo>/outputs/warm_start`` (git-ignored), overridden by :data:`CACHE_ROOT_ENV`.
DEFAULT_CACHE_ROOT = Path(__file__).resolve().parent.parent / "outputs" / "warm_start"
CACHE_ROOT_ENV = "CALIBRL_WARM_START_DIR"

#: Sampling check of :func:`sample_rewards` (the RL rollout's defaults: temperature 1, no top-k / top-p).
EVAL_PROMPTS = 32
EVAL_SAMPLES_PER_PROMPT = 4
EVAL_TEMPERATURE = 1.0
#: Longest demo expert solution is 100 small-tokenizer tokens + EOS; leave room for longer samples.
EVAL_MAX_NEW_TOKENS = 128

#: Processor outputs aligned with the prompt tokens (padded along the sequence, not concatenated over rows).
_TOKEN_ALIGNED_INPUTS = frozenset({"mm_token_type_ids"})

_MODEL_HINT = (
    "pass a checkpoint directory with config.json, weights and tokenizer files, e.g. "
    "MODEL=$(python -m calibrl_ext.tiny_models --arch qwen2_5_vl)"
)
_DATA_HINT = "build the demo data with `python data_prep/build_parquet.py` (writes data/demo/{train,val}.parquet)"


class WarmStartError(ValueError):
    """Bad input to the warm start (model, parquet or arguments); the message names the fix."""


@dataclass(frozen=True)
class WarmStartHyperParams:
    """Everything besides the two input files that decides the trained weights (all part of the cache key)."""

    steps: int = DEFAULT_STEPS
    learning_rate: float = DEFAULT_LEARNING_RATE
    batch_size: int = DEFAULT_BATCH_SIZE
    seed: int = DEFAULT_SEED
    #: Use only the first ``max_rows`` rows of the parquet (None: all).
    max_rows: int | None = None
    #: Cut each response (solution + EOS) to this many tokens, as the expert row does at RL time (None: no cut).
    max_response_length: int | None = None
    weight_decay: float = WEIGHT_DECAY
    grad_clip_norm: float = GRAD_CLIP_NORM
    warmup_fraction: float = WARMUP_FRACTION

    def check(self) -> None:
        if self.steps < 1:
            raise WarmStartError(f"steps={self.steps}: need at least 1 optimizer step (e.g. --steps {DEFAULT_STEPS})")
        if not self.learning_rate > 0:
            raise WarmStartError(f"learning_rate={self.learning_rate}: must be > 0 (e.g. {DEFAULT_LEARNING_RATE})")
        if self.batch_size < 1:
            raise WarmStartError(f"batch_size={self.batch_size}: must be >= 1 (e.g. {DEFAULT_BATCH_SIZE})")
        if self.max_rows is not None and self.max_rows < 1:
            raise WarmStartError(f"max_rows={self.max_rows}: must be >= 1, or None for all rows")
        if self.max_response_length is not None and self.max_response_length < 1:
            raise WarmStartError(f"max_response_length={self.max_response_length}: must be >= 1, or None (no cut)")


# ----------------------------------------------------------------------------------------------------------
# Cache key
# ----------------------------------------------------------------------------------------------------------
def _file_fingerprint(path: Path) -> dict[str, Any]:
    stat = path.stat()
    if stat.st_size <= CONTENT_HASH_MAX_BYTES:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return {"size": stat.st_size, "sha256": digest.hexdigest()}
    return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "path": str(path.resolve())}


def _model_fingerprint(model_dir: Path) -> dict[str, Any]:
    return {
        str(path.relative_to(model_dir)): _file_fingerprint(path)
        for path in sorted(model_dir.rglob("*"))
        if path.is_file()
    }


def _cache_key_inputs(model_dir: Path, train_parquet: Path, params: WarmStartHyperParams) -> dict[str, Any]:
    from importlib.metadata import version

    return {
        "version": WARM_START_VERSION,
        "model": _model_fingerprint(model_dir),
        "data": _file_fingerprint(train_parquet),
        "params": asdict(params),
        "libraries": {name: version(name) for name in ("torch", "transformers", "verl")},
    }


def _cache_key(key_inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(key_inputs, sort_keys=True).encode()).hexdigest()


def read_stamp(out_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The stamp of a warm-start output (``key``, ``inputs``, ``result``), or None if it has none."""
    try:
        return json.loads((Path(out_dir) / STAMP_FILE).read_text())
    except (OSError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------------------
# Loading and rendering (verl's code path)
# ----------------------------------------------------------------------------------------------------------
def _check_inputs(model_dir: Path, train_parquet: Path) -> None:
    if not (model_dir / "config.json").is_file():
        raise WarmStartError(f"model directory {model_dir} has no config.json; {_MODEL_HINT}")
    if not train_parquet.is_file():
        raise WarmStartError(f"training parquet {train_parquet} not found; {_DATA_HINT}")
    import pyarrow.parquet as pq

    try:
        columns = set(pq.read_schema(train_parquet).names)
    except Exception as exc:  # pyarrow raises several types for a non-parquet file
        raise WarmStartError(f"{train_parquet} is not a readable parquet file ({exc}); {_DATA_HINT}") from exc
    if EXPERT_COLUMN not in columns:
        raise WarmStartError(
            f"{train_parquet} has no '{EXPERT_COLUMN}' column, so there is nothing to teacher-force; build the data "
            f"with data_prep/build_parquet.py and an expert source (--expert-col COL or --expert-file FILE), "
            f"see docs/data_prep.md"
        )
    if PROMPT_KEY not in columns:
        raise WarmStartError(f"{train_parquet} has no '{PROMPT_KEY}' column (verl's RL layout); {_DATA_HINT}")


def _is_vision_config(config) -> bool:
    return getattr(config, "vision_config", None) is not None


def _load_model(model_dir: Path):
    """(model, tokenizer, processor or None, config) as verl loads them; WarmStartError naming the fix if not."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText
    from verl.utils import hf_processor, hf_tokenizer

    try:
        config = AutoConfig.from_pretrained(model_dir)
        auto_class = AutoModelForImageTextToText if _is_vision_config(config) else AutoModelForCausalLM
        model = auto_class.from_pretrained(model_dir, dtype=torch.float32)
        tokenizer = hf_tokenizer(str(model_dir))
        processor = hf_processor(str(model_dir))
    except Exception as exc:  # from_pretrained raises OSError, ValueError, KeyError, safetensors errors, ...
        reason = f"{type(exc).__name__}: {exc}"
        raise WarmStartError(f"cannot load the model at {model_dir}: {reason}; {_MODEL_HINT}") from exc
    if tokenizer.eos_token_id is None:
        raise WarmStartError(f"the tokenizer of {model_dir} has no eos token; the response must end with one")
    if tokenizer.pad_token_id is None:
        raise WarmStartError(f"the tokenizer of {model_dir} has no pad token; set pad_token in its tokenizer_config")
    return model, tokenizer, processor, config


class _PromptRenderer:
    """Renders a parquet row's prompt into (prompt token ids, processor features) exactly as verl's agent loop."""

    def __init__(self, train_parquet: Path, tokenizer, processor, config, max_rows: int | None):
        from omegaconf import OmegaConf
        from verl.utils.dataset.rl_dataset import RLHFDataset
        from verl.utils.tokenizer.continuous_token_wiring import create_continuous_token_builder

        self.data_config = OmegaConf.create(
            {"prompt_key": PROMPT_KEY, "image_key": IMAGE_KEY, "filter_overlong_prompts": False}
        )
        with contextlib.redirect_stdout(sys.stderr):  # RLHFDataset prints "dataset len: N"; stdout is the CLI's
            self.dataset = RLHFDataset(
                str(train_parquet), tokenizer, self.data_config, processor=processor, max_samples=max_rows or -1
            )
        self.dataset_cls = RLHFDataset
        self.processor = processor
        self.builder = create_continuous_token_builder(
            tokenizer, hf_model_type=getattr(config, "model_type", None), processor=processor
        )
        self.image_patch_size = getattr(getattr(processor, "image_processor", None), "patch_size", 14)

    def __len__(self) -> int:
        return len(self.dataset)

    def raw_row(self, index: int) -> dict[str, Any]:
        return self.dataset.dataframe[index]

    def render(self, index: int) -> tuple[dict[str, Any], list[int], dict[str, Any]]:
        """(dataset row, prompt ids, processor features other than input_ids/attention_mask)."""
        row = self.dataset[index]
        messages = list(row["raw_prompt"])
        multi_modal = {}
        if self.processor is not None:
            images, videos, _ = asyncio.run(
                self.dataset_cls.process_multi_modal_info(
                    messages, image_patch_size=self.image_patch_size, config=self.data_config
                )
            )
            multi_modal = {"images": images, "videos": videos}
        features: dict[str, Any] = {}
        prompt_ids = self.builder.build_initial_tokens(messages, mm_inputs_out=features, **multi_modal)
        features.pop("attention_mask", None)
        return row, list(prompt_ids), features


def _row_has_images(row: dict[str, Any]) -> bool:
    return bool(row.get(IMAGE_KEY))


@dataclass
class _Example:
    input_ids: list[int]
    prompt_length: int
    features: dict[str, Any]


def _build_examples(
    renderer: _PromptRenderer, tokenizer, model_dir: Path, max_response_length: int | None
) -> tuple[list[_Example], int]:
    """(examples, skipped): one example per row with an expert solution; rows without one are counted."""
    examples, skipped = [], 0
    for index in range(len(renderer)):
        raw = renderer.raw_row(index)
        solution = raw.get(EXPERT_COLUMN)
        if not isinstance(solution, str) or not solution.strip():
            skipped += 1
            continue
        if renderer.processor is None and _row_has_images(raw):
            raise WarmStartError(
                f"row {index} of the parquet has images but the model at {model_dir} has no image processor "
                f"(text-only); use a vision-language checkpoint (e.g. python -m calibrl_ext.tiny_models --arch "
                f"qwen2_5_vl) or a parquet without images"
            )
        _, prompt_ids, features = renderer.render(index)
        response_ids = list(tokenizer.encode(solution, add_special_tokens=False)) + [tokenizer.eos_token_id]
        if max_response_length is not None:
            response_ids = response_ids[:max_response_length]
        examples.append(_Example(prompt_ids + response_ids, len(prompt_ids), features))
    return examples, skipped


def _forward_params(module) -> frozenset[str]:
    return frozenset(inspect.signature(module.forward).parameters)


def _collate(examples: list[_Example], pad_token_id: int, accepted: frozenset[str]):
    """Right-padded batch: input_ids, attention_mask, response_mask (B, L) and the concatenated vision features."""
    import torch

    length = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), length), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), length), dtype=torch.long)
    response_mask = torch.zeros((len(examples), length), dtype=torch.float32)
    for row, example in enumerate(examples):
        n = len(example.input_ids)
        input_ids[row, :n] = torch.tensor(example.input_ids)
        attention_mask[row, :n] = 1
        response_mask[row, example.prompt_length : n] = 1.0
    batch: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
    keys = sorted({key for example in examples for key in example.features if key in accepted})
    for key in keys:
        values = [example.features.get(key) for example in examples]
        if key in _TOKEN_ALIGNED_INPUTS:
            padded = torch.zeros((len(examples), length), dtype=torch.long)
            for row, value in enumerate(values):
                if value is not None:
                    padded[row, : value.shape[-1]] = torch.as_tensor(value).reshape(-1)
            batch[key] = padded
        else:
            present = [torch.as_tensor(value) for value in values if value is not None]
            batch[key] = torch.cat(present, dim=0)
    return batch, response_mask


def _response_loss(model, batch: dict[str, Any], response_mask):
    """Token-mean cross-entropy of the response tokens: position t predicts token t + 1 (masks are (B, L)).

    Only the response positions go through the output projection: the prompt is most of each row, and the
    (rows x length x vocab) logits would dominate the step time of a tiny model.
    """
    import torch.nn.functional as F

    hidden = model.base_model(**batch).last_hidden_state[:, :-1]
    select = response_mask[:, 1:].bool()
    logits = model.get_output_embeddings()(hidden[select]).float()
    return F.cross_entropy(logits, batch["input_ids"][:, 1:][select])


def _probe_loss(model, examples: list[_Example], pad_token_id: int, accepted: frozenset[str], batch_size: int) -> float:
    """Mean response-token loss over ``examples`` (no gradient), weighting every response token equally."""
    import torch

    total, tokens = 0.0, 0.0
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch, mask = _collate(examples[start : start + batch_size], pad_token_id, accepted)
            count = float(mask[:, 1:].sum())
            total += float(_response_loss(model, batch, mask)) * count
            tokens += count
    model.train(was_training)
    return total / max(tokens, 1.0)


def _learning_rate_at(step: int, params: WarmStartHyperParams) -> float:
    """Linear warm-up over ``warmup_fraction`` of the steps, then cosine decay to 0 (step counts from 0)."""
    warmup = max(1, round(params.warmup_fraction * params.steps))
    if step < warmup:
        return params.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, params.steps - warmup)
    return params.learning_rate * 0.5 * (1.0 + math.cos(math.pi * progress))


@contextlib.contextmanager
def _torch_threads(count: int):
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _train(model, examples: list[_Example], pad_token_id: int, params: WarmStartHyperParams) -> dict[str, Any]:
    import torch

    accepted = _forward_params(model.base_model)
    probe = examples[:LOSS_PROBE_ROWS]
    loss_before = _probe_loss(model, probe, pad_token_id, accepted, params.batch_size)
    logger.info("loss before: %.4f (response-token mean over %d rows)", loss_before, len(probe))

    optimizer = torch.optim.AdamW(
        model.parameters(), lr=params.learning_rate, weight_decay=params.weight_decay
    )
    order_rng = torch.Generator().manual_seed(params.seed)
    order: list[int] = []
    step_losses: list[float] = []
    model.train()
    for step in range(params.steps):
        while len(order) < params.batch_size:  # epochs in a fresh seeded order each; a batch may span two
            order += torch.randperm(len(examples), generator=order_rng).tolist()
        rows, order = order[: params.batch_size], order[params.batch_size :]
        batch, mask = _collate([examples[row] for row in rows], pad_token_id, accepted)
        for group in optimizer.param_groups:
            group["lr"] = _learning_rate_at(step, params)
        loss = _response_loss(model, batch, mask)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), params.grad_clip_norm)
        optimizer.step()
        step_losses.append(loss.item())
        if (step + 1) % LOG_EVERY_STEPS == 0 or step + 1 == params.steps:
            recent = step_losses[-LOG_EVERY_STEPS:]
            logger.info("step %d/%d  loss %.4f", step + 1, params.steps, sum(recent) / len(recent))
    model.eval()
    loss_after = _probe_loss(model, probe, pad_token_id, accepted, params.batch_size)
    logger.info("loss after: %.4f", loss_after)
    return {"loss_before": loss_before, "loss_after": loss_after, "step_losses": step_losses}


# ----------------------------------------------------------------------------------------------------------
# Output directory
# ----------------------------------------------------------------------------------------------------------
def _resolve_out_dir(out_dir: str | os.PathLike | None, model_dir: Path, key: str) -> Path:
    if out_dir is None:
        root = Path(os.environ.get(CACHE_ROOT_ENV) or DEFAULT_CACHE_ROOT)
        return (root / f"{model_dir.name}-{key[:KEY_DIGITS]}").resolve()
    out = Path(out_dir).resolve()
    if out == model_dir:
        raise WarmStartError(f"--out {out} is the input model directory; choose another output directory")
    if out.exists() and read_stamp(out) is None and (not out.is_dir() or any(out.iterdir())):
        raise WarmStartError(
            f"--out {out} exists and is not a warm-start output (no {STAMP_FILE}); it is never overwritten: "
            f"choose another directory or remove it"
        )
    return out


def _save_atomically(out: Path, model, model_dir: Path, has_processor: bool, stamp: dict[str, Any]) -> None:
    """Model + tokenizer + processor (as the input has them) + stamp into a temporary sibling, renamed to ``out``."""
    from transformers import AutoProcessor, AutoTokenizer

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        # Reloaded from the input rather than saved from the training objects: verl's loaders attach extras to them.
        AutoTokenizer.from_pretrained(model_dir).save_pretrained(tmp)
        if has_processor:
            AutoProcessor.from_pretrained(model_dir).save_pretrained(tmp)
        (tmp / STAMP_FILE).write_text(json.dumps(stamp, indent=1) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it 0700; Ray workers of another user may have to read it
        current = read_stamp(out)
        if current is not None and current.get("key") == stamp["key"]:
            return  # a concurrent run wrote the same output first
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------------
def warm_start(
    model_dir: str | os.PathLike,
    train_parquet: str | os.PathLike,
    out_dir: str | os.PathLike | None = None,
    *,
    steps: int = DEFAULT_STEPS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = DEFAULT_SEED,
    max_rows: int | None = None,
    max_response_length: int | None = None,
) -> Path:
    """Supervised fine-tuning of ``model_dir`` on the expert solutions of ``train_parquet``; returns the output dir.

    Args:
        model_dir: a checkpoint directory (model, tokenizer and, for VLMs, processor), e.g. a tiny model of
            :mod:`calibrl_ext.tiny_models` (``qwen2_5_vl``, ``qwen2`` on text-only rows, ``internvl3``).
        train_parquet: verl RL parquet with an ``expert_solution`` column (``data_prep/build_parquet.py``).
            Rows with an empty solution are skipped and counted (logged, and in the stamp's ``result``).
        out_dir: where the fine-tuned checkpoint goes; None: ``<cache root>/<model name>-<key>``. An existing
            output with the same cache key is returned as is (no training); one with another key is replaced.
        steps, learning_rate, batch_size, seed, max_rows, max_response_length: see :class:`WarmStartHyperParams`.

    Returns:
        The output directory; ``from_pretrained`` reloads model, tokenizer and processor from it, and its
        :data:`STAMP_FILE` records the cache key, the inputs and the results (losses, rows, seconds).

    Raises:
        WarmStartError: a model that does not load, a missing parquet or ``expert_solution`` column, no row with
            a solution, images for a text-only model, or a bad hyper-parameter; the message names the fix.
    """
    started = time.perf_counter()
    model_dir = Path(model_dir).resolve()
    train_parquet = Path(train_parquet).resolve()
    params = WarmStartHyperParams(
        steps=steps,
        learning_rate=learning_rate,
        batch_size=batch_size,
        seed=seed,
        max_rows=max_rows,
        max_response_length=max_response_length,
    )
    params.check()
    _check_inputs(model_dir, train_parquet)
    key_inputs = _cache_key_inputs(model_dir, train_parquet, params)
    key = _cache_key(key_inputs)
    out = _resolve_out_dir(out_dir, model_dir, key)
    stamp = read_stamp(out)
    if stamp is not None and stamp.get("key") == key:
        logger.info("cache hit: %s (same model, data and hyper-parameters)", out)
        return out

    with _torch_threads(TORCH_THREADS):
        _train_and_save(model_dir, train_parquet, out, params, {"key": key, "inputs": key_inputs})
    logger.info("wrote %s in %.1f s", out, time.perf_counter() - started)
    return out


def _train_and_save(
    model_dir: Path, train_parquet: Path, out: Path, params: WarmStartHyperParams, stamp: dict[str, Any]
) -> dict[str, Any]:
    import torch

    started, cpu_started = time.perf_counter(), time.process_time()
    model, tokenizer, processor, config = _load_model(model_dir)
    renderer = _PromptRenderer(train_parquet, tokenizer, processor, config, params.max_rows)
    examples, skipped = _build_examples(renderer, tokenizer, model_dir, params.max_response_length)
    if skipped:
        logger.warning("skipped %d of %d rows without an %s", skipped, len(renderer), EXPERT_COLUMN)
    if not examples:
        raise WarmStartError(
            f"none of the {len(renderer)} rows of {train_parquet} has a non-empty '{EXPERT_COLUMN}'; rebuild the "
            f"data with an expert source (data_prep/build_parquet.py --expert-col / --expert-file)"
        )
    response_tokens = [len(e.input_ids) - e.prompt_length for e in examples]
    logger.info(
        "training on %d rows (responses %d-%d tokens), %d steps x %d rows, lr %g, seed %d",
        len(examples),
        min(response_tokens),
        max(response_tokens),
        params.steps,
        params.batch_size,
        params.learning_rate,
        params.seed,
    )
    torch.manual_seed(params.seed)
    train_started = time.perf_counter()
    losses = _train(model, examples, tokenizer.pad_token_id, params)
    result = {
        "loss_before": losses["loss_before"],
        "loss_after": losses["loss_after"],
        "first_step_loss": losses["step_losses"][0],
        "last_step_loss": losses["step_losses"][-1],
        "rows_used": len(examples),
        "rows_skipped_without_solution": skipped,
        "max_response_tokens": max(response_tokens),
        "train_seconds": round(time.perf_counter() - train_started, 2),
        "seconds": round(time.perf_counter() - started, 2),
        "cpu_seconds": round(time.process_time() - cpu_started, 2),
    }
    _save_atomically(out, model, model_dir, processor is not None, {**stamp, "result": result})
    return result


def sample_rewards(
    model_dir: str | os.PathLike,
    data_parquet: str | os.PathLike,
    *,
    num_prompts: int = EVAL_PROMPTS,
    samples_per_prompt: int = EVAL_SAMPLES_PER_PROMPT,
    temperature: float = EVAL_TEMPERATURE,
    max_new_tokens: int = EVAL_MAX_NEW_TOKENS,
    seed: int = DEFAULT_SEED,
) -> dict[str, Any]:
    """Sample ``samples_per_prompt`` responses for each of the first ``num_prompts`` rows and score them.

    Prompts are rendered as in training (verl's path); sampling is HF ``generate`` with the RL rollout's defaults
    (``temperature``, no top-k, no top-p), responses are decoded without special tokens and scored with
    :func:`calibrl_ext.reward.compute_score`, as verl's reward manager does.

    Returns:
        ``format_rate`` and ``accuracy`` (fractions of all samples), ``mean_score``, ``score_counts`` (samples per
        score value), ``varied_groups`` (fraction of prompts whose samples do not all score the same: the groups
        that give GRPO / CalibRL a non-zero advantage), ``groups_with_correct`` and ``examples`` (a few responses).
    """
    data_parquet = Path(data_parquet).resolve()
    if not data_parquet.is_file():
        raise WarmStartError(f"evaluation parquet {data_parquet} not found; {_DATA_HINT}")
    with _torch_threads(TORCH_THREADS):
        return _sample_rewards(
            Path(model_dir).resolve(),
            data_parquet,
            num_prompts=num_prompts,
            samples_per_prompt=samples_per_prompt,
            temperature=temperature,
            max_new_tokens=max_new_tokens,
            seed=seed,
        )


def _sample_rewards(
    model_dir: Path,
    data_parquet: Path,
    *,
    num_prompts: int,
    samples_per_prompt: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
) -> dict[str, Any]:
    import torch

    from calibrl_ext.reward import compute_score

    model, tokenizer, processor, config = _load_model(model_dir)
    renderer = _PromptRenderer(data_parquet, tokenizer, processor, config, num_prompts)
    accepted = _forward_params(model)
    torch.manual_seed(seed)
    scores, formats, accs, varied, with_correct, shown = [], [], [], 0, 0, []
    for index in range(len(renderer)):
        row, prompt_ids, features = renderer.render(index)
        example = _Example(prompt_ids, len(prompt_ids), features)
        batch, _ = _collate([example], tokenizer.pad_token_id, accepted)
        with torch.no_grad():
            output = model.generate(
                **batch,
                do_sample=True,
                temperature=temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=max_new_tokens,
                num_return_sequences=samples_per_prompt,
            )
        group = []
        for sequence in output[:, len(prompt_ids) :]:
            text = tokenizer.decode(sequence, skip_special_tokens=True)
            score = compute_score(row["data_source"], text, row["reward_model"]["ground_truth"], row.get("extra_info"))
            group.append(score["score"])
            formats.append(score["format"])
            accs.append(score["acc"])
            if len(shown) < 4:
                shown.append(text)
        scores += group
        varied += len(set(group)) > 1
        with_correct += any(s > 0.5 for s in group)
    counts: dict[str, int] = {}
    for score in scores:
        counts[f"{score:g}"] = counts.get(f"{score:g}", 0) + 1
    groups = max(len(renderer), 1)
    return {
        "prompts": len(renderer),
        "samples": len(scores),
        "format_rate": sum(formats) / max(len(formats), 1),
        "accuracy": sum(accs) / max(len(accs), 1),
        "mean_score": sum(scores) / max(len(scores), 1),
        "score_counts": dict(sorted(counts.items())),
        "varied_groups": varied / groups,
        "groups_with_correct": with_correct / groups,
        "examples": shown,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m calibrl_ext.warm_start",
        description="SFT warm start on the expert solutions (loss on response tokens only, prompts rendered as verl "
        "renders them). Prints the output checkpoint directory on the last stdout line; progress on stderr. "
        "Reuses an existing output trained from the same inputs.",
    )
    parser.add_argument("--model", required=True, help="input checkpoint directory (e.g. a tiny model)")
    parser.add_argument("--data", required=True, help="train parquet with an expert_solution column")
    parser.add_argument(
        "--out",
        default=None,
        help=f"output directory (default: ${CACHE_ROOT_ENV} or <repo>/outputs/warm_start, "
        "then <model name>-<cache key>)",
    )
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"optimizer steps (default {DEFAULT_STEPS})")
    parser.add_argument(
        "--lr", type=float, default=DEFAULT_LEARNING_RATE, help=f"peak learning rate (default {DEFAULT_LEARNING_RATE})"
    )
    parser.add_argument(
        "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help=f"rows per step (default {DEFAULT_BATCH_SIZE})"
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"seed of the row order (default {DEFAULT_SEED})"
    )
    parser.add_argument("--max-rows", type=int, default=None, help="use only the first N rows of --data")
    parser.add_argument(
        "--max-response-length", type=int, default=None, help="cut responses (solution + EOS) to N tokens"
    )
    parser.add_argument(
        "--eval",
        metavar="PARQUET",
        default=None,
        help=f"after training, sample {EVAL_SAMPLES_PER_PROMPT} responses for each of the first {EVAL_PROMPTS} rows "
        "of PARQUET and print format rate, accuracy and reward spread (JSON, stderr)",
    )
    parser.add_argument("--eval-prompts", type=int, default=EVAL_PROMPTS, help="prompts of --eval")
    parser.add_argument("--eval-samples", type=int, default=EVAL_SAMPLES_PER_PROMPT, help="samples per prompt")
    parser.add_argument("--eval-max-new-tokens", type=int, default=EVAL_MAX_NEW_TOKENS, help="sampling length cap")
    args = parser.parse_args(argv)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("warm_start: %(message)s"))
    saved = (logger.level, logger.propagate)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        out = warm_start(
            args.model,
            args.data,
            args.out,
            steps=args.steps,
            learning_rate=args.lr,
            batch_size=args.batch_size,
            seed=args.seed,
            max_rows=args.max_rows,
            max_response_length=args.max_response_length,
        )
        if args.eval:
            report = sample_rewards(
                out,
                args.eval,
                num_prompts=args.eval_prompts,
                samples_per_prompt=args.eval_samples,
                max_new_tokens=args.eval_max_new_tokens,
                seed=args.seed,
            )
            print(json.dumps(report, indent=1), file=sys.stderr)
    except WarmStartError as exc:
        print(f"warm_start: error: {exc}", file=sys.stderr)
        return 2
    finally:
        logger.removeHandler(handler)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
