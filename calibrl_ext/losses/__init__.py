"""Each method's loss in its own small module, next to the shared PPO token loss (pure torch, no verl import).

- :mod:`.ppo`: verl's dual-clip PPO per token, verl's ``agg_loss`` as :func:`aggregate_loss`, masking helpers.
- :mod:`.groups`: group ids, on-policy group advantages (GRPO / Dr.GRPO), the expert baseline and where it applies.
- :mod:`.multi_expert`: several expert rows per group combined into one baseline (``calibrl.expert_combine``).
- :mod:`.calibrl`: CalibRL's calibration term and policy loss (arXiv 2602.20197).
- :mod:`.hybrid`: the frame of the losses that train the expert row; :mod:`.luffy` (arXiv 2504.14945) and
  :mod:`.rlplus` (arXiv 2508.00222) plug their expert-token losses into it; :mod:`.chord` (arXiv 2508.11408) and
  :mod:`.hpt` (arXiv 2509.04419) mix a PPO part and an expert SFT part, each averaged over its own tokens.

``calibrl_ext.core`` re-exports every public name (the fork guide and its tests import from there).
"""
