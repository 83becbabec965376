"""Benchmark adapters: one record in the benchmark's own schema -> one :class:`BenchmarkRow`.

Each adapter knows its benchmark's schema traps (listed per benchmark in ``docs/evaluation.md``) and raises :class:`calibrl_ext.data.RowRejected` with a reason and a message for a
record it cannot turn into a scorable row. The build (:mod:`calibrl_ext.eval.build`) turns the row into
a verl parquet row (images, prompt template, answer spec check).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from calibrl_ext.answers import AnswerSpec, gold_letter, gold_letter_set, normalize_answer, parse_number
from calibrl_ext.data.rejects import RejectReason, RowRejected
from calibrl_ext.eval.sources import field as first_field

#: Question text of a MathVerse "Vision Only" row, whose ``question`` is empty because the whole problem
#: is drawn in the image (BENCHMARKS.md §2; lmms-eval PR #657 fixed a judge that got the empty string).
VISION_ONLY_QUESTION = "Answer the question shown in the image."

#: DynaMath's official rule for float answers: correct if |pred - gt| <= 0.001.
DYNAMATH_FLOAT_TOLERANCE = 0.001

#: Choices of --mathvision-placeholders: what happens to MATH-V's ``<image1>``…``<image7>`` markers,
#: which name parts of ONE composite image. ``keep`` leaves the text as the benchmark wrote it.
PLACEHOLDER_POLICIES = ("keep", "strip")

_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass
class AdapterContext:
    """Settings an adapter reads (one per build).

    Attributes:
        split: the split label written to ``extra_info.split`` and used in ``data_source``.
        use_official_query: build the question from the benchmark's official query field when it has
            one (MathVista ``query``, MathVerse ``query_cot``) instead of question + choices.
        mathvision_placeholders: ``keep`` or ``strip`` (see :data:`PLACEHOLDER_POLICIES`).
    """

    split: str
    use_official_query: bool = False
    mathvision_placeholders: str = "keep"


@dataclass
class BenchmarkRow:
    """A record turned into what the parquet needs (before images and the prompt template).

    Attributes:
        record_id: the benchmark's unique id for the record.
        data_source: verl data_source (benchmark + split [+ version]).
        question: the question text the prompt template receives (choices appended where the
            benchmark keeps them outside the question).
        images: raw image values (path, ``{bytes, path}`` struct, bytes), in placeholder order.
        gold: the gold answer the reward compares with (a letter for choice questions).
        spec: how the gold is compared.
        group: keys the official aggregates need (JSON-serialisable).
        metadata: fields kept for breakdowns (JSON-serialisable).
        question_for_eval: full question for a judge (MathVerse ``question_for_eval``).
        raw_answer: the gold exactly as the benchmark stores it.
        split: the row's split label when it differs from the build's (MathVerse Text Only rows belong to the
            ``<split>_text_only`` config, scored on their own); empty = the build's split.
        keep_empty_gold: the gold is empty and the row is kept anyway, because the official accuracy counts
            it in its denominator (LogicVista); the reward scores every answer to it 0.
    """

    record_id: str
    data_source: str
    question: str
    images: list[Any]
    gold: str
    spec: AnswerSpec
    group: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    question_for_eval: str = ""
    raw_answer: str = ""
    split: str = ""
    keep_empty_gold: bool = False


# --------------------------------------------------------------------------------------------------
# Helpers


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _require(record: dict, *names: str, what: str) -> Any:
    value = first_field(record, *names)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowRejected(RejectReason.MALFORMED_ROW, f"{what}: field {' / '.join(names)} is missing or empty")
    return value


def _record_id(record: dict, *names: str) -> str:
    value = first_field(record, *names, "_key")
    return str(value) if value is not None else str(record.get("_index"))


def _gold_text(value: Any, benchmark: str) -> str:
    """The gold as a string; numbers print without a spurious ``.0`` (AMC stores 142.0)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise RowRejected(RejectReason.MISSING_GROUND_TRUTH, f"{benchmark} record has no answer")
    if isinstance(value, float):
        if math.isnan(value):
            raise RowRejected(RejectReason.MISSING_GROUND_TRUTH, f"{benchmark} record has a NaN answer")
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, (int, str)):
        return str(value).strip()
    raise RowRejected(RejectReason.BAD_GROUND_TRUTH, f"{benchmark} answer of type {type(value).__name__}: {value!r}")


