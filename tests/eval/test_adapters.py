"""Benchmark adapters: every schema trap of BENCHMARKS.md, on fixtures in each benchmark's exact schema."""

import json
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import pytest

from calibrl_ext.data import read_rejects
from calibrl_ext.eval.adapters import MATHVERSE_VISION_VERSIONS, parse_inline_choices, parse_wemath_options
from calibrl_ext.eval.build import BenchmarkBuildConfig, build_benchmark
from calibrl_ext.eval.schema import read_provenance
from calibrl_ext.reward import compute_score


def _by_id(rows):
    return {row["extra_info"]["record_id"]: row for row in rows}


def _spec(row):
    return json.loads(row["extra_info"]["answer_spec"])


def _rejects(summary):
    return {(r["reason"], r["message"]) for r in read_rejects(summary.rejects_file)}


def test_every_record_is_written_or_rejected(built):
    """records_read = rows written + rejects, for every benchmark (nothing vanishes)."""
    for name, (summary, rows) in built.items():
        assert summary.records_read == len(rows) + len(read_rejects(summary.rejects_file)), name
        assert summary.rows_written == len(rows)


def test_eval_ids_are_unique_and_prefixed_by_data_source(built):
    """eval_id = <data_source>/<record id>, unique across all benchmarks (it joins dumps back to rows)."""
    ids = [row["extra_info"]["eval_id"] for _, rows in built.values() for row in rows]
    assert len(ids) == len(set(ids))
    for _, rows in built.values():
        for row in rows:
            assert row["extra_info"]["eval_id"] == f"{row['data_source']}/{row['extra_info']['record_id']}"


def test_all_benchmark_parquets_load_together_like_verl_does(built):
    """verl's RLHFDataset concatenates every val file with datasets.concatenate_datasets: the schemas agree."""
    parts = [datasets.load_dataset("parquet", data_files=s.parquet)["train"] for s, _ in built.values()]
    merged = datasets.concatenate_datasets(parts)
    assert len(merged) == sum(len(rows) for _, rows in built.values())


def test_prompt_uses_training_template_and_one_placeholder_per_image(built):
    """Every prompt ends with the paper's instruction and has exactly one <image> per image."""
    for _, rows in built.values():
        for row in rows:
            text = row["prompt"][-1]["content"]
            assert text.rstrip().endswith("The final answer MUST BE put in <answer> </answer> tags.")
            assert text.count("<image>") == len(row["images"])


def test_mathvista_option_text_gold_becomes_letter_with_options(built):
    """MathVista's gold is the option TEXT: stored as its letter, the texts in the spec and the prompt."""
    rows = _by_id(built["mathvista"][1])
    row = rows["3"]
    assert row["reward_model"]["ground_truth"] == "C"
    assert _spec(row) == {"type": "choice", "options": ["135°", "140°", "145°", "150°"]}
    assert "(C) 145°" in row["prompt"][-1]["content"]
    assert row["extra_info"]["answer"] == "145°"


def test_mathvista_float_precision_and_integer_types(built):
    """Float answers keep MathVista's precision; integers get the integer rule; unit is only metadata."""
    rows = _by_id(built["mathvista"][1])
    assert _spec(rows["1"]) == {"type": "float", "precision": 1}
    assert _spec(rows["2"]) == {"type": "integer"}
    assert json.loads(rows["2"]["extra_info"]["metadata"])["unit"] == "g"


def test_mathvista_rejects_name_their_reason(built):
    """A gold outside the choices and a missing image file are rejected with reason and record."""
    reasons = {r["reason"]: r["message"] for r in read_rejects(built["mathvista"][0].rejects_file)}
    assert "not one of the choices" in reasons["bad_ground_truth"]
    assert "21.jpg" in reasons["image_missing"]


