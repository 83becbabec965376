"""The main job's embedded default: CalibRL on CPU, end to end, in a couple of minutes.

``bash examples/run_cpu_demo.sh`` (what ``make demo`` runs) calls this module. It

1. builds the embedded demo dataset with ``data_prep/build_parquet.py`` (skipped when it exists): by default the
   study's learnable task, the ``shape_colour`` kind (name the colour of the shape drawn; ``--task reasoning``: the
   four reasoning kinds);
2. builds a tiny random Qwen2.5-VL (cached under ``tiny_models/``) and warm-starts it on the demo's expert solutions
   (:mod:`calibrl_ext.warm_start`, cached) so that rewards vary within groups and CalibRL has a signal to act on;
3. runs the CalibRL recipe (``python -m recipe.calibrl.main_calibrl``) through the CPU backend for ``--steps`` steps,
   validating before the first and after the last, logging with verl's ``file`` logger to ``<out>/metrics.jsonl``;
4. prints a short summary per step (reward, on-policy entropy, calibration loss, expert pass rate), the validation
   accuracy before RL (``trainer.val_before_train``) and after the last step, and writes ``<out>/curves.png``
   (on-policy entropy, training reward and validation accuracy against step).

The default task is the one of the study's presets (``COLOUR_TASK`` of recipe/calibrl/study/presets.py:
warm start 800 steps, rollouts and validation sampled at temperature 1.3, 4 samples per validation prompt); the
rise it shows is measured in docs/study.md. It is a tiny model on a toy task: the numbers say nothing about the
method at scale (docs/cpu_dry_run.md).
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from calibrl_ext.cpu_backend.launcher import VerlRun, is_finite_number, read_metrics, run_verl
from calibrl_ext.cpu_backend.overrides import ROLLOUTS, VLLM_ROLLOUT_NAME, CpuRunShape
from calibrl_ext.warm_start import DEFAULT_STEPS as DEFAULT_WARM_START_STEPS
from recipe.calibrl.study.presets import COLOUR_TASK, PRESETS
from recipe.calibrl.study.runner import validation_overrides

REPO_ROOT = Path(__file__).resolve().parents[2]
#: The demo's figure under ``--out``.
CURVES_FILE = "curves.png"

#: Per-step metrics the summary shows, with their column titles.
SUMMARY_COLUMNS = (
    ("critic/score/mean", "reward"),
    ("actor/entropy", "entropy(on-policy)"),
    ("actor/calibration_loss", "calibration loss"),
    ("actor/pg_loss", "pg loss"),
    ("calibrl/expert_pass_rate", "expert pass"),
    ("timing_s/step", "step s"),
)

#: The demo's run shape, shared by both tasks: small enough for 2 CPU cores, large enough for real groups
#: (n rollouts + 1 expert).
DEMO_OVERRIDES = (
    "data.train_batch_size=4",
    "actor_rollout_ref.rollout.n=4",
    "actor_rollout_ref.actor.ppo_mini_batch_size=4",
    "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=4",
    "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=4",
    "actor_rollout_ref.actor.optim.lr=1e-4",
    "trainer.val_before_train=True",  # the pre-RL accuracy the summary compares with
    "data.seed=0",  # the validation subset (val_max_samples) and prompt order are drawn from it: same every run
    # Sampling seed (verl's default is 42): the study's seed 0, so the demo's run is the quick preset's calibrl run of
    # seed 0 (docs/study.md) and prints the numbers measured there.
    "actor_rollout_ref.rollout.seed=0",
    "calibrl.schedule_seed=0",
    "trainer.save_freq=-1",
    "trainer.project_name=calibrl_cpu_demo",
    "trainer.experiment_name=cpu_demo",
)


@dataclass(frozen=True)
class DemoTask:
    """What ``--task`` selects: the demo data's kinds, the warm start and the task's own run settings.

    Attributes:
        kinds: ``--demo-kinds`` of the data build (``()`` = the generator's default four reasoning kinds).
        warm_start_steps: optimizer steps of the warm start (calibrl_ext.warm_start).
        steps: default of ``--steps``.
        overrides: the task's Hydra overrides (lengths, temperatures, validation size), after DEMO_OVERRIDES.
    """

    kinds: tuple[str, ...]
    warm_start_steps: int
    steps: int
    overrides: tuple[str, ...]


#: ``--task`` values. ``colour`` (default) is the study's learnable task with its settings (COLOUR_TASK);
#: ``reasoning`` is the four reasoning kinds with greedy validation, where the tiny model shows no rise.
DEMO_TASKS: dict[str, DemoTask] = {
    "colour": DemoTask(
        kinds=COLOUR_TASK["data_kinds"],
        warm_start_steps=COLOUR_TASK["warm_start_steps"],
        steps=PRESETS["quick"].steps,  # the budget whose rise docs/study.md measures
        overrides=(
            f"data.max_prompt_length={COLOUR_TASK['max_prompt_length']}",
            f"data.max_response_length={COLOUR_TASK['max_response_length']}",
            f"data.val_max_samples={COLOUR_TASK['val_max_samples']}",
            f"actor_rollout_ref.rollout.temperature={COLOUR_TASK['rollout_temperature']}",
            *validation_overrides(COLOUR_TASK["val_temperature"], COLOUR_TASK["val_n"]),
        ),
    ),
    "reasoning": DemoTask(
        kinds=(),
        warm_start_steps=DEFAULT_WARM_START_STEPS,
        steps=3,
        overrides=(
            "data.max_prompt_length=256",
            "data.max_response_length=128",  # the reasoning kinds' expert solutions are 58-101 tiny-tokenizer tokens
            "data.val_max_samples=16",
            *validation_overrides(0.0, 1),
        ),
    ),
}


def demo_data_dir(kinds: tuple[str, ...] = ()) -> str:
    """Default folder of the demo data: ``data/demo`` for the default kinds, ``data/demo-<kind>-...`` otherwise (one
    folder per kind list, so a build of other kinds never passes for this one)."""
    return "data/demo" if not kinds else "data/demo-" + "-".join(kinds)


def validation_before_after(metrics_path: Path) -> tuple[float, float] | None:
    """(validation accuracy before RL, after the last step): the mean over data sources of ``val-core/*/acc/mean@n``
    at the first and the last validated step; None unless the run validated at two steps at least."""
    from recipe.calibrl.study.metrics import run_curves

    val_acc = run_curves(read_metrics(metrics_path))["val_acc"]
    if len(val_acc) < 2:
        return None
    steps = sorted(val_acc)
    return val_acc[steps[0]], val_acc[steps[-1]]


def plot_curves(metrics_path: Path, path: Path) -> Path:
    """Write a PNG of one run's on-policy entropy, training reward and validation accuracy against step."""
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    from recipe.calibrl.study.metrics import CURVE_TITLES, CURVES, run_curves

    curves = run_curves(read_metrics(metrics_path))
    figure, axes = plt.subplots(1, len(CURVES), figsize=(4.2 * len(CURVES), 3.4), squeeze=False)
    for ax, name in zip(axes[0], CURVES):
        points = curves[name]
        ax.plot(sorted(points), [points[s] for s in sorted(points)], marker="o", markersize=3)
        ax.set_title(CURVE_TITLES[name], fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    figure.suptitle(f"{metrics_path}", fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def build_demo_data(data_dir: Path, kinds: tuple[str, ...] = (), experts_per_prompt: int = 1) -> None:
    """Build the demo parquet files into ``data_dir`` unless they are there.

    ``kinds``: ``--demo-kinds`` (() = the generator's default kinds). With ``experts_per_prompt`` > 1 they are built
    with that many experts per prompt (``--demo-experts K --max-experts K``: the same prompts and ``expert_solution``
    as the default build, plus the ``expert_solutions`` list column), and rebuilt when an existing build lacks that
    column.
    """
    train, val = data_dir / "train.parquet", data_dir / "val.parquet"
    if train.exists() and val.exists():
        import pyarrow.parquet as pq

        if experts_per_prompt == 1 or "expert_solutions" in pq.read_schema(train).names:
            return
    command = [sys.executable, str(REPO_ROOT / "data_prep" / "build_parquet.py"), "--out", str(data_dir)]
    if kinds:
        command += ["--demo-kinds", ",".join(kinds)]
    if experts_per_prompt > 1:
        command += ["--demo-experts", str(experts_per_prompt), "--max-experts", str(experts_per_prompt)]
    subprocess.run(command, check=True, cwd=REPO_ROOT)


def prepare_model(data_dir: Path, warm_start: bool, variant: str = "default", steps: int | None = None) -> Path:
    """The tiny Qwen2.5-VL (``variant="vllm"``: head sizes vLLM's CPU attention accepts), warm-started on the
    data's expert solutions when ``warm_start`` is set (``steps`` optimizer steps; None: the warm start's
    default)."""
    from calibrl_ext.tiny_models import cached_tiny_model

    model = cached_tiny_model("qwen2_5_vl", variant=variant)
    if not warm_start:
        return model
    from calibrl_ext.warm_start import DEFAULT_STEPS
    from calibrl_ext.warm_start import warm_start as run_warm_start

    return run_warm_start(model, data_dir / "train.parquet", steps=DEFAULT_STEPS if steps is None else steps)


def format_demo_summary(run: VerlRun) -> str:
    """One line per training step with the SUMMARY_COLUMNS, then the validation accuracies."""
    by_step = run.by_step()
    steps = run.steps()
    titles = ["step", *(title for _, title in SUMMARY_COLUMNS)]
    lines = ["  ".join(f"{t:>18}" for t in titles)]
    for step in steps:
        row = [f"{step:>18}"]
        for key, _ in SUMMARY_COLUMNS:
            value = by_step[step].get(key)
            row.append(f"{value:>18.4g}" if is_finite_number(value) else f"{'-':>18}")
        lines.append("  ".join(row))
    validation = {k: v for data in by_step.values() for k, v in data.items() if k.startswith("val-core/")}
    for key in sorted(validation):
        if "/acc/mean@" in key:
            lines.append(f"validation {key}: {validation[key]:.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/cpu_demo", help="run folder (metrics.jsonl, log, checkpoints)")
    parser.add_argument(
        "--task",
        default="colour",
        choices=sorted(DEMO_TASKS),
        help="colour (default): name the colour of the shape drawn, the study's learnable task; reasoning: the four "
        "reasoning kinds (counting, bar charts, angles, clocks), where a tiny model shows no rise",
    )
    parser.add_argument(
        "--data-dir", default=None, help="demo parquet folder, built if missing (default: data/demo-shape_colour for "
        "the colour task, data/demo for reasoning)"
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="training steps (default: 16 for colour, 3 for reasoning); "
        "validation runs before the first and after the last"
    )
    parser.add_argument("--timeout", type=float, default=900.0, help="wall-clock limit of the verl run, seconds")
    parser.add_argument("--no-warm-start", action="store_true", help="train the random tiny model as is")
    parser.add_argument(
        "--rollout",
        default="hf",
        choices=ROLLOUTS,
        help="rollout backend: hf (default) or vllm (verl's vLLM server; run with .venv-vllm/bin/python, which "
        "`ROLLOUT=vllm make demo` does)",
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for the recipe (they win)")
    args = parser.parse_args(argv)

    if args.rollout == VLLM_ROLLOUT_NAME:
        import importlib.util

        if importlib.util.find_spec("vllm") is None:
            parser.error(
                "--rollout vllm needs the vLLM-on-CPU environment: run `ROLLOUT=vllm make demo`, or build it with "
                "`bash scripts/bootstrap_vllm_venv.sh` and use .venv-vllm/bin/python"
            )
    task = DEMO_TASKS[args.task]
    steps = task.steps if args.steps is None else args.steps
    if steps < 1:
        parser.error(f"--steps must be >= 1, got {steps}")
    out = Path(args.out).resolve()
    data_dir = Path(args.data_dir or demo_data_dir(task.kinds)).resolve()
    build_demo_data(data_dir, kinds=task.kinds)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")  # warm-start progress on stderr
    variant = "vllm" if args.rollout == VLLM_ROLLOUT_NAME else "default"
    model = prepare_model(data_dir, warm_start=not args.no_warm_start, variant=variant, steps=task.warm_start_steps)
    overrides = [
        f"data.train_files={data_dir / 'train.parquet'}",
        f"data.val_files={data_dir / 'val.parquet'}",
        f"actor_rollout_ref.model.path={model}",
        f"trainer.total_training_steps={steps}",
        f"trainer.test_freq={steps}",
        f"trainer.default_local_dir={out / 'checkpoints'}",
        *DEMO_OVERRIDES,
        *task.overrides,
        *args.overrides,
    ]
    print(
        f"cpu_demo: CalibRL on CPU, task {args.task}, {steps} steps, rollout {args.rollout}, model {model}, "
        f"data {data_dir}",
        flush=True,
    )
    run = run_verl(
        overrides,
        metrics_path=out / "metrics.jsonl",
        entry_module="recipe.calibrl.main_calibrl",
        timeout_s=args.timeout,
        cwd=REPO_ROOT,
        shape=CpuRunShape(rollout=args.rollout),
    )
    print(format_demo_summary(run))
    print(f"metrics: {run.metrics_path}\nlog: {run.log_path}")
    if run.metrics_path.exists() and run.metrics_path.stat().st_size:
        before_after = validation_before_after(run.metrics_path)
        if before_after is not None:
            before, after = before_after
            print(f"validation accuracy: before RL {before:.3f} -> after {steps} steps {after:.3f} "
                  f"({after - before:+.3f})")  # fmt: skip
        print(f"curves: {plot_curves(run.metrics_path, out / CURVES_FILE)}")
    if not run.ok:
        print(run.log_tail(4000), file=sys.stderr)
        print(f"cpu_demo: the run {'timed out' if run.timed_out else f'failed (exit {run.returncode})'}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
