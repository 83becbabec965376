"""Per-benchmark accuracy and the official aggregates that rules can compute.

Input: :class:`EvalRow` objects, one per benchmark row, holding the 0/1 accuracy of each sampled
response (``samples[k]`` for session k = 0 … n-1; a session verl never returned counts as wrong).

- every benchmark: ``acc`` = mean over rows of the mean over the n samples (verl's ``mean@n``);
  ``pass@n`` = share of rows with at least one correct sample (n > 1 only);
- MathVerse: accuracy per ``problem_version``; ``vision_mean`` = mean over the five versions of the
  ``testmini`` config (the leaderboard's "overall"); ``text_only`` in the ``testmini_text_only`` entry
  (its rows carry that split, so they never join testmini's ``acc``);
- LogicVista: ``acc`` over every record (the official denominator, 448 with the empty-gold record),
  ``acc_scorable`` without the empty-gold record;
- We-Math (``evaluation/four_dimensional_metrics.py`` and ``accuracy.py``): per composite problem (one
  ``ID``, its step rows ``<s>steps_1..s`` and ``<s>steps_multi``): IK = some step wrong and composite
  wrong; IG = all steps right, composite wrong; CM strict/loose = composite right and all/any steps right;
  RM strict/loose = composite right and any/all steps wrong; score = (N - 0.5·IG - RM - IK) / N with N
  the number of complete composites (525 in testmini); IK/IG/CM rates over N, RM rate = RM/(RM+CM);
  S1 = accuracy over all step rows, S2/S3 = accuracy of two-/three-step composites;
- DynaMath: ``average_case`` = accuracy over all (seed, variant) rows; ``worst_case`` = share of seeds
  whose every variant is right; ``robustness`` RR = worst/average.

With n > 1 every aggregate is computed per session k and averaged over k (so it is the mean@n of
the aggregate), except ``pass@n``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from statistics import mean
from typing import Any

from calibrl_ext.eval.adapters import LOGICVISTA_EMPTY_GOLD, MATHVERSE_TEXT_ONLY, MATHVERSE_VISION_VERSIONS, WEMATH_KEY


@dataclass
class EvalRow:
    """One benchmark row with its sampled accuracies.

    Attributes:
        eval_id: ``<data_source>/<record id>``.
        benchmark: adapter name (``mathvista`` …).
        split: split label.
        data_source: verl data_source.
        group: official group keys (see :mod:`calibrl_ext.eval.schema`).
        samples: session index -> accuracy (0.0/1.0) of that sampled response.
    """

    eval_id: str
    benchmark: str
    split: str
    data_source: str
    group: dict[str, Any] = field(default_factory=dict)
    samples: dict[int, float] = field(default_factory=dict)

    def sample(self, session: int) -> float:
        """Accuracy of session ``session``; a missing session (never generated or failed) is wrong."""
        return self.samples.get(session, 0.0)


def _per_session(rows: list[EvalRow], n: int, fn) -> dict[str, float]:
    """Average over sessions 0..n-1 of ``fn(accuracy_of(row))`` -> dict of metrics."""
    per_session = [fn(lambda row, k=k: row.sample(k)) for k in range(n)]
    keys = per_session[0].keys() if per_session else []
    return {key: mean(result[key] for result in per_session) for key in keys}


def accuracy_metrics(rows: list[EvalRow], n: int) -> dict[str, float]:
    """``acc`` (mean@n) and, for n > 1, ``pass@n``."""
    if not rows:
        return {}
    metrics = {"acc": mean(mean(row.sample(k) for k in range(n)) for row in rows)}
    if n > 1:
        metrics[f"pass@{n}"] = mean(max(row.sample(k) for k in range(n)) for row in rows)
    return metrics


def mathverse_metrics(rows: list[EvalRow], n: int) -> dict[str, float]:
    """Accuracy per version (``version/<name>``), ``vision_mean`` and ``text_only``."""
    by_version: dict[str, list[EvalRow]] = defaultdict(list)
    for row in rows:
        by_version[row.group.get("problem_version", "")].append(row)
    metrics: dict[str, float] = {}
    for version in MATHVERSE_VISION_VERSIONS + (MATHVERSE_TEXT_ONLY,):
        if by_version.get(version):
            metrics[f"version/{version}"] = accuracy_metrics(by_version[version], n)["acc"]
    vision = [metrics[f"version/{v}"] for v in MATHVERSE_VISION_VERSIONS if f"version/{v}" in metrics]
    if vision:
        metrics["vision_mean"] = mean(vision)
        metrics["vision_versions"] = float(len(vision))
    if f"version/{MATHVERSE_TEXT_ONLY}" in metrics:
        metrics["text_only"] = metrics[f"version/{MATHVERSE_TEXT_ONLY}"]
    return metrics


@dataclass
class WeMathComposite:
    """One We-Math composite problem: its step results and the composite's result (one session)."""

    steps: list[bool]
    composite: bool