def _image_value(record: dict, *names: str) -> Any:
    """The first non-empty image field (embedded ``decoded_image`` before a path)."""
    for name in names:
        value = record.get(name)
        if value is None or value == "" or (isinstance(value, dict) and not value.get("bytes") and not value.get("path")):
            continue
        return value
    return None


def format_choices(options: list[str]) -> str:
    """The choices block appended to a question: ``Choices:\\n(A) …\\n(B) …``."""
    return "Choices:\n" + "\n".join(f"({_LETTERS[i]}) {text}" for i, text in enumerate(options))


def letters_only(options: list[str]) -> bool:
    """Options that are just their own letters (``["A", "B", …]``): the real choices are in the image."""
    return bool(options) and [str(option).strip() for option in options] == list(_LETTERS[: len(options)])


_CHOICE_MARKER = re.compile(r"(?:choices|choice|options|option)\s*[:：]", re.IGNORECASE)
_INLINE_OPTION = re.compile(r"(?:^|(?<=\s))\(?([A-H])\s*[\)\.:：]\s*")


def parse_inline_choices(question: str) -> list[str] | None:
    """Option texts written inside a question, in letter order, or None.

    Reads ``Choices: (A) yes (B) no`` (DynaMath), ``Choices:\\nA:30°\\nB:60°`` (MathVerse) and a line
    ``A) 10 B) 12 C) 14`` (LogicVista). The letters must run A, B, C, … without gaps.
    """
    marker = _CHOICE_MARKER.search(question)
    if marker is not None:
        block = question[marker.end() :]
    else:
        line_start = re.search(r"(?:^|\n)\s*\(?A[\)\.:]", question)
        if line_start is None:
            return None
        block = question[line_start.start() :]
    matches = list(_INLINE_OPTION.finditer(block))
    if len(matches) < 2:
        return None
    letters = [m.group(1) for m in matches]
    if letters != list(_LETTERS[: len(letters)]):
        return None
    options = []
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(block)
        options.append(block[match.end() : end].strip())
    return options if all(options) else None


def _choice_spec(gold: str, options: list[str] | None) -> AnswerSpec:
    """A choice spec; option texts kept only when they cover the gold letter and are not bare letters."""
    letter = gold_letter(gold)
    if options and letter and ord(letter) - ord("A") < len(options) and not letters_only(options):
        return AnswerSpec("choice", options=tuple(str(option) for option in options))
    return AnswerSpec("choice")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.strip().lower()).strip("_")


def _json_safe(value: Any) -> Any:
    """Drop values json cannot hold (embedded images, bytes) from metadata."""
    try:
        json.dumps(value)
        return value
    except TypeError:
        return None


# --------------------------------------------------------------------------------------------------
# Adapters


