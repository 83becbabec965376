"""CalibRL for verl forks without the v1 trainer: verl 0.4-0.7 (``RayPPOTrainer.fit`` + ``dp_actor``; 0.8 keeps that
``fit`` but trains in engine workers), EasyR1 and the released CalibRL fork. Pure torch + numpy; no verl import (the
fork's own ``DataProto`` class builds the batches).

Order of the calls in a legacy trainer (docs/verl_fork.md says where each goes, per fork):
  1. :func:`append_expert_rows` - right after the rollout is merged into the batch, before reward / old-log-prob;
  2. :func:`after_old_log_prob` - in place of ``compute_advantage``: baseline, calibration mask, pass sign,
     on-policy advantages and entropy, expert rows removed (CalibRL) or kept (LUFFY / RL-PLUS);
  3. the actor loss call (:func:`verl_policy_loss`, :func:`verl_policy_loss_tuple`, :func:`easyr1_policy_loss`),
     with :data:`ACTOR_SELECT_KEYS` added to ``update_policy``'s ``select_keys``.
"""

from calibrl_ext.fork_kit.actor_loss import (
    EASYR1_AVG_MODES,
    calibrl_token_loss,
    easyr1_policy_loss,
    mark_released_expert_rows,
    released_fork_policy_loss,
    verl_policy_loss,
    verl_policy_loss_tuple,
)
from calibrl_ext.fork_kit.driver import ACTOR_SELECT_KEYS, after_old_log_prob
from calibrl_ext.fork_kit.rows import EXPERT, ON_POLICY, PAD, ROW_KIND, append_expert_rows
from calibrl_ext.fork_kit.settings import FORK_LOSS_MODES, ForkSettings

__all__ = [
    "ACTOR_SELECT_KEYS",
    "EASYR1_AVG_MODES",
    "EXPERT",
    "FORK_LOSS_MODES",
    "ON_POLICY",
    "PAD",
    "ROW_KIND",
    "ForkSettings",
    "after_old_log_prob",
    "append_expert_rows",
    "calibrl_token_loss",
    "easyr1_policy_loss",
    "mark_released_expert_rows",
    "released_fork_policy_loss",
    "verl_policy_loss",
    "verl_policy_loss_tuple",
]
