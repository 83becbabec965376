"""CalibRL recipe for verl 0.9.1: how verl's own v1 PPO trainer runs CalibRL.

- ``config/calibrl_trainer.yaml``: the recipe config (extends verl's ``ppo_trainer``).
- ``main_calibrl.py``: entry point (start-up checks, then verl's ``run_ppo``).
- ``calibrl_trainer.py``: ``trainer.v1.trainer_mode=calibrl`` (expert rows, driver-side calibration).
- ``expert_agent_loop.py``: the agent loop that adds the expert trajectory to each training group.

See README.md in this folder for the map from the paper's features to config keys and code.
"""
