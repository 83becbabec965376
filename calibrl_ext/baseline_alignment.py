"""Content-aware expert baseline: which expert token each rollout token is compared with
(``calibrl.baseline_alignment``; docs/adaptive.md, "Content-aware baseline").

The released baseline compares rollout token t with expert token t (``position``): once a rollout's wording drifts
from the expert's by one token, every later position is compared with an unrelated expert token. The alternatives
match token ids:

- ``lcs``: a longest common subsequence of the two token-id sequences, computed in a diagonal band
  ``|i - j| <= window`` (exact LCS whenever the optimal alignment drifts by at most ``window`` tokens; cost
  O(T * window) per row, vectorised over rows). Rollout tokens matched by the LCS are aligned with their expert
  token; the others are unaligned.
- ``window``: rollout token t is aligned with the nearest expert position j, |j - t| <= window, holding the same
  token id (ties: the earlier j). Cheaper, not monotone.

Unaligned rollout tokens get NO calibration term (there is no comparable expert log-prob for them); in
``position`` mode nothing changes (b_t = 0 past the expert's length, as released). No verl import.
"""

from __future__ import annotations

import numpy as np
import torch

#: ``calibrl.baseline_alignment`` values.
ALIGNMENTS = ("position", "lcs", "window")

#: "Unreachable" DP value: far below any LCS length, and still negative after the +1 of a match.
_NEG = -(1 << 30)

#: Rows of one banded-LCS chunk are capped so the traceback table holds at most this many int32 cells (256 MiB).
MAX_TABLE_CELLS = 1 << 26


def position_alignment(lengths: torch.Tensor, expert_lengths: torch.Tensor, width: int) -> torch.Tensor:
    """``[R, width]``: t where t < min(length, expert length), else -1 (the released by-position comparison)."""
    t = torch.arange(width).unsqueeze(0)
    inside = (t < lengths.unsqueeze(-1)) & (t < expert_lengths.unsqueeze(-1))
    return torch.where(inside, t, torch.full_like(t, -1))


def window_alignment(
    tokens: torch.Tensor, lengths: torch.Tensor, expert_tokens: torch.Tensor, expert_lengths: torch.Tensor, window: int
) -> torch.Tensor:
    """Nearest same-id expert position within ``window`` of each rollout position.

    Args:
        tokens: ``[R, T]`` rollout token ids (right-padded), ``lengths`` ``[R]``.
        expert_tokens: ``[R, Te]`` the expert token ids of each row's group, ``expert_lengths`` ``[R]``.
        window: search radius (>= 0).

    Returns:
        ``[R, T]`` long: expert position, or -1 (unaligned / padding).
    """
    rows, width = tokens.shape
    t = torch.arange(width).unsqueeze(0).expand(rows, width)
    index = torch.full((rows, width), -1, dtype=torch.long)
    live = t < lengths.unsqueeze(-1)
    if expert_tokens.shape[1] == 0:
        return index
    # offsets by distance, the earlier position first: 0, -1, +1, -2, +2, ...
    for offset in [0] + [o for d in range(1, window + 1) for o in (-d, d)]:
        j = t + offset
        valid = live & (j >= 0) & (j < expert_lengths.unsqueeze(-1)) & (index < 0)
        same = torch.gather(expert_tokens, 1, j.clamp(0, expert_tokens.shape[1] - 1)) == tokens
        index = torch.where(valid & same, j, index)
    return index


def _lcs_chunk(a: np.ndarray, a_len: np.ndarray, b: np.ndarray, b_len: np.ndarray, window: int) -> np.ndarray:
    """Banded LCS alignment of R row pairs (numpy; see :func:`lcs_alignment`)."""
    rows, width = a.shape
    b_width = b.shape[1]
    diagonals = 2 * window + 1
    offsets = np.arange(diagonals) - window  # cell (i, d) is DP cell (i, j = i + offsets[d])
    row_ids = np.arange(rows)
    # table[i, r, d] = LCS(a_r[:i], b_r[:j]) over band paths; _NEG outside the band or the expert's length
    table = np.full((width + 1, rows, diagonals), _NEG, dtype=np.int32)
    table[0] = np.where((offsets >= 0)[None] & (offsets[None] <= b_len[:, None]), 0, _NEG)
    neg_column = np.full((rows, 1), _NEG, dtype=np.int32)
    b_safe = b if b_width else np.zeros((rows, 1), dtype=a.dtype)
    for i in range(1, width + 1):
        j = i + offsets
        valid = (j >= 0)[None] & (j[None] <= b_len[:, None])
        previous = table[i - 1]
        match = (j >= 1)[None] & (b_safe[:, np.clip(j - 1, 0, max(b_width - 1, 0))] == a[:, i - 1 : i])
        best = np.maximum(previous + match, np.concatenate([previous[:, 1:], neg_column], axis=1))
        best = np.where((j == 0)[None], 0, best)
        best = np.where(valid, best, _NEG)
        # the left neighbour (i, j - 1) is d - 1 of this row: a running max along the band
        table[i] = np.where(valid, np.maximum.accumulate(best, axis=1), _NEG)

    # traceback from the last rollout row that has a band cell, at its best expert prefix
    i = np.minimum(a_len, b_len + window)
    last = table[i, row_ids]
    d = last.argmax(axis=1)
    j = i + offsets[d]
    alignment = np.full((rows, width), -1, dtype=np.int64)
    while True:
        active = (i > 0) & (j > 0)
        if not active.any():
            break
        r, ii, jj, dd = row_ids[active], i[active], j[active], d[active]
        value = table[ii, r, dd]
        diag = table[ii - 1, r, dd]
        up = np.where(dd + 1 < diagonals, table[ii - 1, r, np.minimum(dd + 1, diagonals - 1)], _NEG)
        left = np.where(dd > 0, table[ii, r, np.maximum(dd - 1, 0)], _NEG)
        matched = (a[r, ii - 1] == b_safe[r, np.clip(jj - 1, 0, max(b_width - 1, 0))]) & (diag == value - 1)
        go_up = ~matched & (up == value)
        go_left = ~matched & ~go_up & (left == value)
        skip_both = ~matched & ~go_up & ~go_left  # value == diag without a match (the band cut "up" off)
        alignment[r[matched], ii[matched] - 1] = jj[matched] - 1
        i[active] = ii - (matched | go_up | skip_both)
        j[active] = jj - (matched | go_left | skip_both)
        d[active] = j[active] - i[active] + window
    return alignment


