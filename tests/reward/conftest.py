"""Shared fixtures of the reward tests."""

import pytest


@pytest.fixture
def respond():
    """Wrap an answer in a well-formatted CalibRL response: ``<think>…</think><answer>{answer}</answer>``."""

    def wrap(answer: str, thought: str = "Let me work it out.") -> str:
        return f"<think>{thought}</think><answer>{answer}</answer>"

    return wrap
