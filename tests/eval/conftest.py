"""Benchmark fixtures written in code, each in its benchmark's exact on-disk schema (a few records each).

No benchmark data is vendored (licences differ, BENCHMARKS.md §0.6): the records below are made up,
with the official field names, nesting and quirks, and tiny PNG/JPEG images drawn with PIL.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from calibrl_ext.eval.build import BenchmarkBuildConfig, build_benchmark

IMAGE_SIDE = 28


def write_image(path: Path, color: tuple[int, int, int] = (200, 30, 30)) -> Path:
    """A tiny image; the format follows the suffix (.jpg -> JPEG, else PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), color).save(path, format="JPEG" if path.suffix == ".jpg" else "PNG")
    return path


def png_bytes(color: tuple[int, int, int] = (30, 30, 200)) -> bytes:
    import io

    buffer = io.BytesIO()
    Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), color).save(buffer, format="PNG")
    return buffer.getvalue()


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2), encoding="utf-8")
    return path


# ---------------------------------------------------------------- MathVista: GitHub data/testmini.json


def _mathvista_meta(split="testmini", language="english"):
    return {"split": split, "language": language, "img_width": 28, "img_height": 28, "source": "Geometry3K",
            "category": "math-targeted-vqa", "task": "geometry problem solving", "context": "geometry diagram",
            "grade": "high school", "skills": ["geometry reasoning"]}  # fmt: skip


def mathvista_records() -> dict:
    return {
        "1": {"question": "By what distance d is the spring compressed?", "image": "images/1.jpg", "choices": None,
              "unit": None, "precision": 1, "answer": "1.2", "question_type": "free_form", "answer_type": "float",
              "pid": "1", "metadata": _mathvista_meta()},
        "2": {"question": "what is the total volume of the measuring cup?", "image": "images/2.jpg", "choices": None,
              "unit": "g", "precision": None, "answer": "1000", "question_type": "free_form", "answer_type": "integer",
              "pid": "2", "metadata": _mathvista_meta()},
        "3": {"question": "△ABC的两内角平分线OB、OC相交于点O，若∠A＝110°，则∠BOC＝（）", "image": "images/3.jpg",
              "choices": ["135°", "140°", "145°", "150°"], "unit": None, "precision": None, "answer": "145°",
              "question_type": "multi_choice", "answer_type": "text", "pid": "3", "metadata": _mathvista_meta(language="chinese")},
        "10": {"question": "Which object comes next?", "image": "images/10.jpg", "choices": ["A", "B", "C", "D", "E"],
               "unit": None, "precision": None, "answer": "E", "question_type": "multi_choice", "answer_type": "text",
               "pid": "10", "metadata": _mathvista_meta()},
        # trap: a gold that is not among the choices -> rejected with bad_ground_truth
        "20": {"question": "Pick one.", "image": "images/20.jpg", "choices": ["1", "2"], "unit": None, "precision": None,
               "answer": "3", "question_type": "multi_choice", "answer_type": "text", "pid": "20", "metadata": _mathvista_meta()},
        # trap: the image file is missing -> rejected with image_missing
        "21": {"question": "How many?", "image": "images/21.jpg", "choices": None, "unit": None, "precision": None,
               "answer": "4", "question_type": "free_form", "answer_type": "integer", "pid": "21", "metadata": _mathvista_meta()},
    }  # fmt: skip


