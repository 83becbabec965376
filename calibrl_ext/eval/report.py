"""Reports of an evaluation run, and a side-by-side comparison of several runs.

``report``: reads the run's validation dump and its evaluation parquets (:mod:`calibrl_ext.eval.results`)
and writes, next to them,

- ``metrics.json``: every number, plus what it was measured with (run manifest: checkpoint, sampling,
  extractor, reward settings; per benchmark: split, prompt template, input, licence, row counts);
- ``metrics.csv``: one line per (benchmark, split, metric);
- ``report.md``: the same as tables, with the caveat that these are rule-based accuracies.

``compare``: lays the ``metrics.json`` of several runs side by side in the form of the paper's main table
(``compare.md`` + ``compare.csv``) and flags settings that differ between the runs (a prompt template or
extractor change moves these numbers by several points, BENCHMARKS.md §10).
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from statistics import mean
from typing import Any

from calibrl_ext.eval.adapters import BENCHMARKS
from calibrl_ext.eval.metrics import benchmark_metrics
from calibrl_ext.eval.results import RunResults

#: Name of the run manifest examples/eval.sh writes into the run folder.
MANIFEST_NAME = "run.json"

#: Columns of the paper-style main table: (benchmark, metric, column label). The average is over the
#: columns a run has.
MAIN_TABLE = (
    ("mathvista", "acc", "MathVista"),
    ("mathverse", "vision_mean", "MathVerse"),
    ("mathvision", "acc", "MathVision"),
    ("wemath", "score_strict", "We-Math (strict)"),
    ("logicvista", "acc", "LogicVista"),
    ("dynamath", "worst_case", "DynaMath (worst)"),
    ("math500", "acc", "MATH-500"),
    ("amc", "acc", "AMC"),
)

#: Run settings whose difference between compared runs is flagged.
COMPARED_SETTINGS = ("answer_extractor", "n", "temperature", "max_response_length")

RULE_BASED_NOTE = (
    "Rule-based accuracy: answers are read from <answer>…</answer> and matched by calibrl_ext.reward "
    "(normalised match, then math-verify), not by the official GPT-based extract/judge pipelines, so "
    "MathVista, MathVerse and LogicVista numbers are not the official leaderboard scores (docs/evaluation.md)."
)


def _percent(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def build_report(results: RunResults, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report as a JSON-ready dict (what ``metrics.json`` holds)."""
    manifest = manifest or {}
    n = int(manifest.get("n") or results.n)
    benchmarks: dict[str, Any] = {}
    for key, entry in sorted(results.entries.items()):
        answered = sum(1 for row in entry.rows if row.samples)
        benchmarks[key] = {
            "benchmark": entry.benchmark,
            "title": BENCHMARKS[entry.benchmark].title if entry.benchmark in BENCHMARKS else entry.benchmark,
            "split": entry.split,
            "data_sources": entry.data_sources,
            "rows": len(entry.rows),
            "evaluated_rows": answered,
            "missing_rows": len(entry.rows) - answered,
            "missing_samples": sum(n - len(row.samples) for row in entry.rows),
            "n": n,
            "metrics": benchmark_metrics(entry.benchmark, entry.rows, n),
            "prompt_template": entry.provenance.get("prompt_template"),
            "use_official_query": entry.provenance.get("use_official_query"),
            "input": entry.provenance.get("input"),
            "licence": entry.provenance.get("licence"),
            "parquets": entry.parquets,
        }
    return {
        "created": time.strftime("%Y-%m-%d %H:%M:%S"),
        "run": manifest,
        "dump_file": results.dump_file,
        "dump_lines": results.dump_lines,
        "unmatched_dump_lines": results.unmatched,
        "mean_format": results.mean_format,
        "n": n,
        "extractor": manifest.get("answer_extractor", "answer_tag"),
        "scoring": "calibrl_ext.reward.compute_score, key 'acc' (format bonus excluded)",
        "note": RULE_BASED_NOTE,
        "benchmarks": benchmarks,
    }