def test_mathvista_test_split_without_answers_is_rejected(tmp_path):
    """The test split has no public answers: such records are rejected, not scored against ''."""
    record = {"question": "q", "image": "images/1.jpg", "choices": None, "unit": None, "precision": None, "answer": "",
              "question_type": "free_form", "answer_type": "integer", "pid": "1", "metadata": {"split": "test"}}  # fmt: skip
    (tmp_path / "test.json").write_text(json.dumps({"1": record}))
    summary = build_benchmark(BenchmarkBuildConfig("mathvista", str(tmp_path / "test.json"), str(tmp_path / "out")))
    assert summary.rows_written == 0
    assert "not public" in read_rejects(summary.rejects_file)[0]["message"]


def test_mathverse_vision_only_gets_a_question_and_keeps_question_for_eval(built):
    """Vision Only has question == '': the prompt says the question is in the image; question_for_eval is kept."""
    row = _by_id(built["mathverse"][1])["5"]
    assert row["data_source"] == "mathverse_testmini/vision_only"
    assert row["prompt"][-1]["content"].startswith("<image>Answer the question shown in the image.")
    assert "find ∠2" in row["extra_info"]["question"]


def test_mathverse_group_keys_and_inline_choices(built):
    """problem_index + problem_version are kept; inline 'Choices:\\nA:30°' become option texts."""
    row = _by_id(built["mathverse"][1])["1"]
    assert json.loads(row["extra_info"]["group"]) == {"problem_index": "1", "problem_version": "Text Dominant"}
    assert _spec(row) == {"type": "choice", "options": ["30°", "60°", "90°", "120°"]}
    assert _spec(_by_id(built["mathverse"][1])["6"]) == {"type": "math"}  # free-form "4.4 m"


def test_mathvision_letter_golds_options_and_placeholders(built):
    """MATH-V: letter gold with texts -> choice with options; bare-letter options -> choice without;
    options == [] with a letter gold (id 59) -> choice; free-form -> math; <imageN> kept by default."""
    rows = _by_id(built["mathvision"][1])
    assert _spec(rows["91"])["options"][4] == "$12 \\mathrm{~m}$"
    assert _spec(rows["6"]) == {"type": "choice"}
    assert _spec(rows["59"]) == {"type": "choice"}
    assert _spec(rows["4"]) == {"type": "math"}
    assert "<image3>" in rows["59"]["prompt"][-1]["content"]
    assert len(rows["59"]["images"]) == 1
    assert {r["reason"] for r in read_rejects(built["mathvision"][0].rejects_file)} == {"malformed_row"}


def test_mathvision_placeholders_can_be_stripped(mathvision_input, tmp_path):
    """--mathvision-placeholders strip removes <image1>… from the question (the composite image stays)."""
    summary = build_benchmark(
        BenchmarkBuildConfig("mathvision", str(mathvision_input[0]), str(tmp_path), image_root=str(mathvision_input[1]),
                             mathvision_placeholders="strip")  # fmt: skip
    )
    row = _by_id(pq.read_table(summary.parquet).to_pylist())["59"]
    assert "<image3>" not in row["prompt"][-1]["content"] and row["prompt"][-1]["content"].count("<image>") == 1


def test_wemath_keeps_id_and_key_for_the_composite_problem(built):
    """We-Math's ID is shared by sub-problems and the composite: (ID, key) are both kept; the unique id is
    'question number'; the ';'-separated option string becomes option texts."""
    rows = built["wemath"][1]
    groups = [json.loads(r["extra_info"]["group"]) for r in rows]
    assert [g["ID"] for g in groups].count("2steps_1") == 3
    assert {g["key"] for g in groups if g["ID"] == "2steps_1"} == {"2steps_1", "2steps_2", "2steps_multi"}
    assert _spec(rows[0])["options"] == ["300, 400", "400, 300", "3000, 4000", "4000, 3000", "No correct answer"]
    assert rows[1]["extra_info"]["record_id"] == "361"


