"""Stage logic of ``calibrl.mode=sft_then_grpo`` (recipe/calibrl/sft_stage.py): config validation, the derived
stage directory, the completion marker and reuse, the SFT rows, and how a failing SFT run surfaces.

No SFT training here: tests/recipe/test_e2e_sft_then_grpo.py runs the whole mode.
"""

import json

import pandas as pd
import pytest

from recipe.calibrl.settings import CalibRLConfigError, CalibRLRecipeSettings
from recipe.calibrl.sft_stage import (
    HF_SUBDIR,
    MARKER_FILE,
    SftStageError,
    SftStageSettings,
    is_complete,
    plan_sft_stage,
    prepare_stage_dir,
    run_sft_stage,
    sft_overrides,
    train,
    write_marker,
    write_sft_parquet,
)
from recipe.calibrl.startup_checks import validate_startup


@pytest.fixture
def model_dir(tmp_path):
    model = tmp_path / "base_model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    return model


@pytest.fixture
def sft_config(compose_recipe, model_dir, tmp_path):
    """Factory: the recipe config in mode sft_then_grpo with a local base model (1 SFT row per step)."""

    def _compose(*overrides):
        return compose_recipe(
            "calibrl.mode=sft_then_grpo", f"actor_rollout_ref.model.path={model_dir}",
            f"trainer.default_local_dir={tmp_path / 'ckpt'}", "calibrl.sft.train_batch_size=1", *overrides,
        )  # fmt: skip

    return _compose


def test_mode_is_plain_grpo_after_the_stage(sft_config):
    """sft_then_grpo trains with verl's vanilla loss and no expert rows; the yaml's calibrl.sft defaults load."""
    config = sft_config()
    assert config.actor_rollout_ref.actor.policy_loss.loss_mode == "vanilla"
    settings = validate_startup(config, expect_trainer_mode=True)
    assert not settings.uses_expert_rows and not settings.trains_expert_rows
    defaults = SftStageSettings.from_config(sft_config("calibrl.sft.train_batch_size=32"))
    assert defaults == SftStageSettings()


@pytest.mark.parametrize(
    "override, key",
    [
        ("calibrl.sft.epochs=0", "calibrl.sft.epochs"),
        ("calibrl.sft.max_steps=0", "calibrl.sft.max_steps"),
        ("calibrl.sft.lr=0", "calibrl.sft.lr"),
        ("calibrl.sft.train_batch_size=0", "calibrl.sft.train_batch_size"),
        ("calibrl.sft.micro_batch_size_per_gpu=0", "calibrl.sft.micro_batch_size_per_gpu"),
        ("calibrl.sft.max_length=-1", "calibrl.sft.max_length"),
        ("calibrl.sft.timeout_s=0", "calibrl.sft.timeout_s"),
        ("calibrl.sft.nproc_per_node=0", "calibrl.sft.nproc_per_node"),
    ],
)
def test_each_invalid_sft_key_fails_at_start_up_naming_it(sft_config, override, key):
    """Each invalid calibrl.sft value is refused by the start-up checks, naming its key."""
    with pytest.raises(CalibRLConfigError, match=key.replace(".", r"\.")):
        validate_startup(sft_config(override), expect_trainer_mode=True)


def test_missing_or_empty_expert_column_fails_at_start_up(sft_config, train_parquet, tmp_path):
    """No expert column, or one with only empty solutions, fails at start-up naming calibrl.expert_column (grpo
    would run on the same file)."""
    no_column = train_parquet("no_expert.parquet", with_expert=False)
    with pytest.raises(CalibRLConfigError, match=r"calibrl\.expert_column"):
        validate_startup(sft_config(f"data.train_files={no_column}"), expect_trainer_mode=True)
    frame = pd.read_parquet(no_column).assign(expert_solution=["", "  "])
    frame.to_parquet(tmp_path / "empty.parquet")
    with pytest.raises(CalibRLConfigError, match=r"non-empty .*calibrl\.expert_column"):
        validate_startup(sft_config(f"data.train_files={tmp_path / 'empty.parquet'}"), expect_trainer_mode=True)
    grpo = sft_config(f"data.train_files={no_column}", "calibrl.mode=grpo")
    assert CalibRLRecipeSettings.from_config(grpo).mode == "grpo"
    validate_startup(grpo, expect_trainer_mode=True)


