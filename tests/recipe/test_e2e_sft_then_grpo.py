"""``calibrl.mode=sft_then_grpo`` end to end on the CPU backend: verl's SFT trainer on the expert solutions (tiny
Qwen2.5-VL, demo rows with images), then 2 GRPO steps from its checkpoint, one command.

One run shared by every test (module-scoped); the reuse path is checked without a second run, by planning the
stage again from the same composed config.
"""

import json
import math
import re

import pytest

from tests.recipe.test_e2e_recipe import N_ROLLOUTS, PROMPTS_PER_STEP, RECIPE_ENTRY, _overrides, assets  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.ray]

SFT_STEPS = 3
#: The smallest SFT shapes: 3 steps of 4 rows, 2 per pass; a large learning rate so 3 steps move a random model.
SFT_KEYS = (
    "calibrl.mode=sft_then_grpo",
    f"calibrl.sft.max_steps={SFT_STEPS}",
    "calibrl.sft.train_batch_size=4",
    "calibrl.sft.micro_batch_size_per_gpu=2",
    "calibrl.sft.lr=1e-3",
    "calibrl.sft.max_length=512",
    "calibrl.sft.timeout_s=400",
)


def _run_overrides(data_dir, model, out):
    return _overrides(data_dir, model, out, *SFT_KEYS, "trainer.total_training_steps=2", "trainer.save_freq=-1",
                      "trainer.test_freq=-1")  # fmt: skip


@pytest.fixture(scope="module")
def sft_grpo_run(assets):  # noqa: F811
    from calibrl_ext.cpu_backend.launcher import run_verl

    root, data_dir, model = assets
    out = root / "sft_then_grpo"
    run = run_verl(_run_overrides(data_dir, model, out), metrics_path=out / "metrics.jsonl", entry_module=RECIPE_ENTRY,
                   timeout_s=900)  # fmt: skip
    run.raise_for_status()
    return run, out


def _composed_config(data_dir, model, out):
    """The run's config, composed in-process exactly as the launcher passed it (CPU set, logger, run overrides)."""
    from hydra import compose, initialize_config_dir

    import calibrl_ext.plugin  # noqa: F401  (resolvers)
    from calibrl_ext.cpu_backend.launcher import LOGGER_OVERRIDE
    from calibrl_ext.cpu_backend.overrides import cpu_overrides
    from tests.recipe.conftest import RECIPE_CONFIG_DIR

    overrides = [*cpu_overrides(), LOGGER_OVERRIDE, *_run_overrides(data_dir, model, out)]
    with initialize_config_dir(config_dir=str(RECIPE_CONFIG_DIR), version_base=None):
        return compose(config_name="calibrl_trainer", overrides=overrides)


def _stage_dir(out):
    (stage_dir,) = (out / "checkpoints" / "sft_stage").iterdir()
    return stage_dir


def test_sft_stage_trained_and_grpo_started_from_its_checkpoint(sft_grpo_run, assets):  # noqa: F811
    """Stage 1 ran verl's SFT trainer for the configured steps (finite losses, marker written) into the stage
    directory derived from the config; its weights differ from the base model's; the GRPO stage was launched with
    that checkpoint as model path and ran 2 steps as plain GRPO (no expert rows)."""
    import torch
    from safetensors.torch import load_file

    from recipe.calibrl.sft_stage import MARKER_FILE, read_marker

    run, out = sft_grpo_run
    _, _, model = assets
    stage_dir = _stage_dir(out)
    hf_dir = stage_dir / "huggingface"
    marker = read_marker(stage_dir)
    assert marker["steps"] == SFT_STEPS and marker["rows"] > 0 and (stage_dir / MARKER_FILE).is_file()
    sft_losses = [json.loads(line)["data"]["train/loss"] for line in (stage_dir / "sft_metrics.jsonl").open()]
    assert len(sft_losses) == SFT_STEPS and all(math.isfinite(v) for v in sft_losses)

    log = run.log_path.read_text()
    assert f"calibrl: sft_then_grpo: GRPO starts from {hf_dir} (trained)" in log
    # verl's pprint of the resolved config (long strings split into adjacent literals, joined back here): the
    # actor/ref/rollout model path is the SFT checkpoint
    printed_config = re.sub(r"'\s*\n\s*'", "", log)
    assert f"'path': '{hf_dir}'" in printed_config

    base = load_file(str(next(model.glob("*.safetensors"))))
    tuned = load_file(str(next(hf_dir.glob("*.safetensors"))))
    assert set(base) == set(tuned)
    assert any(not torch.equal(base[k], tuned[k]) for k in base)

    assert run.steps() == [1, 2]
    for m in run.by_step().values():
        assert m["actor/expert_rows_seen"] == 0
        assert m["calibrl/update_rows"] == PROMPTS_PER_STEP * N_ROLLOUTS


def test_second_invocation_reuses_the_checkpoint(sft_grpo_run, assets):  # noqa: F811
    """The same config again (a second invocation's stage 1): the complete checkpoint is found by its marker and
    returned without training (marker and weights untouched)."""
    from recipe.calibrl.sft_stage import MARKER_FILE, run_sft_stage

    _, out = sft_grpo_run
    _, data_dir, model = assets
    stage_dir = _stage_dir(out)
    before = {p.name: p.stat().st_mtime_ns for p in [stage_dir / MARKER_FILE, *(stage_dir / "huggingface").iterdir()]}
    checkpoint, reused = run_sft_stage(_composed_config(data_dir, model, out))
    assert (checkpoint, reused) == (stage_dir / "huggingface", True)
    after = {p.name: p.stat().st_mtime_ns for p in [stage_dir / MARKER_FILE, *(stage_dir / "huggingface").iterdir()]}
    assert after == before