def test_logicvista_letter_sets_numbers_and_empty_answer(built):
    """LogicVista: 'A, C' -> letters; '3' -> integer; inline 'A) 10 B) 12' -> options; '' -> KEPT (the official
    accuracy counts it in its denominator: 448 records), flagged empty_gold, and no answer scores on it."""
    rows = _by_id(built["logicvista"][1])
    assert _spec(rows["v1_1"]) == {"type": "letters"}
    assert _spec(rows["v1_20"]) == {"type": "integer"}
    assert _spec(rows["v1_19"]) == {"type": "choice", "options": ["10", "12", "14", "16"]}
    assert len(rows) == 5 and not _rejects(built["logicvista"][0])
    empty = rows["v1_30"]
    assert empty["reward_model"]["ground_truth"] == ""
    assert json.loads(empty["extra_info"]["group"]) == {"empty_gold": True}
    for answer in ("", "A", "C"):
        response = f"<think>t</think><answer>{answer}</answer>"
        assert compute_score(empty["data_source"], response, "", empty["extra_info"])["acc"] == 0.0


def test_logicvista_accepts_old_and_new_capability_fields(built):
    """Both the old 'capability' list and HEAD's broad/specific_capability reach the metadata."""
    rows = _by_id(built["logicvista"][1])
    assert json.loads(rows["v1_0"]["extra_info"]["metadata"])["capability"] == ["diagram"]
    assert json.loads(rows["v1_20"]["extra_info"]["metadata"])["broad_capability"] == "ocr"


def test_dynamath_variants_from_split_names_and_renamed_gold(built):
    """HF DynaMath: gold from 'ground_truth'; the variant from the split name; seed + variant kept; floats
    get the 0.001 tolerance; record ids are unique across variants although 'id' repeats."""
    rows = built["dynamath"][1]
    groups = sorted((json.loads(r["extra_info"]["group"])["seed"], json.loads(r["extra_info"]["group"])["variant"]) for r in rows)
    assert groups == [("1", 1), ("1", 2), ("5", 1), ("5", 2)]
    by_id = _by_id(rows)
    assert by_id["2/1"]["reward_model"]["ground_truth"] == "3.1416"
    assert _spec(by_id["1/1"]) == {"type": "float", "tolerance": 0.001}
    assert _spec(by_id["1/5"]) == {"type": "choice", "options": ["yes", "no"]}


def test_dynamath_seed_file_uses_answer_and_variant_zero(dynamath_seed_input, tmp_path):
    """The GitHub seed file stores the gold as 'answer' (not ground_truth); its variant is 0; text type."""
    summary = build_benchmark(
        BenchmarkBuildConfig("dynamath", str(dynamath_seed_input[0]), str(tmp_path), image_root=str(dynamath_seed_input[1]), split="seed")
    )
    (row,) = pq.read_table(summary.parquet).to_pylist()
    assert row["reward_model"]["ground_truth"] == "5:0" and _spec(row) == {"type": "text"}
    assert json.loads(row["extra_info"]["group"]) == {"seed": "21", "variant": 0}


def test_dynamath_single_answer_and_int_types_are_built_and_scored(dynamath_seed_other_types_input, tmp_path):
    """answer_type 'single answer' and 'int' (written by the official generator; seeds 465, 466, 477, 480 of the
    seed file) are built, not rejected, and scored like the official scorer's last branch: a right answer
    scores 1, a wrong one 0 (int golds compare numerically, so '7.0' is right)."""
    path, root = dynamath_seed_other_types_input
    config = BenchmarkBuildConfig("dynamath", str(path), str(tmp_path), image_root=str(root), split="seed")
    summary = build_benchmark(config)
    assert summary.rejected == {} and summary.rows_written == 2
    rows = _by_id(pq.read_table(summary.parquet).to_pylist())
    assert _spec(rows["0/465"]) == {"type": "text"} and _spec(rows["0/466"]) == {"type": "integer"}

    def acc(row, answer):
        response = f"<think>t</think><answer>{answer}</answer>"
        gold = row["reward_model"]["ground_truth"]
        return compute_score(row["data_source"], response, gold, row["extra_info"])["acc"]

    assert (acc(rows["0/465"], "Second"), acc(rows["0/465"], "third")) == (1.0, 0.0)
    assert (acc(rows["0/466"], "7"), acc(rows["0/466"], "7.0"), acc(rows["0/466"], "8")) == (1.0, 1.0, 0.0)


