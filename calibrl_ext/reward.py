"""CalibRL's verifiable reward: r = acc_weight * accuracy + format_weight * format (METHOD, Notation).

Use it as verl's custom reward function::

    reward.custom_reward_function.path=pkg://calibrl_ext.reward
    reward.custom_reward_function.name=compute_score
    +reward.custom_reward_function.reward_kwargs.symbolic_timeout_s=3.0   # optional, see RewardConfig

- accuracy (0/1): the answer in the response's last ``<answer>…</answer>`` matches the gold answer
  (:mod:`calibrl_ext.answers`: choice letters, letter sets, normalised match, numbers, then math-verify
  in a worker process under a hard time limit). Benchmark rows carry an answer spec in
  ``extra_info["answer_spec"]``; training rows have none and use the gold string alone.
- format (0/1): :func:`is_well_formatted`.

The returned dict always has the same keys (verl stacks them per batch, so a key missing from one row
would fail the whole batch): ``score``, ``acc``, ``format``, ``timeout`` (1.0 when the symbolic check
hit its limit), ``pred`` (the extracted answer, "" if none; verl uses it for maj@k) and ``eval_id``
(``extra_info["eval_id"]`` or "": the key that joins verl's validation dumps back to benchmark rows).
In validation verl reports ``acc`` as THE accuracy (``val-core/<data_source>/acc/mean@n``); ``score``
includes the format bonus and is not an accuracy.

CalibRL's "passed" s_i = +1 iff score > 0.1 (METHOD, Notation): with the defaults a correct answer scores
1.0 or 1.1 and a wrong one 0.0 or 0.1, so the threshold separates them whatever the format. A pass
threshold must stay in [format_weight, acc_weight) for that to hold; see ``docs/reward.md``.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, fields
from typing import Any

from calibrl_ext.answers import (
    EXTRACTORS,
    AnswerSpec,
    extract_answer,
    extract_prediction,
    match_answer,
)
from calibrl_ext.symbolic import DEFAULT_WORKERS, LazyChecker

__all__ = ["RewardConfig", "compute_score", "extract_answer", "is_well_formatted"]

logger = logging.getLogger(__name__)

#: The format of METHOD's Notation, matched against the WHOLE response (as the released code does
#: with ``re.fullmatch``): no text before ``<think>`` or after ``</answer>``, not even whitespace.
FORMAT_PATTERN = re.compile(r"^<think>.*?</think>.*?<answer>.*?</answer>$", re.DOTALL)

#: Keyword arguments that verl's reward managers add on their own (reward-model routing); accepted and
#: ignored. Any other unknown keyword is a typo in ``reward_kwargs`` and raises.
VERL_INJECTED_KWARGS = frozenset({"reward_router_address", "reward_model_tokenizer"})


def is_well_formatted(text: str, *, strip_whitespace: bool = False) -> bool:
    """True iff the whole response matches ``^<think>.*?</think>.*?<answer>.*?</answer>$`` (DOTALL).

    As in the released code, the match is on the text exactly as decoded: a leading space, a trailing
    newline or a literal end-of-sequence string after ``</answer>`` (``<|im_end|>``, ``</s>``) fails it.
    On verl's path the EOS token never reaches the text (verl decodes with ``skip_special_tokens=True``);
    ``strip_whitespace=True`` (reward kwarg ``format_strip_whitespace``) forgives surrounding whitespace.
    """
    if strip_whitespace:
        text = text.strip()
    return FORMAT_PATTERN.fullmatch(text) is not None


@dataclass(frozen=True)
class RewardConfig:
    """Settings of :func:`compute_score`, passed as ``reward.custom_reward_function.reward_kwargs.<name>``.

    Attributes:
        acc_weight: weight of accuracy in ``score`` (released: 1.0).
        format_weight: weight of the format bonus in ``score`` (released: 0.1).
        symbolic_timeout_s: hard wall-clock limit of one math-verify check, seconds; on expiry the
            worker is killed and the answer counts as wrong (``timeout`` = 1).
        symbolic_workers: math-verify worker processes per reward process (checks that run at once).
        symbolic_check: run math-verify after the exact and numeric steps (False: those steps only).
        answer_extractor: where the answer is read from (:data:`calibrl_ext.answers.EXTRACTORS`).
        format_strip_whitespace: forgive whitespace around the response in the format check.
    """

    acc_weight: float = 1.0
    format_weight: float = 0.1
    symbolic_timeout_s: float = 3.0
    symbolic_workers: int = DEFAULT_WORKERS
    symbolic_check: bool = True
    answer_extractor: str = "answer_tag"
    format_strip_whitespace: bool = False

    def __post_init__(self) -> None:
        for name in ("acc_weight", "format_weight", "symbolic_timeout_s"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"reward_kwargs.{name} must be a number, got {value!r}")
        if not self.acc_weight > 0:
            raise ValueError(f"reward_kwargs.acc_weight must be > 0, got {self.acc_weight!r}")
        if self.format_weight < 0:
            raise ValueError(f"reward_kwargs.format_weight must be >= 0, got {self.format_weight!r}")
        if not 0 < self.symbolic_timeout_s <= 600:
            raise ValueError(f"reward_kwargs.symbolic_timeout_s must be in (0, 600] seconds, got {self.symbolic_timeout_s!r}")
        if isinstance(self.symbolic_workers, bool) or not isinstance(self.symbolic_workers, int) or self.symbolic_workers < 1:
            raise ValueError(f"reward_kwargs.symbolic_workers must be a positive integer, got {self.symbolic_workers!r}")
        for name in ("symbolic_check", "format_strip_whitespace"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"reward_kwargs.{name} must be true or false, got {getattr(self, name)!r}")
        if self.answer_extractor not in EXTRACTORS:
            raise ValueError(f"reward_kwargs.answer_extractor must be one of {EXTRACTORS}, got {self.answer_extractor!r}")

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any]) -> RewardConfig:
        """Build from ``compute_score``'s keyword arguments; unknown names raise with the valid list."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kwargs) - known - VERL_INJECTED_KWARGS)
        if unknown:
            raise TypeError(
                f"compute_score got unknown reward_kwargs {unknown}; valid names: {sorted(known)} "
                "(set them as reward.custom_reward_function.reward_kwargs.<name>)"
            )
        return cls(**{name: value for name, value in kwargs.items() if name in known})


