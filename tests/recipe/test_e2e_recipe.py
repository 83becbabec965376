"""CalibRL through verl's real v1 trainer on the CPU backend (tiny random Qwen2.5-VL, demo data with images).

Runs share the set-up (module-scoped): CalibRL on 2 training processes with a KL reference model and a keep
probability (so some groups have no expert), resumed from its checkpoint for a third step, and LUFFY for one step
in 3 parameter-sync parts (after a start-up refusal of a micro-batch size that does not divide its mini-batch).
"""

from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

RECIPE_ENTRY = "recipe.calibrl.main_calibrl"
TOY_REWARD = Path(__file__).with_name("toy_reward.py")
N_ROLLOUTS = 2
PROMPTS_PER_STEP = 3
#: A KL loss against a reference model (not in the released recipe): the reference pass runs on the update rows.
KL_LOSS = ("actor_rollout_ref.actor.use_kl_loss=True", "actor_rollout_ref.actor.kl_loss_coef=0.01")


def _overrides(data_dir: Path, model: Path, out: Path, *extra: str) -> list[str]:
    return [
        f"data.train_files={data_dir / 'train.parquet'}",
        f"data.val_files={data_dir / 'val.parquet'}",
        "data.val_max_samples=4",
        f"data.train_batch_size={PROMPTS_PER_STEP}",
        "data.max_prompt_length=256",
        "data.max_response_length=96",
        f"actor_rollout_ref.model.path={model}",
        f"actor_rollout_ref.rollout.n={N_ROLLOUTS}",
        f"actor_rollout_ref.actor.ppo_mini_batch_size={PROMPTS_PER_STEP}",
        "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu=3",
        "actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu=3",
        "actor_rollout_ref.ref.log_prob_micro_batch_size_per_gpu=3",
        "actor_rollout_ref.actor.optim.lr=1e-3",
        f"reward.custom_reward_function.path={TOY_REWARD}",
        "trainer.val_before_train=False",
        f"trainer.default_local_dir={out / 'checkpoints'}",
        f"trainer.validation_data_dir={out / 'validation'}",
        "trainer.experiment_name=e2e",
        *extra,
    ]


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Demo parquet (built by the project's CLI) and the tiny Qwen2.5-VL (cached under tiny_models/)."""
    import subprocess
    import sys

    from calibrl_ext.tiny_models import cached_tiny_model

    root = tmp_path_factory.mktemp("recipe_e2e")
    data_dir = root / "data"
    subprocess.run([sys.executable, "data_prep/build_parquet.py", "--out", str(data_dir)], check=True,
                   cwd=Path(__file__).resolve().parents[2], capture_output=True)  # fmt: skip
    _make_some_prompts_multi_image(data_dir / "train.parquet")
    return root, data_dir, cached_tiny_model("qwen2_5_vl")


def _make_some_prompts_multi_image(path: Path, every: int = 3) -> None:
    """Give every ``every``-th training prompt a second image (and placeholder): multi-image prompts must work
    for rollouts and expert rows alike."""
    import pandas as pd

    frame = pd.read_parquet(path)
    for i in range(0, len(frame), every):
        images = list(frame.at[i, "images"])
        frame.at[i, "images"] = images + images[:1]
        messages = [dict(m) for m in frame.at[i, "prompt"]]
        messages[0]["content"] = "<image>" + messages[0]["content"]
        frame.at[i, "prompt"] = messages
    frame.to_parquet(path)


@pytest.fixture(scope="module")
def calibrl_run(assets):
    """CalibRL, 2 processes, a KL loss with a reference model, expert keep probability 2/3, 2 steps, checkpoint and
    validation."""
    from calibrl_ext.cpu_backend.launcher import run_verl
    from calibrl_ext.cpu_backend.overrides import CpuRunShape

    root, data_dir, model = assets
    out = root / "calibrl"
    run = run_verl(
        _overrides(data_dir, model, out, "trainer.total_training_steps=2", "trainer.save_freq=2",
                   "trainer.test_freq=2", *KL_LOSS, "calibrl.expert_keep_prob=0.67",
                   "calibrl.schedule_seed=3"),
        metrics_path=out / "metrics.jsonl", entry_module=RECIPE_ENTRY, timeout_s=900,
        shape=CpuRunShape(n_procs=2),
    )  # fmt: skip
    run.raise_for_status()
    return run, out


def test_calibrl_trains_two_steps_with_expert_rows(calibrl_run):
    """Both steps complete (prompts with one and with two images); the calibration term is non-zero; expert rows
    joined groups, were scored (the expert passes the toy reward) and got old log-probs; pad rows were added for the
    2-rank layout; all logged metrics are finite."""
    from calibrl_ext.cpu_backend.launcher import is_finite_number

    run, _ = calibrl_run
    assert run.steps() == [1, 2]
    steps = run.by_step()
    assert any(steps[s]["calibrl/old_log_prob_pad_rows"] > 0 for s in (1, 2))  # pads in the 2-rank layout
    assert any(abs(steps[s]["actor/calibration_loss"]) > 0 for s in (1, 2))
    for s in (1, 2):
        m = steps[s]
        assert m["calibrl/expert_rows"] >= 1 and m["calibrl/expert_pass_rate"] == 1.0
        assert m["calibrl/expert_log_prob"] < 0
        for key in ("actor/pg_loss", "actor/entropy", "actor/grad_norm", "critic/score/mean", "actor/kl_loss"):
            assert is_finite_number(m[key]), key
    assert run.leftover_pids == []


def test_update_sees_exactly_the_on_policy_tokens(calibrl_run):
    """The actor update saw exactly the on-policy response tokens (no expert row, the same arithmetic as GRPO with
    the same n): tokens seen by the loss (x dp) == the driver's on-policy token count; no expert row entered."""
    run, _ = calibrl_run
    for m in run.by_step().values():
        if "training/global_step" not in m:
            continue
        assert m["actor/expert_rows_seen"] == 0
        assert m["actor/update_tokens_seen"] * 2 == pytest.approx(m["calibrl/update_tokens"])  # dp = 2
        assert m["calibrl/update_rows"] == PROMPTS_PER_STEP * N_ROLLOUTS


def test_groups_without_expert_and_on_policy_metrics(calibrl_run):
    """With keep probability < 1 some groups train without an expert (counted); entropy and the rollout-vs-actor
    diff are computed on on-policy rows: the stock diff that includes expert rows is near 1, ours is tiny."""
    run, _ = calibrl_run
    steps = [m for m in run.by_step().values() if "training/global_step" in m]
    assert sum(m["calibrl/groups_without_expert"] for m in steps) >= 1
    for m in steps:
        assert m["calibrl/groups_without_expert"] + m["calibrl/expert_rows"] == PROMPTS_PER_STEP
        assert m["actor/entropy"] == pytest.approx(m["calibrl/entropy_on_policy"], rel=1e-5)
        assert m["training/rollout_probs_diff_max"] < 1e-3
        assert m["calibrl/stock_training_rollout_probs_diff_max_incl_expert"] > 0.5
        assert m["calibrl/tq_rows_at_step_start"] == 0


def test_validation_has_no_expert_rows(calibrl_run, assets):
    """Validation ran after the last step with one greedy sample per prompt (4 prompts, 4 rows), and no dumped
    response is an expert solution of the validation set: no expert row leaked into validation."""
    import json

    import pandas as pd

    run, out = calibrl_run
    _, data_dir, _ = assets
    assert any(key.startswith("val-core/") for key in run.by_step()[2])
    dumps = list((out / "validation").glob("*.jsonl"))
    assert dumps, "trainer.validation_data_dir holds no dump"
    rows = [json.loads(line) for line in dumps[0].read_text().splitlines() if line.strip()]
    assert len(rows) == 4
    solutions = [s for s in pd.read_parquet(data_dir / "val.parquet")["expert_solution"] if s]
    assert solutions and not any(solution in row["output"] for row in rows for solution in solutions)


def test_resume_from_checkpoint_continues_at_step_three(calibrl_run, assets):
    """A second run with resume_mode=auto loads global_step_2 and trains step 3 (same settings)."""
    from calibrl_ext.cpu_backend.launcher import run_verl
    from calibrl_ext.cpu_backend.overrides import CpuRunShape

    first, out = calibrl_run
    assert (out / "checkpoints" / "global_step_2").is_dir()
    _, data_dir, model = assets
    resumed = run_verl(
        _overrides(data_dir, model, out, "trainer.total_training_steps=3", "trainer.save_freq=-1",
                   "trainer.test_freq=-1", "trainer.resume_mode=auto", *KL_LOSS, "calibrl.expert_keep_prob=0.67",
                   "calibrl.schedule_seed=3"),
        metrics_path=out / "resumed_metrics.jsonl", entry_module=RECIPE_ENTRY, timeout_s=900,
        shape=CpuRunShape(n_procs=2),
    )  # fmt: skip
    resumed.raise_for_status()
    assert resumed.steps() == [3]
    assert resumed.by_step()[3]["calibrl/tq_rows_at_step_start"] == 0


#: LUFFY's per-rank update mini-batch is ppo_mini_batch_size * (n + 1) = 9 rows on one process: a micro-batch of 4
#: leaves a remainder (verl's prepare_micro_batches would assert after the first rollout).
LUFFY_BAD_MICRO_BATCH = 4
#: LUFFY runs its step in 3 parts (trainer.v1.sync.parameter_sync_step): one prompt per _step_once.
LUFFY_SYNC_PARTS = 3


def _start_up_error(overrides: list[str]) -> Exception | None:
    """The error the entry point's start-up checks raise for these overrides (composed by hydra with the recipe's
    yaml and the CPU backend's overrides, as ``run_verl`` and ``main_calibrl`` compose them; in-process: no Ray,
    no 10-50 s interpreter start-up), or None."""
    from hydra import compose, initialize_config_dir

    import calibrl_ext.plugin  # noqa: F401
    from calibrl_ext.cpu_backend.overrides import cpu_overrides
    from recipe.calibrl.startup_checks import validate_startup

    config_dir = Path(__file__).resolve().parents[2] / "recipe" / "calibrl" / "config"
    with initialize_config_dir(config_dir=str(config_dir), version_base=None):
        config = compose(config_name="calibrl_trainer", overrides=cpu_overrides() + list(overrides))
    try:
        validate_startup(config, expect_trainer_mode=True)
    except Exception as exc:  # noqa: BLE001 (returned to the test, which checks its type)
        return exc
    return None


@pytest.fixture(scope="module")
def luffy_run(assets):
    """LUFFY, one step in 3 parameter-sync parts, launched first with a micro-batch size that does not divide the
    (n + 1)-row mini-batch (refused at start-up), then with the micro-batch size the refusal proposes, with
    rollout dumps."""
    import re

    from calibrl_ext.cpu_backend.launcher import run_verl

    root, data_dir, model = assets
    out = root / "luffy"
    common = ("calibrl.mode=luffy", "trainer.total_training_steps=1", "trainer.save_freq=-1", "trainer.test_freq=-1",
              f"+trainer.v1.sync.parameter_sync_step={LUFFY_SYNC_PARTS}",
              f"trainer.rollout_data_dir={out / 'rollouts'}")  # fmt: skip
    micro_key = "actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu"
    refused = _start_up_error(_overrides(data_dir, model, out, *common, f"{micro_key}={LUFFY_BAD_MICRO_BATCH}"))
    message = str(refused)
    proposed = re.search(rf"Set {re.escape(micro_key)}=(\d+) \(a divisor of 9\)", message)
    run = None
    if proposed:
        run = run_verl(
            _overrides(data_dir, model, out, *common, f"{micro_key}={proposed.group(1)}"),
            metrics_path=out / "metrics.jsonl", entry_module=RECIPE_ENTRY, timeout_s=900,
        )  # fmt: skip
    return refused, message, proposed, run, out


def test_luffy_micro_batch_mismatch_is_refused_at_startup_and_the_proposed_fix_runs(luffy_run):
    """A micro-batch size that does not divide LUFFY's (n + 1)-row per-rank mini-batch is refused before Ray starts,
    naming the key, the row count and a divisor; the run with that divisor trains."""
    from recipe.calibrl.settings import CalibRLConfigError

    refused, message, proposed, run, _ = luffy_run
    assert isinstance(refused, CalibRLConfigError) and "9 rows" in message, message
    assert proposed is not None and int(proposed.group(1)) == 3
    run.raise_for_status()
    assert run.steps() == [1]


def test_luffy_trains_the_expert_rows(luffy_run):
    """LUFFY: expert rows enter the update with their loss, in (n + 1)-row groups (per-part values: verl averages
    the parts of a step)."""
    from calibrl_ext.cpu_backend.launcher import is_finite_number

    run = luffy_run[3]
    run.raise_for_status()
    m = run.by_step()[1]
    assert m["actor/expert_rows_seen"] == m["calibrl/expert_rows"] == PROMPTS_PER_STEP / LUFFY_SYNC_PARTS
    assert is_finite_number(m["actor/luffy_expert_loss"]) and m["actor/luffy_expert_loss"] != 0
    assert m["calibrl/update_rows"] == PROMPTS_PER_STEP * (N_ROLLOUTS + 1) / LUFFY_SYNC_PARTS


def test_luffy_step_metrics_are_on_policy_and_count_the_whole_step(luffy_run):
    """verl's critic/score/* is the mean over the on-policy rows of the step's rollout dump (expert rows under
    calibrl/expert_*); rollout correction sees no expert row (its zero rollout log-probs would dominate
    rollout_corr/kl); the prompt counts cover all parts of the step (not only the first)."""
    import json

    run, out = luffy_run[3], luffy_run[4]
    run.raise_for_status()
    m = run.by_step()[1]
    dumped = [json.loads(line) for path in (out / "rollouts").glob("*.jsonl") for line in path.read_text().splitlines()]
    sessions = [(row["uid"], int(row["uid"].rsplit("_", 2)[1])) for row in dumped if not row["uid"].startswith("pad")]
    on_policy = [row["score"] for row, (_, s) in zip([r for r in dumped if not r["uid"].startswith("pad")], sessions)
                 if s < N_ROLLOUTS]  # fmt: skip
    expert = [row["score"] for row, (_, s) in zip([r for r in dumped if not r["uid"].startswith("pad")], sessions)
              if s == N_ROLLOUTS]  # fmt: skip
    assert len(on_policy) == PROMPTS_PER_STEP * N_ROLLOUTS and len(expert) == PROMPTS_PER_STEP
    assert m["critic/score/mean"] == pytest.approx(sum(on_policy) / len(on_policy), abs=1e-6)
    assert m["calibrl/expert_critic/score/mean"] == pytest.approx(1.0)
    # parts 2 and 3 run after part 1's update (the step's prompts were generated before it), so the on-policy kl is
    # small but not ~0; one expert row (zero rollout log-probs vs log pi_old of ~ -10 per token) would add ~3.
    assert m["rollout_corr/kl"] < 0.1
    assert m["calibrl/groups_with_expert_solution"] == PROMPTS_PER_STEP and m["calibrl/expert_kept_rate"] == 1.0


def test_calibrl_recipe_runs_on_tiny_internvl3(assets):
    """The InternVL3-8B recipe's path (HF-native InternVL3 with images, expert rows through the same prompt path)
    trains one CalibRL step on the CPU backend with a tiny InternVL3."""
    from calibrl_ext.cpu_backend.launcher import is_finite_number, run_verl
    from calibrl_ext.tiny_models import cached_tiny_model

    root, data_dir, _ = assets
    out = root / "internvl3"
    run = run_verl(
        _overrides(data_dir, cached_tiny_model("internvl3"), out, "trainer.total_training_steps=1",
                   "trainer.save_freq=-1", "trainer.test_freq=-1"),
        metrics_path=out / "metrics.jsonl", entry_module=RECIPE_ENTRY, timeout_s=900,
    )  # fmt: skip
    run.raise_for_status()
    m = run.by_step()[1]
    assert m["calibrl/expert_rows"] == PROMPTS_PER_STEP and m["actor/expert_rows_seen"] == 0
    assert is_finite_number(m["actor/calibration_loss"]) and m["training/rollout_probs_diff_max"] < 1e-3
    assert "Error in _run_prompt" not in run.log_path.read_text(errors="replace")