def test_plan_refuses_a_batch_larger_than_the_expert_rows_and_a_missing_model(sft_config):
    """The 2-row parquet has 1 expert row: a batch of 2 would never complete a step; a model path without
    config.json cannot be fine-tuned. Both name their key."""
    with pytest.raises(SftStageError, match=r"calibrl\.sft\.train_batch_size=2 exceeds the 1 training rows"):
        plan_sft_stage(sft_config("calibrl.sft.train_batch_size=2"))
    with pytest.raises(SftStageError, match=r"actor_rollout_ref\.model\.path"):
        plan_sft_stage(sft_config("actor_rollout_ref.model.path=/nonexistent/model"))


def test_stage_directory_is_derived_from_the_inputs(sft_config, tmp_path):
    """Same config -> same directory under <default_local_dir>/sft_stage/; a weight-deciding setting or a changed
    training file -> another one; the timeout does not count; calibrl.sft.checkpoint_dir wins when set."""
    first, again = plan_sft_stage(sft_config()), plan_sft_stage(sft_config())
    assert first.stage_dir == again.stage_dir == (tmp_path / "ckpt" / "sft_stage" / first.key[:12]).resolve()
    assert plan_sft_stage(sft_config("calibrl.sft.timeout_s=5")).key == first.key
    assert plan_sft_stage(sft_config("calibrl.sft.lr=2e-5")).key != first.key
    assert plan_sft_stage(sft_config("calibrl.sft.overrides=['optim.weight_decay=0.1']")).key != first.key
    train_file = first.train_files[0]
    pd.read_parquet(train_file).assign(expert_solution=["<answer>2</answer>", ""]).to_parquet(train_file)
    assert plan_sft_stage(sft_config()).key != first.key
    explicit = plan_sft_stage(sft_config(f"calibrl.sft.checkpoint_dir={tmp_path / 'mine'}"))
    assert explicit.stage_dir == (tmp_path / "mine").resolve()


def test_reuse_needs_the_marker_with_the_same_key_and_the_checkpoint(sft_config):
    """A stage directory is complete only with a readable marker of the same key AND huggingface/config.json; the
    folder alone, a torn marker or another key's marker is not reused."""
    plan = plan_sft_stage(sft_config())
    (plan.hf_dir).mkdir(parents=True)
    (plan.hf_dir / "config.json").write_text("{}")
    assert not is_complete(plan)  # checkpoint files, no marker (killed before the marker was written)
    plan.marker_path.write_text('{"key": "')
    assert not is_complete(plan)  # torn marker
    write_marker(plan, {"steps": 3})
    assert is_complete(plan)
    assert json.loads(plan.marker_path.read_text())["steps"] == 3
    assert run_sft_stage(sft_config()) == (plan.hf_dir, True)
    other = plan_sft_stage(sft_config("calibrl.sft.lr=3e-5", f"calibrl.sft.checkpoint_dir={plan.stage_dir}"))
    assert not is_complete(other)
    with pytest.raises(SftStageError, match=r"holds an SFT checkpoint of other inputs"):
        prepare_stage_dir(other)
    (plan.hf_dir / "config.json").unlink()
    assert not is_complete(plan)


