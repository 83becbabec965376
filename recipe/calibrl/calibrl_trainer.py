"""The CalibRL trainer: verl 0.9.1's v1 sync PPO trainer with expert rows (``trainer.v1.trainer_mode=calibrl``).

One training step (``_step_once``), with the verl pitfalls each line avoids (recipe/calibrl/README.md, "How an
expert row goes through verl's v1 trainer"):

1. generation: every prompt scheduled for an expert row runs the ``calibrl_expert`` agent loop with ``n + k``
   sessions (``_next_train_batch``; k = 1 as released, k = the prompt's kept expert solutions, capped by
   ``calibrl.max_experts_per_prompt``, with several); sessions ``n..n+k-1`` are the experts, scored by the reward
   function like rollouts.
2. the group pass-rate window is applied as soon as rewards exist: expert rows of groups outside it are removed
   from TransferQueue before any forward pass (``hpt`` also removes those of groups whose pass rate is > gamma).
3. layout: the on-policy rows are padded to the actor's mini-batch multiple exactly as in GRPO, then the expert rows
   are appended (and padded to a multiple of the data-parallel size): pads are made BEFORE any log-prob exists,
   because verl's pad rows copy every field of the first row.
4. one old-log-prob pass over on-policy and expert rows; entropy and rollout-vs-actor metrics are recomputed on the
   on-policy rows (the stock ones mix in the teacher-forced expert rows, METHOD §7.2).
5. per row: expert baseline b_t (by position, or aligned by content: ``calibrl.baseline_alignment``), calibration
   mask and pass sign s_i are written to TransferQueue (every row that reaches the actor, pads included, gets them:
   a field missing on one row vanishes for the whole batch); with ``calibrl.adaptive_lam.enable`` the controller
   turns the on-policy entropy into this update's lambda, written per row too (docs/adaptive.md).
6. ``calibrl``: the expert rows (and the pads made only for them) are cleared from TransferQueue; the update batch
   is exactly GRPO's with the same n (METHOD §7.1). ``luffy`` / ``rlplus`` / ``chord`` / ``hpt``: the expert rows
   stay, with a mini-batch of ``ppo_mini_batch_size * (n + 1)`` rows (chord / hpt also get each loss part's token
   share, CHORD's mu and HPT's SFT groups per row).
7. reference log-probs (if any), advantages (on-policy group statistics; the ``calibrl`` estimator is told which
   rows are expert rows), actor update with :func:`calibrl_ext.verl_losses.calibrl_actor_loss`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
from functools import partial

import numpy as np
import torch
import transfer_queue as tq
from omegaconf import open_dict
from tensordict import TensorDict
from transfer_queue import KVBatchMeta
from verl import DataProto
from verl.trainer.ppo.core_algos import agg_loss
from verl.trainer.ppo.padding_utils import upsample_batch_to_divisible_size
from verl.trainer.ppo.v1.trainer_base import register_trainer
from verl.trainer.ppo.v1.trainer_sync import PPOTrainerSync
from verl.utils import tensordict_utils as tu
from verl.utils.config import omega_conf_to_dataclass
from verl.utils.debug import marked_timer
from verl.utils.debug.metrics import calculate_debug_metrics

from calibrl_ext import core, verl_losses
from calibrl_ext.adaptive_lam import AdaptiveLamController, on_policy_entropy
# The module, not the name: `import calibrl_ext.config` imports verl, whose plugin entry point imports this module
# while calibrl_ext.config is still half-initialised (the name would not exist yet; the module does).
from calibrl_ext import config as calibrl_config
from calibrl_ext.verl_advantage import expert_rows
from recipe.calibrl.calibration_fields import (
    calibration_metrics,
    compute_calibration_fields,
    expert_row_metrics,
    on_policy_rollout_corr_metrics,
    prompt_count_metrics,
)
from recipe.calibrl.expert_agent_loop import AGENT_NAME, EXPERT_FLAG, TRUNCATED_FLAG, prompt_expert_solutions
from recipe.calibrl.schedule import ExpertSchedule, experts_outside_pass_rate_window
from recipe.calibrl.settings import SFT_MIX_MODES, TRAINER_MODE
from recipe.calibrl.startup_checks import validate_startup

logger = logging.getLogger(__name__)

#: File of the adaptive-lambda controller's state in each ``global_step_<n>`` checkpoint folder.
ADAPTIVE_LAM_STATE_FILE = "calibrl_adaptive_lam.json"


def _session_of(key: str) -> int:
    """Session id of a TransferQueue key ``{uid}_{session_id}_{index}``."""
    return int(key.rsplit("_", 2)[1])


def _select(batch: KVBatchMeta, indices: list[int]) -> KVBatchMeta:
    """A fresh meta (``fields=None``: the worker fetches every stored field) over a subset of rows, in order."""
    return KVBatchMeta(
        partition_id=batch.partition_id,
        keys=[batch.keys[i] for i in indices],
        tags=[batch.tags[i] for i in indices],
        extra_info=dict(batch.extra_info),
    )


def _nested_rows(padded: torch.Tensor, lengths: list[int], rows: list[int]) -> torch.Tensor:
    """Rows of a padded ``[N, T]`` tensor as a jagged nested tensor, row i cut to its response length (the layout
    TransferQueue stores per-token fields in)."""
    return torch.nested.as_nested_tensor([padded[i, : lengths[i]] for i in rows], layout=torch.jagged)


def _tag_as_padding(batch: KVBatchMeta, keys: set[str]) -> KVBatchMeta:
    """The same rows with ``keys`` tagged as padding: verl's ``_compute_metrics`` leaves padding out of its
    per-row data metrics (its throughput and timing metrics still count every row)."""
    return KVBatchMeta(
        partition_id=batch.partition_id,
        keys=list(batch.keys),
        tags=[{**tag, "is_padding": True} if key in keys else tag for key, tag in zip(batch.keys, batch.tags)],
        extra_info=dict(batch.extra_info),
    )


def _concat(first: KVBatchMeta, second: KVBatchMeta) -> KVBatchMeta:
    return KVBatchMeta(
        partition_id=first.partition_id,
        keys=first.keys + second.keys,
        tags=first.tags + second.tags,
        extra_info=dict(first.extra_info),
    )


@register_trainer(TRAINER_MODE)
class CalibRLTrainer(PPOTrainerSync):
    """verl's sync PPO trainer plus CalibRL's expert rows and driver-side calibration (see the module docstring)."""

    def __init__(self, config):
        # verl branches on `trainer_mode == "sync"` in eight places (replay buffer, prompt storage, checkpoints):
        # once verl has resolved this class by its registered name, run with sync semantics.
        with open_dict(config):
            config.trainer.v1.trainer_mode = "sync"
        self.settings = validate_startup(config)
        #: None unless calibrl.adaptive_lam.enable; built before verl's init, which may load a checkpoint into it.
        self.adaptive_lam: AdaptiveLamController | None = None
        if self.settings.adaptive_lam.enable:
            initial = float(config.actor_rollout_ref.actor.policy_loss.lam)
            self.adaptive_lam = AdaptiveLamController(self.settings.adaptive_lam, initial)
        super().__init__(config)
        self.schedule = ExpertSchedule(self.settings)
        self.loss_settings = calibrl_config.calibrl_settings(omega_conf_to_dataclass(config.actor_rollout_ref.actor))
        self.num_rollouts = int(config.actor_rollout_ref.rollout.n)
        self._layout: tuple[bool, int] | None = None
        self._prompt_counts = {"offered": 0, "with_solution": 0}
        #: Keys of the expert rows that reached the actor update in this step (luffy / rlplus), for the metrics.
        self._expert_update_keys: set[str] = set()
        #: ``rollout_corr/*`` over the on-policy rows of the current ``_step_once`` (luffy / rlplus), or None.
        self._on_policy_rollout_corr_metrics: dict | None = None

    # ------------------------------------------------------------------ set-up
    def on_init_end(self):
        super().on_init_end()
        # Installed in every mode (grpo too): it is verl's ppo_loss plus the calibrl fields when present, and it
        # reports what entered the update, so the modes compare on the same metrics.
        actor_config = omega_conf_to_dataclass(self.config.actor_rollout_ref.actor)
        self.actor_rollout_wg.set_loss_fn(partial(verl_losses.calibrl_actor_loss, config=actor_config))

    def on_step_begin(self):
        """Record how many train rows TransferQueue still holds before the step adds new ones (0 unless rows leak)."""
        super().on_step_begin()
        listing = tq.kv_list(partition_id="train") or {}
        self._tq_rows_at_step_start = len(listing.get("train", {}))

    # ------------------------------------------------------------------ generation
    def _next_train_batch(self, num_prompts: int | None = None) -> TensorDict:
        """verl's batch, plus per prompt: the agent loop and session count (``n + k`` when it gets k expert rows)."""
        batch = super()._next_train_batch(num_prompts)
        if not self.settings.uses_expert_rows:
            return batch
        if self.settings.multi_expert:
            per_prompt = [
                prompt_expert_solutions({self.settings.expert_list_column: value}, self.config.calibrl)
                for value in batch[self.settings.expert_list_column]
            ]
            solutions = [found[0] if found else "" for found in per_prompt]
            expert_counts = [len(found) for found in per_prompt]
        else:
            solutions = list(batch[self.settings.expert_column])
            expert_counts = [1] * len(solutions)
        with_expert = self.schedule.expert_rows_for_batch(solutions, self.global_steps)
        default_loop = self.config.actor_rollout_ref.rollout.agent.default_agent_loop
        tu.assign_non_tensor_stack(batch, "agent_name", [AGENT_NAME if e else default_loop for e in with_expert])
        tu.assign_non_tensor_stack(
            batch,
            "__rollout_n__",
            [self.num_rollouts + k if e else self.num_rollouts for e, k in zip(with_expert, expert_counts)],
        )
        has_solution = sum(isinstance(s, str) and s.strip() != "" for s in solutions)
        self._prompt_counts["offered"] += int(with_expert.sum())
        self._prompt_counts["with_solution"] += has_solution
        return batch

    # ------------------------------------------------------------------ batch layout
    @contextlib.contextmanager
    def _rows_per_group(self, rows: int):
        """verl derives the actor's mini-batch (in rows) from ``rollout.n``; luffy/rlplus groups have ``n + 1``."""
        previous = self.config.actor_rollout_ref.rollout.n
        with open_dict(self.config):
            self.config.actor_rollout_ref.rollout.n = rows
        try:
            yield
        finally:
            with open_dict(self.config):
                self.config.actor_rollout_ref.rollout.n = previous

    def _get_required_batch_multiple(self, dp_size: int) -> int:
        if self._layout is None:
            return super()._get_required_batch_multiple(dp_size)
        dp_only, extra_multiple = self._layout
        base = dp_size if dp_only else super()._get_required_batch_multiple(dp_size)
        return math.lcm(base, extra_multiple)

    @contextlib.contextmanager
    def _batch_multiple(self, dp_only: bool, extra_multiple: int = 1):
        """Within the block, verl pads batches to lcm(dp or the actor's mini-batch multiple, ``extra_multiple``)."""
        self._layout = (dp_only, extra_multiple)
        try:
            yield
        finally:
            self._layout = None

    def _log_prob_row_multiple(self, dp_size: int) -> int:
        """Rows the old-log-prob pass needs a multiple of: verl splits each rank's rows into micro-batches of
        ``rollout.log_prob_micro_batch_size_per_gpu`` unless dynamic batch sizes are on. Expert rows change the row
        count GRPO would have, so this is enforced here."""
        rollout = self.config.actor_rollout_ref.rollout
        if rollout.get("log_prob_use_dynamic_bsz", False):
            return dp_size
        return dp_size * int(rollout.get("log_prob_micro_batch_size_per_gpu", None) or 1)

    def _classify_rows(self, batch: KVBatchMeta) -> tuple[list[int], list[int], np.ndarray]:
        """Indices of on-policy and expert rows, and each row's ``extra_fields`` flags, cross-checked."""
        extra = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["extra_fields"])
        flags = list(extra["extra_fields"]) if len(extra.keys()) else [{}] * len(batch)
        on_policy, experts = [], []
        truncated = np.zeros(len(batch), dtype=bool)
        for i, (key, tag, fields) in enumerate(zip(batch.keys, batch.tags, flags, strict=True)):
            if tag.get("is_padding", False):
                raise RuntimeError(f"unexpected pad row {key} before the CalibRL layout step")
            is_expert_session = _session_of(key) >= self.num_rollouts
            if is_expert_session != bool(fields.get(EXPERT_FLAG, False)):
                raise RuntimeError(
                    f"row {key}: session id says expert={is_expert_session} but extra_fields[{EXPERT_FLAG!r}]="
                    f"{fields.get(EXPERT_FLAG)!r}; is another agent loop producing sessions >= {self.num_rollouts}?"
                )
            (experts if is_expert_session else on_policy).append(i)
            truncated[i] = bool(fields.get(TRUNCATED_FLAG, False))
        return on_policy, experts, truncated

    def _drop_out_of_window_experts(self, batch: KVBatchMeta, experts: list[int], metrics: dict) -> list[int]:
        """Clear expert rows of groups whose on-policy pass rate is outside ``calibrl.pass_rate_window``."""
        window = tuple(self.settings.pass_rate_window)
        dropped: list[int] = []
        if experts and window != (0.0, 1.0):
            data = tq.kv_batch_get(keys=batch.keys, partition_id=batch.partition_id, select_fields=["rm_scores", "uid"])
            is_expert = torch.zeros(len(batch), dtype=torch.bool)
            is_expert[experts] = True
            outside = experts_outside_pass_rate_window(
                data["rm_scores"].to_padded_tensor(0.0).sum(-1),
                list(data["uid"]),
                is_expert,
                self.loss_settings.pass_threshold,
                window,
            )
            dropped = outside.nonzero().squeeze(-1).tolist()
            if dropped:
                tq.kv_clear(keys=[batch.keys[i] for i in dropped], partition_id=batch.partition_id)
        metrics["calibrl/groups_outside_pass_window"] = float(len(dropped))
        return [i for i in experts if i not in set(dropped)]

    def _apply_hpt_switch(
        self, batch: KVBatchMeta, on_policy: list[int], experts: list[int], metrics: dict
    ) -> list[int]:
        """HPT's per-group switch (calibrl_ext/losses/hpt.py): clear the expert row of every group whose on-policy
        pass rate is > ``hpt_gamma`` (it trains with GRPO on its rollouts); groups that keep theirs train on it with
        SFT, and the loss leaves their rollouts out (``HPT_SFT_GROUP``, written with the other fields). Only rows
        still in TransferQueue are read (the pass-rate window may have cleared expert rows of ``batch``)."""
        rows = on_policy + experts
        data = tq.kv_batch_get(
            keys=[batch.keys[i] for i in rows], partition_id=batch.partition_id, select_fields=["rm_scores", "uid"]
        )
        is_expert = torch.tensor([False] * len(on_policy) + [True] * len(experts))
        codes = core.encode_groups(list(data["uid"]))
        passed = data["rm_scores"].to_padded_tensor(0.0).sum(-1) > self.loss_settings.pass_threshold
        _, sft_group = core.hpt_sft_groups(passed, codes, ~is_expert, self.loss_settings.hpt_gamma)
        expert_in_sft = sft_group[len(on_policy):].tolist()
        dropped = [i for i, sft in zip(experts, expert_in_sft) if not sft]
        if dropped:
            tq.kv_clear(keys=[batch.keys[i] for i in dropped], partition_id=batch.partition_id)
        kept = [i for i, sft in zip(experts, expert_in_sft) if sft]
        metrics["calibrl/hpt_sft_groups"] = float(len(kept))
        metrics["calibrl/hpt_rl_groups"] = float(int(codes.max()) + 1 - len(kept)) if codes.numel() else 0.0
        return kept

    def _layout_for_log_probs(
        self, batch: KVBatchMeta, on_policy: list[int], experts: list[int], metrics: dict
    ) -> tuple[KVBatchMeta, set[str]]:
        """Pad and order rows for the old-log-prob pass.

        Returns the batch and the keys of the rows that will reach the actor update: in ``calibrl`` mode the
        on-policy rows plus the pads made for the actor's mini-batch multiple (exactly GRPO's update batch), not the
        expert rows nor the pads that only give the old-log-prob pass a multiple of the data-parallel size.
        """
        log_prob_multiple = self._log_prob_row_multiple(self._dp_size())
        if self.settings.trains_expert_rows:
            whole = _select(batch, on_policy + experts)
            with self._rows_per_group(self.num_rollouts + 1), self._batch_multiple(False, log_prob_multiple):
                whole = self._balance_batch(whole, metrics=metrics)
            return whole, set(whole.keys)
        on_batch = upsample_batch_to_divisible_size(
            _select(batch, on_policy), self._get_required_batch_multiple(self._dp_size()), self.tokenizer.eos_token_id
        )
        full = _concat(on_batch, _select(batch, experts))
        with self._batch_multiple(True, log_prob_multiple):
            full = self._balance_batch(full, metrics=metrics)
        return full, set(on_batch.keys)

    def _dp_size(self) -> int:
        role, worker_group = "actor", self.actor_rollout_wg
        if role not in worker_group._dispatch_info:
            worker_group._dispatch_info[role] = worker_group._query_dispatch_info(role)
        return max(worker_group._dispatch_info[role]) + 1

    # ------------------------------------------------------------------ one step
    def step(self, metrics: dict, timing_raw: dict) -> KVBatchMeta:
        """verl's step (prompts for the whole step are generated first, then ``parameter_sync_step`` x
        ``_step_once``); the prompt counts cover the whole step, so they are reported once, after verl has averaged
        the per-``_step_once`` metrics."""
        self._prompt_counts = {"offered": 0, "with_solution": 0}
        self._expert_update_keys = set()
        batch = super().step(metrics, timing_raw)
        if self.settings.uses_expert_rows:
            metrics.update(prompt_count_metrics(**self._prompt_counts))
        return batch

    def _compute_metrics(self, batch: KVBatchMeta, metrics, timing_raw, global_steps, epoch):
        """verl's data metrics (``critic/*``, ``response_length/*``, ...) over the on-policy rows only; in luffy /
        rlplus the expert rows' versions of the per-row metrics are logged as ``calibrl/expert_<name>``."""
        expert_keys = self._expert_update_keys & set(batch.keys)
        if not expert_keys:
            return super()._compute_metrics(batch, metrics, timing_raw, global_steps, epoch)
        on_policy_view = _tag_as_padding(batch, expert_keys)
        super()._compute_metrics(on_policy_view, metrics, timing_raw, global_steps, epoch)
        expert_metrics: dict = {}
        expert_view = _tag_as_padding(batch, set(batch.keys) - expert_keys)
        super()._compute_metrics(expert_view, expert_metrics, timing_raw, global_steps, epoch)
        metrics.update(expert_row_metrics(expert_metrics))

    def _step_once(self, metrics: dict, timing_raw: dict, sample_batch_size: int) -> KVBatchMeta:
        if not self.settings.uses_expert_rows:
            batch = super()._step_once(metrics, timing_raw, sample_batch_size)
            metrics["calibrl/update_rows"] = float(sum(not tag.get("is_padding", False) for tag in batch.tags))
            if "actor/entropy" in metrics:  # no expert rows: verl's entropy is already on-policy (kept for plots)
                metrics["calibrl/entropy_on_policy"] = metrics["actor/entropy"]
            return batch

        with marked_timer("gen", timing_raw, color="red"):
            self.on_sample_begin()
            batch, off_policy_metrics = self.replay_buffer.sample(
                global_steps=self.global_steps, partition_id="train", batch_size=sample_batch_size
            )
            metrics.update(off_policy_metrics)
            batch.extra_info["temperature"] = self.config.actor_rollout_ref.rollout.temperature
            self.on_sample_end()

        if self.reward_loop_manager.reward_loop_worker_handles is None:
            with marked_timer("reward", timing_raw, color="yellow"):
                batch = self._compute_reward_colocate(batch, metrics=metrics)

        on_policy, experts, truncated = self._classify_rows(batch)
        experts = self._drop_out_of_window_experts(batch, experts, metrics)
        if self.settings.mode == "hpt":
            experts = self._apply_hpt_switch(batch, on_policy, experts, metrics)
        is_truncated = {batch.keys[i]: bool(truncated[i]) for i in experts}
        expert_keys = {batch.keys[i] for i in experts}
        full, update_keys = self._layout_for_log_probs(batch, on_policy, experts, metrics)

        with marked_timer("old_log_prob", timing_raw, color="blue"):
            stock_metrics: dict = {}
            full = self._compute_old_log_prob(full, metrics=stock_metrics)

        with marked_timer("calibration", timing_raw, color="purple"):
            update = self._write_calibration_fields(full, expert_keys, is_truncated, update_keys, stock_metrics, metrics)

        if self.use_reference_policy:
            with marked_timer("ref", timing_raw, color="olive"):
                update = self._compute_ref_log_prob(update, metrics=metrics)

        with marked_timer("adv", timing_raw, color="brown"):
            flags = np.array([key in expert_keys for key in update.keys], dtype=bool)
            advantage_metrics: dict = {}
            with expert_rows(flags):
                update = self._compute_advantage(update, metrics=advantage_metrics)
            if self._on_policy_rollout_corr_metrics is not None:
                # verl's rollout_corr/* averaged over every update row; the expert rows' neutral rows excluded here
                advantage_metrics = {k: v for k, v in advantage_metrics.items() if not k.startswith("rollout_corr/")}
                advantage_metrics.update(self._on_policy_rollout_corr_metrics)
            metrics.update(advantage_metrics)

        if self.config.trainer.critic_warmup <= self.global_steps:
            with marked_timer("update_actor", timing_raw, color="red"):
                rows_per_group = self.num_rollouts + (1 if self.settings.trains_expert_rows else 0)
                with self._rows_per_group(rows_per_group):
                    update = self._update_actor(update, metrics=metrics)
        return update

    def _write_calibration_fields(
        self,
        full: KVBatchMeta,
        expert_keys: set[str],
        is_truncated: dict[str, bool],
        update_keys: set[str],
        stock_metrics: dict,
        metrics: dict,
    ) -> KVBatchMeta:
        """Steps 4-6 of the module docstring: per-row fields, on-policy metrics, the update batch."""
        data = tq.kv_batch_get(
            keys=full.keys,
            partition_id=full.partition_id,
            select_fields=["old_log_probs", "entropy", "response_mask", "rm_scores", "uid", "responses"]
            + (["rollout_log_probs"] if self.config.actor_rollout_ref.rollout.calculate_log_probs else []),
        )
        response_mask_nested = data["response_mask"]
        uids = list(data["uid"])
        padded = data.select(*[k for k in data.keys() if k != "uid"]).to_padded_tensor()
        is_expert = torch.tensor([key in expert_keys for key in full.keys])
        is_pad = torch.tensor([bool(tag.get("is_padding", False)) for tag in full.tags])
        scores = padded["rm_scores"].sum(-1)
        fields = compute_calibration_fields(
            padded["old_log_probs"],
            padded["response_mask"],
            scores,
            uids,
            is_expert,
            is_pad,
            pass_threshold=self.loss_settings.pass_threshold,
            beyond_expert=self.loss_settings.beyond_expert,
            expert_combine=self.settings.expert_combine,
            alignment=self.settings.baseline_alignment,
            alignment_window=self.settings.baseline_alignment_window,
            responses=padded["responses"],
        )

        in_update = torch.tensor([key in update_keys for key in full.keys])
        rows = in_update.nonzero().squeeze(-1).tolist()
        lengths = response_mask_nested.offsets().diff().tolist()
        self._on_policy_rollout_corr_metrics = None
        if self.settings.trains_expert_rows:
            self._expert_update_keys |= {full.keys[i] for i in rows if bool(is_expert[i])}
            self._neutralise_expert_rollout_log_probs(full, padded, is_expert, is_pad, rows, lengths)
        write = TensorDict(
            {
                verl_losses.EXPERT_BASELINE: _nested_rows(fields.baseline, lengths, rows),
                verl_losses.CALIBRATION_MASK: _nested_rows(fields.calibration_mask, lengths, rows),
                verl_losses.PASSED: fields.passed[rows],
                verl_losses.IS_EXPERT: is_expert[rows],
                **self._lam_field(padded, is_expert, is_pad, len(rows), metrics),
            },
            batch_size=len(rows),
        )
        if self.settings.mode in SFT_MIX_MODES:
            self._add_sft_mix_fields(write, padded["response_mask"], is_expert, fields.group_has_expert, rows, metrics)
        tq.kv_batch_put(keys=[full.keys[i] for i in rows], partition_id=full.partition_id, fields=write)

        self._report_old_log_prob_metrics(padded, is_expert, is_pad, stock_metrics, metrics)
        truncated = torch.tensor([is_truncated.get(key, False) for key in full.keys])
        metrics.update(
            calibration_metrics(
                fields,
                padded["old_log_probs"],
                padded["entropy"],
                padded["response_mask"],
                is_expert,
                is_pad,
                truncated,
                groups_offered_expert=self._prompt_counts["offered"],
                groups_with_solution=self._prompt_counts["with_solution"],
            )
        )
        update_tokens = padded["response_mask"][rows].sum()
        metrics["calibrl/expert_tokens"] = float(padded["response_mask"][is_expert].sum())
        metrics["calibrl/update_rows"] = float(len(rows) - int(is_pad[rows].sum()))
        metrics["calibrl/update_tokens"] = float(update_tokens)
        metrics["calibrl/tq_rows_at_step_start"] = float(getattr(self, "_tq_rows_at_step_start", 0))
        # pads made only for the old-log-prob pass (its micro-batch multiple); the update's own pads separately
        metrics["calibrl/old_log_prob_pad_rows"] = float((is_pad & ~in_update).sum())
        metrics["calibrl/update_pad_rows"] = float((is_pad & in_update).sum())

        dropped = [key for key in full.keys if key not in update_keys]
        if dropped:
            tq.kv_clear(keys=dropped, partition_id=full.partition_id)
        update = _select(full, rows)
        if not self.settings.trains_expert_rows:
            # Re-balance the update rows across data-parallel ranks (already a multiple: no new pads).
            update = self._balance_batch(update, metrics=metrics)
        return update

    def _lam_field(self, padded, is_expert, is_pad, num_rows: int, metrics: dict) -> dict[str, torch.Tensor]:
        """This update's lambda as a per-row field (adaptive lambda), or nothing (the loss uses policy_loss.lam).

        The controller reads the on-policy entropy of the old-log-prob pass, i.e. of the policy about to be updated.
        """
        if self.adaptive_lam is None:
            if self.settings.mode == "calibrl":
                metrics["calibrl/lam"] = float(self.loss_settings.lam)
            return {}
        entropy = on_policy_entropy(padded["entropy"], padded["response_mask"], ~is_expert & ~is_pad)
        lam = self.adaptive_lam.update(entropy)
        low, high = self.adaptive_lam.band()
        metrics.update(
            {
                "calibrl/lam": lam,
                "calibrl/lam_controller_error": self.adaptive_lam.last_error,
                "calibrl/lam_target_low": low,
                "calibrl/lam_target_high": high,
            }
        )
        return {verl_losses.LAM: torch.full((num_rows,), lam, dtype=torch.float32)}

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self):
        """verl's checkpoint plus the adaptive-lambda state, written BEFORE verl's (which ends by writing the
        "latest" tracker), so a checkpoint that resume can find always holds it."""
        if self.adaptive_lam is not None:
            folder = os.path.join(self.config.trainer.default_local_dir, f"global_step_{self.global_steps}")
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, ADAPTIVE_LAM_STATE_FILE), "w") as handle:
                json.dump(self.adaptive_lam.state_dict(), handle)
        super()._save_checkpoint()

    def _load_checkpoint(self):
        """verl's resume, then the adaptive-lambda state of the same ``global_step_<n>`` folder."""
        super()._load_checkpoint()
        if self.adaptive_lam is None or self.global_steps == 0:
            return
        folder = self._resumed_checkpoint_folder()
        path = os.path.join(folder, ADAPTIVE_LAM_STATE_FILE)
        if not os.path.exists(path):
            logger.warning(
                "resuming from %s, which has no %s (saved with calibrl.adaptive_lam.enable=false?): the controller "
                "starts again from actor_rollout_ref.actor.policy_loss.lam=%s",
                folder, ADAPTIVE_LAM_STATE_FILE, self.adaptive_lam.lam,
            )  # fmt: skip
            return
        with open(path) as handle:
            self.adaptive_lam.load_state_dict(json.load(handle))
        logger.info("adaptive lambda restored from %s: %s", path, self.adaptive_lam.state_dict())

    def _resumed_checkpoint_folder(self) -> str:
        """The ``global_step_<n>`` folder verl's ``_load_checkpoint`` resumed from (its own resolution rules)."""
        trainer = self.config.trainer
        if trainer.resume_mode == "resume_path":
            folder = trainer.resume_from_path
        else:
            folder = os.path.join(trainer.default_local_dir, f"global_step_{self.global_steps}")
        return folder if os.path.isabs(folder) else os.path.join(os.getcwd(), folder)
    def _add_sft_mix_fields(
        self,
        write: TensorDict,
        response_mask: torch.Tensor,
        is_expert: torch.Tensor,
        group_has_expert: torch.Tensor,
        rows: list[int],
        metrics: dict,
    ) -> None:
        """chord / hpt: the per-row fields their loss needs (calibrl_ext/verl_losses.py), computed over the whole
        update batch: each part's token share (so each part is averaged over its own tokens), CHORD's mu for this
        step, HPT's SFT groups (those that kept their expert row after the switch)."""
        n = len(rows)
        tokens = response_mask[rows].sum(-1)
        expert = is_expert[rows]
        if self.settings.mode == "hpt":
            sft_group = group_has_expert[rows]  # the switch left expert rows in SFT groups only
            policy = ~expert & ~sft_group
            write[verl_losses.HPT_SFT_GROUP] = sft_group
            metrics["calibrl/hpt_sft_group_rollouts_left_out"] = float((~expert & sft_group & (tokens > 0)).sum())
        else:
            policy = ~expert
            # verl counts global_steps from 1; the schedule's step 0 is the first training step (Trinity-RFT).
            mu = core.chord_mu(
                self.global_steps - 1, self.loss_settings.chord_mu_warmup_steps,
                self.loss_settings.chord_mu_decay_steps, self.loss_settings.chord_mu_peak,
                self.loss_settings.chord_mu_valley,
            )  # fmt: skip
            write[verl_losses.CHORD_MU] = torch.full((n,), mu, dtype=torch.float32)
            metrics["calibrl/chord_mu"] = mu
        total = float(tokens.sum().clamp(min=1))
        policy_share = float(tokens[policy].sum()) / total
        expert_share = float(tokens[expert].sum()) / total
        write[verl_losses.POLICY_TOKEN_SHARE] = torch.full((n,), policy_share, dtype=torch.float32)
        write[verl_losses.EXPERT_TOKEN_SHARE] = torch.full((n,), expert_share, dtype=torch.float32)
        metrics["calibrl/policy_token_share"] = policy_share
        metrics["calibrl/expert_token_share"] = expert_share

    def _neutralise_expert_rollout_log_probs(self, full, padded, is_expert, is_pad, rows, lengths) -> None:
        """Keep the expert rows out of verl's rollout correction (luffy / rlplus train them).

        The expert row was not sampled: the agent loop gives it zero rollout log-probs, so verl would see
        pi_old / pi_rollout = pi_old (``rollout_corr/kl`` ~ 1 from one row) and ``rollout_rs`` could mask it out of
        the loss. Its rollout log-probs are set to its own pi_old (IS weight 1, never rejected), and the
        ``rollout_corr/*`` metrics are recomputed over the on-policy rows.
        """
        correction = self.config.algorithm.get("rollout_correction", None)
        if correction is None or "rollout_log_probs" not in padded.keys():
            return
        expert_rows_in_update = [i for i in rows if bool(is_expert[i])]
        if expert_rows_in_update:
            tq.kv_batch_put(
                keys=[full.keys[i] for i in expert_rows_in_update],
                partition_id=full.partition_id,
                fields=TensorDict(
                    {"rollout_log_probs": _nested_rows(padded["old_log_probs"], lengths, expert_rows_in_update)},
                    batch_size=len(expert_rows_in_update),
                ),
            )
        self._on_policy_rollout_corr_metrics = on_policy_rollout_corr_metrics(
            padded["old_log_probs"], padded["rollout_log_probs"], padded["response_mask"], ~is_expert & ~is_pad,
            correction,
        )  # fmt: skip

    def _report_old_log_prob_metrics(self, padded, is_expert, is_pad, stock_metrics: dict, metrics: dict) -> None:
        """Entropy and rollout-vs-actor diff over on-policy rows only (the stock pass mixes in expert rows)."""
        on_policy = ~is_expert & ~is_pad
        actor_config = self.config.actor_rollout_ref.actor
        mask = padded["response_mask"] * on_policy.unsqueeze(-1).to(padded["response_mask"].dtype)
        metrics["actor/entropy"] = agg_loss(
            loss_mat=padded["entropy"],
            loss_mask=mask,
            loss_agg_mode=actor_config.loss_agg_mode,
            loss_scale_factor=actor_config.loss_scale_factor,
        ).item()
        for name, value in stock_metrics.items():
            metrics[f"calibrl/stock_{name.replace('/', '_')}_incl_expert"] = value
        if "rollout_log_probs" in padded.keys() and bool(on_policy.any()):
            rows = on_policy.nonzero().squeeze(-1)
            subset = DataProto(
                batch=TensorDict(
                    {k: padded[k][rows] for k in ("rollout_log_probs", "old_log_probs", "response_mask", "responses")},
                    batch_size=len(rows),
                )
            )
            metrics.update(calculate_debug_metrics(subset))