def adapt_mathvista(record: dict, ctx: AdapterContext) -> BenchmarkRow:
    """MathVista (GitHub ``data/testmini.json`` dict keyed by pid, or HF parquet with ``decoded_image``).

    Traps: a multiple-choice gold is the option TEXT (turned into its letter + the option texts); float
    answers carry ``precision`` (decimal places, maybe typed float on HF); ``unit`` is not part of the
    answer; the ``test`` split has no public answers (rejected).
    """
    pid = _record_id(record, "pid")
    metadata = record.get("metadata") or {}
    split = _text(metadata.get("split")) or ctx.split
    question = _text(record.get("question"))
    choices = [str(choice) for choice in (record.get("choices") or [])]
    answer = record.get("answer")
    if answer is None or _text(answer).strip() == "":
        raise RowRejected(
            RejectReason.MISSING_GROUND_TRUTH,
            f"MathVista pid {pid} has no answer (the test split's answers are not public; use testmini)",
        )
    raw_answer = _text(answer).strip()
    question_type = _text(record.get("question_type"))
    answer_type = _text(record.get("answer_type"))
    if question_type == "multi_choice":
        if not choices:
            raise RowRejected(RejectReason.BAD_GROUND_TRUTH, f"MathVista pid {pid} is multi_choice without choices")
        if raw_answer in choices:
            index = choices.index(raw_answer)
        else:
            matches = [i for i, choice in enumerate(choices) if normalize_answer(choice) == normalize_answer(raw_answer)]
            if len(matches) != 1:
                raise RowRejected(
                    RejectReason.BAD_GROUND_TRUTH, f"MathVista pid {pid}: gold {raw_answer!r} is not one of the choices {choices}"
                )
            index = matches[0]
        gold = _LETTERS[index]
        spec = AnswerSpec("choice", options=tuple(choices))
    elif answer_type == "integer":
        gold, spec = raw_answer, AnswerSpec("integer")
    elif answer_type == "float":
        precision = record.get("precision")
        if isinstance(precision, float) and not math.isnan(precision):
            precision = int(precision)
        elif not isinstance(precision, int):
            precision = None
        gold, spec = raw_answer, AnswerSpec("float", precision=precision)
    elif answer_type == "list":
        gold, spec = raw_answer, AnswerSpec("math")
    else:
        gold, spec = raw_answer, AnswerSpec("text")
    if ctx.use_official_query and _text(record.get("query")).strip():
        prompt_question = _text(record["query"])
    else:
        prompt_question = question + ("\n" + format_choices(choices) if choices else "")
    image = _image_value(record, "decoded_image", "image")
    if image is None:
        raise RowRejected(RejectReason.NO_IMAGES, f"MathVista pid {pid} has neither decoded_image nor image")
    kept = {key: _json_safe(metadata.get(key)) for key in ("language", "source", "category", "task", "context", "grade", "skills")}
    return BenchmarkRow(
        record_id=pid,
        data_source=f"mathvista_{split}",
        question=prompt_question,
        images=[image],
        gold=gold,
        spec=spec,
        metadata={"question_type": question_type, "answer_type": answer_type, "unit": record.get("unit"), **kept},
        question_for_eval=question,
        raw_answer=raw_answer,
    )


#: MathVerse versions in the ``testmini`` config (the leaderboard "overall" is their mean).
MATHVERSE_VISION_VERSIONS = ("Text Dominant", "Text Lite", "Vision Intensive", "Vision Dominant", "Vision Only")
MATHVERSE_TEXT_ONLY = "Text Only"
#: Suffix of the config that holds the Text Only version (HF ``testmini_text_only``, GitHub
#: ``testmini_text_only.json``); officially it is scored on its own, apart from the five testmini versions.
MATHVERSE_TEXT_ONLY_SUFFIX = "_text_only"


def mathverse_split(split: str, version: str) -> str:
    """The config a MathVerse row is scored in: ``<split>_text_only`` for Text Only rows, else ``split``."""
    if version == MATHVERSE_TEXT_ONLY and not split.endswith(MATHVERSE_TEXT_ONLY_SUFFIX):
        return split + MATHVERSE_TEXT_ONLY_SUFFIX
    return split


