"""Token counts for the overlong checks (``--tokenizer``).

- Prompt: the chat template rendered with the generation prompt, and, when the path has a
  multimodal processor, the images expanded into the image tokens the processor emits, through
  verl's own ``RLHFDataset._process_multi_modal_info`` and ``build_multimodal_processor_inputs``
  (the same calls verl's own overlong filter makes). Without a processor ``<image>`` stays one
  piece of text and the count is a lower bound; a warning says so at start-up.
- Expert: the expert text tokenized WITHOUT a chat template, plus one EOS token, exactly what the
  recipe appends to the group (docs/method.md, Notation).
"""

from __future__ import annotations

import io
import logging
import re
from typing import Any

from PIL import Image

logger = logging.getLogger(__name__)

_PLACEHOLDER_SPLIT = re.compile("(<image>)")


class TokenCounter:
    """Counts prompt and expert tokens with the model's tokenizer (and processor, when it has one).

    Args:
        path: a local model/tokenizer folder (what ``actor_rollout_ref.model.path`` will be).
    """

    def __init__(self, path: str):
        from transformers import AutoProcessor, AutoTokenizer

        self.path = path
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.processor = None
        try:
            processor = AutoProcessor.from_pretrained(path)
        except (OSError, ValueError, TypeError, KeyError) as error:
            logger.info("no processor at %s (%s): counting text tokens only", path, error)
        else:
            if hasattr(processor, "image_processor"):
                self.processor = processor

    @property
    def counts_image_tokens(self) -> bool:
        return self.processor is not None

    def _content_list(self, messages: list[dict], images: list[bytes]) -> list[dict]:
        """Messages with ``<image>`` expanded into image parts, the shape verl hands the processor."""
        decoded = iter(Image.open(io.BytesIO(data)) for data in images)
        structured = []
        for message in messages:
            parts = []
            for piece in _PLACEHOLDER_SPLIT.split(message["content"]):
                if piece == "<image>":
                    parts.append({"type": "image", "image": next(decoded)})
                elif piece:
                    parts.append({"type": "text", "text": piece})
            structured.append({"role": message["role"], "content": parts})
        return structured

    def prompt_tokens(self, messages: list[dict], images: list[bytes]) -> int:
        """Tokens of the rendered prompt, image tokens included when a processor is available.

        Args:
            messages: the row's ``prompt`` (``<image>`` placeholders in the text).
            images: the row's encoded images, in placeholder order.
        """
        if self.processor is None or not images:
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            if isinstance(ids, dict) or hasattr(ids, "keys"):
                ids = ids["input_ids"]
            return len(ids)
        from verl.utils.dataset.rl_dataset import RLHFDataset
        from verl.utils.tokenizer import build_multimodal_processor_inputs

        structured = self._content_list(messages, images)
        rendered = self.processor.apply_chat_template(structured, add_generation_prompt=True, tokenize=False)
        patch_size = getattr(getattr(self.processor, "image_processor", None), "patch_size", 14)
        vision_images, videos, audios = RLHFDataset._process_multi_modal_info(structured, patch_size, config={})
        inputs: Any = build_multimodal_processor_inputs(
            self.processor, text=[rendered], images=vision_images, videos=videos, audio=audios
        )
        return len(inputs["input_ids"][0])

    def expert_tokens(self, text: str) -> int:
        """Tokens of the expert as the recipe appends it: no chat template, plus one EOS."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) + 1