#: Secondary metrics that are counts, printed as numbers rather than percentages.
COUNT_METRICS = (
    "vision_versions", "composites", "incomplete_composites", "seeds", "variants_per_seed", "empty_gold_rows",
)  # fmt: skip


def _aggregate_lines(metrics: dict[str, float]) -> list[str]:
    """Secondary metrics formatted for the markdown (everything except acc / pass@n)."""
    lines = []
    for name, value in metrics.items():
        if name == "acc" or name.startswith("pass@"):
            continue
        if name in COUNT_METRICS:
            lines.append(f"{name} {value:g}")
        elif name == "robustness":
            lines.append(f"{name} {value:.3f}")
        else:
            lines.append(f"{name} {_percent(value)}")
    return lines


def render_markdown(report: dict[str, Any]) -> str:
    """``report.md``: provenance, one line per benchmark, then the official aggregates."""
    run = report["run"]
    n = report["n"]
    out = [f"# Evaluation report: {run.get('name', Path(report['dump_file']).parent.parent.name)}", ""]
    out.append(f"> {report['note']}")
    out.append("")
    facts = [
        ("checkpoint", run.get("checkpoint")),
        ("model", run.get("model_path")),
        ("backend", run.get("backend")),
        ("sampling", f"n={n}, temperature={run.get('temperature', '?')}, do_sample={run.get('do_sample', '?')}, "
                     f"max_response_length={run.get('max_response_length', '?')}"),
        ("extractor", report["extractor"]),
        ("scoring", report["scoring"]),
        ("reward settings", json.dumps(run.get("reward_kwargs", {}))),
        ("dump", f"{report['dump_file']} ({report['dump_lines']} responses, {report['unmatched_dump_lines']} not in the parquets)"),
        ("well-formatted responses", _percent(report["mean_format"])),
        ("git commit", run.get("git_commit")),
        ("date", run.get("date", report["created"])),
    ]  # fmt: skip
    out += [f"- **{name}**: {value}" for name, value in facts if value is not None]
    out += ["", "## Accuracy (%)", ""]
    header = "| Benchmark | Split | Rows | Evaluated | acc (mean@{n}) |".format(n=n)
    divider = "|---|---|---:|---:|---:|"
    if n > 1:
        header += f" pass@{n} |"
        divider += "---:|"
    out += [header, divider]
    for entry in report["benchmarks"].values():
        metrics = entry["metrics"]
        line = (f"| {entry['title']} | {entry['split']} | {entry['rows']} | {entry['evaluated_rows']} "
                f"| {_percent(metrics.get('acc'))} |")  # fmt: skip
        if n > 1:
            line += f" {_percent(metrics.get(f'pass@{n}'))} |"
        out.append(line)
    aggregates = [(e["title"], _aggregate_lines(e["metrics"])) for e in report["benchmarks"].values()]
    aggregates = [(title, lines) for title, lines in aggregates if lines]
    if aggregates:
        out += ["", "## Official aggregates (rule-computable)", ""]
        for title, lines in aggregates:
            out.append(f"- **{title}**: " + "; ".join(lines))
    missing = [(e["title"], e["missing_rows"], e["missing_samples"]) for e in report["benchmarks"].values() if e["missing_samples"]]
    if missing:
        out += ["", "## Missing responses (counted as wrong)", ""]
        out += [f"- {title}: {rows} rows without any response, {samples} samples missing in all" for title, rows, samples in missing]
        out.append("")
        out.append("Rows go missing when verl filters prompts longer than data.max_prompt_length "
                   "(data.filter_overlong_prompts) or a generation fails.")
    out += ["", "## Prompt templates and licences", ""]
    by_template: dict[str, list[str]] = {}
    for entry in report["benchmarks"].values():
        template = (entry["prompt_template"] or "?").replace("\n", "\\n")
        official = " (official query field)" if entry.get("use_official_query") else ""
        by_template.setdefault(template, []).append(f"{entry['title']} ({entry['split']}){official}")
    for template, titles in by_template.items():
        out.append(f"- `{template}`: " + ", ".join(titles))
    out += [f"- {entry['title']}: {entry['licence']}" for entry in report["benchmarks"].values()]
    return "\n".join(out) + "\n"


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write ``metrics.json``, ``metrics.csv`` and ``report.md`` into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": out_dir / "metrics.json", "csv": out_dir / "metrics.csv", "markdown": out_dir / "report.md"}
    paths["json"].write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    with paths["csv"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["benchmark", "split", "metric", "value", "rows", "evaluated_rows", "n"])
        for entry in report["benchmarks"].values():
            for metric, value in entry["metrics"].items():
                writer.writerow([entry["benchmark"], entry["split"], metric, f"{value:.6f}", entry["rows"],
                                 entry["evaluated_rows"], entry["n"]])  # fmt: skip
    paths["markdown"].write_text(render_markdown(report), encoding="utf-8")
    return paths