def adapt_mathverse(record: dict, ctx: AdapterContext) -> BenchmarkRow:
    """MathVerse (``testmini.json`` list / HF parquet; ``testmini_text_only`` too).

    Traps: ``question`` is EMPTY for Vision Only (the prompt then says the question is in the image and
    ``question_for_eval`` is kept for judges); ``problem_index`` is shared by the 5 versions, the unique
    id is ``sample_index``; ``question_type`` uses a hyphen (``multi-choice``); options may be inline in
    the question or only in the image; golds may carry units and degree marks (handled by the reward's
    normalisation); Text Only rows (the ``testmini_text_only`` config, built as its own file) are scored on
    their own, so they get the split ``<split>_text_only`` (:func:`mathverse_split`) even when built with
    the default ``--split testmini``, and never join testmini's ``acc`` or row count.
    """
    sample_index = _text(_require(record, "sample_index", what="MathVerse record"))
    version = _text(_require(record, "problem_version", what=f"MathVerse sample {sample_index}"))
    if version not in MATHVERSE_VISION_VERSIONS + (MATHVERSE_TEXT_ONLY,):
        raise RowRejected(RejectReason.MALFORMED_ROW, f"MathVerse sample {sample_index}: unknown problem_version {version!r}")
    question = _text(record.get("question"))
    if ctx.use_official_query and _text(first_field(record, "query_cot", "query_wo")).strip():
        prompt_question = _text(first_field(record, "query_cot", "query_wo"))
    elif question.strip():
        prompt_question = question
    elif version == MATHVERSE_TEXT_ONLY:
        raise RowRejected(RejectReason.EMPTY_QUESTION, f"MathVerse sample {sample_index}: Text Only row with an empty question")
    else:
        prompt_question = VISION_ONLY_QUESTION
    image = _image_value(record, "decoded_image", "image")
    if image is None and version != MATHVERSE_TEXT_ONLY:
        raise RowRejected(RejectReason.NO_IMAGES, f"MathVerse sample {sample_index} ({version}) has no image")
    gold = _gold_text(record.get("answer"), "MathVerse")
    if _text(record.get("question_type")).replace("_", "-") == "multi-choice" and gold_letter(gold):
        spec = _choice_spec(gold, parse_inline_choices(question))
    else:
        spec = AnswerSpec("math")
    metadata = record.get("metadata") or {}
    split = mathverse_split(ctx.split, version)
    return BenchmarkRow(
        record_id=sample_index,
        data_source=f"mathverse_{split}/{_slug(version)}",
        question=prompt_question,
        images=[] if image is None else [image],
        gold=gold,
        spec=spec,
        group={"problem_index": _text(record.get("problem_index")), "problem_version": version},
        metadata={key: _json_safe(metadata.get(key)) for key in ("subject", "subfield", "source")},
        question_for_eval=_text(record.get("question_for_eval")) or question,
        raw_answer=gold,
        split=split,
    )


def adapt_mathvision(record: dict, ctx: AdapterContext) -> BenchmarkRow:
    """MATH-V / MathVision (``data/test.jsonl`` / ``testmini.jsonl`` + ``images/``, or HF parquet).

    Traps: a choice gold is a letter with the texts in ``options`` (a letter answer must also accept
    the option text, as the official scorer does); options may be bare letters (choices drawn in the
    image); some records have ``options == []`` and a letter gold (id 59); ``<image1>``…``<image7>``
    placeholders name parts of ONE composite image (kept or stripped, ``--mathvision-placeholders``).
    """
    record_id = _record_id(record, "id")
    question = _text(_require(record, "question", what=f"MATH-V id {record_id}"))
    if ctx.mathvision_placeholders == "strip":
        question = re.sub(r"\s*<image\d+>\s*", " ", question).strip()
    options = [str(option) for option in (record.get("options") or [])]
    gold = _gold_text(record.get("answer"), "MATH-V")
    if options and letters_only(options):
        prompt_question = question + "\nChoices: " + ", ".join(options)
    elif options:
        prompt_question = question + "\n" + format_choices(options)
    else:
        prompt_question = question
    spec = _choice_spec(gold, options) if gold_letter(gold) else AnswerSpec("math")
    image = _image_value(record, "decoded_image", "image")
    if image is None:
        raise RowRejected(RejectReason.NO_IMAGES, f"MATH-V id {record_id} has neither decoded_image nor image")
    split = _text(record.get("_split")) or ctx.split
    return BenchmarkRow(
        record_id=record_id,
        data_source=f"mathvision_{split}",
        question=prompt_question,
        images=[image],
        gold=gold,
        spec=spec,
        metadata={"subject": record.get("subject"), "level": record.get("level")},
        question_for_eval=question,
        raw_answer=gold,
    )