def test_interrupted_run_is_cleared_and_a_foreign_directory_refused(sft_config, tmp_path):
    """A marker-less directory holding only this stage's files is cleared for a fresh run; one holding anything
    else is refused and left as it was."""
    stage = tmp_path / "stage"
    plan = plan_sft_stage(sft_config(f"calibrl.sft.checkpoint_dir={stage}"))
    (stage / "verl_sft" / "global_step_1").mkdir(parents=True)
    (stage / "sft.log").write_text("partial")
    prepare_stage_dir(plan)
    assert list(stage.iterdir()) == []
    (stage / "my_notes.txt").write_text("keep me")
    with pytest.raises(SftStageError, match=r"not an SFT stage directory"):
        prepare_stage_dir(plan)
    assert (stage / "my_notes.txt").read_text() == "keep me"


def test_sft_rows_are_the_prompt_plus_the_expert_turn(sft_config, tmp_path):
    """One SFT row per training row with an expert solution: the RL prompt messages unchanged, then an assistant
    turn with the solution; rows with an empty solution are left out; images are carried over."""
    plan = plan_sft_stage(sft_config())
    count = write_sft_parquet(plan, tmp_path / "sft.parquet")
    frame = pd.read_parquet(tmp_path / "sft.parquet")
    assert count == len(frame) == 1
    messages = [dict(m) for m in frame.at[0, "messages"]]
    assert messages == [
        {"role": "user", "content": "1+1?"},
        {"role": "assistant", "content": "<think>1+1</think><answer>2</answer>"},
    ]
    assert list(frame.at[0, "images"]) == []


def test_sft_overrides_follow_the_config_and_add_the_cpu_set_on_cpu(sft_config, tmp_path):
    """verl SFT overrides carry calibrl.sft values; the CPU engine set is added only with trainer.device=cpu; the
    user's calibrl.sft.overrides come last (they win)."""
    config = sft_config("calibrl.sft.lr=0.002", "calibrl.sft.overrides=['optim.weight_decay=0.1']")
    plan = plan_sft_stage(config)
    gpu = sft_overrides(plan, config, tmp_path / "sft.parquet")
    assert "optim.lr=0.002" in gpu and "data.pad_mode=no_padding" in gpu and "data.truncation=error" in gpu
    assert gpu[-1] == "optim.weight_decay=0.1" and "trainer.device=cpu" not in gpu
    assert f"data.max_length={config.data.max_prompt_length + config.data.max_response_length}" in gpu
    cpu_config = sft_config("trainer.device=cpu", "calibrl.sft.lr=0.002")
    cpu = sft_overrides(plan_sft_stage(cpu_config), cpu_config, tmp_path / "sft.parquet")
    assert "trainer.device=cpu" in cpu and "engine.strategy=fsdp2" in cpu and "model.use_remove_padding=False" in cpu


def test_failing_sft_run_surfaces_the_trainers_error_and_writes_no_marker(sft_config):
    """verl's SFT trainer exits non-zero (here: an unknown override) -> SftStageError quoting the trainer's own
    error from its log; no marker, so the next invocation trains again."""
    config = sft_config("trainer.device=cpu", "calibrl.sft.overrides=['data.no_such_key=1']")
    plan = plan_sft_stage(config)
    with pytest.raises(SftStageError, match=r"(?s)exit [1-9].*root cause: .*no_such_key"):
        train(plan, config)
    assert not (plan.stage_dir / MARKER_FILE).exists() and not (plan.stage_dir / HF_SUBDIR).exists()


def test_sft_run_past_its_timeout_is_terminated_and_named(sft_config):
    """A run past calibrl.sft.timeout_s is terminated (its whole process group: no process with the stage's SFT
    parquet on its command line is left) and the error names the key."""
    import psutil

    config = sft_config("trainer.device=cpu", "calibrl.sft.timeout_s=0.5")
    plan = plan_sft_stage(config)
    with pytest.raises(SftStageError, match=r"calibrl\.sft\.timeout_s=0\.5"):
        train(plan, config)
    marker = str(plan.stage_dir / "sft_data.parquet")
    alive = [p.pid for p in psutil.process_iter(["cmdline", "status"])
             if p.info["status"] != psutil.STATUS_ZOMBIE and any(marker in a for a in p.info["cmdline"] or [])]  # fmt: skip
    assert alive == []
