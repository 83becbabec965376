"""calibrl's CPU backend for verl 0.9.1: run verl's own trainer end to end on a CPU-only host.

Pieces (each registered through verl's own extension points by :mod:`calibrl_ext.cpu_backend.register`):

- :mod:`~calibrl_ext.cpu_backend.platform`: verl platform ``cpu`` (gloo, CPU device module), selected only by
  ``VERL_PLATFORM=cpu``;
- :mod:`~calibrl_ext.cpu_backend.hf_server`, :mod:`~calibrl_ext.cpu_backend.replica`,
  :mod:`~calibrl_ext.cpu_backend.adapter`: rollout backend ``hf`` (transformers ``generate``), selected by
  ``actor_rollout_ref.rollout.name=hf``;
- :mod:`~calibrl_ext.cpu_backend.replay_buffer`: a sync replay buffer without verl's fixed 2 s poll;
- :mod:`~calibrl_ext.cpu_backend.verl_patches`: the only run-time replacements of verl functions;
- :mod:`~calibrl_ext.cpu_backend.overrides`: THE environment and Hydra overrides of a CPU run;
- :mod:`~calibrl_ext.cpu_backend.launcher`: runs a verl entry point with them, under a timeout, parses the
  metrics and leaves no process behind.

Importing this package imports nothing from verl; see ``docs/cpu_dry_run.md``.
"""
