"""Stage 1 of ``calibrl.mode=sft_then_grpo``: supervised fine-tuning on the expert solutions, by verl's SFT trainer.

The paper's SFT+GRPO baseline as one command and one config: ``main_calibrl`` calls :func:`run_sft_stage` on the
driver before Ray starts, then runs GRPO (``vanilla`` loss, no expert rows) with ``actor_rollout_ref.model.path``
set to the returned HF checkpoint (actor, reference and rollout all load ``model.path``).

What runs: ``python -m torch.distributed.run --standalone --nproc_per_node=N -m verl.trainer.sft_trainer`` --
verl's own engine-based SFT trainer (``SFTTrainer``: the same FSDP ``TrainingWorker`` as the RL actor,
``MultiTurnSFTDataset`` with the model's processor, so Qwen2.5-VL rows keep their images). Its input is a parquet
this module writes next to the checkpoint: per training row with a non-empty expert solution,
``messages = prompt messages + [{"role": "assistant", "content": <expert solution>}]`` and the row's images; the
loss covers the assistant turn only (verl's loss mask). Rows without an expert solution are left out (counted in
the marker). On the CPU backend the trainer needs one patch (the process-group backend string,
``calibrl_ext/cpu_backend/verl_patches.py``) and the overrides of
:func:`calibrl_ext.cpu_backend.overrides.cpu_sft_overrides`.

Stage directory (``calibrl.sft.checkpoint_dir``, or derived: ``<trainer.default_local_dir>/sft_stage/<key>``,
where ``<key>`` hashes every input that decides the weights -- base model files, training parquets, expert
column, ``calibrl.sft`` settings)::

    sft_data.parquet            the SFT rows above
    sft.log, sft_metrics.jsonl  the trainer's output and its file-logger metrics (train/loss per step)
    huggingface/                the fine-tuned HF checkpoint GRPO starts from
    calibrl_sft_stage.json      completion marker (MARKER_FILE), written last

A stage directory is reused only when its marker is readable, holds the same key and ``huggingface/config.json``
exists; a directory without a marker that holds only this stage's own files (an interrupted run) is cleared and
trained again; anything else (a foreign directory, a marker with another key) is refused, never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: ``calibrl.mode`` values that run this stage before GRPO.
SFT_MODES = ("sft_then_grpo",)
#: Written last into a stage directory; its ``key`` must match for the checkpoint to be reused.
MARKER_FILE = "calibrl_sft_stage.json"
#: Bump when a change here changes the trained weights, so derived stage directories are retrained.
SFT_STAGE_VERSION = 1
#: Sub-directory of the stage directory holding the HF checkpoint (verl's own name for its HF export).
HF_SUBDIR = "huggingface"
#: The SFT rows written for verl's ``MultiTurnSFTDataset`` (``messages`` + ``images`` columns).
SFT_PARQUET = "sft_data.parquet"
#: verl's SFT trainer output (``trainer.default_local_dir``); removed once the HF checkpoint is moved out of it.
VERL_OUTPUT_SUBDIR = "verl_sft"
LOG_FILE = "sft.log"
METRICS_FILE = "sft_metrics.jsonl"
#: Files and folders this stage writes; a marker-less directory holding only these is an interrupted run.
STAGE_ENTRIES = frozenset({SFT_PARQUET, VERL_OUTPUT_SUBDIR, LOG_FILE, METRICS_FILE, HF_SUBDIR})
#: Sub-directory of ``trainer.default_local_dir`` under which derived stage directories live.
DERIVED_ROOT = "sft_stage"
#: Hex digits of the key in a derived stage directory name.
KEY_DIGITS = 12
#: verl's SFT entry point (hydra config ``sft_trainer_engine``).
SFT_ENTRY = "verl.trainer.sft_trainer"
#: Lines of the trainer's log quoted in the error when the stage fails.
ERROR_TAIL_LINES = 40
#: Seconds between SIGTERM and SIGKILL of a timed-out SFT run.
TERMINATE_GRACE_S = 10.0


class SftStageError(RuntimeError):
    """The SFT stage is misconfigured or failed; the message names the key (or quotes the trainer's error)."""


@dataclass(frozen=True)
class SftStageSettings:
    """The ``calibrl.sft:`` config section (used only in ``calibrl.mode=sft_then_grpo``).

    Args:
        epochs: passes over the SFT rows (verl ``trainer.total_epochs``).
        max_steps: stop after this many optimizer steps (verl ``trainer.total_training_steps``); None: ``epochs``
            full passes.
        lr: peak learning rate (verl ``optim.lr``). Default 1e-5: verl's legacy SFT trainer default
            (``fsdp_sft_trainer`` ``optim.lr``); the engine trainer's 1e-3 is for training from scratch.
        train_batch_size: rows per optimizer step over all ranks (verl ``data.train_batch_size``); must not exceed
            the number of SFT rows (verl drops the last incomplete batch).
        micro_batch_size_per_gpu: rows per forward/backward pass on one rank (verl
            ``data.micro_batch_size_per_gpu``; 4 = verl's default).
        max_length: longest SFT row in tokens, prompt (image tokens included) + expert solution; None:
            ``data.max_prompt_length + data.max_response_length`` (what the policy sees at RL time). A longer row
            fails the stage (verl ``data.truncation=error``), it is never cut silently.
        checkpoint_dir: the stage directory; None: derived from the inputs (module docstring).
        timeout_s: wall-clock limit of the SFT run; on expiry it is terminated and the stage fails.
        nproc_per_node: training processes (torchrun ``--nproc_per_node``); None: ``trainer.n_gpus_per_node``.
        overrides: extra Hydra overrides for verl's SFT trainer (applied last), e.g. ``[optim.weight_decay=0.0]``.
    """

    epochs: int = 1
    max_steps: int | None = None
    lr: float = 1e-5
    train_batch_size: int = 32
    micro_batch_size_per_gpu: int = 4
    max_length: int | None = None
    checkpoint_dir: str | None = None
    timeout_s: float = 7200.0
    nproc_per_node: int | None = None
    overrides: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, config) -> "SftStageSettings":
        """Read and validate ``config.calibrl.sft`` (missing keys take the defaults); raise naming the key."""
        section = config.get("calibrl", {}).get("sft", None) or {}
        overrides = section.get("overrides", None)
        settings = cls(
            epochs=section.get("epochs", cls.epochs),
            max_steps=section.get("max_steps", cls.max_steps),
            lr=section.get("lr", cls.lr),
            train_batch_size=section.get("train_batch_size", cls.train_batch_size),
            micro_batch_size_per_gpu=section.get("micro_batch_size_per_gpu", cls.micro_batch_size_per_gpu),
            max_length=section.get("max_length", cls.max_length),
            checkpoint_dir=section.get("checkpoint_dir", cls.checkpoint_dir),
            timeout_s=section.get("timeout_s", cls.timeout_s),
            nproc_per_node=section.get("nproc_per_node", cls.nproc_per_node),
            overrides=tuple(str(o) for o in overrides) if overrides is not None else (),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        def fail(key, value, requirement):
            raise SftStageError(f"calibrl.sft.{key}={value!r} is invalid: {requirement}. Set `calibrl.sft.{key}=...`.")

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        if not is_int(self.epochs) or self.epochs < 1:
            fail("epochs", self.epochs, "must be an integer >= 1")
        if self.max_steps is not None and (not is_int(self.max_steps) or self.max_steps < 1):
            fail("max_steps", self.max_steps, "must be an integer >= 1, or null (= epochs full passes)")
        if isinstance(self.lr, bool) or not isinstance(self.lr, (int, float)) or not self.lr > 0:
            fail("lr", self.lr, "must be a number > 0 (e.g. 1e-5)")
        if not is_int(self.train_batch_size) or self.train_batch_size < 1:
            fail("train_batch_size", self.train_batch_size, "must be an integer >= 1")
        if not is_int(self.micro_batch_size_per_gpu) or self.micro_batch_size_per_gpu < 1:
            fail("micro_batch_size_per_gpu", self.micro_batch_size_per_gpu, "must be an integer >= 1")
        if self.max_length is not None and (not is_int(self.max_length) or self.max_length < 1):
            fail("max_length", self.max_length, "must be an integer >= 1, or null (prompt + response length)")
        if self.checkpoint_dir is not None and not str(self.checkpoint_dir):
            fail("checkpoint_dir", self.checkpoint_dir, "must be a directory path, or null (derived)")
        if isinstance(self.timeout_s, bool) or not isinstance(self.timeout_s, (int, float)) or not self.timeout_s > 0:
            fail("timeout_s", self.timeout_s, "must be a number of seconds > 0")
        if self.nproc_per_node is not None and (not is_int(self.nproc_per_node) or self.nproc_per_node < 1):
            fail("nproc_per_node", self.nproc_per_node, "must be an integer >= 1, or null (trainer.n_gpus_per_node)")

    def weight_inputs(self) -> dict[str, Any]:
        """The settings that decide the trained weights (part of the key; not the directory or the timeout)."""
        inputs = asdict(self)
        for key in ("checkpoint_dir", "timeout_s"):
            inputs.pop(key)
        inputs["overrides"] = list(self.overrides)
        return inputs


# ----------------------------------------------------------------------------------------------------------
# Config -> inputs, key, directory
# ----------------------------------------------------------------------------------------------------------
def _as_list(value) -> list:
    if value is None:
        return []
    if isinstance(value, (str, os.PathLike)):
        return [value]
    return list(value)


def _fingerprint(path: Path) -> Any:
    """(size, mtime_ns) of a file, or of every file under a directory; cheap enough for 10-GB checkpoints."""
    if path.is_dir():
        return {str(p.relative_to(path)): _fingerprint(p) for p in sorted(path.rglob("*")) if p.is_file()}
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


@dataclass(frozen=True)
class SftStagePlan:
    """Everything the stage needs, derived from the full config (no file written)."""

    settings: SftStageSettings
    base_model: str
    train_files: tuple[str, ...]
    expert_column: str
    prompt_key: str
    image_key: str
    max_length: int
    nproc_per_node: int
    key: str
    stage_dir: Path

    @property
    def hf_dir(self) -> Path:
        return self.stage_dir / HF_SUBDIR

    @property
    def marker_path(self) -> Path:
        return self.stage_dir / MARKER_FILE


def plan_sft_stage(config) -> SftStagePlan:
    """Validate ``calibrl.sft`` and the inputs (model, parquets, expert column) and derive the stage directory.

    Raises SftStageError naming the key and the fix. Reads parquet schemas and the expert column only.
    """
    settings = SftStageSettings.from_config(config)
    calibrl = config.get("calibrl", {})
    expert_column = str(calibrl.get("expert_column", "expert_solution"))
    base_model = str(config.actor_rollout_ref.model.path)
    if "://" not in base_model and not (Path(base_model) / "config.json").is_file():
        raise SftStageError(
            f"actor_rollout_ref.model.path={base_model!r} has no config.json; calibrl.mode=sft_then_grpo fine-tunes "
            "that checkpoint first, so it must be a local HF checkpoint directory."
        )
    train_files = tuple(str(p) for p in _as_list(config.data.train_files))
    if not train_files:
        raise SftStageError("data.train_files is empty; the SFT stage trains on its expert solutions.")
    prompt_key = str(config.data.get("prompt_key", "prompt"))
    image_key = str(config.data.get("image_key", "images"))
    rows = count_expert_rows(train_files, expert_column, prompt_key)
    if rows < settings.train_batch_size:
        raise SftStageError(
            f"calibrl.sft.train_batch_size={settings.train_batch_size} exceeds the {rows} training rows with an "
            f"expert solution ({expert_column!r}); verl's SFT trainer drops incomplete batches, so no step would run. "
            f"Set `calibrl.sft.train_batch_size=<= {rows}`."
        )
    max_length = settings.max_length
    if max_length is None:
        max_length = int(config.data.max_prompt_length) + int(config.data.max_response_length)
    nproc = settings.nproc_per_node or int(config.trainer.n_gpus_per_node)
    if settings.train_batch_size % nproc:
        raise SftStageError(
            f"calibrl.sft.train_batch_size={settings.train_batch_size} is not divisible by the {nproc} SFT "
            "processes (calibrl.sft.nproc_per_node, default trainer.n_gpus_per_node); set it to a multiple."
        )
    key_inputs = {
        "version": SFT_STAGE_VERSION,
        "base_model": base_model,
        "model_files": _fingerprint(Path(base_model)) if "://" not in base_model else None,
        "train_files": {p: _fingerprint(Path(p)) for p in train_files},
        "expert_column": expert_column,
        "max_length": max_length,
        "nproc_per_node": nproc,
        "settings": settings.weight_inputs(),
    }
    key = hashlib.sha256(json.dumps(key_inputs, sort_keys=True).encode()).hexdigest()
    if settings.checkpoint_dir:
        stage_dir = Path(settings.checkpoint_dir)
    else:
        stage_dir = Path(str(config.trainer.default_local_dir)) / DERIVED_ROOT / key[:KEY_DIGITS]
    return SftStagePlan(
        settings=settings,
        base_model=base_model,
        train_files=train_files,
        expert_column=expert_column,
        prompt_key=prompt_key,
        image_key=image_key,
        max_length=max_length,
        nproc_per_node=nproc,
        key=key,
        stage_dir=stage_dir.resolve(),
    )


def count_expert_rows(train_files, expert_column: str, prompt_key: str = "prompt") -> int:
    """Rows of the training parquets with a non-empty expert solution; SftStageError if a file lacks the column
    or no row has one (the stage would have nothing to learn)."""
    import pyarrow.parquet as pq

    total = 0
    for index, path in enumerate(train_files):
        if "://" in path:
            raise SftStageError(
                f"data.train_files[{index}]={path!r} is remote; the SFT stage reads the expert solutions on the "
                "driver, so copy the parquet to a local path."
            )
        if not os.path.exists(path):
            raise SftStageError(f"data.train_files[{index}]={path!r} does not exist; build it with data_prep.")
        columns = pq.read_schema(path).names
        if expert_column not in columns:
            raise SftStageError(
                f"data.train_files[{index}]={path!r} has no column {expert_column!r} (calibrl.expert_column), the "
                "expert solutions calibrl.mode=sft_then_grpo fine-tunes on. Rebuild the data with "
                "data_prep/build_parquet.py (it writes expert_solution) or set calibrl.expert_column to your column."
            )
        if prompt_key not in columns:
            raise SftStageError(f"data.train_files[{index}]={path!r} has no prompt column {prompt_key!r} (data.prompt_key).")
        values = pq.read_table(path, columns=[expert_column]).column(0).to_pylist()
        total += sum(1 for v in values if isinstance(v, str) and v.strip())
    if total == 0:
        raise SftStageError(
            f"no row of data.train_files has a non-empty {expert_column!r} (calibrl.expert_column), so the SFT stage "
            "of calibrl.mode=sft_then_grpo has nothing to train on. Build the data with an expert source "
            "(data_prep/build_parquet.py --expert-col / --expert-file), or run calibrl.mode=grpo."
        )
    return total


# ----------------------------------------------------------------------------------------------------------
# Marker and reuse
# ----------------------------------------------------------------------------------------------------------
def read_marker(stage_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The stage directory's completion marker, or None if it has none (or an unreadable one)."""
    try:
        marker = json.loads((Path(stage_dir) / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def is_complete(plan: SftStagePlan) -> bool:
    """True iff the stage directory holds a finished checkpoint of exactly these inputs (marker key matches and the
    HF checkpoint's config.json exists)."""
    marker = read_marker(plan.stage_dir)
    return bool(marker) and marker.get("key") == plan.key and (plan.hf_dir / "config.json").is_file()


def write_marker(plan: SftStagePlan, result: dict[str, Any]) -> None:
    """Write the marker atomically (temporary file, then rename): a crash never leaves a half marker."""
    payload = {"key": plan.key, "base_model": plan.base_model, "hf_dir": str(plan.hf_dir), **result}
    tmp = plan.marker_path.with_name(MARKER_FILE + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=True))
    os.replace(tmp, plan.marker_path)


def prepare_stage_dir(plan: SftStagePlan) -> None:
    """Make the stage directory ready for a fresh run: clear an interrupted run of this stage, refuse anything else."""
    stage_dir = plan.stage_dir
    if not stage_dir.exists():
        stage_dir.mkdir(parents=True)
        return
    marker = read_marker(stage_dir)
    if marker is not None and marker.get("key") != plan.key:
        raise SftStageError(
            f"{stage_dir} (calibrl.sft.checkpoint_dir) holds an SFT checkpoint of other inputs (base model "
            f"{marker.get('base_model')!r}, key {str(marker.get('key'))[:KEY_DIGITS]}). Delete it, or set "
            "calibrl.sft.checkpoint_dir=null to use a directory derived from the inputs."
        )
    foreign = sorted(e.name for e in stage_dir.iterdir() if e.name not in STAGE_ENTRIES | {MARKER_FILE})
    if foreign:
        raise SftStageError(
            f"{stage_dir} (calibrl.sft.checkpoint_dir) is not empty and not an SFT stage directory (it holds "
            f"{foreign[:5]}); it is never overwritten. Point calibrl.sft.checkpoint_dir at a new directory."
        )
    for entry in stage_dir.iterdir():  # an interrupted run of this stage: start over
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


# ----------------------------------------------------------------------------------------------------------
# The SFT rows and verl's trainer
# ----------------------------------------------------------------------------------------------------------
def write_sft_parquet(plan: SftStagePlan, out: Path) -> int:
    """Write verl ``MultiTurnSFTDataset`` rows (``messages``, ``images``) for every row with an expert solution.

    ``messages`` is the RL prompt (the same messages, ``<image>`` placeholders included) plus one assistant turn with
    the expert solution; ``images`` is the row's image list (empty for text-only rows). Returns the row count.
    """
    import pandas as pd

    rows = []
    for path in plan.train_files:
        frame = pd.read_parquet(path)
        for record in frame.to_dict("records"):
            solution = record.get(plan.expert_column)
            if not (isinstance(solution, str) and solution.strip()):
                continue
            messages = [dict(m) for m in record[plan.prompt_key]]
            messages.append({"role": "assistant", "content": solution})
            images = record.get(plan.image_key)
            rows.append({"messages": messages, "images": list(images) if images is not None else []})
    pd.DataFrame(rows).to_parquet(out)
    return len(rows)


def sft_overrides(plan: SftStagePlan, config, sft_parquet: Path) -> list[str]:
    """Hydra overrides of ``verl.trainer.sft_trainer`` for this plan (the CPU set added on ``trainer.device=cpu``)."""
    s = plan.settings
    model = config.actor_rollout_ref.model
    device = str(config.trainer.device)
    overrides = [
        f"data.train_files={sft_parquet}",
        "data.val_files=null",
        "data.messages_key=messages",
        # not in sft_trainer_engine.yaml (MultiTurnSFTDataset reads it with a default): ++ adds or sets it
        "++data.image_key=images",
        f"data.train_batch_size={s.train_batch_size}",
        f"data.micro_batch_size_per_gpu={s.micro_batch_size_per_gpu}",
        "data.use_dynamic_bsz=False",
        # MultiTurnSFTDataset's only padding mode whose collator handles per-row image tensors of different sizes
        "data.pad_mode=no_padding",
        f"data.max_length={plan.max_length}",
        "data.truncation=error",
        f"model.path={plan.base_model}",
        f"model.trust_remote_code={bool(model.get('trust_remote_code', False))}",
        f"model.use_remove_padding={bool(model.get('use_remove_padding', True))}",
        f"model.enable_gradient_checkpointing={bool(model.get('enable_gradient_checkpointing', False))}",
        f"engine.strategy={config.actor_rollout_ref.actor.strategy}",
        f"optim.lr={s.lr}",
        f"trainer.total_epochs={s.epochs}",
        f"trainer.total_training_steps={s.max_steps if s.max_steps is not None else 'null'}",
        f"trainer.device={device}",
        f"trainer.n_gpus_per_node={plan.nproc_per_node}",
        "trainer.nnodes=1",
        "trainer.logger=[console,file]",
        f"trainer.default_local_dir={plan.stage_dir / VERL_OUTPUT_SUBDIR}",
        "trainer.resume_mode=disable",
        "trainer.save_freq=-1",
        "trainer.test_freq=-1",
        f"trainer.project_name={config.trainer.project_name}",
        f"trainer.experiment_name={config.trainer.experiment_name}-sft",
        # verl writes the HF export (weights, config, tokenizer, processor) only with hf_model in the contents
        "checkpoint.save_contents=[model,hf_model]",
    ]
    if device == "cpu":
        from calibrl_ext.cpu_backend.overrides import cpu_sft_overrides

        overrides += cpu_sft_overrides()
    return overrides + list(s.overrides)


def sft_env(config, metrics_path: Path) -> dict[str, str]:
    """The SFT run's environment: this process's, the CPU backend's on ``trainer.device=cpu``, the repo on
    PYTHONPATH, verl's file logger pointed at ``metrics_path``."""
    from calibrl_ext.cpu_backend.overrides import PLUGIN_MODULE, cpu_env, repo_root

    env = dict(os.environ)
    if str(config.trainer.device) == "cpu":
        env.update(cpu_env())
    env.setdefault("VERL_USE_EXTERNAL_MODULES", PLUGIN_MODULE)
    root = str(repo_root())
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p and p != root]
    env["PYTHONPATH"] = os.pathsep.join([root, *paths])
    env["VERL_FILE_LOGGER_PATH"] = str(metrics_path)
    return env


def sft_command(plan: SftStagePlan, overrides: list[str]) -> list[str]:
    return [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={plan.nproc_per_node}",
        "-m", SFT_ENTRY, *overrides,
    ]  # fmt: skip


#: A Python exception line (``pkg.Name[Error|Exception]: message``), optionally with torchrun's ``[rankN]:`` prefix.
_EXCEPTION_LINE = re.compile(r"^(\[rank\d+\]:\s*)?([\w.]+(Error|Exception))\b:?")


def _log_tail(log_path: Path, lines: int = ERROR_TAIL_LINES) -> str:
    """The root cause (the last exception line that is not torchrun's own ChildFailedError) and the log's tail."""
    try:
        text = log_path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    causes = [line for line in text if _EXCEPTION_LINE.match(line) and "ChildFailedError" not in line]
    cause = f"root cause: {causes[-1].strip()}\n" if causes else ""
    return cause + "\n".join(text[-lines:])


def _last_step(metrics_path: Path) -> int | None:
    try:
        records = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return None
    steps = [r.get("step") for r in records if isinstance(r, dict) and isinstance(r.get("step"), int)]
    return max(steps) if steps else None


def terminate_group(proc: subprocess.Popen, grace_s: float = TERMINATE_GRACE_S) -> None:
    """SIGTERM the process group led by ``proc``, then SIGKILL what is left after ``grace_s``."""
    import signal

    pgid = proc.pid
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 0.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            proc.poll()  # reap the leader: a zombie still counts as a group member
            try:
                os.killpg(pgid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def train(plan: SftStagePlan, config) -> dict[str, Any]:
    """Run verl's SFT trainer for the plan under ``calibrl.sft.timeout_s``; move its HF export to ``hf_dir``.

    Returns the marker's result fields. Raises SftStageError quoting the trainer's log on failure or timeout.
    """
    prepare_stage_dir(plan)
    sft_parquet = plan.stage_dir / SFT_PARQUET
    rows = write_sft_parquet(plan, sft_parquet)
    log_path, metrics_path = plan.stage_dir / LOG_FILE, plan.stage_dir / METRICS_FILE
    command = sft_command(plan, sft_overrides(plan, config, sft_parquet))
    logger.warning("calibrl: sft_then_grpo stage 1 (%d expert rows) -> %s", rows, plan.stage_dir)
    started = time.monotonic()
    with open(log_path, "wb") as log_file:
        # Its own process group (not session): the stage's cleanup signals every rank through the group, and a
        # caller that bounds the whole command by its session (calibrl_ext.cpu_backend.launcher) still reaches it.
        proc = subprocess.Popen(
            command, env=sft_env(config, metrics_path), stdin=subprocess.DEVNULL, stdout=log_file,
            stderr=subprocess.STDOUT, process_group=0,
        )  # fmt: skip
        try:
            returncode = proc.wait(timeout=plan.settings.timeout_s)
        except subprocess.TimeoutExpired:
            terminate_group(proc)
            proc.wait(timeout=TERMINATE_GRACE_S)
            raise SftStageError(
                f"the SFT stage ran past calibrl.sft.timeout_s={plan.settings.timeout_s} s and was terminated; raise "
                f"it or shorten the stage (calibrl.sft.max_steps). Log {log_path}, last lines:\n{_log_tail(log_path)}"
            ) from None
        except BaseException:  # KeyboardInterrupt included: never leave the ranks behind
            terminate_group(proc)
            raise
        terminate_group(proc)  # anything a rank left behind
    wall_s = time.monotonic() - started
    if returncode != 0:
        raise SftStageError(
            f"verl's SFT trainer failed (exit {returncode}) in the SFT stage of calibrl.mode=sft_then_grpo. Log "
            f"{log_path}, last lines:\n{_log_tail(log_path)}"
        )
    last_step = _last_step(metrics_path)
    exports = sorted((plan.stage_dir / VERL_OUTPUT_SUBDIR).glob(f"global_step_*/{HF_SUBDIR}/config.json"))
    if not exports or last_step is None:
        raise SftStageError(
            f"verl's SFT trainer exited 0 but wrote no HF checkpoint (global_step_*/{HF_SUBDIR}) or no metrics under "
            f"{plan.stage_dir}; see {log_path}."
        )
    export = max(exports, key=lambda p: int(p.parent.parent.name.rsplit("_", 1)[1])).parent
    os.replace(export, plan.hf_dir)
    shutil.rmtree(plan.stage_dir / VERL_OUTPUT_SUBDIR)  # sharded model + dataloader state: not needed for GRPO
    return {"rows": rows, "steps": last_step, "wall_s": round(wall_s, 1), "settings": plan.settings.weight_inputs()}


def run_sft_stage(config) -> tuple[Path, bool]:
    """Stage 1 of ``sft_then_grpo``: (HF checkpoint directory, reused?). Trains only when no complete checkpoint of
    the same inputs exists in the stage directory."""
    plan = plan_sft_stage(config)
    if is_complete(plan):
        logger.warning("calibrl: sft_then_grpo reuses the SFT checkpoint %s (marker %s)", plan.hf_dir, MARKER_FILE)
        return plan.hf_dir, True
    result = train(plan, config)
    write_marker(plan, result)
    return plan.hf_dir, False