_WEMATH_OPTION = re.compile(r"^\s*([A-H])\s*[\.．:：]\s*(.*?)\s*$", re.DOTALL)


def parse_wemath_options(option: str) -> list[str] | None:
    """We-Math's ``option`` string (``"A. 300, 400;B. 400, 300; E. No correct answer"``) as texts in letter
    order, or None when the letters do not run A, B, C, …"""
    options = []
    for part in option.split(";"):
        if not part.strip():
            continue
        match = _WEMATH_OPTION.match(part)
        if match is None:
            return None
        if match.group(1) != _LETTERS[len(options)]:
            return None
        options.append(match.group(2).rstrip("."))
    return options if len(options) >= 2 else None


#: We-Math step keys: ``2steps_1``, ``2steps_2``, ``2steps_multi``, ``3steps_1`` … ``3steps_multi``.
WEMATH_KEY = re.compile(r"^([23])steps_(\d|multi)$")


def adapt_wemath(record: dict, ctx: AdapterContext) -> BenchmarkRow:
    """We-Math (``data/testmini.json`` list + ``data/<n>steps/image/*.png``, or HF parquet).

    Traps: ``ID`` is shared by a composite problem and its sub-problems (the unique key is ``ID`` +
    ``key``, or ``question number``; both kept for the four-dimensional metrics); ``option`` is ONE
    ``;``-separated string with irregular spacing.
    """
    problem_id = _text(_require(record, "ID", what="We-Math record"))
    key = _text(_require(record, "key", what=f"We-Math ID {problem_id}"))
    if not WEMATH_KEY.match(key):
        raise RowRejected(RejectReason.MALFORMED_ROW, f"We-Math ID {problem_id}: unknown key {key!r} (expected e.g. 2steps_1, 3steps_multi)")
    number = record.get("question number")
    record_id = str(number) if number is not None else f"{problem_id}|{key}"
    question = _text(_require(record, "question", what=f"We-Math ID {problem_id} {key}"))
    gold = _gold_text(record.get("answer"), "We-Math")
    option = _text(record.get("option"))
    options = parse_wemath_options(option) if option else None
    if options:
        prompt_question = question + "\n" + format_choices(options)
    elif option:
        prompt_question = question + "\nOptions: " + option
    else:
        prompt_question = question
    image = _image_value(record, "decoded_image", "image", "image_path")
    if image is None:
        raise RowRejected(RejectReason.NO_IMAGES, f"We-Math ID {problem_id} {key} has no image")
    return BenchmarkRow(
        record_id=record_id,
        data_source=f"wemath_{ctx.split}",
        question=prompt_question,
        images=[image],
        gold=gold,
        spec=_choice_spec(gold, options),
        group={"ID": problem_id, "key": key},
        metadata={"knowledge_concept": record.get("knowledge concept")},
        question_for_eval=question,
        raw_answer=gold,
    )


#: ``group`` key of the LogicVista row whose gold is empty (in the official denominator, never right).
LOGICVISTA_EMPTY_GOLD = "empty_gold"