def test_mathverse_text_only_config_is_its_own_entry(built, mathverse_text_only_input):
    """The Text Only file built as docs/evaluation.md says (next to testmini, default --split) lands in the split
    testmini_text_only: testmini's entry keeps only its five versions' rows (its acc and row count are not
    merged with Text Only), and Text Only is scored on its own. --split testmini_text_only gives the same."""
    from calibrl_ext.eval.metrics import benchmark_metrics
    from calibrl_ext.eval.results import load_parquet_rows

    testmini = built["mathverse"][0]
    out = Path(testmini.parquet).parent
    text_only = build_benchmark(BenchmarkBuildConfig("mathverse", str(mathverse_text_only_input), str(out),
                                                     name="mathverse_testmini_text_only"))  # fmt: skip
    same = build_benchmark(BenchmarkBuildConfig("mathverse", str(mathverse_text_only_input), str(out / "by_split"),
                                                split="testmini_text_only"))  # fmt: skip
    assert text_only.rejected == {} and set(text_only.rows_per_data_source) == {"mathverse_testmini_text_only/text_only"}
    assert same.rows_per_data_source == text_only.rows_per_data_source
    entries = load_parquet_rows([testmini.parquet, text_only.parquet])
    assert sorted(entries) == ["mathverse_testmini", "mathverse_testmini_text_only"]
    assert len(entries["mathverse_testmini"].rows) == testmini.rows_written
    assert {row.group["problem_version"] for row in entries["mathverse_testmini"].rows} <= set(MATHVERSE_VISION_VERSIONS)
    for row in entries["mathverse_testmini"].rows:
        row.samples[0] = 0.0
    for row in entries["mathverse_testmini_text_only"].rows:
        row.samples[0] = 1.0
    assert benchmark_metrics("mathverse", entries["mathverse_testmini"].rows, 1)["acc"] == 0.0
    only = benchmark_metrics("mathverse", entries["mathverse_testmini_text_only"].rows, 1)
    assert only["acc"] == only["text_only"] == 1.0 and "vision_mean" not in only


def test_amc_float_answers_are_written_without_point_zero(built):
    """AMC's answer column is float64 (142.0): the gold is '142'; a real fraction stays '2.5'."""
    rows = built["amc"][1]
    assert [r["reward_model"]["ground_truth"] for r in rows] == ["142", "2.5"]
    assert all(r["images"] == [] for r in rows)


def test_provenance_is_stored_in_the_parquet(built):
    """The parquet records benchmark, split, prompt template and licence (reports print them)."""
    provenance = read_provenance(built["mathvista"][0].parquet)
    assert provenance["benchmark"] == "mathvista" and provenance["split"] == "testmini"
    assert "{question}" in provenance["prompt_template"]
    assert "PROHIBITED" in provenance["licence"]


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("Is it? Choices: (A) yes (B) no", ["yes", "no"]),
        ("how many zeros? choice: (A) 2 (B) 1 (C) 0", ["2", "1", "0"]),
        ("Find x.\nChoices:\nA:30°\nB:60°", ["30°", "60°"]),
        ("Select from A-D. \n A) 10 B) 12 C) 14 D) 16", ["10", "12", "14", "16"]),
        ("What is the missing symbol? Choices: (A) + (B) - (C) * (D) /", ["+", "-", "*", "/"]),
        ("Choices: (A) yes (C) no", None),  # letters must run A, B, …
        ("No options here.", None),
    ],
)
def test_parse_inline_choices(question, expected):
    """Inline option blocks of DynaMath, MathVerse and LogicVista are read in letter order, or not at all."""
    assert parse_inline_choices(question) == expected


def test_parse_wemath_options_tolerates_irregular_spacing():
    """We-Math's option string: ';' separators with or without spaces, trailing periods dropped."""
    assert parse_wemath_options("A. 3, 5, 4; B. 3, 50, 40; C. 300, 50, 40; D. 30, 50, 40.; E. No correct answer") == [
        "3, 5, 4", "3, 50, 40", "300, 50, 40", "30, 50, 40", "No correct answer"]  # fmt: skip
    assert parse_wemath_options("A. F;    B. D;    C. B;    D. I") == ["F", "D", "B", "I"]
    assert parse_wemath_options("B. 1; A. 2") is None
