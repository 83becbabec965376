"""Expert solutions: accepted shapes, the join from a side file by id, and the rewrap rules."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from calibrl_ext.data import BuildConfig, ColumnMapping, ConfigError, build
from calibrl_ext.data.experts import expert_text, load_expert_file, rewrap_expert, unwrap_boxed_answer

EXPERT = "<think>\nfour\n</think>\n<answer>4</answer>"


def test_expert_text_accepts_string_messages_and_content_dict():
    """String (CalibRL `solution`), assistant messages (LUFFY `target`), {content} dicts and lists of strings
    all give the same text; null, NaN, blank and empty lists give None."""
    assert expert_text(EXPERT) == EXPERT
    assert expert_text([{"role": "assistant", "content": EXPERT}]) == EXPERT
    assert expert_text([{"role": "user", "content": "q"}, {"role": "assistant", "content": EXPERT}]) == EXPERT
    assert expert_text({"content": EXPERT}) == EXPERT
    assert expert_text([EXPERT, "second sample"]) == EXPERT
    for missing in (None, float("nan"), "", "   ", [], {"content": None}):
        assert expert_text(missing) is None


def test_rewrap_rules():
    """Rewrap keeps the reasoning, takes the answer from the last <answer> pair, else the last \\boxed{}."""
    assert rewrap_expert("So <answer>7</answer>") == "<think>\nSo\n</think>\n<answer>7</answer>"
    assert (
        rewrap_expert("<think>a</think> b <answer>x<y</answer> trailing")
        == "<think>\na b\n</think>\n<answer>x<y</answer>"
    )
    assert (
        rewrap_expert("Hence \\boxed{\\frac{1}{2}}.")
        == "<think>\nHence \\boxed{\\frac{1}{2}}.\n</think>\n<answer>\\frac{1}{2}</answer>"
    )
    assert rewrap_expert("no answer here") is None
    assert rewrap_expert("empty <answer> </answer>") is None


def test_unwrap_boxed_answer_only_for_a_single_whole_box():
    """Only a ground truth that is exactly one \\boxed{...} is unwrapped."""
    assert unwrap_boxed_answer("\\boxed{60}") == "60"
    assert unwrap_boxed_answer(" \\boxed{\\frac{a}{b}} ") == "\\frac{a}{b}"
    assert unwrap_boxed_answer("\\boxed{1}, \\boxed{2}") == "\\boxed{1}, \\boxed{2}"
    assert unwrap_boxed_answer("x = \\boxed{3}") == "x = \\boxed{3}"


def _inputs(helpers, tmp_path, count):
    records = [helpers.record(i, id=f"q{i}", solution=None) for i in range(count)]
    return helpers.write_parquet(tmp_path / "in.parquet", records)


@pytest.mark.parametrize("file_format", ["jsonl", "parquet"])
def test_expert_file_join_by_id_with_missing_and_unused_ids(helpers, tmp_path, file_format):
    """Experts from a side file join on --id-col: rows without a matching id get status missing (kept),
    matched rows get the expert (any accepted shape), side-file ids no row uses are reported as unused,
    and a repeated side-file id keeps its first expert."""
    source = _inputs(helpers, tmp_path, 4)
    side = [
        {"qid": "q0", "response": EXPERT},
        {"qid": "q1", "response": [{"role": "assistant", "content": EXPERT}]},
        {"qid": "q3", "response": {"content": "<think>\nwrong\n</think>\n<answer>5</answer>"}},
        {"qid": "q3", "response": EXPERT},
        {"qid": "zz", "response": EXPERT},
    ]
    if file_format == "jsonl":
        side_path = helpers.write_jsonl(tmp_path / "experts.jsonl", side)
    else:
        # parquet needs one type per column: store the shapes as the JSON-able string / message-list forms
        side = [dict(item, response=expert_text(item["response"])) for item in side]
        side_path = tmp_path / "experts.parquet"
        pq.write_table(pa.Table.from_pylist(side), side_path)
    config = BuildConfig(
        inputs=[str(source)],
        out_dir=str(tmp_path / "out"),
        val_ratio=0.0,
        progress=False,
        mapping=ColumnMapping(id="id"),
        expert_file=str(side_path),
        expert_file_id_col="qid",
        expert_file_col="response",
    )
    summary = build(config)
    rows = {row["extra_info"]["row_id"]: row for row in pq.read_table(tmp_path / "out" / "train.parquet").to_pylist()}
    assert rows["q0"]["expert_solution"] == EXPERT and rows["q0"]["extra_info"]["expert_status"] == "ok"
    assert rows["q1"]["expert_solution"] == EXPERT
    assert rows["q2"]["expert_solution"] == "" and rows["q2"]["extra_info"]["expert_status"] == "missing"
    assert rows["q3"]["extra_info"]["expert_status"] == "fails_reward" and rows["q3"]["expert_solution"] == ""
    assert summary.expert_file["joined"] == 3
    assert summary.expert_file["unused"] == 1 and summary.expert_file["unused_examples"] == ["zz"]
    assert summary.expert_file["duplicate_ids"] == 1


def test_expert_file_errors_at_start_up(helpers, tmp_path):
    """A side file without the id or expert column, or a build without an id column, fails before any row is read."""
    no_id = [{k: v for k, v in helpers.record(0).items() if k != "id"}]
    source = helpers.write_parquet(tmp_path / "no_id.parquet", no_id)
    side = helpers.write_jsonl(tmp_path / "experts.jsonl", [{"key": "q0", "text": EXPERT}])
    with pytest.raises(ValueError, match="no id column 'id'"):
        load_expert_file(side, "id")
    with pytest.raises(ValueError, match="set --expert-file-col"):
        load_expert_file(side, "key")
    base = dict(inputs=[str(source)], out_dir=str(tmp_path / "out"), progress=False, expert_file=str(side))
    with pytest.raises(ConfigError, match="--id-col"):
        build(BuildConfig(**base))
    with pytest.raises(ConfigError, match="column 'id' for the id"):
        build(BuildConfig(mapping=ColumnMapping(id="id"), **base))
    assert not (tmp_path / "out").exists()
