"""A deterministic reward for the recipe's CPU end-to-end tests (a random tiny model never solves the demo tasks).

Expert solutions (they contain ``<answer>``) score 1.0 and pass; rollouts score one of 0, 0.25, 0.5, 0.75, 1.0
from a hash of their text (0 fails, the others pass the 0.1 threshold), so groups almost always have varied
on-policy rewards, non-zero advantages and both pass signs: the calibration term is exercised in all four cases of
METHOD §3.
"""

import zlib


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs):
    if "<answer>" in solution_str:
        return {"score": 1.0, "acc": 1.0, "format": 0.0}
    score = (zlib.crc32(solution_str.encode()) % 5) / 4
    return {"score": score, "acc": score, "format": 0.0}
