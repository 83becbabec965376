"""Every validation case of the build: each bad row is rejected with its reason, good rows are written."""

from __future__ import annotations

import json

import pytest

from calibrl_ext.data import BuildError
from calibrl_ext.reward import is_well_formatted


def _assert_accounted(run, rows_in: int) -> None:
    written = sum(run.summary.rows_written.values())
    assert run.summary.rows_read == rows_in
    assert written + len(run.rejects) == rows_in
    assert sum(run.summary.rejected.values()) == len(run.rejects)


def test_every_row_is_written_or_rejected_with_reason_and_fix(run_build, helpers, tmp_path):
    """Accounting: rows read == rows written + rejects lines; each reject names row_id, reason, message, fix."""
    records = [helpers.record(i) for i in range(6)]
    records[1]["answer"] = None
    records[3]["images"] = [b"not an image at all"]
    run = run_build(records)
    _assert_accounted(run, 6)
    assert run.reasons() == {"r1": "missing_ground_truth", "r3": "image_corrupt"}
    for item in run.rejects:
        assert set(item) == {"row_id", "source", "reason", "message", "fix"}
        assert item["message"] and item["fix"]


def test_missing_and_unreadable_image_files(run_build, helpers, tmp_path):
    """A path to no file is image_missing; a path that cannot be read as a file is image_unreadable."""
    good = tmp_path / "imgs" / "good.png"
    good.parent.mkdir()
    good.write_bytes(helpers.png_bytes())
    (tmp_path / "imgs" / "a_folder.png").mkdir()  # reading it fails even as root (permissions would not)
    records = [
        helpers.record(0, images=["good.png"]),
        helpers.record(1, images=["nope.png"]),
        helpers.record(2, images=["a_folder.png"]),
    ]
    run = run_build(records, image_root=str(tmp_path / "imgs"))
    assert run.reasons() == {"r1": "image_missing", "r2": "image_unreadable"}
    assert "nope.png" in run.rejects[0]["message"]
    assert run.by_id()["r0"]["images"][0]["bytes"] == good.read_bytes()


