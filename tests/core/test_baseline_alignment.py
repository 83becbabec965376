"""Content-aware baseline (calibrl_ext/baseline_alignment.py, calibrl.baseline_alignment): identical sequences
reduce to the released position-wise baseline exactly, a one-token insertion realigns the rest, the banded LCS is a
true LCS (checked against the textbook DP), unaligned tokens carry no calibration term, and the aligned fraction is
reported."""

import random

import pytest
import torch

from calibrl_ext.baseline_alignment import lcs_alignment, window_alignment
from recipe.calibrl.calibration_fields import calibration_metrics, compute_calibration_fields

EXPERT = [11, 12, 13, 14, 15, 16]
INSERTED = 99


def _batch(rollouts, expert=EXPERT, width=8, seed=0):
    """One group: the rollouts (on-policy rows) then the expert row, padded to ``width``; random l^old."""
    rows = [*rollouts, expert]
    tokens = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    old = (torch.randn(len(rows), width, generator=torch.Generator().manual_seed(seed)) - 1) * mask
    is_expert = torch.tensor([False] * len(rollouts) + [True])
    return tokens, mask, old, is_expert


def _fields(tokens, mask, old, is_expert, alignment, beyond_expert="zero_baseline", window=3):
    n = len(is_expert)
    return compute_calibration_fields(
        old, mask, torch.ones(n), ["g"] * n, is_expert, torch.zeros(n, dtype=torch.bool), pass_threshold=0.1,
        beyond_expert=beyond_expert, alignment=alignment, alignment_window=window, responses=tokens,
    )  # fmt: skip


@pytest.mark.parametrize("alignment", ["lcs", "window"])
@pytest.mark.parametrize("beyond_expert", ["zero_baseline", "drop"])
def test_identical_sequences_reduce_to_position_wise_exactly(alignment, beyond_expert):
    """Rollouts equal to the expert's tokens: baseline and calibration mask equal the position-wise ones bit for
    bit, and every on-policy token is aligned."""
    tokens, mask, old, is_expert = _batch([EXPERT, EXPERT])
    by_position = _fields(tokens, mask, old, is_expert, "position", beyond_expert)
    by_content = _fields(tokens, mask, old, is_expert, alignment, beyond_expert)
    assert torch.equal(by_content.baseline, by_position.baseline)
    assert torch.equal(by_content.calibration_mask, by_position.calibration_mask)
    assert torch.equal(by_content.aligned, by_position.aligned)
    assert by_content.aligned[:2].sum() == 2 * len(EXPERT)


@pytest.mark.parametrize("alignment", ["lcs", "window"])
def test_one_token_insertion_realigns_the_rest(alignment):
    """A rollout with one extra token at position 2: tokens before it keep their positions, the inserted token is
    unaligned (no calibration term, b = 0), every later token t is compared with expert token t - 1 (by position
    it would be compared with expert token t, an unrelated one)."""
    rollout = EXPERT[:2] + [INSERTED] + EXPERT[2:]
    tokens, mask, old, is_expert = _batch([rollout])
    fields = _fields(tokens, mask, old, is_expert, alignment)
    expert_lp = old[1]
    expected = torch.cat([expert_lp[:2], torch.zeros(1), expert_lp[2:6], torch.zeros(1)])
    assert torch.equal(fields.baseline[0], expected)
    assert fields.calibration_mask[0].tolist() == [1, 1, 0, 1, 1, 1, 1, 0]
    assert fields.calibration_mask[1].sum() == 0  # the expert row never carries the term
    position = _fields(tokens, mask, old, is_expert, "position")
    assert not torch.equal(position.baseline[0, 3:7], expected[3:7])


def test_aligned_fraction_metric():
    """calibrl/baseline_aligned_fraction = aligned on-policy tokens / on-policy tokens of groups with an expert:
    one identical rollout (6/6) and one with an insertion (6/7) -> 12/13; by position the inserted rollout's last
    token is past the expert's end -> 12/13 as well, but with the baseline of unrelated tokens."""
    rollout = EXPERT[:2] + [INSERTED] + EXPERT[2:]
    tokens, mask, old, is_expert = _batch([EXPERT, rollout])
    for alignment in ("lcs", "position"):
        fields = _fields(tokens, mask, old, is_expert, alignment)
        n = len(is_expert)
        metrics = calibration_metrics(fields, old, torch.rand(n, 8), mask, is_expert, torch.zeros(n, dtype=torch.bool),
                                      torch.zeros(n, dtype=torch.bool), 1, 1)  # fmt: skip
        assert metrics["calibrl/baseline_aligned_fraction"] == pytest.approx(12 / 13)


def _textbook_lcs_length(a, b):
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def _pairs(row):
    return [(t, j) for t, j in enumerate(row.tolist()) if j >= 0]


def test_banded_lcs_is_a_longest_common_subsequence():
    """On 200 random pairs (a 3-letter alphabet: many ties), batched with different lengths: the aligned pairs hold
    equal tokens, strictly increase on both sides, and number LCS(a, b) when the band covers the sequences; with a
    band of 2 they stay within |t - j| <= 2."""
    rng = random.Random(0)
    seqs = [([rng.randint(1, 3) for _ in range(rng.randint(0, 14))], [rng.randint(1, 3) for _ in range(rng.randint(0, 14))])
            for _ in range(200)]  # fmt: skip

    def padded(column):
        out = torch.zeros(len(seqs), 15, dtype=torch.long)
        for i, pair in enumerate(seqs):
            out[i, : len(pair[column])] = torch.tensor(pair[column], dtype=torch.long)
        return out, torch.tensor([len(pair[column]) for pair in seqs])

    (a, la), (b, lb) = padded(0), padded(1)
    for band in (15, 2):
        alignment = lcs_alignment(a, la, b, lb, band)
        for (x, y), row in zip(seqs, alignment):
            pairs = _pairs(row)
            assert all(x[t] == y[j] and abs(t - j) <= band for t, j in pairs)
            assert all(p[0] < q[0] and p[1] < q[1] for p, q in zip(pairs, pairs[1:]))
            if band == 15:
                assert len(pairs) == _textbook_lcs_length(x, y), (x, y)


def test_window_alignment_takes_the_nearest_same_token():
    """window: each rollout token goes to the nearest expert position with its id within the radius (the earlier on
    a tie), or stays unaligned."""
    a = torch.tensor([[5, 7, 5, 9]])
    b = torch.tensor([[7, 5, 8, 5, 5]])
    assert window_alignment(a, torch.tensor([4]), b, torch.tensor([5]), 1)[0].tolist() == [1, 0, 1, -1]
    assert window_alignment(a, torch.tensor([4]), b, torch.tensor([5]), 0)[0].tolist() == [-1, -1, -1, -1]


def test_content_alignment_needs_token_ids():
    tokens, mask, old, is_expert = _batch([EXPERT])
    with pytest.raises(ValueError, match="responses"):
        compute_calibration_fields(old, mask, torch.ones(2), ["g", "g"], is_expert, torch.zeros(2, dtype=torch.bool),
                                   0.1, "zero_baseline", alignment="lcs")  # fmt: skip