# --------------------------------------------------------------------------------------------------
# compare


def _main_table_value(report: dict[str, Any], benchmark: str, metric: str) -> tuple[float | None, str | None]:
    """The run's value for a main-table column (first split found) and that split."""
    for entry in report["benchmarks"].values():
        if entry["benchmark"] == benchmark and metric in entry["metrics"]:
            return entry["metrics"][metric], entry["split"]
    return None, None


def compare_runs(reports: list[dict[str, Any]], names: list[str]) -> dict[str, Any]:
    """Main-table values per run, the average over the columns each run has, and the settings that differ."""
    columns = [(b, m, label) for b, m, label in MAIN_TABLE if any(_main_table_value(r, b, m)[0] is not None for r in reports)]
    table = []
    for name, report in zip(names, reports, strict=True):
        values = {label: _main_table_value(report, b, m)[0] for b, m, label in columns}
        present = [v for v in values.values() if v is not None]
        table.append({"run": name, **values, "average": mean(present) if present else None})
    differences = []
    for setting in COMPARED_SETTINGS:
        seen = {name: report["run"].get(setting, report.get(setting)) for name, report in zip(names, reports, strict=True)}
        if len({json.dumps(v, sort_keys=True) for v in seen.values()}) > 1:
            differences.append({"setting": setting, "values": seen})
    for benchmark, _, label in columns:
        templates = {}
        for name, report in zip(names, reports, strict=True):
            for entry in report["benchmarks"].values():
                if entry["benchmark"] == benchmark:
                    templates[name] = [entry["split"], entry["prompt_template"], entry.get("use_official_query")]
        if len({json.dumps(v) for v in templates.values()}) > 1:
            differences.append({"setting": f"{label}: split / prompt template", "values": templates})
    return {"columns": [label for _, _, label in columns], "rows": table, "differences": differences}


def render_comparison(comparison: dict[str, Any]) -> str:
    columns = comparison["columns"]
    out = ["# Comparison (rule-based accuracy, %)", "", f"> {RULE_BASED_NOTE}", ""]
    out.append("| Run | " + " | ".join(columns) + " | Avg |")
    out.append("|---|" + "---:|" * (len(columns) + 1))
    for row in comparison["rows"]:
        out.append(f"| {row['run']} | " + " | ".join(_percent(row[c]) for c in columns) + f" | {_percent(row['average'])} |")
    if comparison["differences"]:
        out += ["", "**Settings differ between runs; the columns are not directly comparable:**", ""]
        for difference in comparison["differences"]:
            out.append(f"- {difference['setting']}: " + json.dumps(difference["values"], ensure_ascii=False))
    return "\n".join(out) + "\n"


def write_comparison(comparison: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out_dir / "compare.md", "csv": out_dir / "compare.csv"}
    paths["markdown"].write_text(render_comparison(comparison), encoding="utf-8")
    with paths["csv"].open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["run", *comparison["columns"], "average"])
        for row in comparison["rows"]:
            writer.writerow([row["run"], *(("" if row[c] is None else f"{row[c]:.6f}") for c in comparison["columns"]),
                             "" if row["average"] is None else f"{row['average']:.6f}"])  # fmt: skip
    return paths