def lcs_alignment(
    tokens: torch.Tensor, lengths: torch.Tensor, expert_tokens: torch.Tensor, expert_lengths: torch.Tensor, window: int
) -> torch.Tensor:
    """Longest-common-subsequence alignment of each rollout row with its expert, in the band |i - j| <= window.

    The DP table is kept (int32, ``[T + 1, R, 2 * window + 1]``) for the traceback; rows are processed in chunks
    of at most :data:`MAX_TABLE_CELLS` cells. Among LCS alignments the traceback prefers matching the later tokens
    diagonally, so identical sequences align position by position.

    Args:
        tokens: ``[R, T]`` rollout token ids (right-padded), ``lengths`` ``[R]``.
        expert_tokens: ``[R, Te]`` each row's expert token ids, ``expert_lengths`` ``[R]``.
        window: band half-width (>= 0): the largest drift between rollout and expert positions an alignment may have.

    Returns:
        ``[R, T]`` long: the aligned expert position, or -1.
    """
    rows, width = tokens.shape
    result = torch.full((rows, width), -1, dtype=torch.long)
    if rows == 0 or width == 0:
        return result
    a = tokens.cpu().numpy()
    b = expert_tokens.cpu().numpy()
    a_len = lengths.cpu().numpy().astype(np.int64)
    b_len = expert_lengths.cpu().numpy().astype(np.int64)
    chunk = max(1, MAX_TABLE_CELLS // ((width + 1) * (2 * window + 1)))
    for start in range(0, rows, chunk):
        part = slice(start, start + chunk)
        result[part] = torch.from_numpy(_lcs_chunk(a[part], a_len[part].copy(), b[part], b_len[part], window))
    return result


def align_rows(
    tokens: torch.Tensor,
    lengths: torch.Tensor,
    expert_tokens: torch.Tensor,
    expert_lengths: torch.Tensor,
    method: str,
    window: int,
) -> torch.Tensor:
    """``[R, T]`` expert position aligned with each rollout token (-1: unaligned) by ``method`` (:data:`ALIGNMENTS`)."""
    if method == "position":
        return position_alignment(lengths, expert_lengths, tokens.shape[1])
    if method == "lcs":
        return lcs_alignment(tokens, lengths, expert_tokens, expert_lengths, window)
    if method == "window":
        return window_alignment(tokens, lengths, expert_tokens, expert_lengths, window)
    raise ValueError(f"baseline alignment must be one of {ALIGNMENTS}, got {method!r}")


def aligned_expert_baseline(
    old_log_probs: torch.Tensor,
    response_mask: torch.Tensor,
    responses: torch.Tensor,
    expert_row: torch.Tensor,
    is_expert: torch.Tensor,
    method: str,
    window: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """b_t from the aligned expert token, and where a rollout token is aligned.

    Args:
        old_log_probs, response_mask, responses: ``[N, T]`` (token ids in ``responses``).
        expert_row: ``[N]`` index of the expert row of each row's group, -1 without an expert.
        is_expert: ``[N]`` bool.
        method, window: see :func:`align_rows`.

    Returns:
        ``(baseline [N, T], aligned [N, T] bool)``: on-policy rows of groups with an expert get the expert's l^old
        at the aligned position (0 where unaligned); an expert row gets its own l^old as by position (it carries no
        term); rows without an expert get 0. ``aligned`` is False on expert rows and rows without an expert.
    """
    n, width = old_log_probs.shape
    valid = response_mask.bool()
    lengths = valid.sum(-1)
    rows = ((expert_row >= 0) & ~is_expert.bool()).nonzero().squeeze(-1)
    safe = torch.where(valid, old_log_probs.detach(), torch.zeros_like(old_log_probs))
    experts = is_expert.bool()
    baseline = torch.where(experts.unsqueeze(-1), safe, torch.zeros_like(safe))
    aligned = torch.zeros((n, width), dtype=torch.bool)
    if rows.numel() == 0:
        return baseline, aligned
    source = expert_row[rows]
    index = align_rows(responses[rows], lengths[rows], responses[source], lengths[source], method, window)
    hit = (index >= 0) & valid[rows]
    gathered = torch.gather(safe[source], 1, index.clamp(min=0))
    baseline[rows] = torch.where(hit, gathered, torch.zeros_like(gathered))
    aligned[rows] = hit
    return baseline, aligned
