"""The prompt a row is trained on: chat messages with ``<image>`` placeholders and the instruction.

verl's ``RLHFDataset`` splits each message's text on ``<image>`` and pairs the pieces with the
row's ``images`` in order, asserting that the counts match. This module builds those messages:

- the question comes as a string, or as chat messages (a user message whose content is a string
  or a list of ``{type: text|image}`` parts; an optional system message is kept);
- the user text is rendered through a template holding ``{question}``; the default appends the
  paper's instruction suffix (arXiv 2602.20197, appendix; docs/method.md §6);
- when the question has no ``<image>`` placeholder, one per image is inserted at its start
  (what the released code did); when it has some, their number must equal the number of images.
"""

from __future__ import annotations

from typing import Any

from calibrl_ext.data.rejects import RejectReason, RowRejected

#: The placeholder verl's RLHFDataset replaces with the row's images, in order.
IMAGE_PLACEHOLDER = "<image>"

#: The field of the template that receives the question text.
QUESTION_FIELD = "{question}"

#: The instruction suffix of the paper's appendix (docs/method.md §6), verbatim.
PAPER_INSTRUCTION_SUFFIX = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the final answer. "
    "The reasoning process MUST BE enclosed within <think> </think> tags. "
    "The final answer MUST BE put in <answer> </answer> tags."
)

#: Default user-text template: the question, a blank line, the paper's instruction suffix.
DEFAULT_PROMPT_TEMPLATE = QUESTION_FIELD + "\n\n" + PAPER_INSTRUCTION_SUFFIX


def validate_template(template: str) -> None:
    """Raise ``ValueError`` (at start-up) unless ``template`` holds ``{question}`` exactly once and no ``<image>``."""
    count = template.count(QUESTION_FIELD)
    if count != 1:
        raise ValueError(
            f"--prompt-template must contain {QUESTION_FIELD} exactly once (found {count}): {template!r}. "
            f"Example: --prompt-template '{QUESTION_FIELD}\\n\\nAnswer inside <answer> </answer> tags.'"
        )
    if IMAGE_PLACEHOLDER in template:
        raise ValueError(
            f"--prompt-template must not contain {IMAGE_PLACEHOLDER}: placeholders come from the question and are "
            "counted against the row's images"
        )


def apply_template(question: str, template: str) -> str:
    """Render the user text. A question that already carries the template's surrounding text (a parquet
    built earlier, re-read) is returned unchanged, so the suffix is never appended twice.

    ``str.replace`` rather than ``str.format``: questions are full of LaTeX braces.
    """
    prefix, suffix = (part.strip() for part in template.split(QUESTION_FIELD))
    stripped = question.strip()
    if (prefix or suffix) and stripped.startswith(prefix) and stripped.endswith(suffix):
        return question
    return template.replace(QUESTION_FIELD, question)


def _content_to_text(content: Any) -> str:
    """A message content (string, or list of text/image parts) as text with ``<image>`` placeholders."""
    if isinstance(content, str):
        return content
    if isinstance(content, list | tuple):
        pieces = []
        for part in content:
            kind = part.get("type") if isinstance(part, dict) else None
            if kind == "text":
                pieces.append(str(part.get("text") or ""))
            elif kind == "image":
                pieces.append(IMAGE_PLACEHOLDER)
            else:
                raise RowRejected(
                    RejectReason.UNSUPPORTED_PROMPT,
                    f"message content part {part!r} is neither a text nor an image part",
                )
        return "".join(pieces)
    raise RowRejected(RejectReason.UNSUPPORTED_PROMPT, f"message content of type {type(content).__name__}")


def split_question(value: Any) -> tuple[str | None, str]:
    """The question column's value as ``(system_text or None, user_text)``.

    Accepts a string, or a list of chat messages (dicts with ``role`` and ``content``) holding exactly
    one user message and at most one system message. Raises :class:`RowRejected` otherwise.
    """
    if value is None:
        raise RowRejected(RejectReason.EMPTY_QUESTION, "the question is missing (null)")
    if isinstance(value, str):
        return None, value
    if isinstance(value, list | tuple) and all(isinstance(m, dict) and "role" in m for m in value):
        by_role: dict[str, list[str]] = {}
        for message in value:
            by_role.setdefault(str(message["role"]), []).append(_content_to_text(message.get("content")))
        unexpected = sorted(set(by_role) - {"system", "user"})
        if unexpected or len(by_role.get("user", [])) != 1 or len(by_role.get("system", [])) > 1:
            roles = [str(m["role"]) for m in value]
            raise RowRejected(
                RejectReason.UNSUPPORTED_PROMPT,
                f"chat messages with roles {roles}; expected one user message and at most one system message",
            )
        system = by_role.get("system", [None])[0]
        return system, by_role["user"][0]
    raise RowRejected(RejectReason.UNSUPPORTED_PROMPT, f"question of type {type(value).__name__}")


def build_prompt_messages(question: Any, num_images: int, template: str = DEFAULT_PROMPT_TEMPLATE) -> list[dict]:
    """The ``prompt`` column of one row: ``[{role, content}, ...]`` with one ``<image>`` per image.

    Args:
        question: the question column's value (string or chat messages; see :func:`split_question`).
        num_images: number of images the row carries (its ``images`` list length).
        template: user-text template holding ``{question}`` once.

    Raises:
        RowRejected: empty question (``empty_question``), placeholder count different from
            ``num_images`` (``placeholder_mismatch``), unusable message structure (``unsupported_prompt``).
    """
    system, user_text = split_question(question)
    if not user_text.replace(IMAGE_PLACEHOLDER, "").strip():
        raise RowRejected(RejectReason.EMPTY_QUESTION, "the question text is empty")
    placeholders = user_text.count(IMAGE_PLACEHOLDER) + (system or "").count(IMAGE_PLACEHOLDER)
    if placeholders == 0 and num_images > 0:
        user_text = IMAGE_PLACEHOLDER * num_images + user_text
    elif placeholders != num_images:
        raise RowRejected(
            RejectReason.PLACEHOLDER_MISMATCH,
            f"the question has {placeholders} {IMAGE_PLACEHOLDER} placeholder(s) but the row has {num_images} image(s)",
        )
    messages = [] if system is None else [{"role": "system", "content": system}]
    messages.append({"role": "user", "content": apply_template(user_text, template)})
    return messages
