"""Prompt messages: template, instruction suffix, question shapes."""

from __future__ import annotations

import pytest

from calibrl_ext.data.prompts import (
    DEFAULT_PROMPT_TEMPLATE,
    PAPER_INSTRUCTION_SUFFIX,
    build_prompt_messages,
    validate_template,
)
from calibrl_ext.data.rejects import RowRejected


def test_default_prompt_is_question_then_paper_suffix():
    """The default user text is the question (with placeholders), a blank line, the paper's suffix verbatim."""
    messages = build_prompt_messages("Find x.", 1)
    assert messages == [{"role": "user", "content": "<image>Find x.\n\n" + PAPER_INSTRUCTION_SUFFIX}]
    assert PAPER_INSTRUCTION_SUFFIX.startswith("You FIRST think") and PAPER_INSTRUCTION_SUFFIX.endswith(
        "</answer> tags."
    )


def test_suffix_is_not_appended_twice():
    """A question already rendered with the template (a parquet rebuilt) is left unchanged."""
    once = build_prompt_messages("Find x.", 1)[0]["content"]
    assert build_prompt_messages(once, 1)[0]["content"] == once


def test_custom_template_keeps_latex_braces():
    """Templates substitute {question} literally, so LaTeX braces in questions survive."""
    messages = build_prompt_messages("Solve $\\frac{a}{b}$.", 0, template="Q: {question} A:")
    assert messages[0]["content"] == "Q: Solve $\\frac{a}{b}$. A:"


def test_question_as_chat_messages_with_parts():
    """Messages with text/image parts become text with placeholders; a system message is kept."""
    question = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Find x."}]},
    ]
    messages = build_prompt_messages(question, 1, template="{question}")
    assert messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "<image>Find x."}]


@pytest.mark.parametrize(
    "question",
    [
        [{"role": "assistant", "content": "hi"}],
        [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
        [{"role": "user", "content": [{"type": "video"}]}],
        42,
    ],
)
def test_unsupported_question_shapes_are_rejected(question):
    """Shapes that cannot be mapped onto one user turn are rejected as unsupported_prompt."""
    with pytest.raises(RowRejected) as caught:
        build_prompt_messages(question, 0)
    assert caught.value.reason.value == "unsupported_prompt"


@pytest.mark.parametrize("template", ["no field", "{question} {question}", "<image>{question}"])
def test_bad_templates_fail_validation(template):
    """A template must hold {question} exactly once and no <image>."""
    with pytest.raises(ValueError, match="--prompt-template"):
        validate_template(template)
    validate_template(DEFAULT_PROMPT_TEMPLATE)