def test_corrupt_and_truncated_image_bytes(run_build, helpers):
    """Undecodable bytes and a PNG cut in half are both image_corrupt (the image is fully decoded, not sniffed)."""
    png = helpers.png_bytes(size=(64, 64))
    records = [helpers.record(0, images=[b"\x89PNG garbage"]), helpers.record(1, images=[png[: len(png) // 2]])]
    records.append(helpers.record(2))
    run = run_build(records)
    assert run.reasons() == {"r0": "image_corrupt", "r1": "image_corrupt"}


def test_image_placeholders_inserted_kept_or_rejected(run_build, helpers):
    """No <image> in the question: one per image is prepended; same count: kept as is; other count: rejected."""
    two = [helpers.png_bytes(color=(1, 2, 3)), helpers.png_bytes(color=(4, 5, 6))]
    records = [
        helpers.record(0, images=two, question="Compare the two pictures."),
        helpers.record(1, images=two, question="Left <image> and right <image>: which is darker?"),
        helpers.record(2, images=two, question="Only one <image> placeholder."),
        helpers.record(3, question="<image><image> Two placeholders, one image."),
    ]
    run = run_build(records)
    assert run.reasons() == {"r2": "placeholder_mismatch", "r3": "placeholder_mismatch"}
    rows = run.by_id()
    assert rows["r0"]["prompt"][-1]["content"].startswith("<image><image>Compare the two pictures.")
    assert rows["r1"]["prompt"][-1]["content"].startswith("Left <image> and right <image>")
    for row in rows.values():
        assert row["prompt"][-1]["content"].count("<image>") == len(row["images"])


def test_missing_ground_truth_and_empty_question(run_build, helpers):
    """Null / empty / NaN ground truth is missing_ground_truth; a blank question is empty_question."""
    records = [
        helpers.record(0, answer=None),
        helpers.record(1, answer="  "),
        helpers.record(2, question="   "),
        helpers.record(3, question="<image>"),
        helpers.record(4),
    ]
    run = run_build(records)
    assert run.reasons() == {
        "r0": "missing_ground_truth",
        "r1": "missing_ground_truth",
        "r2": "empty_question",
        "r3": "empty_question",
    }


def test_ground_truth_normalisation(run_build, helpers):
    """Integer-valued numbers lose '.0'; a whole \\boxed{X} becomes X unless --keep-boxed-answer; other text is kept."""
    records = [
        helpers.record(0, answer="\\boxed{60}"),
        helpers.record(1, answer="\\boxed{1}+\\boxed{2}"),
        helpers.record(2, answer="x^{2}"),
    ]
    run = run_build(records, skip_expert_check=True)
    truths = {key: row["reward_model"]["ground_truth"] for key, row in run.by_id().items()}
    assert truths == {"r0": "60", "r1": "\\boxed{1}+\\boxed{2}", "r2": "x^{2}"}
    kept = run_build(records, skip_expert_check=True, unwrap_boxed_answer=False)
    assert kept.by_id()["r0"]["reward_model"]["ground_truth"] == "\\boxed{60}"
    numeric = run_build(
        [{"id": "n", "question": "q?", "answer": 142.0, "images": [helpers.png_bytes()]}], skip_expert_check=True
    )
    assert numeric.rows()[0]["reward_model"]["ground_truth"] == "142"


def test_ground_truth_list_of_several_values_is_rejected(helpers, tmp_path, run_build):
    """A ground truth given as a list of several values cannot be one reward string: bad_ground_truth."""
    path = helpers.write_jsonl(
        tmp_path / "gt.jsonl",
        [
            {"id": "a", "question": "q1", "answer": ["3"], "images": [str(tmp_path / "i.png")]},
            {"id": "b", "question": "q2", "answer": ["3", "4"], "images": [str(tmp_path / "i.png")]},
        ],
    )
    (tmp_path / "i.png").write_bytes(helpers.png_bytes())
    run = run_build(path, skip_expert_check=True)
    assert run.reasons() == {"b": "bad_ground_truth"}
    assert run.rows()[0]["reward_model"]["ground_truth"] == "3"


def test_missing_expert_kept_flagged_by_default_dropped_on_request(run_build, helpers):
    """Default: a row without expert is written with expert_solution "" (never null), status missing, pass False."""
    records = [helpers.record(0, solution=None), helpers.record(1, solution=""), helpers.record(2)]
    run = run_build(records)
    rows = run.by_id()
    for key in ("r0", "r1"):
        assert rows[key]["expert_solution"] == ""
        assert rows[key]["extra_info"]["expert_status"] == "missing"
        assert rows[key]["extra_info"]["expert_pass"] is False
    assert rows["r2"]["extra_info"]["expert_status"] == "ok"
    assert run.summary.expert_status["train"] == {"missing": 2, "ok": 1}
    dropped = run_build(records, missing_expert="drop")
    assert dropped.reasons() == {"r0": "missing_expert", "r1": "missing_expert"}


def test_badly_formatted_expert_rewrapped_or_rejected(run_build, helpers):
    """rewrap (default) rebuilds <think>/<answer> from an <answer> tag or a final \\boxed{}; without either, or
    with --expert-format reject, the row is rejected as expert_bad_format."""
    records = [
        helpers.record(0, solution="Two plus two is four. <answer>4</answer>"),
        helpers.record(1, solution="Two plus two makes \\boxed{4}."),
        helpers.record(2, solution="I think it is four."),
        helpers.record(3, solution=" <think>x</think><answer>4</answer>\n"),
        helpers.record(4),
    ]
    run = run_build(records)
    assert run.reasons() == {"r2": "expert_bad_format"}
    rows = run.by_id()
    for key in ("r0", "r1", "r3"):
        info = rows[key]["extra_info"]
        assert info["expert_status"] == "rewrapped" and info["expert_rewrapped"] and info["expert_pass"]
        assert is_well_formatted(rows[key]["expert_solution"])
    assert rows["r0"]["expert_solution"] == "<think>\nTwo plus two is four.\n</think>\n<answer>4</answer>"
    assert rows["r4"]["extra_info"]["expert_status"] == "ok" and not rows["r4"]["extra_info"]["expert_rewrapped"]
    strict = run_build(records, expert_format="reject")
    assert strict.reasons() == {key: "expert_bad_format" for key in ("r0", "r1", "r2", "r3")}


def test_expert_failing_the_reward_is_blanked_kept_or_dropped(run_build, helpers):
    """An expert whose answer does not match the ground truth has status fails_reward and expert_pass False
    (the released pass_ratio == 0). Default blank: the row is written with expert_solution "" (its group trains
    as plain GRPO) and the text moved to extra_info.failed_expert; keep: the text stays in expert_solution;
    drop: the row is rejected, naming both answers."""
    wrong = "<think>\nTwo plus two is five.\n</think>\n<answer>5</answer>"
    records = [helpers.record(0, solution=wrong), helpers.record(1)]
    run = run_build(records)
    row = run.by_id()["r0"]
    assert (row["extra_info"]["expert_status"], row["extra_info"]["expert_pass"]) == ("fails_reward", False)
    assert row["expert_solution"] == "" and row["extra_info"]["failed_expert"] == wrong
    good = run.by_id()["r1"]
    assert good["extra_info"]["expert_pass"] is True and good["extra_info"]["failed_expert"] == ""
    kept = run_build(records, failing_expert="keep").by_id()["r0"]
    assert kept["expert_solution"] == wrong and kept["extra_info"]["expert_pass"] is False
    dropped = run_build(records, failing_expert="drop")
    assert dropped.reasons() == {"r0": "expert_fails_reward"}
    assert "'5'" in dropped.rejects[0]["message"] and "'4'" in dropped.rejects[0]["message"]


def test_skip_expert_check_marks_unchecked(run_build, helpers):
    """--skip-expert-check does not score experts: status unchecked, expert_pass True (the released default)."""
    wrong = "<think>\nno\n</think>\n<answer>5</answer>"
    run = run_build([helpers.record(0, solution=wrong)], skip_expert_check=True)
    info = run.rows()[0]["extra_info"]
    assert (info["expert_status"], info["expert_pass"]) == ("unchecked", True)


def test_duplicates_and_duplicate_ids(run_build, helpers):
    """A row repeating an earlier question + images is a duplicate (naming the first row); a repeated id is
    duplicate_id; --keep-duplicates keeps both."""
    records = [
        helpers.record(0),
        helpers.record(1, question=helpers.record(0)["question"], images=helpers.record(0)["images"]),
        helpers.record(2),
        helpers.record(3, id="r2"),
    ]
    run = run_build(records)
    assert [(item["row_id"], item["reason"]) for item in run.rejects] == [("r1", "duplicate"), ("r2", "duplicate_id")]
    assert "'r0'" in run.rejects[0]["message"]
    assert len(run_build(records, keep_duplicates=True).rows()) == 4


def test_same_question_with_other_image_is_not_a_duplicate(run_build, helpers):
    """Duplicates are judged on question AND image content."""
    records = [helpers.record(0), helpers.record(1, question=helpers.record(0)["question"])]
    assert len(run_build(records).rows()) == 2


def test_text_only_rows_rejected_unless_allowed(run_build, helpers):
    """A row with no image is no_images by default; --allow-text-only keeps it with no placeholder."""
    records = [helpers.record(0, images=[]), helpers.record(1, images=None), helpers.record(2)]
    run = run_build(records)
    assert run.reasons() == {"r0": "no_images", "r1": "no_images"}
    allowed = run_build(records, allow_text_only=True)
    rows = allowed.by_id()
    assert rows["r0"]["images"] == [] and "<image>" not in rows["r0"]["prompt"][-1]["content"]


def test_malformed_jsonl_lines_and_unknown_split_values(run_build, helpers, tmp_path):
    """A JSONL line that is not a JSON object is malformed_row (with its line number); an unknown --split-col
    value is unknown_split; blank lines are not rows."""
    (tmp_path / "i.png").write_bytes(helpers.png_bytes())
    lines = [
        {"id": "a", "question": "q1", "answer": "1", "image": "i.png", "part": "train"},
        "{not json",
        "",
        "[1, 2]",
        {"id": "b", "question": "q2", "answer": "2", "image": "i.png", "part": "validation"},
        {"id": "c", "question": "q3", "answer": "3", "image": "i.png", "part": "holdout"},
    ]
    path = helpers.write_jsonl(tmp_path / "in.jsonl", lines)
    run = run_build(path, skip_expert_check=True, mapping=_mapping(split="part"))
    reasons = sorted(item["reason"] for item in run.rejects)
    assert reasons == ["malformed_row", "malformed_row", "unknown_split"]
    assert any("line 2" in item["message"] for item in run.rejects)
    assert [row["extra_info"]["row_id"] for row in run.rows("train")] == ["a"]
    assert [row["extra_info"]["row_id"] for row in run.rows("val")] == ["b"]
    assert run.summary.rows_read == 5


def _mapping(**columns):
    from calibrl_ext.data import ColumnMapping

    return ColumnMapping(**columns)


def test_overlong_prompt_and_expert_with_a_tokenizer(run_build, helpers, tiny_vl_model):
    """With --tokenizer: prompts over max_prompt_length are rejected; experts over max_response_length are kept
    (counted, the recipe truncates) or rejected with --overlong-expert reject; token counts land in extra_info."""
    long_expert = "<think>\n" + "step " * 300 + "\n</think>\n<answer>4</answer>"
    records = [
        helpers.record(0),
        helpers.record(1, question="What is two plus two? " + "Think hard. " * 100),
        helpers.record(2, solution=long_expert),
    ]
    common = dict(tokenizer=str(tiny_vl_model), max_prompt_length=300, max_response_length=200)
    run = run_build(records, **common)
    assert run.reasons() == {"r1": "prompt_overlong"}
    rows = run.by_id()
    assert 0 < rows["r0"]["extra_info"]["prompt_tokens"] <= 300
    assert 0 < rows["r0"]["extra_info"]["expert_tokens"] <= 200 < rows["r2"]["extra_info"]["expert_tokens"]
    assert run.summary.experts_overlong == 1
    strict = run_build(records, overlong_expert="reject", **common)
    assert strict.reasons() == {"r1": "prompt_overlong", "r2": "expert_overlong"}


def test_nothing_written_is_an_error_but_still_accounted(run_build, helpers, tmp_path):
    """When every row is rejected the build raises BuildError, after writing rejects and summary."""
    with pytest.raises(BuildError, match="no row was written"):
        run_build([helpers.record(0, answer=None)])
    summary = json.loads((tmp_path / "out1" / "summary.json").read_text())
    assert summary["rejected"] == {"missing_ground_truth": 1} and summary["rows_read"] == 1
    assert not (tmp_path / "out1" / "train.parquet").exists()