@pytest.fixture(scope="session")
def mathvista_input(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("MathVista") / "data"
    for pid in ("1", "2", "3", "10", "20"):
        write_image(root / "images" / f"{pid}.jpg")
    return write_json(root / "testmini.json", mathvista_records()), root


# ---------------------------------------------------------------- MathVerse: testmini.json (list)


def mathverse_records() -> list:
    choices = "Choices:\nA:30°\nB:60°\nC:90°\nD:120°"
    base = {"problem_index": "1", "answer": "B", "question_type": "multi-choice",
            "metadata": {"split": "testmini", "source": "GeoQA", "subject": "Plane Geometry", "subfield": "Angle"}}
    return [
        {**base, "sample_index": "1", "problem_version": "Text Dominant",
         "question": "As shown in the figure, AB ∥ CD, ∠1 = 120°, find ∠2.\n" + choices,
         "image": "images_version_1-4/image_1.png", "query_wo": "...", "query_cot": "...",
         "question_for_eval": "As shown in the figure, AB ∥ CD, ∠1 = 120°, find ∠2.\n" + choices},
        {**base, "sample_index": "5", "problem_version": "Vision Only", "question": "",
         "image": "images_version_6/image_1.png",
         "query_wo": "According to the question shown in the image, please directly answer the question and provide the correct option letter, e.g., A, B, C, D.",
         "query_cot": "According to the question shown in the image, please first conduct reasoning, and then answer the question and provide the correct option letter, e.g., A, B, C, D, at the end.",
         "question_for_eval": "As shown in the figure, AB ∥ CD, ∠1 = 120°, find ∠2.\n" + choices},
        {"sample_index": "6", "problem_index": "2", "problem_version": "Text Lite", "question": "Find the length of AB.",
         "image": "images_version_1-4/image_2.png", "answer": "4.4 m", "question_type": "free-form",
         "query_wo": "...", "query_cot": "...", "question_for_eval": "Find the length of AB.",
         "metadata": {"split": "testmini", "source": "GEOS", "subject": "Plane Geometry", "subfield": "Length"}},
        # trap: an unknown version name -> malformed_row
        {"sample_index": "7", "problem_index": "2", "problem_version": "Vision Heavy", "question": "Find AB.",
         "image": "images_version_1-4/image_2.png", "answer": "4.4", "question_type": "free-form", "metadata": {}},
    ]  # fmt: skip


@pytest.fixture(scope="session")
def mathverse_input(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("MathVerse")
    write_image(root / "images" / "images_version_1-4" / "image_1.png")
    write_image(root / "images" / "images_version_1-4" / "image_2.png")
    write_image(root / "images" / "images_version_6" / "image_1.png")
    return write_json(root / "testmini.json", mathverse_records()), root / "images"


def mathverse_text_only_records() -> list:
    """``testmini_text_only.json``: the same problems as version "Text Only", no image (``image == ""``),
    options inline in the question."""
    choices = "Choices:\nA:30°\nB:60°\nC:90°\nD:120°"
    base = {"problem_version": "Text Only", "image": "", "query_wo": "...", "query_cot": "...",
            "metadata": {"split": "testmini_text_only", "source": "GeoQA", "subject": "Plane Geometry",
                         "subfield": "Angle"}}
    question = "AB ∥ CD, ∠1 = 120°, find ∠2.\n" + choices
    return [
        {**base, "sample_index": "1", "problem_index": "1", "question": question, "answer": "B",
         "question_type": "multi-choice", "question_for_eval": question},
        {**base, "sample_index": "2", "problem_index": "2", "question": "AB = 4.4 m. Find the length of AB.",
         "answer": "4.4 m", "question_type": "free-form", "question_for_eval": "Find the length of AB."},
    ]  # fmt: skip


@pytest.fixture(scope="session")
def mathverse_text_only_input(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("MathVerseTextOnly")
    return write_json(folder / "testmini_text_only.json", mathverse_text_only_records())


# ---------------------------------------------------------------- MATH-V: data/test.jsonl + images/


def mathvision_lines() -> list[str]:
    records = [
        {"id": "4", "question": "How many different digits can you find in this picture?\n<image1>", "options": [],
         "answer": "6", "solution": None, "level": 1, "subject": "counting", "image": "images/4.jpg"},
        {"id": "6", "question": "In which picture can we see the kittens of Misty?\n<image1>",
         "options": ["A", "B", "C", "D", "E"], "answer": "D", "solution": None, "level": 3, "subject": "logic",
         "image": "images/6.jpg"},
        {"id": "91", "question": "How long is the room? <image1>",
         "options": ["$6 \\mathrm{~m}$", "$8 \\mathrm{~m}$", "$10 \\mathrm{~m}$", "$11 \\mathrm{~m}$", "$12 \\mathrm{~m}$"],
         "answer": "E", "solution": None, "level": 1, "subject": "combinatorial geometry", "image": "images/91.jpg"},
        # quirk: options == [] but a letter answer; several <imageN> placeholders over ONE composite image
        {"id": "59", "question": "<image1>\nA cube in two positions.\n<image2>\nWhich side is opposite to <image3>?\n<image4>",
         "options": [], "answer": "C", "solution": None, "level": 1, "subject": "solid geometry", "image": "images/59.jpg"},
    ]  # fmt: skip
    lines = [json.dumps(record) for record in records]
    lines.insert(2, "{not json")  # trap: a broken line -> malformed_row with its line number
    return lines


@pytest.fixture(scope="session")
def mathvision_input(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("MATH-V")
    for record_id in ("4", "6", "91", "59"):
        write_image(root / "images" / f"{record_id}.jpg")
    path = root / "data" / "test.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(mathvision_lines()) + "\n", encoding="utf-8")
    return path, root


# ---------------------------------------------------------------- We-Math: data/testmini.json (list)

WEMATH_OPTION = "A. 300, 400;B. 400, 300;C. 3000, 4000;D. 4000, 3000; E. No correct answer"


def wemath_records() -> list:
    def row(number, problem_id, key, answer, image):
        return {"ID": problem_id, "split": "testmini", "knowledge concept": "Length Units",
                "question": f"Question {number}: OA = ( ) m, AB = ( ) m", "option": WEMATH_OPTION,
                "answer": answer, "image_path": image, "key": key, "question number": number,
                "knowledge concept description": "..."}  # fmt: skip

    return [
        row(1, "2steps_1", "2steps_1", "C", "2steps/image/1-1.png"),
        row(361, "2steps_1", "2steps_2", "A", "2steps/image/1-2.png"),
        row(721, "2steps_1", "2steps_multi", "B", "2steps/image/1-multi.png"),
        row(1081, "3steps_1", "3steps_1", "A", "3steps/image/1-1.png"),
        row(1246, "3steps_1", "3steps_2", "B", "3steps/image/1-2.png"),
        row(1411, "3steps_1", "3steps_3", "C", "3steps/image/1-3.png"),
        row(1576, "3steps_1", "3steps_multi", "D", "3steps/image/1-multi.png"),
    ]


@pytest.fixture(scope="session")
def wemath_input(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("We-Math") / "data"
    for record in wemath_records():
        write_image(root / record["image_path"])
    return write_json(root / "testmini.json", wemath_records()), root


# ---------------------------------------------------------------- LogicVista: data/dataset.json (dict)


def logicvista_records() -> dict:
    def row(index, question, answer, **extra):
        return {"imagename": f"v1_{index}.png", "question": question, "answer": answer, "reasoning": "...",
                "skill": ["inductive"], "imagesource": "aptitudetests", "sourcelink": "https://example.org", **extra}  # fmt: skip

    return {
        "v1_0": row(0, "What choice (A, B, C, or D) fits the pattern?", "C", capability=["diagram"]),
        "v1_1": row(1, "Which choices in the image (A-D) belong to the green category?", "A, C", capability=["diagram"]),
        "v1_19": row(19, "How many triangles will be in the 6th shape? Select answers from A-D. \n A) 10 B) 12 C) 14 D) 16",
                     "C", broad_capability="diagram", specific_capability="counting"),
        "v1_20": row(20, "Which is the correct answer according to the image? Select from 1-5", "3",
                     broad_capability="ocr", specific_capability="reading"),
        "v1_30": row(30, "Which figure completes the series?", "", capability=["diagram"]),  # trap: empty answer
    }  # fmt: skip


@pytest.fixture(scope="session")
def logicvista_input(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("LogicVista") / "data"
    for record in logicvista_records().values():
        write_image(root / "images" / record["imagename"])
    return write_json(root / "dataset.json", logicvista_records()), root / "images"


# ---------------------------------------------------------------- DynaMath: HF DynaMath_Sample (save_to_disk)


def dynamath_rows(variant: int) -> dict:
    """Two seeds per variant split, in HF DynaMath_Sample's columns (gold field: ground_truth)."""
    return {
        "id": ["1", "5"],
        "question": ["What is the period of this function? Answer the question with a floating-point number.",
                     "Is Dark Magenta greater than Rosy Brown? Choices: (A) yes (B) no"],
        "image": [f"images/variant{variant}/image1.png", f"images/variant{variant}/image5.png"],
        "decoded_image": [Image.new("RGB", (IMAGE_SIDE, IMAGE_SIDE), (variant * 20, 0, 0))] * 2,
        "ground_truth": ["2.0944" if variant == 1 else "3.1416", "B"],
        "answer_type": ["float", "multiple choice"],
        "subject": ["analytic geometry", "statistics"],
        "knowledge_level": ["high school", "elementary school"],
    }  # fmt: skip


@pytest.fixture(scope="session")
def dynamath_input(tmp_path_factory) -> Path:
    import datasets

    features = datasets.Features(
        {name: datasets.Value("string") for name in ("id", "question", "image", "ground_truth", "answer_type", "subject", "knowledge_level")}
        | {"decoded_image": datasets.Image()}
    )
    splits = {f"sample_variant{v}": datasets.Dataset.from_dict(dynamath_rows(v), features=features) for v in (1, 2)}
    path = tmp_path_factory.mktemp("DynaMath") / "DynaMath_Sample"
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return path


@pytest.fixture(scope="session")
def dynamath_seed_input(tmp_path_factory) -> tuple[Path, Path]:
    """The GitHub seed file: dict keyed by id, gold field ``answer``."""
    root = tmp_path_factory.mktemp("DynaMathSeed") / "dataset"
    write_image(root / "image" / "image21.png")
    records = {"21": {"question": "What time is shown? Please answer in the form like __:__.", "answer": "5:0",
                      "image": "image/image21.png", "answer_type": "text", "subject": "arithmetic",
                      "level": "elementary school"}}  # fmt: skip
    return write_json(root / "dataset.json", records), root


@pytest.fixture(scope="session")
def dynamath_seed_other_types_input(tmp_path_factory) -> tuple[Path, Path]:
    """Seed-file records with the answer types the official generator also writes (seeds 465, 466, 477, 480
    of the official file): ``single answer`` and ``int``."""
    root = tmp_path_factory.mktemp("DynaMathSeedTypes") / "dataset"
    records = {
        "465": {"question": "Which quadrant is the point in?", "answer": "second", "answer_type": "single answer"},
        "466": {"question": "How many edges does the graph have?", "answer": "7", "answer_type": "int"},
    }
    for seed, record in records.items():
        write_image(root / "image" / f"image{seed}.png")
        record.update(image=f"image/image{seed}.png", subject="graph theory", level="high school")
    return write_json(root / "dataset.json", records), root


# ---------------------------------------------------------------- MATH-500 (jsonl) and AMC (parquet)


@pytest.fixture(scope="session")
def math500_input(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("MATH-500") / "test.jsonl"
    records = [
        {"problem": "Convert the point $(0,3)$ to polar coordinates.", "solution": "... $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}$",
         "answer": "\\left( 3, \\frac{\\pi}{2} \\right)", "subject": "Precalculus", "level": 2,
         "unique_id": "test/precalculus/807.json"},
        {"problem": "What is $\\sqrt{12}$ in simplest form?", "solution": "$\\boxed{2\\sqrt{3}}$", "answer": "2\\sqrt{3}",
         "subject": "Algebra", "level": 1, "unique_id": "test/algebra/1.json"},
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def amc_input(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("AMC") / "train-00000-of-00001.parquet"
    table = pa.table({"id": pa.array([0, 1], pa.int64()), "problem": ["Find the sum.", "Find k."],
                      "answer": pa.array([142.0, 2.5], pa.float64()), "url": ["https://a", "https://b"]})  # fmt: skip
    pq.write_table(table, path)
    return path


# ---------------------------------------------------------------- building


@pytest.fixture(scope="session")
def built(tmp_path_factory, mathvista_input, mathverse_input, mathvision_input, wemath_input, logicvista_input,
          dynamath_input, math500_input, amc_input):  # fmt: skip
    """Every fixture benchmark built into one folder: {benchmark: (summary, rows as dicts)}."""
    out = tmp_path_factory.mktemp("bench")
    plans = {
        "mathvista": dict(input=str(mathvista_input[0]), image_root=str(mathvista_input[1])),
        "mathverse": dict(input=str(mathverse_input[0]), image_root=str(mathverse_input[1])),
        "mathvision": dict(input=str(mathvision_input[0]), image_root=str(mathvision_input[1])),
        "wemath": dict(input=str(wemath_input[0]), image_root=str(wemath_input[1])),
        "logicvista": dict(input=str(logicvista_input[0]), image_root=str(logicvista_input[1])),
        "dynamath": dict(input=str(dynamath_input), input_splits=["all"]),
        "math500": dict(input=str(math500_input)),
        "amc": dict(input=str(amc_input)),
    }
    results = {}
    for name, kwargs in plans.items():
        summary = build_benchmark(BenchmarkBuildConfig(benchmark=name, out_dir=str(out), **kwargs))
        results[name] = (summary, pq.read_table(summary.parquet).to_pylist())
    return results