def wemath_composites(rows: list[EvalRow], accuracy) -> tuple[list[WeMathComposite], int]:
    """Composites with every step row and the ``multi`` row present, and how many were incomplete."""
    by_id: dict[str, dict[str, EvalRow]] = defaultdict(dict)
    for row in rows:
        by_id[str(row.group.get("ID"))][str(row.group.get("key"))] = row
    complete, incomplete = [], 0
    for problem_id, keyed in by_id.items():
        step_counts = {int(m.group(1)) for key in keyed if (m := WEMATH_KEY.match(key))}
        if len(step_counts) != 1:
            incomplete += 1
            continue
        steps = step_counts.pop()
        needed = [f"{steps}steps_{i}" for i in range(1, steps + 1)] + [f"{steps}steps_multi"]
        if any(key not in keyed for key in needed):
            incomplete += 1
            continue
        complete.append(
            WeMathComposite(
                steps=[accuracy(keyed[key]) == 1.0 for key in needed[:-1]],
                composite=accuracy(keyed[needed[-1]]) == 1.0,
            )
        )
    return complete, incomplete


def wemath_four_dimensional(composites: list[WeMathComposite], step_rows_accuracy: list[float]) -> dict[str, float]:
    """We-Math's four-dimensional metrics and scores for one session (see the module docstring)."""
    total = len(composites)
    if total == 0:
        return {}
    ik = sum(not all(c.steps) and not c.composite for c in composites)
    ig = sum(all(c.steps) and not c.composite for c in composites)
    cm_strict = sum(all(c.steps) and c.composite for c in composites)
    cm_loose = sum(any(c.steps) and c.composite for c in composites)
    rm_strict = sum(not all(c.steps) and c.composite for c in composites)
    rm_loose = sum(not any(c.steps) and c.composite for c in composites)
    two = [c.composite for c in composites if len(c.steps) == 2]
    three = [c.composite for c in composites if len(c.steps) == 3]
    metrics = {
        "score_strict": (total - 0.5 * ig - rm_strict - ik) / total,
        "score_loose": (total - 0.5 * ig - rm_loose - ik) / total,
        "IK": ik / total,
        "IG": ig / total,
        "CM_strict": cm_strict / total,
        "CM_loose": cm_loose / total,
        "RM_strict": rm_strict / (rm_strict + cm_strict) if rm_strict + cm_strict else 0.0,
        "RM_loose": rm_loose / (rm_loose + cm_loose) if rm_loose + cm_loose else 0.0,
        "S1": mean(step_rows_accuracy) if step_rows_accuracy else 0.0,
    }
    if two:
        metrics["S2"] = mean(two)
    if three:
        metrics["S3"] = mean(three)
    return metrics


def wemath_metrics(rows: list[EvalRow], n: int) -> dict[str, float]:
    """We-Math strict/loose scores, IK/IG/CM/RM and S1/S2/S3, mean over sessions; ``composites`` counts."""
    step_rows = [row for row in rows if re.match(r"^[23]steps_\d$", str(row.group.get("key")))]

    def one_session(accuracy):
        composites, _ = wemath_composites(rows, accuracy)
        return wemath_four_dimensional(composites, [accuracy(row) for row in step_rows])

    metrics = _per_session(rows, n, one_session)
    complete, incomplete = wemath_composites(rows, lambda row: row.sample(0))
    metrics["composites"] = float(len(complete))
    metrics["incomplete_composites"] = float(incomplete)
    return metrics


def dynamath_metrics(rows: list[EvalRow], n: int) -> dict[str, float]:
    """DynaMath ``average_case``, ``worst_case``, ``robustness`` (RR), and the seed/variant counts."""
    by_seed: dict[str, list[EvalRow]] = defaultdict(list)
    for row in rows:
        by_seed[str(row.group.get("seed"))].append(row)

    def one_session(accuracy):
        average = mean(accuracy(row) for row in rows)
        worst = mean(float(all(accuracy(row) == 1.0 for row in seed_rows)) for seed_rows in by_seed.values())
        return {"average_case": average, "worst_case": worst}

    metrics = _per_session(rows, n, one_session) if rows else {}
    if metrics:
        metrics["robustness"] = metrics["worst_case"] / metrics["average_case"] if metrics["average_case"] else 0.0
        metrics["seeds"] = float(len(by_seed))
        metrics["variants_per_seed"] = mean(len(seed_rows) for seed_rows in by_seed.values())
    return metrics


def logicvista_metrics(rows: list[EvalRow], n: int) -> dict[str, float]:
    """LogicVista's two denominators: ``acc`` (from :func:`accuracy_metrics`) counts every record, as the
    official accuracy does (448, the record with an empty gold included, never right); ``acc_scorable``
    leaves the empty-gold rows out; ``empty_gold_rows`` counts them."""
    scorable = [row for row in rows if not row.group.get(LOGICVISTA_EMPTY_GOLD)]
    metrics = {"empty_gold_rows": float(len(rows) - len(scorable))}
    if scorable:
        metrics["acc_scorable"] = accuracy_metrics(scorable, n)["acc"]
    return metrics


#: Aggregates per benchmark, on top of :func:`accuracy_metrics`.
AGGREGATES = {"mathverse": mathverse_metrics, "wemath": wemath_metrics, "dynamath": dynamath_metrics,
              "logicvista": logicvista_metrics}  # fmt: skip


def benchmark_metrics(benchmark: str, rows: list[EvalRow], n: int) -> dict[str, float]:
    """Every metric of one benchmark entry: accuracy, pass@n and its official aggregates."""
    metrics = accuracy_metrics(rows, n)
    if benchmark in AGGREGATES:
        metrics.update(AGGREGATES[benchmark](rows, n))
    return metrics
