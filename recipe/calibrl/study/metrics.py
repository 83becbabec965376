"""The study's figures of merit, read from one run's verl file-logger records (``metrics.jsonl``).

Metric names are those of recipe/calibrl/README.md's "Logged metrics" table and verl's own:

- on-policy entropy: ``calibrl/entropy_on_policy`` (the recipe's, every mode), else ``actor/entropy``;
- training reward: ``critic/score/mean`` (mean reward of the on-policy rows);
- validation accuracy: the mean over data sources of ``val-core/<source>/acc/mean@<n>`` (unweighted; the per-source
  values are kept too). ``<n>`` is ``actor_rollout_ref.rollout.val_kwargs.n``: 1 for greedy validation, more when
  the study validates on temperature-1 samples (presets.py, ``val_temperature``);
- step time: ``timing_s/step``.
"""

from __future__ import annotations

import re
import statistics
from typing import Any, Iterable

from calibrl_ext.cpu_backend.launcher import is_finite_number

#: Entropy keys, first present wins.
ENTROPY_KEYS = ("calibrl/entropy_on_policy", "actor/entropy")
REWARD_KEY = "critic/score/mean"
STEP_TIME_KEY = "timing_s/step"
VALIDATION_PREFIX = "val-core/"
#: verl names the mean over a prompt's ``val_kwargs.n`` responses ``mean@<n>``.
VALIDATION_SUFFIX = re.compile(r"/acc/mean@\d+$")
TRAINING_STEP_KEY = "training/global_step"

#: Curves of a run: name -> {step: value}. The order is the figure's panel order.
CURVES = ("entropy", "reward", "val_acc")
CURVE_TITLES = {
    "entropy": "on-policy entropy",
    "reward": "training reward (critic/score/mean)",
    "val_acc": "validation accuracy (val-core/*/acc/mean@n)",
    "step_time": "step time, s",
}


def final_validation_keys(data: dict[str, Any]) -> list[str]:
    """The ``val-core/<source>/acc/mean@<n>`` keys with a finite value in one step's metrics, sorted."""
    return sorted(
        key
        for key, value in data.items()
        if key.startswith(VALIDATION_PREFIX) and VALIDATION_SUFFIX.search(key) and is_finite_number(value)
    )


def merge_by_step(records: Iterable[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Records merged per step (verl logs a step's training and validation metrics as separate lines)."""
    merged: dict[int, dict[str, Any]] = {}
    for record in records:
        merged.setdefault(int(record["step"]), {}).update(record["data"])
    return dict(sorted(merged.items()))


def run_curves(records: Iterable[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """``{"entropy"|"reward"|"val_acc"|"step_time": {step: value}}`` plus ``"val/<source key>"`` per data source.

    Training curves hold the training steps; ``val_acc`` holds every validated step (step 0 or the first logged step
    is the pre-RL value when ``trainer.val_before_train`` is on). Non-finite values (verl writes NaN as null) are
    left out rather than plotted as zeros.
    """
    curves: dict[str, dict[int, float]] = {"entropy": {}, "reward": {}, "val_acc": {}, "step_time": {}}
    for step, data in merge_by_step(records).items():
        if TRAINING_STEP_KEY in data:
            entropy = next((data[k] for k in ENTROPY_KEYS if is_finite_number(data.get(k))), None)
            if entropy is not None:
                curves["entropy"][step] = float(entropy)
            if is_finite_number(data.get(REWARD_KEY)):
                curves["reward"][step] = float(data[REWARD_KEY])
            if is_finite_number(data.get(STEP_TIME_KEY)):
                curves["step_time"][step] = float(data[STEP_TIME_KEY])
        keys = final_validation_keys(data)
        if keys:
            curves["val_acc"][step] = statistics.fmean(float(data[k]) for k in keys)
            for key in keys:
                curves.setdefault(f"val/{key}", {})[step] = float(data[key])
    return curves


def mean_and_spread(values: list[float]) -> dict[str, Any]:
    """``{"mean", "std" (sample, None below 2 values), "min", "max", "n", "values"}`` of finite values."""
    values = [float(v) for v in values if is_finite_number(v)]
    if not values:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0, "values": []}
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) >= 2 else None,
        "min": min(values),
        "max": max(values),
        "n": len(values),
        "values": values,
    }
