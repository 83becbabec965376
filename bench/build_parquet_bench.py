"""build_parquet.py against the straightforward ``datasets.map`` + ``to_parquet`` conversion.

Prints figures; asserts nothing. For each size (default 5k and 20k rows) it writes one synthetic
input parquet (HF ``Sequence(Image)`` column, one 448x448 JPEG per row, question, answer and a
``<think>/<answer>`` expert), then converts it twice, each in a fresh process:

- ``build_parquet``: ``python data_prep/build_parquet.py --input ... --num-proc P`` with its default
  validation (full image decode, expert format and reward check, duplicates);
- ``datasets.map``: what verl's own ``examples/data_preprocess/geo3k.py`` does: load the parquet with
  ``datasets``, ``map`` a function building verl's columns (``num_proc=P``), ``to_parquet``.

Each run's peak RSS is sampled every :data:`SAMPLE_EVERY_S` seconds over the whole process tree
(workers included) and for the main process alone.

    python bench/build_parquet_bench.py                        # 5000 and 20000 rows, 2 processes
    python bench/build_parquet_bench.py --rows 500 --num-proc 1   # a quick look
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]

#: Side of the synthetic images (the issue's 448x448).
IMAGE_SIDE = 448
#: Distinct base images cycled over the rows (rows stay distinct through their question text).
BASE_IMAGES = 64
#: JPEG quality of the synthetic inputs.
INPUT_JPEG_QUALITY = 90
#: Rows per row group of the synthetic input (what datasets' own parquet export uses for image data).
INPUT_ROW_GROUP = 100
#: RSS sampling period, seconds.
SAMPLE_EVERY_S = 0.05

INSTRUCTION = (
    "You FIRST think about the reasoning process as an internal monologue and then provide the final answer. "
    "The reasoning process MUST BE enclosed within <think> </think> tags. "
    "The final answer MUST BE put in <answer> </answer> tags."
)


def _base_images() -> list[bytes]:
    from PIL import Image, ImageDraw

    rng = random.Random(0)
    images = []
    for _ in range(BASE_IMAGES):
        image = Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), tuple(rng.randrange(256) for _ in range(3)))
        draw = ImageDraw.Draw(image)
        for _ in range(12):
            x0, y0 = rng.randrange(IMAGE_SIDE), rng.randrange(IMAGE_SIDE)
            box = [x0, y0, x0 + rng.randrange(20, 200), y0 + rng.randrange(20, 200)]
            draw.rectangle(box, fill=tuple(rng.randrange(256) for _ in range(3)), outline=(0, 0, 0), width=2)
        noise = Image.effect_noise((IMAGE_SIDE, IMAGE_SIDE), 24).convert("RGB")
        image = Image.blend(image, noise, 0.15)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=INPUT_JPEG_QUALITY)
        images.append(buffer.getvalue())
    return images


def write_input(path: Path, rows: int) -> None:
    """A geometry3k-like parquet with HF feature metadata (so ``datasets`` decodes the images to PIL)."""
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "problem": datasets.Value("string"),
            "answer": datasets.Value("string"),
            "solution": datasets.Value("string"),
            "images": datasets.Sequence(datasets.Image()),
        }
    )
    schema = features.arrow_schema
    images = _base_images()
    with pq.ParquetWriter(path, schema) as writer:
        for start in range(0, rows, INPUT_ROW_GROUP):
            batch = []
            for index in range(start, min(rows, start + INPUT_ROW_GROUP)):
                answer = str(index % 97)
                batch.append(
                    {
                        "id": f"row{index}",
                        "problem": f"<image>Problem {index}: read the figure and find the value of x.",
                        "answer": answer,
                        "solution": f"<think>\nThe figure gives x directly.\n</think>\n<answer>{answer}</answer>",
                        "images": [{"bytes": images[index % BASE_IMAGES], "path": None}],
                    }
                )
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))


def run_datasets_baseline(source: str, out_dir: str, num_proc: int) -> None:
    """The straightforward conversion, as verl's geo3k example does it (runs in its own process)."""
    import datasets

    dataset = datasets.load_dataset("parquet", data_files=source)["train"]

    def to_verl(example, index):
        return {
            "data_source": "bench",
            "prompt": [{"role": "user", "content": example["problem"] + " " + INSTRUCTION}],
            "images": example["images"],
            "ability": "math",
            "reward_model": {"style": "rule", "ground_truth": example["answer"]},
            "extra_info": {
                "split": "train",
                "index": index,
                "answer": example["answer"],
                "question": example["problem"],
            },
            "expert_solution": example["solution"],
        }

    converted = dataset.map(
        to_verl,
        with_indices=True,
        num_proc=num_proc if num_proc > 1 else None,
        remove_columns=["id", "problem", "answer", "solution"],
    )
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    converted.to_parquet(str(Path(out_dir) / "train.parquet"))


