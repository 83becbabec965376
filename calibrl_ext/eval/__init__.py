"""Evaluation on the paper's benchmarks through verl's own validation loop (``docs/evaluation.md``).

- :mod:`calibrl_ext.eval.adapters`: one adapter per benchmark (MathVista, MathVerse, MathVision,
  We-Math, LogicVista, DynaMath, MATH-500, AMC): official record -> row with an answer spec;
- :mod:`calibrl_ext.eval.build` (CLI ``data_prep/build_benchmarks.py``): benchmark -> verl validation
  parquet, rejects file, summary;
- :mod:`calibrl_ext.eval.schema`: the parquet's columns and ``extra_info`` fields;
- :mod:`calibrl_ext.eval.results`: verl's validation dumps joined back to the rows by ``eval_id``;
- :mod:`calibrl_ext.eval.metrics`: accuracy, pass@n and the rule-computable official aggregates;
- :mod:`calibrl_ext.eval.report` (CLI ``python -m calibrl_ext.eval report|compare``).

Scoring is :func:`calibrl_ext.reward.compute_score`, which reads each row's answer spec; the accuracy
reported is its ``acc`` key (no format bonus).
"""
