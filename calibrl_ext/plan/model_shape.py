"""Parameter counts and per-token sizes of a vision-language model, from its ``config.json`` alone (no weights).

Supported layouts: Qwen2.5-VL / Qwen2-VL (text fields at the top level or under ``text_config``; a ViT with gated MLP
and a 2x2 patch merger) and InternVL-hf (``text_config`` + an InternViT ``vision_config`` and a 2-layer projector).
Any decoder-only text config (Qwen2, Llama) without ``vision_config`` is counted as a text-only model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

#: Bundled architecture fields of the launch scripts' models (no hub access here); keyed by the hub id's last part.
BUNDLED_DIR = Path(__file__).resolve().parent / "model_configs"


class ModelConfigError(ValueError):
    """A config.json the planner cannot read; the message names the field and the fix."""


@dataclass(frozen=True)
class ModelShape:
    """What the memory estimate needs of a model.

    Attributes:
        text_params: parameters of the language model, embeddings and lm_head included.
        vision_params: parameters of the vision tower and its projector into the language model.
        hidden_size, intermediate_size, num_layers, vocab_size: the language model's dimensions.
        kv_bytes_per_token: bytes of KV cache one token takes in bf16 over all layers (2 * layers * kv_heads *
            head_dim * 2).
        lora_params_per_rank: LoRA parameters per unit of rank on all linear layers of the language model
            (sum of in + out features of q, k, v, o, gate, up, down per layer); rank r adds r times this.
    """

    name: str
    text_params: int
    vision_params: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    vocab_size: int
    kv_bytes_per_token: int
    lora_params_per_rank: int

    @property
    def total_params(self) -> int:
        return self.text_params + self.vision_params


def _require(section: dict, *keys: str, where: str):
    for key in keys:
        if key in section:
            return section[key]
    raise ModelConfigError(f"config.json{where} has none of {keys}: the planner needs it to size the model.")


def text_shape(cfg: dict) -> tuple[int, int, int, int, int, int, int]:
    """(params, hidden, intermediate, layers, vocab, kv_bytes_per_token, lora_params_per_rank) of a decoder."""
    h = int(_require(cfg, "hidden_size", where=" (text)"))
    inter = int(_require(cfg, "intermediate_size", where=" (text)"))
    layers = int(_require(cfg, "num_hidden_layers", where=" (text)"))
    heads = int(_require(cfg, "num_attention_heads", where=" (text)"))
    kv_heads = int(cfg.get("num_key_value_heads", heads))
    vocab = int(_require(cfg, "vocab_size", where=" (text)"))
    head_dim = int(cfg.get("head_dim") or h // heads)
    q_out, kv_out = heads * head_dim, kv_heads * head_dim
    # Qwen2 has q/k/v biases; counting them for Llama as well changes the total by < 0.01 %.
    attention = h * q_out + q_out + 2 * (h * kv_out + kv_out) + q_out * h
    mlp = 3 * h * inter  # gate, up, down
    per_layer = attention + mlp + 2 * h  # two RMSNorms
    tied = bool(cfg.get("tie_word_embeddings", False))
    params = vocab * h * (1 if tied else 2) + layers * per_layer + h
    kv_bytes = 2 * layers * kv_out * 2
    lora_per_rank = layers * ((h + q_out) + 2 * (h + kv_out) + (q_out + h) + 2 * (h + inter) + (inter + h))
    return params, h, inter, layers, vocab, kv_bytes, lora_per_rank


def vision_params(cfg: dict, model_type: str, text_hidden: int) -> int:
    """Parameters of the vision tower and its projector (0 when there is no ``vision_config``)."""
    vision = cfg.get("vision_config")
    if not vision:
        return 0
    hv = int(_require(vision, "hidden_size", "embed_dim", where=".vision_config"))
    layers = int(_require(vision, "depth", "num_hidden_layers", where=".vision_config"))
    inter = int(vision.get("intermediate_size") or 4 * hv)
    patch = vision.get("patch_size", 14)
    patch = int(patch[0]) if isinstance(patch, list) else int(patch)
    channels = int(vision.get("in_chans", vision.get("num_channels", 3)))
    if model_type in ("qwen2_5_vl", "qwen2_vl"):
        temporal = int(vision.get("temporal_patch_size", 2))
        merge = int(vision.get("spatial_merge_size", 2)) ** 2
        out = int(vision.get("out_hidden_size", text_hidden))
        gated = model_type == "qwen2_5_vl"
        mlp = (3 if gated else 2) * hv * inter
        block = 4 * hv * hv + 4 * hv + mlp + 2 * hv
        merger = hv + (merge * hv) ** 2 + merge * hv + merge * hv * out + out
        return channels * temporal * patch * patch * hv + layers * block + merger
    # InternViT (and other plain ViTs): qkv + proj, 2-matrix MLP, 2 norms, layer scales; pixel-shuffle projector.
    block = 4 * hv * hv + 4 * hv + 2 * hv * inter + inter + hv + 4 * hv
    shuffle = int(round(1 / float(cfg.get("downsample_ratio", 0.5)) ** 2))
    projector = 2 * shuffle * hv + shuffle * hv * text_hidden + text_hidden + text_hidden * text_hidden + text_hidden
    return channels * patch * patch * hv + hv + layers * block + projector


def shape_from_config(cfg: dict, name: str = "model") -> ModelShape:
    model_type = str(cfg.get("model_type", ""))
    text_cfg = cfg.get("text_config") or cfg
    if "hidden_size" not in text_cfg and "hidden_size" in cfg:
        text_cfg = {**text_cfg, **{k: v for k, v in cfg.items() if k != "text_config"}}
    params, h, inter, layers, vocab, kv_bytes, lora_per_rank = text_shape(text_cfg)
    return ModelShape(
        name=name,
        text_params=params,
        vision_params=vision_params(cfg, model_type, h),
        hidden_size=h,
        intermediate_size=inter,
        num_layers=layers,
        vocab_size=vocab,
        kv_bytes_per_token=kv_bytes,
        lora_params_per_rank=lora_per_rank,
    )


def find_model_config(model_path: str) -> Path | None:
    """``<model_path>/config.json`` when it exists, else the bundled config of a launch script's hub id, else None."""
    local = Path(model_path) / "config.json"
    if local.is_file():
        return local
    if Path(model_path).suffix == ".json" and Path(model_path).is_file():
        return Path(model_path)
    bundled = BUNDLED_DIR / f"{Path(str(model_path).rstrip('/')).name}.json"
    return bundled if bundled.is_file() else None


def load_model_shape(model_path: str) -> ModelShape:
    """The shape of a model given a checkpoint directory, a config.json path, or a bundled hub id."""
    path = find_model_config(model_path)
    if path is None:
        known = sorted(p.stem for p in BUNDLED_DIR.glob("*.json"))
        raise ModelConfigError(
            f"no config.json for {model_path!r}: pass a checkpoint directory or a config.json path "
            f"(--model-config), or one of the bundled models {known}."
        )
    try:
        cfg = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelConfigError(f"{path} is not valid JSON ({exc}).") from None
    return shape_from_config(cfg, name=Path(str(model_path).rstrip("/")).name)
