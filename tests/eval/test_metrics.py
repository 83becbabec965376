"""Aggregate metrics against values computed by hand."""

import pytest

from calibrl_ext.eval.metrics import (
    EvalRow,
    accuracy_metrics,
    dynamath_metrics,
    mathverse_metrics,
    wemath_metrics,
)


def row(eval_id, *accs, benchmark="b", **group):
    return EvalRow(eval_id, benchmark, "s", "ds", group=group, samples=dict(enumerate(accs)))


def test_accuracy_mean_at_n_and_pass_at_n():
    """acc = mean over rows of the row's mean over n samples; pass@n = rows with any correct sample.
    Rows: (1,0), (0,0), (1,1) -> acc = (0.5 + 0 + 1)/3 = 0.5; pass@2 = 2/3."""
    rows = [row("a", 1, 0), row("b", 0, 0), row("c", 1, 1)]
    assert accuracy_metrics(rows, 2) == pytest.approx({"acc": 0.5, "pass@2": 2 / 3})


def test_missing_samples_count_as_wrong():
    """A row with one of its two samples missing (or none at all) counts the missing ones as 0."""
    rows = [EvalRow("a", "b", "s", "ds", samples={0: 1.0}), EvalRow("b", "b", "s", "ds")]
    assert accuracy_metrics(rows, 2)["acc"] == pytest.approx(0.25)


def test_mathverse_per_version_and_vision_mean():
    """Per-version accuracy; vision_mean averages the versions of the testmini config (not Text Only).
    Text Dominant 1/2, Vision Only 0/1, Text Lite 1/1 -> vision_mean = (0.5 + 0 + 1)/3 = 0.5."""
    rows = [
        row("1", 1, problem_version="Text Dominant"),
        row("2", 0, problem_version="Text Dominant"),
        row("3", 0, problem_version="Vision Only"),
        row("4", 1, problem_version="Text Lite"),
        row("5", 1, problem_version="Text Only"),
    ]
    metrics = mathverse_metrics(rows, 1)
    assert metrics["version/Text Dominant"] == 0.5
    assert metrics["vision_mean"] == pytest.approx(0.5)
    assert metrics["vision_versions"] == 3
    assert metrics["text_only"] == 1.0


def _wemath_problem(problem_id, steps, step_accs, composite_acc):
    prefix = f"{steps}steps"
    rows = [row(f"{problem_id}-{i}", acc, ID=problem_id, key=f"{prefix}_{i}") for i, acc in enumerate(step_accs, start=1)]
    return rows + [row(f"{problem_id}-m", composite_acc, ID=problem_id, key=f"{prefix}_multi")]


def test_wemath_four_dimensional_metrics_by_hand():
    """Five composites, one per case:
    P1 steps (1,1) multi 1 -> CM strict & loose;    P2 steps (1,0) multi 1 -> RM strict, CM loose;
    P3 steps (0,0) multi 1 -> RM strict & loose;    P4 steps (1,1,1) multi 0 -> IG;
    P5 steps (0,1,1) multi 0 -> IK.
    N = 5: IK = IG = 1/5; CM_strict = 1/5, CM_loose = 2/5; RM_strict = 2/(2+1), RM_loose = 1/(1+2);
    score_strict = (5 - 0.5 - 2 - 1)/5 = 0.3; score_loose = (5 - 0.5 - 1 - 1)/5 = 0.5;
    S1 = correct step rows 2+1+0+3+2 = 8 of 12; S2 = 3/3 two-step composites right; S3 = 0/2."""
    rows = (
        _wemath_problem("P1", 2, [1, 1], 1)
        + _wemath_problem("P2", 2, [1, 0], 1)
        + _wemath_problem("P3", 2, [0, 0], 1)
        + _wemath_problem("P4", 3, [1, 1, 1], 0)
        + _wemath_problem("P5", 3, [0, 1, 1], 0)
    )
    metrics = wemath_metrics(rows, 1)
    expected = {
        "IK": 0.2, "IG": 0.2, "CM_strict": 0.2, "CM_loose": 0.4, "RM_strict": 2 / 3, "RM_loose": 1 / 3,
        "score_strict": 0.3, "score_loose": 0.5, "S1": 8 / 12, "S2": 1.0, "S3": 0.0,
        "composites": 5, "incomplete_composites": 0,
    }  # fmt: skip
    assert metrics == pytest.approx(expected)


def test_wemath_incomplete_composite_is_counted_not_scored():
    """A composite missing a step row is excluded from N and reported as incomplete."""
    rows = _wemath_problem("P1", 2, [1, 1], 1) + [row("Q-1", 1, ID="Q", key="2steps_1"), row("Q-m", 1, ID="Q", key="2steps_multi")]
    metrics = wemath_metrics(rows, 1)
    assert (metrics["composites"], metrics["incomplete_composites"]) == (1, 1)
    assert metrics["score_strict"] == 1.0


def test_dynamath_average_worst_case_and_robustness():
    """Seed 1: variants (1,1,1) -> robust; seed 2: (1,0,1) -> not. average = 5/6, worst = 1/2, RR = 0.6."""
    rows = [row(f"1/{v}", acc, seed="1", variant=v) for v, acc in enumerate([1, 1, 1])]
    rows += [row(f"2/{v}", acc, seed="2", variant=v) for v, acc in enumerate([1, 0, 1])]
    metrics = dynamath_metrics(rows, 1)
    assert metrics["average_case"] == pytest.approx(5 / 6)
    assert metrics["worst_case"] == pytest.approx(0.5)
    assert metrics["robustness"] == pytest.approx(0.6)
    assert (metrics["seeds"], metrics["variants_per_seed"]) == (2, 3)


def test_aggregates_with_several_samples_are_means_over_sessions():
    """n = 2: worst-case is computed per sample index and averaged. Seed 1 variants: sample 0 (1,1),
    sample 1 (1,0) -> worst-case 1 then 0 -> 0.5; average-case (1+1+1+0)/4 = 0.75."""
    rows = [row("1/0", 1, 1, seed="1", variant=0), row("1/1", 1, 0, seed="1", variant=1)]
    metrics = dynamath_metrics(rows, 2)
    assert metrics["worst_case"] == pytest.approx(0.5)
    assert metrics["average_case"] == pytest.approx(0.75)


def test_logicvista_official_denominator_counts_the_empty_gold_record(built):
    """LogicVista's official accuracy divides by every record (448, the one with an empty gold included): the
    fixture's 5 records, 4 answered right and the empty-gold one (never right) -> acc = 4/5 (official
    denominator); acc_scorable = 4/4 leaves it out; empty_gold_rows = 1."""
    from calibrl_ext.eval.metrics import benchmark_metrics
    from calibrl_ext.eval.results import load_parquet_rows

    (entry,) = load_parquet_rows([built["logicvista"][0].parquet]).values()
    for evaluated in entry.rows:
        evaluated.samples[0] = 0.0 if evaluated.group.get("empty_gold") else 1.0
    metrics = benchmark_metrics("logicvista", entry.rows, 1)
    assert len(entry.rows) == 5
    assert metrics["acc"] == pytest.approx(4 / 5) and metrics["acc_scorable"] == 1.0 and metrics["empty_gold_rows"] == 1
