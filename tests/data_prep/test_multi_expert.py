"""Several expert solutions per prompt (--max-experts): list column and side-file forms, per-expert checks."""

from __future__ import annotations

import hashlib
import json

import pyarrow.parquet as pq
import pytest

from calibrl_ext.data import BuildConfig, ConfigError, build
from calibrl_ext.data.rejects import read_rejects

SECOND = "<think>\nTwo and two make four.\n</think>\n<answer>4</answer>"
WRONG = "<think>\nTwo plus two is five.\n</think>\n<answer>5</answer>"
NO_ANSWER = "I think it is four but I will not say so in a tag"


def _expert_rejects(run) -> list[dict]:
    return read_rejects(run.out_dir / "expert_rejects.jsonl")


def test_list_column_keeps_good_experts_and_rejects_a_bad_one_per_expert(helpers, run_build):
    """A list column with one bad expert among good ones: the bad one is rejected alone (its own line with reason
    and fix, row id '<id>#expert<j>', counted per expert), the good ones are written in order to expert_solutions,
    expert_solution is the first kept one; a row whose only expert is bad is rejected as with one expert."""
    good = helpers.GOOD_EXPERT
    records = [
        helpers.record(0, solution=[good, NO_ANSWER, SECOND]),
        helpers.record(1, solution=[SECOND]),
        helpers.record(2, solution=[NO_ANSWER]),
        helpers.record(3, solution=[good]),
        helpers.record(4, solution=[]),
    ]
    run = run_build(records, max_experts=3)
    rows = run.by_id()
    assert rows["r0"]["expert_solutions"] == [good, SECOND] and rows["r0"]["expert_solution"] == good
    assert rows["r1"]["expert_solutions"] == [SECOND] and rows["r1"]["expert_solution"] == SECOND
    assert rows["r3"]["expert_solutions"] == [good]
    assert rows["r4"]["expert_solutions"] == [] and rows["r4"]["expert_solution"] == ""
    assert rows["r4"]["extra_info"]["expert_status"] == "missing"
    assert run.reasons() == {"r2": "expert_bad_format"}
    per_expert = {item["row_id"]: item for item in _expert_rejects(run)}
    assert set(per_expert) == {"r0#expert1", "r2#expert0"}
    assert per_expert["r0#expert1"]["reason"] == "expert_bad_format" and per_expert["r0#expert1"]["fix"]
    assert run.summary.experts == {
        "max_experts": 3,
        "kept": 4,
        "rejected": {"expert_bad_format": 2},
        "beyond_cap": 0,
        "rejects_path": str(run.out_dir / "expert_rejects.jsonl"),
    }


def test_candidates_of_a_value():
    """A list gives its elements, a single value (string, message dict) is one expert, None/NaN none."""
    from calibrl_ext.data.experts import expert_candidates

    assert expert_candidates(["a", "b"]) == ["a", "b"] and expert_candidates("a") == ["a"]
    assert expert_candidates({"content": "a"}) == [{"content": "a"}]
    assert expert_candidates(None) == [] and expert_candidates(float("nan")) == []


@pytest.mark.parametrize("policy, kept, failed", [("blank", [SECOND], WRONG), ("keep", [WRONG, SECOND], "")])
def test_failing_expert_policy_applies_per_expert(helpers, run_build, policy, kept, failed):
    """--failing-expert blank drops a failing expert from the list (text kept in extra_info.failed_expert when it
    was the first), keep writes it; drop rejects that expert alone (next test)."""
    run = run_build([helpers.record(0, solution=[WRONG, SECOND])], max_experts=2, failing_expert=policy)
    row = run.by_id()["r0"]
    assert row["expert_solutions"] == kept and row["expert_solution"] == kept[0]
    assert row["extra_info"]["failed_expert"] == failed


