"""The laptop-scale study (issue 11): CalibRL's modes, activation ablation and alpha/lambda sweep on the CPU backend.

A tool for people, apart from what runs inside training: it only launches the recipe
(``python -m recipe.calibrl.main_calibrl``) with overrides and reads the metrics verl writes.

- :mod:`~recipe.calibrl.study.presets`: the presets (every number named and documented);
- :mod:`~recipe.calibrl.study.grid`: arms and the unique runs they need;
- :mod:`~recipe.calibrl.study.runner`: runs them through the CPU launcher, resumably;
- :mod:`~recipe.calibrl.study.metrics`: the figures of merit read from a run's ``metrics.jsonl``;
- :mod:`~recipe.calibrl.study.report`: results.json, study.png, table.md.

Usage (docs/study.md)::

    python -m recipe.calibrl.study --preset quick --out outputs/study
"""
