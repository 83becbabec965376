"""A study's numbers, figure and table from its run folders (complete runs only; missing ones are listed).

Outputs under ``<out>``:

- ``results.json``: the preset, every complete run's curves (step -> value) and, per arm, every curve's mean and
  spread per step and the final figures with their per-seed values;
- ``study.png``: on-policy entropy, training reward and validation accuracy against step for each mode (mean line,
  band from the lowest to the highest seed up to 3 modes), each mode's entropy and validation accuracy minus
  released CalibRL's on the same seed per step, one bar chart per arm group (final validation accuracy, mean with
  sample-std error bars and every seed as a dot) and, below it, the same arms' paired difference with the released
  CalibRL arm (final validation accuracy minus its, seed by seed);
- ``table.md``: the final figures per arm, mean ± sample std over seeds, and each arm's final validation accuracy
  and its mean on-policy entropy over the second half of training minus the released CalibRL arm's on the same
  seed (paired: with the same seed both runs sample the same validation responses before training,
  calibrl_ext/cpu_backend/hf_server.py ``RequestSeeds``, so the pairing removes most of the sampling noise that
  separate seeds carry).

``python -m recipe.calibrl.study --report-only --out DIR`` rebuilds them from the run folders without running.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from calibrl_ext.cpu_backend.launcher import read_metrics
from recipe.calibrl.study.grid import ARM_GROUPS
from recipe.calibrl.study.metrics import CURVE_TITLES, CURVES, mean_and_spread, run_curves
from recipe.calibrl.study.runner import METRICS_FILE, metrics_complete

RESULTS_FILE = "results.json"
FIGURE_FILE = "study.png"
TABLE_FILE = "table.md"
#: Final figures of the table, in column order, with their titles.
FINAL_COLUMNS = (
    ("pre_rl_val_acc", "val acc before RL"),
    ("final_val_acc", "val acc after RL"),
    ("val_acc_gain", "gain"),
    ("final_reward", "final reward"),
    ("final_entropy", "final entropy"),
    ("late_entropy", "entropy, 2nd half"),
    ("mean_step_time_s", "step s"),
)
GROUP_TITLES = {
    "mode": "calibrl.mode",
    "activation": "activation",
    "alpha": "alpha",
    "lam": "lambda",
    "experts": "experts per prompt",
    "switch": "switch",
}
FIGURE_DPI = 110
#: The curve panels draw each arm's min-max band over seeds up to this many arms; more bands hide each other.
MAX_ARMS_WITH_BANDS = 3


def final_figures(curves: dict[str, dict[int, float]], steps: int) -> dict[str, float | None]:
    """One run's final figures. ``pre_rl_val_acc`` is the validation before the first training step (needs
    ``val_before_train``), ``final_val_acc`` the one at step ``steps``; the gain is their difference.
    ``late_entropy`` is the mean on-policy entropy over the training steps after ``steps // 2``: the entropy claim
    is about where entropy goes, and one step's batch mean (``final_entropy``) moves by tenths from step to step."""
    training_steps = sorted(curves["reward"]) or sorted(curves["entropy"])
    first_training = training_steps[0] if training_steps else None
    pre = [s for s in curves["val_acc"] if first_training is None or s < first_training]
    pre_rl = curves["val_acc"][min(pre)] if pre else None
    final = curves["val_acc"].get(steps)
    times = list(curves["step_time"].values())
    late = [value for step, value in curves["entropy"].items() if step > steps // 2]
    return {
        "pre_rl_val_acc": pre_rl,
        "final_val_acc": final,
        "val_acc_gain": final - pre_rl if final is not None and pre_rl is not None else None,
        "final_reward": curves["reward"].get(steps),
        "final_entropy": curves["entropy"].get(steps),
        "late_entropy": sum(late) / len(late) if late else None,
        "mean_step_time_s": sum(times) / len(times) if times else None,
    }


def collect(out: Path, manifest: dict[str, Any]) -> dict[str, Any]:
    """Curves of every complete run and the per-arm aggregates (the content of results.json)."""
    preset = manifest["preset"]
    steps, seeds = preset["steps"], preset["seeds"]
    runs: dict[str, Any] = {}
    missing = []
    for name in manifest["runs"]:
        path = out / "runs" / name / METRICS_FILE
        if not metrics_complete(path, steps):
            missing.append(name)
            continue
        curves = run_curves(read_metrics(path))
        runs[name] = {"curves": curves, "final": final_figures(curves, steps)}
    arms = []
    for arm in manifest["arms"]:
        names = [f"{arm['run_stem']}-s{seed}" for seed in seeds]
        done = [n for n in names if n in runs]
        curve_stats = {}
        for curve in (*CURVES, "step_time"):
            by_step: dict[int, list[float]] = {}
            for n in done:
                for step, value in runs[n]["curves"][curve].items():
                    by_step.setdefault(int(step), []).append(value)
            curve_stats[curve] = {step: mean_and_spread(values) for step, values in sorted(by_step.items())}
        finals = {key: mean_and_spread([runs[n]["final"][key] for n in done if runs[n]["final"][key] is not None])
                  for key, _ in FINAL_COLUMNS}  # fmt: skip
        arms.append({**arm, "runs": done, "seeds_done": len(done), "curves": curve_stats, "final": finals})
    reference = reference_stem(manifest["arms"])
    for arm in arms:
        arm["paired_vs_reference"] = paired_difference(runs, arm["run_stem"], reference, seeds)
        arm["paired_late_entropy_vs_reference"] = paired_difference(runs, arm["run_stem"], reference, seeds,
                                                                    key="late_entropy")  # fmt: skip
        arm["paired_curves"] = {curve: paired_curve(runs, arm["run_stem"], reference, seeds, curve)
                                for curve in PAIRED_CURVES}  # fmt: skip
    return {"preset": preset, "missing_runs": missing, "runs": runs, "arms": arms, "reference_run_stem": reference}


def reference_stem(arms: list[dict[str, Any]]) -> str | None:
    """Run stem of the released CalibRL setting (the ``calibrl`` mode arm, else the ``leaky_relu`` activation arm,
    which share their runs), the reference of the paired differences; None when the study has neither."""
    for group, label in (("mode", "calibrl"), ("activation", "leaky_relu")):
        for arm in arms:
            if arm["group"] == group and arm["label"] == label:
                return arm["run_stem"]
    return None


def _seed_pairs(runs: dict[str, Any], stem: str, reference: str | None, seeds: list[int]):
    """``(run of stem, run of reference)`` for every seed where both completed; none without a reference."""
    for seed in seeds if reference is not None else ():
        mine, theirs = runs.get(f"{stem}-s{seed}"), runs.get(f"{reference}-s{seed}")
        if mine and theirs:
            yield mine, theirs


def paired_difference(runs: dict[str, Any], stem: str, reference: str | None, seeds: list[int],
                      key: str = "final_val_acc") -> dict[str, Any]:
    """Final figure ``key`` (default the final validation accuracy) of ``stem`` minus the reference's, per seed both
    completed (mean_and_spread)."""
    pairs = [(mine["final"].get(key), theirs["final"].get(key)) for mine, theirs in _seed_pairs(runs, stem, reference,
                                                                                                  seeds)]  # fmt: skip
    return mean_and_spread([a - b for a, b in pairs if a is not None and b is not None])


#: Curves whose per-step paired difference from the released CalibRL arm the figure shows (top row, right).
PAIRED_CURVES = ("entropy", "val_acc")
PAIRED_CURVE_TITLES = {"entropy": "on-policy entropy", "val_acc": "validation accuracy"}


def paired_curve(runs: dict[str, Any], stem: str, reference: str | None, seeds: list[int],
                 curve: str) -> dict[int, dict[str, Any]]:
    """Per step, ``curve`` of ``stem`` minus the reference's on the same seed, over the seeds where both logged that
    step (mean_and_spread per step); empty without a reference."""
    by_step: dict[int, list[float]] = {}
    for mine, theirs in _seed_pairs(runs, stem, reference, seeds):
        for step, value in mine["curves"][curve].items():
            if step in theirs["curves"][curve]:
                by_step.setdefault(int(step), []).append(value - theirs["curves"][curve][step])
    return {step: mean_and_spread(values) for step, values in sorted(by_step.items())}


def budget_line(preset: dict[str, Any]) -> str:
    """The shared budget as actually run (``--set`` included), for titles."""
    temperature = preset.get("rollout_temperature", 1.0)  # absent from study folders written before the field
    return (f"{preset['steps']} steps x {preset['train_batch_size']} prompts x {preset['rollout_n']} rollouts, "
            f"seeds {preset['seeds']}" + (f", rollout temperature {temperature:g}" if temperature != 1.0 else ""))


def _cell(stats: dict[str, Any]) -> str:
    if stats["mean"] is None:
        return "-"
    spread = f" ± {stats['std']:.3f}" if stats["std"] is not None else ""
    mean = stats["mean"] if round(stats["mean"], 3) != 0 else 0.0  # no "-0.000"
    return f"{mean:.3f}{spread}"


#: Paired columns of the table: (arm key, title); each is an arm's final figure minus the released CalibRL arm's
#: on the same seed (:func:`paired_difference`).
PAIRED_COLUMNS = (
    ("paired_vs_reference", "val acc vs calibrl (paired)"),
    ("paired_late_entropy_vs_reference", "entropy 2nd half vs calibrl (paired)"),
)


def format_table(results: dict[str, Any]) -> str:
    """Markdown: one table per arm group, final figures as mean ± sample std over the seeds done."""
    preset = results["preset"]
    lines = [
        f"# Study: {budget_line(preset)}",
        "",
        "Cells: mean ± sample std over seeds (n = seeds done). \"entropy, 2nd half\": mean on-policy entropy over the "
        "second half of the training steps. Last columns: the arm's final validation accuracy and its entropy over "
        "the second half minus the released CalibRL arm's on the same seed (paired; `ref` = that arm).",
    ]
    if results["missing_runs"]:
        lines += ["", f"Incomplete or missing runs (not counted): {', '.join(results['missing_runs'])}"]
    for group in ARM_GROUPS:
        arms = [a for a in results["arms"] if a["group"] == group]
        if not arms:
            continue
        header = [GROUP_TITLES[group], "n", *(title for _, title in FINAL_COLUMNS), *(t for _, t in PAIRED_COLUMNS)]
        lines += ["", f"## {GROUP_TITLES[group]}", "", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]  # fmt: skip
        for arm in arms:
            is_reference = arm["run_stem"] == results.get("reference_run_stem")
            paired = ["ref" if is_reference else _cell(arm.get(key) or mean_and_spread([]))
                      for key, _ in PAIRED_COLUMNS]  # fmt: skip
            cells = [arm["label"], str(arm["seeds_done"]), *(_cell(arm["final"][key]) for key, _ in FINAL_COLUMNS),
                     *paired]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def build_figure(results: dict[str, Any]):
    """The study figure (module docstring) as a matplotlib Figure, not yet written (callers close it).

    Rows: (1) the curves of the mode arms (or of the first group; min-max bands up to MAX_ARMS_WITH_BANDS arms) and,
    when the study has the released CalibRL arm, each arm's entropy and validation accuracy minus CalibRL's on the
    same seed per step (mean over seeds); (2) per arm group, the final validation accuracy (mean, sample-std error
    bars, a dot per seed); (3) with that reference, per arm group each arm's final validation accuracy minus
    CalibRL's on the same seed (a dot per seed): differences of a few samples, which the 0-1 bars of (2) cannot show.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never a display
    import matplotlib.pyplot as plt

    groups = [g for g in ARM_GROUPS if any(a["group"] == g for a in results["arms"])]
    curve_group = "mode" if "mode" in groups else groups[0]
    paired_row = results.get("reference_run_stem") is not None
    rows = 3 if paired_row else 2
    curve_arms = [a for a in results["arms"] if a["group"] == curve_group]
    bands = len(curve_arms) <= MAX_ARMS_WITH_BANDS
    top_panels = [(curve, "curves", CURVE_TITLES[curve]) for curve in CURVES]
    if paired_row:
        top_panels += [(curve, "paired_curves", f"{PAIRED_CURVE_TITLES[curve]} minus CalibRL's, same seed (mean)")
                       for curve in PAIRED_CURVES]  # fmt: skip
    columns = max(len(top_panels), len(groups))
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.5 * rows), squeeze=False)
    for column, (curve, source, title) in enumerate(top_panels):
        ax = axes[0][column]
        for arm in curve_arms:
            points = arm.get(source, {}).get(curve) or {}
            if not points:
                continue
            steps = sorted(points)
            means = [points[s]["mean"] for s in steps]
            line = ax.plot(steps, means, marker="o", markersize=3, label=f"{arm['label']} (n={arm['seeds_done']})")
            if bands and source == "curves":
                ax.fill_between(steps, [points[s]["min"] for s in steps], [points[s]["max"] for s in steps],
                                color=line[0].get_color(), alpha=0.2)  # fmt: skip
        if source == "paired_curves":
            ax.axhline(0.0, color="black", linewidth=0.8)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if column == 0:
            ax.legend(fontsize=7, title=GROUP_TITLES[curve_group], title_fontsize=7)
    for column in range(len(top_panels), columns):
        axes[0][column].axis("off")
    bar_rows = [(1, lambda arm: arm["final"]["final_val_acc"], "final val acc", False)]
    if paired_row:
        bar_rows.append((2, lambda arm: arm["paired_vs_reference"], "final val acc minus CalibRL's, same seed", True))
    for row, arm_stats, title, zero_line in bar_rows:
        for column in range(columns):
            ax = axes[row][column]
            if column >= len(groups):
                ax.axis("off")
                continue
            arms = [a for a in results["arms"] if a["group"] == groups[column]]
            _bars(ax, [a["label"] for a in arms], [arm_stats(a) for a in arms])
            if zero_line:
                ax.axhline(0.0, color="black", linewidth=0.8)
            ax.set_title(f"{title}: {GROUP_TITLES[groups[column]]}\n(mean ± std, dots: seeds)", fontsize=9)
    preset = results["preset"]
    band_note = "bands: min-max over seeds" if bands else f"no bands above {MAX_ARMS_WITH_BANDS} arms"
    figure.suptitle(f"{budget_line(preset)} ({band_note})", fontsize=10)
    figure.tight_layout()
    return figure


def _bars(ax, labels: list[str], stats: list[dict[str, Any]]) -> None:
    """One bar per arm (mean, sample-std error bar) with every seed's value as a dot; an arm without values stays
    empty."""
    positions = list(range(len(labels)))
    ax.bar(positions, [s["mean"] if s["mean"] is not None else 0.0 for s in stats],
           yerr=[s["std"] if s["std"] is not None else 0.0 for s in stats], capsize=4, alpha=0.7)  # fmt: skip
    for position, s in zip(positions, stats):
        ax.scatter([position] * len(s["values"]), s["values"], color="black", s=8, zorder=3)
    ax.set_xticks(positions, labels, fontsize=8, rotation=20)
    ax.grid(axis="y", alpha=0.3)


def plot(results: dict[str, Any], path: Path) -> Path:
    """Write the study figure (:func:`build_figure`) to ``path``."""
    import matplotlib.pyplot as plt

    figure = build_figure(results)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=FIGURE_DPI)
    plt.close(figure)
    return path


def write_report(out: Path, manifest: dict[str, Any]) -> dict[str, Path]:
    """Collect the runs of ``out`` and write results.json, study.png and table.md; return their paths."""
    results = collect(out, manifest)
    paths = {"results": out / RESULTS_FILE, "table": out / TABLE_FILE, "figure": out / FIGURE_FILE}
    paths["results"].write_text(json.dumps(results, indent=1) + "\n")
    paths["table"].write_text(format_table(results))
    if results["runs"]:
        plot(results, paths["figure"])
    else:
        del paths["figure"]
    return paths