# verl passes the same reward_kwargs on every call: validate each distinct set once, not per response.
_config_cache: dict[tuple, RewardConfig] = {}


def _config_for(kwargs: dict[str, Any]) -> RewardConfig:
    key = tuple(sorted((name, repr(value)) for name, value in kwargs.items() if name not in VERL_INJECTED_KWARGS))
    config = _config_cache.get(key)
    if config is None:
        config = _config_cache[key] = RewardConfig.from_kwargs(kwargs)
    return config


def compute_score(
    data_source: str,
    solution_str: str,
    ground_truth: str,
    extra_info: dict | None = None,
    **kwargs: Any,
) -> dict[str, float | str]:
    """Score one response (verl's custom reward function signature).

    Args:
        data_source: the row's ``data_source`` (not used for scoring; the answer spec decides).
        solution_str: the decoded response.
        ground_truth: the gold answer (``reward_model.ground_truth``).
        extra_info: the row's ``extra_info``; ``answer_spec`` (JSON string or dict, see
            :class:`calibrl_ext.answers.AnswerSpec`) and ``eval_id`` are read when present.
        **kwargs: :class:`RewardConfig` fields.

    Returns:
        ``{"score", "acc", "format", "timeout"}`` as floats, ``{"pred", "eval_id"}`` as strings.
    """
    config = _config_for(kwargs)
    extra_info = extra_info or {}
    spec = AnswerSpec.from_value(extra_info.get("answer_spec"))
    if not isinstance(ground_truth, str):
        # Some parquet writers store numeric golds as numbers (AMC: 142.0); score them as text.
        ground_truth = "" if ground_truth is None else str(ground_truth)

    prediction = extract_prediction(solution_str, config.answer_extractor)
    checker = LazyChecker(config.symbolic_workers) if config.symbolic_check else None
    if ground_truth.strip():
        result = match_answer(prediction, ground_truth, spec, checker, config.symbolic_timeout_s)
        accuracy, timed_out = float(result.correct), result.timed_out
    else:
        logger.error("data_source=%s has an empty ground truth; the response scores accuracy 0", data_source)
        accuracy, timed_out = 0.0, False

    formatted = float(is_well_formatted(solution_str, strip_whitespace=config.format_strip_whitespace))
    return {
        "score": config.acc_weight * accuracy + config.format_weight * formatted,
        "acc": accuracy,
        "format": formatted,
        "timeout": float(timed_out),
        "pred": prediction if prediction is not None else "",
        "eval_id": str(extra_info.get("eval_id", "") or ""),
    }
