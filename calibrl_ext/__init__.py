"""calibrl_ext: CalibRL (arXiv 2602.20197) for verl.

Importing this package is cheap and imports no verl module: the maths lives in
:mod:`calibrl_ext.core` (pure torch), and everything that registers with verl is loaded by
:mod:`calibrl_ext.plugin` (the ``verl.plugins`` entry point, or ``VERL_USE_EXTERNAL_MODULES``).
"""

__version__ = "0.1.0"