def test_failing_expert_drop_rejects_the_expert_and_the_cap_limits_checks(helpers, run_build):
    """--failing-expert drop rejects the failing expert (reason expert_fails_reward), not the row; candidates past
    --max-experts are neither checked nor written (counted beyond_cap)."""
    run = run_build(
        [helpers.record(0, solution=[WRONG, SECOND, helpers.GOOD_EXPERT])], max_experts=2, failing_expert="drop"
    )
    assert run.by_id()["r0"]["expert_solutions"] == [SECOND]
    assert [(r["row_id"], r["reason"]) for r in _expert_rejects(run)] == [("r0#expert0", "expert_fails_reward")]
    assert run.summary.experts["beyond_cap"] == 1 and run.rejects == []


def test_side_file_rows_of_one_id_become_several_experts(helpers, run_build, tmp_path):
    """With --max-experts an --expert-file keeps every row of an id, in file order, each checked alone."""
    source = helpers.write_parquet(
        tmp_path / "in.parquet", [helpers.record(i, id=f"q{i}", solution=None) for i in range(2)]
    )
    side = helpers.write_jsonl(
        tmp_path / "experts.jsonl",
        [
            {"id": "q0", "solution": helpers.GOOD_EXPERT},
            {"id": "q1", "solution": SECOND},
            {"id": "q0", "solution": NO_ANSWER},
            {"id": "q0", "solution": SECOND},
        ],
    )
    run = run_build(source, expert_file=str(side), max_experts=3)
    rows = run.by_id()
    assert rows["q0"]["expert_solutions"] == [helpers.GOOD_EXPERT, SECOND]
    assert rows["q1"]["expert_solutions"] == [SECOND]
    assert [r["row_id"] for r in _expert_rejects(run)] == ["q0#expert1"]
    assert run.summary.expert_file["duplicate_ids"] == 0


def test_one_expert_builds_keep_the_single_expert_schema(helpers, run_build):
    """--max-experts 1 (default) writes no list column and no expert_rejects file (existing readers unchanged)."""
    run = run_build([helpers.record(0)])
    assert "expert_solutions" not in pq.read_schema(run.out_dir / "train.parquet").names
    assert not (run.out_dir / "expert_rejects.jsonl").exists() and run.summary.experts is None
    with pytest.raises(ConfigError, match="--max-experts"):
        run_build([helpers.record(0)], max_experts=0)


def test_demo_with_two_experts_is_byte_deterministic(tmp_path):
    """The demo's second expert is a differently worded correct solution (passes the reward); two builds with the
    same settings give byte-identical parquet files."""
    from calibrl_ext.data.demo import DemoConfig

    digests = []
    for name in ("a", "b"):
        config = BuildConfig(
            out_dir=str(tmp_path / name), demo=DemoConfig(rows=8, val_rows=2, experts_per_row=2), max_experts=2,
            progress=False,
        )  # fmt: skip
        summary = build(config)
        digests.append(hashlib.sha256((tmp_path / name / "train.parquet").read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    assert summary.experts["kept"] == 16 and summary.experts["rejected"] == {}
    rows = pq.read_table(tmp_path / "a" / "train.parquet").to_pylist()
    for row in rows:
        first, second = row["expert_solutions"]
        assert first != second and first.split("<answer>")[1] == second.split("<answer>")[1]
    json.dumps(summary.to_dict())  # the summary stays JSON-serialisable


def test_study_demo_data_gains_the_expert_list_without_changing_the_one_expert_data(tmp_path):
    """build_demo_data (make demo, the study) with 2 experts per prompt rebuilds a one-expert build that lacks
    expert_solutions; prompts, images and expert_solution are those of the one-expert build."""
    from recipe.calibrl.cpu_demo import build_demo_data

    build_demo_data(tmp_path, experts_per_prompt=1)
    before = pq.read_table(tmp_path / "train.parquet")
    assert "expert_solutions" not in before.schema.names
    build_demo_data(tmp_path, experts_per_prompt=2)
    after = pq.read_table(tmp_path / "train.parquet")
    assert [len(v) for v in after.column("expert_solutions").to_pylist()] == [2] * after.num_rows
    for name in before.schema.names:
        assert after.column(name).equals(before.column(name)), name
    assert after.column("expert_solution").to_pylist() == [v[0] for v in after.column("expert_solutions").to_pylist()]