def measure(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall time and peak RSS (main process, whole tree) of a command."""
    started = time.perf_counter()
    # Output goes to a file, not a pipe: a pipe nobody reads until the end fills up with progress bars and
    # blocks the child.
    log = tempfile.TemporaryFile(mode="w+")
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    main = psutil.Process(process.pid)
    peak_main = peak_tree = 0
    while process.poll() is None:
        try:
            tree = [main, *main.children(recursive=True)]
            rss = {p.pid: p.memory_info().rss for p in tree if p.is_running()}
        except psutil.Error:
            rss = {}
        peak_main = max(peak_main, rss.get(main.pid, 0))
        peak_tree = max(peak_tree, sum(rss.values()))
        time.sleep(SAMPLE_EVERY_S)
    seconds = time.perf_counter() - started
    log.seek(0)
    output = log.read()
    log.close()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({process.returncode}):\n{output[-3000:]}")
    return {"seconds": seconds, "peak_main_mib": peak_main / 2**20, "peak_tree_mib": peak_tree / 2**20}


def _parquet_rows(out_dir: Path) -> tuple[int, float]:
    import pyarrow.parquet as pq

    files = sorted(out_dir.glob("*.parquet"))
    return sum(pq.ParquetFile(f).metadata.num_rows for f in files), sum(f.stat().st_size for f in files) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--rows", type=int, nargs="+", default=[5000, 20000], help="dataset sizes (default: 5000 20000)"
    )
    parser.add_argument("--num-proc", type=int, default=2, help="processes for both approaches (default: 2)")
    parser.add_argument("--workdir", help="scratch folder (default: a temporary folder, deleted at the end)")
    parser.add_argument("--baseline-worker", nargs=3, metavar=("SOURCE", "OUT", "NUM_PROC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_worker:
        source, out_dir, num_proc = args.baseline_worker
        run_datasets_baseline(source, out_dir, int(num_proc))
        return

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="build_parquet_bench."))
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    # Measure this checkout's code, installed or not.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    print(
        f"# {platform.processor() or platform.machine()}, {psutil.cpu_count()} CPUs, "
        f"python {platform.python_version()}, "
        f"--num-proc {args.num_proc}, {IMAGE_SIDE}x{IMAGE_SIDE} JPEG q{INPUT_JPEG_QUALITY}, workdir {workdir}"
    )
    print(
        f"{'approach':<15} {'rows':>6} {'seconds':>8} {'rows/s':>7} "
        f"{'peak RSS main':>14} {'peak RSS tree':>14} {'out MiB':>8}"
    )
    results = []
    try:
        for rows in args.rows:
            source = workdir / f"input_{rows}.parquet"
            write_input(source, rows)
            runs = {
                "build_parquet": [
                    sys.executable,
                    str(REPO / "data_prep" / "build_parquet.py"),
                    "--input",
                    str(source),
                    "--out",
                    str(workdir / f"ours_{rows}"),
                    "--val-ratio",
                    "0",
                    "--num-proc",
                    str(args.num_proc),
                    "--no-progress",
                ],
                "datasets.map": [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "--baseline-worker",
                    str(source),
                    str(workdir / f"datasets_{rows}"),
                    str(args.num_proc),
                ],
            }
            for name, command in runs.items():
                run_env = dict(env, HF_DATASETS_CACHE=str(workdir / "hf_cache"))
                figures = measure(command, run_env)
                written, out_mib = _parquet_rows(
                    workdir / f"{'ours' if name == 'build_parquet' else 'datasets'}_{rows}"
                )
                figures.update(
                    approach=name, rows=rows, written=written, rows_per_s=rows / figures["seconds"], out_mib=out_mib
                )
                results.append(figures)
                print(
                    f"{name:<15} {rows:>6} {figures['seconds']:>8.1f} {figures['rows_per_s']:>7.0f} "
                    f"{figures['peak_main_mib']:>10.0f} MiB {figures['peak_tree_mib']:>10.0f} MiB {out_mib:>8.0f}"
                    + ("" if written == rows else f"  (wrote {written} rows!)")
                )
                shutil.rmtree(workdir / "hf_cache", ignore_errors=True)
            source.unlink()
        print(json.dumps(results))
    finally:
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