def adapt_logicvista(record: dict, ctx: AdapterContext) -> BenchmarkRow:
    """LogicVista (``data/dataset.json`` dict keyed ``v1_<i>`` + ``data/images/``).

    Traps: multi-letter golds (``"A, C"``: the letter SET must match exactly); one numeric gold
    (``"3"``, choices numbered 1-5); one EMPTY gold: the official accuracy keeps it in its denominator
    (448 records), so it is kept as a row no answer can match (``group.empty_gold``; the reward scores it
    0) and the report gives both ``acc`` (official denominator) and ``acc_scorable`` (rows with a gold);
    options mostly inside the image; the capability field is ``capability`` in older files and
    ``broad_capability``/``specific_capability`` at HEAD.
    """
    record_id = _record_id(record, "id")
    answer = _text(record.get("answer")).strip()
    question = _text(_require(record, "question", what=f"LogicVista {record_id}"))
    group: dict[str, Any] = {}
    if not answer:
        spec = AnswerSpec("text")
        group = {LOGICVISTA_EMPTY_GOLD: True}
    elif gold_letter_set(answer):
        spec = AnswerSpec("letters")
    elif gold_letter(answer):
        spec = _choice_spec(answer, parse_inline_choices(question))
    elif parse_number(normalize_answer(answer)) is not None:
        spec = AnswerSpec("integer" if float(parse_number(normalize_answer(answer))).is_integer() else "math")
    else:
        spec = AnswerSpec("text")
    image = _image_value(record, "decoded_image", "image", "imagename")
    if image is None:
        raise RowRejected(RejectReason.NO_IMAGES, f"LogicVista {record_id} has no imagename")
    capability = {
        key: _json_safe(record.get(key)) for key in ("capability", "broad_capability", "specific_capability") if key in record
    }
    return BenchmarkRow(
        record_id=record_id,
        data_source="logicvista" if ctx.split in ("", "test") else f"logicvista_{ctx.split}",
        question=question,
        images=[image],
        gold=answer,
        spec=spec,
        group=group,
        keep_empty_gold=not answer,
        metadata={"skill": _json_safe(record.get("skill")), **capability},
        question_for_eval=question,
        raw_answer=answer,
    )


_VARIANT_SPLIT = re.compile(r"variant(\d+)$")

#: DynaMath answer types the official scorer (``evaluation/opensource_json_eval.py``) sends to its last
#: branch, the gold as a substring of the answer: ``text``, and ``single answer`` and ``int``, which the
#: official generator writes too (the seed file lists them for seeds 465, 466, 477 and 480).
DYNAMATH_OTHER_ANSWER_TYPES = ("text", "single answer", "int")


def _is_whole_number(gold: str) -> bool:
    value = parse_number(normalize_answer(gold))
    return value is not None and float(value).is_integer()


def adapt_dynamath(record: dict, ctx: AdapterContext) -> BenchmarkRow:
    """DynaMath (GitHub seed ``dataset/dataset.json``; HF ``DynaMath_Sample`` splits sample_variant1..10).

    Traps: the gold field is ``ground_truth`` on HF and ``answer`` in the seed file; variants share
    ``id`` (the variant comes from the split name, the seed file is variant 0), and both are kept for
    the worst-case metric; float golds have 4 decimals and are scored within 0.001; choices are inline
    in the question; besides ``float``, ``multiple choice`` and ``text`` the generator writes
    ``single answer`` and ``int`` (see :data:`DYNAMATH_OTHER_ANSWER_TYPES`).
    """
    seed = _record_id(record, "id")
    variant_value = first_field(record, "variant")
    if variant_value is None:
        split_match = _VARIANT_SPLIT.search(_text(record.get("_split")))
        variant_value = int(split_match.group(1)) if split_match else 0
    variant = int(variant_value)
    answer = first_field(record, "ground_truth", "answer")
    if answer is None:
        raise RowRejected(
            RejectReason.MISSING_GROUND_TRUTH, f"DynaMath {seed} (variant {variant}) has neither ground_truth nor answer"
        )
    gold = _gold_text(answer, "DynaMath")
    question = _text(_require(record, "question", what=f"DynaMath {seed}"))
    answer_type = _text(record.get("answer_type")).strip().lower()
    if answer_type == "float":
        spec = AnswerSpec("float", tolerance=DYNAMATH_FLOAT_TOLERANCE)
    elif answer_type == "multiple choice":
        spec = _choice_spec(gold, parse_inline_choices(question))
    elif answer_type in DYNAMATH_OTHER_ANSWER_TYPES:
        # The official scorer's last branch (every type but float and multiple choice): the gold must appear
        # in the short answer. Ours: an integer gold compares numerically, any other by normalised equality.
        is_integer = answer_type == "int" and _is_whole_number(gold)
        spec = AnswerSpec("integer" if is_integer else "text")
    else:
        raise RowRejected(
            RejectReason.BAD_GROUND_TRUTH,
            f"DynaMath {seed}: unknown answer_type {answer_type!r} (known: float, multiple choice, "
            f"{', '.join(DYNAMATH_OTHER_ANSWER_TYPES)})",
        )
    image = _image_value(record, "decoded_image", "image")
    if image is None:
        raise RowRejected(RejectReason.NO_IMAGES, f"DynaMath {seed} (variant {variant}) has no image")
    return BenchmarkRow(
        record_id=f"{variant}/{seed}",
        data_source=f"dynamath_{ctx.split}",
        question=question,
        images=[image],
        gold=gold,
        spec=spec,
        group={"seed": seed, "variant": variant},
        metadata={"subject": record.get("subject"), "level": first_field(record, "knowledge_level", "level")},
        question_for_eval=question,
        raw_answer=gold,
    )


