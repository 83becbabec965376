"""Answers: extraction from a response, normalisation, answer specs, and matching against the gold answer.

Used by :mod:`calibrl_ext.reward` (training and validation rewards) and by the evaluation harness
(:mod:`calibrl_ext.eval`). Pure Python; the only expensive step, math-verify, runs in
:mod:`calibrl_ext.symbolic`'s worker processes under a hard time limit.

Matching, in order (first decisive step wins; ``MatchResult.method`` names it):

1. **choice** (gold is one letter ``A``–``Z``): the prediction's choice letter decides when it has one
   (``B``, ``(B)``, ``B. 12``, ``(B) 12``, ``Answer: B``, ``\\boxed{B}``); ``AB`` or ``A, B`` is no
   single letter and never matches; otherwise, with the option texts of an answer spec, the text of the
   gold option (matched by the math steps below, never against another option's text).
2. **letters** (gold is a letter set ``A, C``): the prediction's letters as a set, exactly equal.
3. **exact**: the normalised strings are equal (:func:`normalize_answer`: LaTeX wrappers, ``\\boxed``,
   ``\\text``, degrees, percent, thousands separators, trailing units, spaces, case).
4. **numeric**: both are plain numbers (``0.5``, ``1/2``, ``\\frac{1}{2}``): equal as numbers
   (or, per spec, rounded to ``precision`` places / within ``tolerance``); unequal numbers stop here.
5. **symbolic**: math-verify equivalence (``\\sqrt{12}`` vs ``2\\sqrt{3}``), under the time limit.

METHOD §7.5 lists what this replaces in the released code: a regex ``[^<]+?`` that cannot read answers
containing ``<``, a substring test for choice letters (``"AB"`` matched ``A``) and a bare ``except``
that turned every error into reward 0.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from calibrl_ext.symbolic import LazyChecker, SymbolicChecker

ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"

#: Names accepted by ``answer_extractor``: where the predicted answer is read from a response.
#: ``answer_tag``: the last ``<answer>…</answer>`` (the CalibRL format; no tag -> no answer).
#: ``answer_tag_or_boxed``: the same, else the last ``\\boxed{…}`` in the response (for baselines
#: prompted the Qwen way; never used in training, where the tag is part of the task).
EXTRACTORS = ("answer_tag", "answer_tag_or_boxed")

#: Answer-spec types (``AnswerSpec.type``); see :class:`AnswerSpec`.
SPEC_TYPES = ("auto", "choice", "letters", "integer", "float", "text", "math")

# --------------------------------------------------------------------------------------------------
# Extraction


def extract_answer(text: str) -> str | None:
    """The content of the LAST complete ``<answer>…</answer>`` pair, stripped; None if there is none.

    Reads any characters, ``<`` included (``<answer>a<b</answer>`` -> ``"a<b"``). "Last" is the last
    ``</answer>`` and the nearest ``<answer>`` before it, so a tag quoted inside ``<think>`` does not
    capture the real answer.
    """
    end = text.rfind(ANSWER_CLOSE)
    if end < 0:
        return None
    start = text.rfind(ANSWER_OPEN, 0, end)
    if start < 0:
        return None
    return text[start + len(ANSWER_OPEN) : end].strip()


def extract_boxed(text: str) -> str | None:
    """The content of the last ``\\boxed{…}`` (or ``\\fbox{…}``) with balanced braces; None if there is none."""
    for command in ("\\boxed{", "\\fbox{"):
        start = text.rfind(command)
        if start < 0:
            continue
        end = _closing_brace(text, start + len(command) - 1)
        return None if end is None else text[start + len(command) : end].strip()
    return None


def extract_prediction(text: str, extractor: str = "answer_tag") -> str | None:
    """The predicted answer of a response under the named extractor (see :data:`EXTRACTORS`)."""
    if extractor not in EXTRACTORS:
        raise ValueError(f"answer_extractor must be one of {EXTRACTORS}, got {extractor!r}")
    answer = extract_answer(text)
    if answer is None and extractor == "answer_tag_or_boxed":
        answer = extract_boxed(text)
    return answer


# --------------------------------------------------------------------------------------------------
# Normalisation

_FULLWIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)}  # ＡＢ（）：，-> ASCII
_CHAR_MAP = {**_FULLWIDTH, ord("²"): "^2", ord("³"): "^3", ord("−"): "-", ord("×"): "\\times", ord("\u3000"): " "}

_MATH_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_TEXT_COMMANDS = re.compile(r"\\(?:text|textbf|textit|textrm|mathrm|mathbf|mathit|operatorname|mbox)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[,;:! ]|\\quad|\\qquad|~|\\displaystyle|\\left|\\right")
# Degree marks and the mojibake of "°" seen in MathVerse golds ("118掳T").
_DEGREES = re.compile(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree|°|掳|\bdegrees?\b", re.IGNORECASE)
_PERCENT = re.compile(r"\\?%|\bpercent\b", re.IGNORECASE)
_LATEX_THOUSANDS = re.compile(r"(\d)\{,\}(\d{3})")
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")

#: Units dropped from the end of an answer that is exactly "<number> <unit>" (also ``\\text{cm}``,
#: ``cm^2``, ``cm²``). Kept short and unambiguous: a trailing letter that may be a variable is not a unit.
UNITS = (
    "mm", "cm", "dm", "km", "m", "meters", "meter", "metres", "metre", "centimeters", "centimeter",
    "kilometers", "kilometer", "millimeters", "millimeter", "inches", "inch", "in", "feet", "foot", "ft",
    "yards", "yard", "yd", "miles", "mile", "mi",
    "square units", "sq units", "cubic units", "units", "unit",
    "seconds", "second", "sec", "s", "minutes", "minute", "min", "hours", "hour", "hrs", "hr", "h",
    "days", "day", "weeks", "week", "years", "year",
    "grams", "gram", "g", "kg", "kilograms", "kilogram", "mg", "pounds", "pound", "lbs", "lb",
    "liters", "liter", "litres", "litre", "l", "ml",
    "dollars", "dollar", "cents", "cent", "yuan", "euros", "euro",
    "m/s", "km/h", "mph", "cm/s",
    "points", "point", "people", "students", "times",
)  # fmt: skip
_NUMBER = r"[-+]?(?:\d[\d,]*(?:\.\d+)?|\.\d+)"
_UNIT_SUFFIX = re.compile(
    rf"^(?P<number>{_NUMBER})\s*(?:{'|'.join(re.escape(u) for u in sorted(UNITS, key=len, reverse=True))})"
    r"(?:\s*\^\s*\{?[23]\}?)?\.?$",
    re.IGNORECASE,
)
_CURRENCY_PREFIX = re.compile(rf"^(?:\\\$|\$|€|¥|£)\s*(?={_NUMBER}$)")


def _closing_brace(text: str, open_index: int) -> int | None:
    """Index of the brace closing the ``{`` at ``open_index``, or None if it is never closed."""
    depth = 0
    for position in range(open_index, len(text)):
        if text[position] == "{":
            depth += 1
        elif text[position] == "}":
            depth -= 1
            if depth == 0:
                return position
    return None


def _unwrap_outer(text: str) -> str:
    """Remove whole-string math delimiters and ``\\boxed{}`` wrappers, repeatedly."""
    changed = True
    while changed:
        changed = False
        text = text.strip()
        for opener, closer in _MATH_WRAPPERS:
            if len(text) >= len(opener) + len(closer) and text.startswith(opener) and text.endswith(closer):
                text = text[len(opener) : len(text) - len(closer)]
                changed = True
                break
        for command in ("\\boxed{", "\\fbox{"):
            if text.startswith(command) and _closing_brace(text, len(command) - 1) == len(text) - 1:
                text = text[len(command) : -1]
                changed = True
    return text


def clean_answer(text: str) -> str:
    """Light clean-up kept readable (choice letters are read from this): characters mapped to ASCII,
    outer ``$…$``/``\\boxed{}`` removed, ``\\text{X}`` -> ``X``, LaTeX spacing dropped, one trailing
    period dropped, surrounding whitespace stripped."""
    text = text.translate(_CHAR_MAP)
    text = _unwrap_outer(text)
    previous = None
    while previous != text:
        previous, text = text, _TEXT_COMMANDS.sub(r"\1", text)
    text = _SPACING.sub(" ", text).strip()
    text = _unwrap_outer(text)
    if text.endswith(".") and not re.search(r"\d\.$", text[-3:]):
        text = text[:-1].rstrip()
    return text


def normalize_answer(text: str) -> str:
    """The canonical string compared in the **exact** step.

    On top of :func:`clean_answer`: ``\\dfrac``/``\\tfrac`` -> ``\\frac``; degree marks and percent
    signs removed (``30°`` = ``30^\\circ`` = ``30``; ``50%`` = ``50``); a currency sign before a number
    and a unit after it removed (``4.4 m`` = ``4.4``); thousands separators removed (``1,000`` and
    ``1{,}000`` = ``1000``; ``1,2`` is left alone); all whitespace removed; lower-cased.
    """
    text = clean_answer(text)
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = _DEGREES.sub("", text)
    text = _PERCENT.sub("", text).strip()
    text = _CURRENCY_PREFIX.sub("", text)
    unit_match = _UNIT_SUFFIX.match(text)
    if unit_match:
        text = unit_match.group("number")
    text = _LATEX_THOUSANDS.sub(r"\1\2", text)
    text = re.sub(r"\s+", "", text)
    if _THOUSANDS.match(text):
        text = text.replace(",", "")
    return text.lower()


_PLAIN_NUMBER = re.compile(r"^[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[-+]?\d+)?$")
_SLASH_FRACTION = re.compile(r"^([-+]?\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)$")
_LATEX_FRACTION = re.compile(r"^([-+]?)\\frac\{([-+]?\d+(?:\.\d+)?)\}\{(\d+(?:\.\d+)?)\}$")
_PI_MULTIPLE = re.compile(r"^(.*?)\*?(?:\\pi|π|pi)$")


def parse_number(normalized: str, allow_pi: bool = False) -> float | None:
    """A plain number written as ``12``, ``-0.5``, ``1e-3``, ``3/4`` or ``\\frac{3}{4}``; None otherwise.

    Args:
        normalized: output of :func:`normalize_answer`.
        allow_pi: also read ``2\\pi``/``2π`` as 2·π (DynaMath's float answers).
    """
    if allow_pi:
        pi_match = _PI_MULTIPLE.match(normalized)
        if pi_match:
            factor = pi_match.group(1)
            coefficient = 1.0 if factor in ("", "+") else -1.0 if factor == "-" else parse_number(factor)
            return None if coefficient is None else coefficient * math.pi
    if _PLAIN_NUMBER.match(normalized):
        return float(normalized)
    fraction = _SLASH_FRACTION.match(normalized)
    if fraction:
        numerator, denominator = float(fraction.group(1)), float(fraction.group(2))
        return None if denominator == 0 else numerator / denominator
    fraction = _LATEX_FRACTION.match(normalized)
    if fraction:
        numerator, denominator = float(fraction.group(2)), float(fraction.group(3))
        sign = -1.0 if fraction.group(1) == "-" else 1.0
        return None if denominator == 0 else sign * numerator / denominator
    return None


# --------------------------------------------------------------------------------------------------
# Choice letters

_CHOICE_PREFIX = r"(?:(?:the\s+)?(?:correct\s+|final\s+|right\s+)?(?:answer|option|choice)\s*(?:is\s*)?[:=]?\s*)?"
_BARE_LETTER = re.compile(rf"^{_CHOICE_PREFIX}(?:\(([A-Za-z])\)|\[([A-Za-z])\]|([A-Za-z]))$", re.IGNORECASE)
_LETTER_WITH_TEXT = re.compile(rf"^{_CHOICE_PREFIX}(?:\(([A-Z])\)\s*|([A-Z])\s*[.:)]\s*)\S.*$", re.DOTALL)
_GOLD_LETTER = re.compile(r"^\(?([A-Z])\)?$")
_GOLD_LETTER_SET = re.compile(r"^[A-Z](?:\s*[,;、]\s*[A-Z])+$")
_LETTER_SET_NOISE = re.compile(r"\bAND\b|[()\[\],;、&.\s]")


def parse_choice_letter(answer: str) -> str | None:
    """The single choice letter an answer names, upper-cased, or None.

    ``B``, ``b``, ``(B)``, ``[B]``, ``B.``, ``B. 12``, ``B: 12``, ``(B) 12``, ``Answer: B``,
    ``option (B)`` and ``\\boxed{B}`` name B. ``AB``, ``A, B``, ``A triangle`` and ``12`` name none.
    """
    cleaned = clean_answer(answer)
    bare = _BARE_LETTER.match(cleaned)
    if bare:
        return next(group for group in bare.groups() if group).upper()
    with_text = _LETTER_WITH_TEXT.match(cleaned)
    if with_text:
        return next(group for group in with_text.groups() if group)
    return None


def parse_letter_set(answer: str) -> frozenset[str] | None:
    """The set of choice letters an answer names (``A, C``, ``A and C``, ``(A)(C)``, ``AC``), or None
    when it holds anything else. Only used where the gold is a letter set."""
    cleaned = clean_answer(answer).upper()
    cleaned = re.sub(rf"^{_CHOICE_PREFIX}", "", cleaned, flags=re.IGNORECASE)
    letters = _LETTER_SET_NOISE.sub("", cleaned)
    if not letters or not re.fullmatch(r"[A-Z]+", letters):
        return None
    return frozenset(letters)


def gold_letter(gold: str) -> str | None:
    """The gold's choice letter when the gold is exactly one upper-case letter (``B`` or ``(B)``)."""
    match = _GOLD_LETTER.match(gold.strip())
    return match.group(1) if match else None


def gold_letter_set(gold: str) -> frozenset[str] | None:
    """The gold's letters when the gold is a separated list of upper-case letters (``A, C``)."""
    stripped = gold.strip()
    if _GOLD_LETTER_SET.match(stripped):
        return frozenset(re.findall(r"[A-Z]", stripped))
    return None


# --------------------------------------------------------------------------------------------------
# Answer specs


@dataclass(frozen=True)
class AnswerSpec:
    """How a row's gold answer is compared; stored by the benchmark adapters in
    ``extra_info["answer_spec"]`` (a JSON string, so that every parquet's ``extra_info`` keeps one schema).

    Attributes:
        type: one of :data:`SPEC_TYPES`:
            ``auto`` (default, training data): choice if the gold is one letter, letters if it is a
            letter list, else math. ``choice``: gold is a letter; ``options`` are the option texts in
            letter order (may be empty when the options are only in the image). ``letters``: gold is a
            letter list (``A, C``); the prediction must name exactly that set. ``integer``: numeric
            equality with an integer gold. ``float``: numeric, rounded to ``precision`` decimals or
            within ``tolerance`` (absolute); exact if neither. ``text``: normalised string equality
            only. ``math``: exact, numeric, then symbolic.
        options: option texts for ``choice`` (letter A is ``options[0]``).
        precision: decimal places for ``float`` (MathVista's ``precision``).
        tolerance: absolute tolerance for ``float`` (DynaMath: 0.001).
    """

    type: str = "auto"
    options: tuple[str, ...] = field(default_factory=tuple)
    precision: int | None = None
    tolerance: float | None = None

    def __post_init__(self) -> None:
        if self.type not in SPEC_TYPES:
            raise ValueError(f"answer_spec.type must be one of {SPEC_TYPES}, got {self.type!r}")
        if not isinstance(self.options, tuple) or not all(isinstance(option, str) for option in self.options):
            raise ValueError(f"answer_spec.options must be a list of strings, got {self.options!r}")
        if self.options and self.type != "choice":
            raise ValueError(f"answer_spec.options is only meaningful for type 'choice', got type {self.type!r}")
        if len(self.options) > 26:
            raise ValueError(f"answer_spec.options has {len(self.options)} entries; letters A-Z allow at most 26")
        if (self.precision is not None or self.tolerance is not None) and self.type != "float":
            raise ValueError(f"answer_spec.precision/tolerance need type 'float', got type {self.type!r}")
        if self.precision is not None and (isinstance(self.precision, bool) or not isinstance(self.precision, int)
                                           or self.precision < 0):
            raise ValueError(f"answer_spec.precision must be a non-negative integer, got {self.precision!r}")
        if self.tolerance is not None and not (isinstance(self.tolerance, (int, float)) and self.tolerance >= 0):
            raise ValueError(f"answer_spec.tolerance must be a non-negative number, got {self.tolerance!r}")
        if self.precision is not None and self.tolerance is not None:
            raise ValueError("answer_spec: give precision OR tolerance for a float answer, not both")

    @classmethod
    def from_value(cls, value: Any) -> AnswerSpec:
        """Build from a dict, a JSON string (as stored in parquet), an AnswerSpec, or None (-> auto)."""
        if value is None or value == "":
            return cls()
        if isinstance(value, AnswerSpec):
            return value
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"answer_spec is not valid JSON ({exc}): {value[:200]!r}") from exc
        if not isinstance(value, Mapping):
            raise ValueError(f"answer_spec must be a JSON object or dict, got {type(value).__name__}")
        known = {"type", "options", "precision", "tolerance"}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(f"answer_spec has unknown keys {unknown}; allowed: {sorted(known)}")
        options = value.get("options") or ()
        if isinstance(options, str) or not hasattr(options, "__iter__"):
            raise ValueError(f"answer_spec.options must be a list of strings, got {options!r}")
        precision = value.get("precision")
        if isinstance(precision, float) and precision.is_integer():
            precision = int(precision)  # parquet/HF may type MathVista's precision as float
        return cls(
            type=value.get("type", "auto"),
            options=tuple(options),
            precision=precision,
            tolerance=value.get("tolerance"),
        )

    def to_json(self) -> str:
        """The JSON string stored in ``extra_info["answer_spec"]`` (only the fields that are set)."""
        payload: dict[str, Any] = {"type": self.type}
        if self.options:
            payload["options"] = list(self.options)
        if self.precision is not None:
            payload["precision"] = self.precision
        if self.tolerance is not None:
            payload["tolerance"] = self.tolerance
        return json.dumps(payload, ensure_ascii=False)

    def check_gold(self, gold: str) -> None:
        """Raise ValueError if ``gold`` cannot be scored under this spec (adapters call it per row)."""
        if not isinstance(gold, str) or not gold.strip():
            raise ValueError(f"gold answer must be a non-empty string, got {gold!r}")
        if self.type == "choice":
            letter = gold_letter(gold)
            if letter is None:
                raise ValueError(f"choice gold must be one letter A-Z, got {gold!r}")
            if self.options and ord(letter) - ord("A") >= len(self.options):
                raise ValueError(f"choice gold {letter!r} has no option text (only {len(self.options)} options)")
        elif self.type == "letters":
            if gold_letter(gold) is None and gold_letter_set(gold) is None:
                raise ValueError(f"letters gold must be letters separated by commas (e.g. 'A, C'), got {gold!r}")
        elif self.type in ("integer", "float"):
            value = parse_number(normalize_answer(gold), allow_pi=True)
            if value is None:
                raise ValueError(f"{self.type} gold must be a number, got {gold!r}")
            if self.type == "integer" and not float(value).is_integer():
                raise ValueError(f"integer gold must be a whole number, got {gold!r}")


# --------------------------------------------------------------------------------------------------
# Matching


@dataclass(frozen=True)
class MatchResult:
    """Outcome of :func:`match_answer`.

    Attributes:
        correct: the prediction matches the gold answer.
        method: the step that decided (``no_answer``, ``choice``, ``option_text``, ``letters``, ``exact``,
            ``numeric``, ``symbolic``, ``text``).
        timed_out: the symbolic step hit its time limit (the answer then counts as wrong).
    """

    correct: bool
    method: str
    timed_out: bool = False


def _numbers_equal(pred: float, gold: float, spec: AnswerSpec) -> bool:
    if spec.type == "float" and spec.precision is not None:
        return round(pred, spec.precision) == round(gold, spec.precision)
    if spec.type == "float" and spec.tolerance is not None:
        # The epsilon keeps 2.0944 vs 2.0934 (a difference of exactly 0.001 in decimal) inside.
        return abs(pred - gold) <= spec.tolerance + 1e-9 * max(1.0, abs(gold))
    return math.isclose(pred, gold, rel_tol=1e-9, abs_tol=1e-12)


def _match_math(
    pred: str, gold: str, spec: AnswerSpec, checker: SymbolicChecker | LazyChecker | None, timeout_s: float
) -> MatchResult:
    """Steps exact -> numeric -> symbolic."""
    pred_norm, gold_norm = normalize_answer(pred), normalize_answer(gold)
    if not pred_norm:
        return MatchResult(False, "exact")
    if pred_norm == gold_norm:
        return MatchResult(True, "exact")
    if spec.type == "text":
        return MatchResult(pred_norm == gold_norm, "text")
    numeric_spec = spec.type in ("integer", "float")
    gold_value = parse_number(gold_norm, allow_pi=numeric_spec)
    pred_value = parse_number(pred_norm, allow_pi=numeric_spec)
    if gold_value is not None and pred_value is not None:
        return MatchResult(_numbers_equal(pred_value, gold_value, spec), "numeric")
    if checker is None:
        return MatchResult(False, "exact")
    if numeric_spec and gold_value is not None:
        # A numeric gold compared with an expression (\frac{2\pi}{3}): evaluate it, then apply the
        # benchmark's rounding rule rather than math-verify's own precision.
        result = checker.numeric_value(clean_answer(pred), timeout_s)
        if result.value is None:
            return MatchResult(False, "symbolic", timed_out=result.status == "timeout")
        return MatchResult(_numbers_equal(result.value, gold_value, spec), "symbolic")
    result = checker.equal(clean_answer(gold), clean_answer(pred), timeout_s)
    return MatchResult(result.equal, "symbolic", timed_out=result.status == "timeout")


def match_answer(
    pred: str | None,
    gold: str,
    spec: AnswerSpec | None = None,
    checker: SymbolicChecker | LazyChecker | None = None,
    timeout_s: float = 3.0,
) -> MatchResult:
    """Whether a predicted answer matches the gold answer under ``spec`` (see the module docstring).

    Args:
        pred: the extracted answer (None: the response has none).
        gold: the gold answer string (``reward_model.ground_truth``).
        spec: the row's :class:`AnswerSpec`; None means ``auto``.
        checker: symbolic worker pool; None skips the symbolic step (exact and numeric only).
        timeout_s: hard limit of one symbolic check, seconds.
    """
    spec = spec or AnswerSpec()
    if pred is None:
        return MatchResult(False, "no_answer")
    kind = spec.type
    if kind == "auto":
        kind = "choice" if gold_letter(gold) else "letters" if gold_letter_set(gold) else "math"

    if kind == "choice":
        letter = gold_letter(gold)
        if letter is None:
            raise ValueError(f"choice gold must be one letter A-Z, got {gold!r}")
        pred_letter = parse_choice_letter(pred)
        if pred_letter is not None:
            return MatchResult(pred_letter == letter, "choice")
        index = ord(letter) - ord("A")
        if index >= len(spec.options):
            return MatchResult(False, "choice")
        pred_norm = normalize_answer(pred)
        other_options = {normalize_answer(text) for i, text in enumerate(spec.options) if i != index}
        if pred_norm in other_options and pred_norm != normalize_answer(spec.options[index]):
            return MatchResult(False, "option_text")
        by_text = _match_math(pred, spec.options[index], AnswerSpec("math"), checker, timeout_s)
        return MatchResult(by_text.correct, "option_text", by_text.timed_out)

    if kind == "letters":
        gold_set = gold_letter_set(gold) or (frozenset(gold_letter(gold)) if gold_letter(gold) else None)
        if gold_set is None:
            raise ValueError(f"letters gold must be letters separated by commas (e.g. 'A, C'), got {gold!r}")
        return MatchResult(parse_letter_set(pred) == gold_set, "letters")

    return _match_math(pred, gold, AnswerSpec(kind) if kind != spec.type else spec, checker, timeout_s)
