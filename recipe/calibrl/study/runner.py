"""Execute a study's runs through the real recipe on the CPU backend, resumably, one at a time.

Each run is ``python -m recipe.calibrl.main_calibrl`` started by :func:`calibrl_ext.cpu_backend.launcher.run_verl`
(the launcher the e2e tests and ``make demo`` use): its own process session, a wall-clock limit, and every process
of the session terminated afterwards. A run is finished when its ``metrics.jsonl`` is complete
(:func:`metrics_complete`); finished runs are skipped, so an interrupted study resumes where it stopped (the
launcher replaces the metrics file of a run it starts, so a half-written one never passes for finished).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from calibrl_ext.cpu_backend.launcher import read_metrics, run_verl
from recipe.calibrl.study.grid import RunSpec
from recipe.calibrl.study.metrics import final_validation_keys
from recipe.calibrl.study.presets import StudyPreset

#: Module each run executes (the recipe's entry point).
RECIPE_ENTRY = "recipe.calibrl.main_calibrl"
#: Per-run files under ``<out>/runs/<run name>/``.
METRICS_FILE = "metrics.jsonl"
RUN_RECORD_FILE = "run.json"


@dataclass(frozen=True)
class RunAssets:
    """What every run shares: the data folder (``train.parquet``, ``val.parquet``) and the model path."""

    data_dir: Path
    model: Path


def metrics_complete(path: Path, steps: int) -> bool:
    """True when ``path`` holds training step ``steps`` and a validation accuracy logged at that step.

    verl's file logger writes a step's training metrics, then (on a validation step) its validation metrics, so a
    run killed after its last update but before its last validation is incomplete. A missing, empty or malformed
    file is incomplete.
    """
    try:
        records = read_metrics(path)
    except ValueError:
        return False
    trained = any(r["step"] == steps and "training/global_step" in r["data"] for r in records)
    validated = any(r["step"] == steps and final_validation_keys(r["data"]) for r in records)
    return trained and validated


def shared_overrides(preset: StudyPreset, assets: RunAssets) -> list[str]:
    """Overrides every run of the preset gets (data, model, budget, run shape), before the run's own."""
    micro = preset.micro_batch_size
    return [
        f"data.train_files={assets.data_dir / 'train.parquet'}",
        f"data.val_files={assets.data_dir / 'val.parquet'}",
        f"actor_rollout_ref.model.path={assets.model}",
        f"data.seed={preset.data_seed}",  # one validation subset and prompt order for every run (presets.py)
        f"data.train_batch_size={preset.train_batch_size}",
        f"data.max_prompt_length={preset.max_prompt_length}",
        f"data.max_response_length={preset.max_response_length}",
        f"data.val_max_samples={preset.val_max_samples}",
        f"actor_rollout_ref.rollout.n={preset.rollout_n}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={preset.train_batch_size}",
        f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={micro}",
        f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={micro}",
        f"actor_rollout_ref.actor.optim.lr={preset.learning_rate}",
        f"actor_rollout_ref.rollout.temperature={preset.rollout_temperature}",
        f"trainer.total_training_steps={preset.steps}",
        f"trainer.test_freq={preset.val_every}",
        f"trainer.val_before_train={preset.val_before_train}",
        *validation_overrides(preset.val_temperature, preset.val_n),
        "trainer.save_freq=-1",  # no checkpoints: the study only reads metrics
        "trainer.project_name=calibrl_study",
    ]


def validation_overrides(temperature: float, n: int) -> list[str]:
    """``val_kwargs`` overrides: greedy (temperature 0) or ``n`` samples per prompt at ``temperature``."""
    kwargs = "actor_rollout_ref.rollout.val_kwargs"
    return [f"{kwargs}.do_sample={temperature > 0}", f"{kwargs}.temperature={temperature}", f"{kwargs}.n={n}"]


def run_overrides(preset: StudyPreset, assets: RunAssets, run: RunSpec, run_dir: Path) -> list[str]:
    return [
        *shared_overrides(preset, assets),
        *run.overrides(),
        f"trainer.experiment_name={run.name}",
        f"trainer.default_local_dir={run_dir / 'checkpoints'}",
        *preset.extra_overrides,
    ]


@dataclass
class RunOutcome:
    """One run's result in this invocation: ``status`` is ``skipped`` (already complete), ``ok`` or ``failed``."""

    run: RunSpec
    status: str
    wall_s: float = 0.0
    detail: str = ""


def _format_duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def execute_runs(
    preset: StudyPreset,
    runs: list[RunSpec],
    assets: RunAssets,
    runs_root: Path,
    *,
    log: Callable[[str], None] = print,
    cwd: Path | None = None,
) -> list[RunOutcome]:
    """Run every incomplete run in order, printing ``run i/N`` and an ETA; a failed run is reported and the study
    goes on (a resumed study retries it)."""
    outcomes: list[RunOutcome] = []
    executed_walls: list[float] = []
    pending = [run for run in runs if not metrics_complete(runs_root / run.name / METRICS_FILE, preset.steps)]
    log(f"[study] {len(runs)} runs, {len(runs) - len(pending)} already complete, {len(pending)} to run")
    done_pending = 0
    for index, run in enumerate(runs, start=1):
        run_dir = runs_root / run.name
        metrics_path = run_dir / METRICS_FILE
        if run not in pending:
            log(f"[study] run {index}/{len(runs)} {run.name}: complete, skipped")
            outcomes.append(RunOutcome(run, "skipped"))
            continue
        log(f"[study] run {index}/{len(runs)} {run.name}: started (log: {metrics_path}.log)")
        started = time.time()
        result = run_verl(
            run_overrides(preset, assets, run, run_dir),
            metrics_path=metrics_path,
            entry_module=RECIPE_ENTRY,
            timeout_s=preset.run_timeout_s,
            cwd=cwd,
        )
        complete = metrics_complete(metrics_path, preset.steps)
        status = "ok" if result.ok and complete else "failed"
        if result.timed_out:
            detail = f"timed out after {preset.run_timeout_s:.0f} s (study field run_timeout_s)"
        elif not result.ok:
            detail = f"exit code {result.returncode}; end of log:\n{result.log_tail(2000)}"
        elif not complete:
            detail = f"exited 0 but {metrics_path} lacks step {preset.steps} or its validation accuracy"
        else:
            detail = ""
        if result.leftover_pids:  # the launcher kills its session; anything left is a bug to surface
            detail += f" processes left after cleanup: {result.leftover_pids}"
        record = {
            "run": run.name,
            "status": status,
            "returncode": result.returncode,
            "timed_out": result.timed_out,
            "wall_s": result.wall_s,
            "started_unix": started,
            "leftover_pids": result.leftover_pids,
            "overrides": result.command[3:],
        }
        (run_dir / RUN_RECORD_FILE).write_text(json.dumps(record, indent=1) + "\n")
        outcomes.append(RunOutcome(run, status, result.wall_s, detail.strip()))
        executed_walls.append(result.wall_s)
        done_pending += 1
        remaining = len(pending) - done_pending
        eta = sum(executed_walls) / len(executed_walls) * remaining
        log(
            f"[study] run {index}/{len(runs)} {run.name}: {status} in {_format_duration(result.wall_s)}; "
            f"{remaining} to go, ETA {_format_duration(eta)}" + (f"\n  {detail}" if detail else "")
        )
    return outcomes