def adapt_math500(record: dict, ctx: AdapterContext) -> BenchmarkRow:
    """MATH-500 (HF ``HuggingFaceH4/MATH-500``: problem, answer, subject, level, unique_id). Text only."""
    record_id = _record_id(record, "unique_id")
    gold = _gold_text(record.get("answer"), "MATH-500")
    return BenchmarkRow(
        record_id=record_id,
        data_source="math500",
        question=_text(_require(record, "problem", what=f"MATH-500 {record_id}")),
        images=[],
        gold=gold,
        spec=AnswerSpec("math"),
        metadata={"subject": record.get("subject"), "level": record.get("level")},
        question_for_eval=_text(record.get("problem")),
        raw_answer=gold,
    )


def adapt_amc(record: dict, ctx: AdapterContext) -> BenchmarkRow:
    """AMC (HF ``AI-MO/aimo-validation-amc``: id, problem, answer, url). Text only.

    Trap: ``answer`` is typed float (``142.0``); it is written as ``142``.
    """
    record_id = _record_id(record, "id")
    gold = _gold_text(record.get("answer"), "AMC")
    return BenchmarkRow(
        record_id=record_id,
        data_source="amc" if ctx.split in ("", "train") else f"amc_{ctx.split}",
        question=_text(_require(record, "problem", what=f"AMC {record_id}")),
        images=[],
        gold=gold,
        spec=AnswerSpec("math"),
        metadata={"url": record.get("url")},
        question_for_eval=_text(record.get("problem")),
        raw_answer=_text(record.get("answer")),
    )


# --------------------------------------------------------------------------------------------------
# Registry


@dataclass(frozen=True)
class Benchmark:
    """One supported benchmark.

    Attributes:
        name: CLI name (``--benchmark``).
        title: name in reports.
        default_split: split label when ``--split`` is not given.
        adapter: record -> :class:`BenchmarkRow`.
        licence: licence summary, printed by the build (see docs/evaluation.md).
    """

    name: str
    title: str
    default_split: str
    adapter: Callable[[dict, AdapterContext], BenchmarkRow]
    licence: str


BENCHMARKS: dict[str, Benchmark] = {
    b.name: b
    for b in (
        Benchmark("mathvista", "MathVista", "testmini", adapt_mathvista,
                  "CC BY-SA 4.0 + terms: test use only, training on it is PROHIBITED; source images keep their copyright"),
        Benchmark("mathverse", "MathVerse", "testmini", adapt_mathverse, "MIT"),
        Benchmark("mathvision", "MathVision (MATH-V)", "test", adapt_mathvision, "MIT"),
        Benchmark("wemath", "We-Math", "testmini", adapt_wemath, "CC BY-NC 4.0 (non-commercial)"),
        Benchmark("logicvista", "LogicVista", "test", adapt_logicvista, "Apache-2.0"),
        Benchmark("dynamath", "DynaMath", "sample", adapt_dynamath, "MIT (GitHub) / Apache-2.0 (HF sample card)"),
        Benchmark("math500", "MATH-500", "test", adapt_math500, "not stated on the card; MATH itself is MIT"),
        Benchmark("amc", "AMC", "train", adapt_amc, "not stated on the card"),
    )
}  # fmt: skip
