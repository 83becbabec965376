"""Every code snippet of docs/verl_fork.md is executed by a fork-kit test, inside the fork's own context.

The snippets themselves run in tests/fork_kit: inside real verl 0.7.0 / 0.5.0 release code
(``test_verl_releases.py``: the release's ``dp_actor.py`` edited with them, the driver snippets on names the
release's ``RayPPOTrainer.fit`` has) and on EasyR1's / the released fork's documented call-site locals
(``test_easyr1_and_released_fork.py``). No name is injected that the fork would not have there. This test keeps the
guide from growing a snippet that nothing runs.
"""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "verl_fork.md"


def test_every_guide_snippet_is_run_by_a_fork_kit_test():
    """Each ``<!-- snippet: NAME -->`` python block of the guide is run by name (``snippet("NAME")``) in
    tests/fork_kit, and every python block of the guide's fork sections carries such a marker."""
    text = DOC.read_text()
    named = re.findall(r"<!-- snippet: ([\w.\-]+) -->\s*```python\n", text)
    assert len(named) == len(set(named)), "snippet names must be unique"
    fork_sections = text[text.index("## Forks without the v1 trainer") :]
    assert fork_sections.count("```python") == len(named), "a python block of the fork guide has no snippet marker"
    used = set()
    for test in (ROOT / "tests" / "fork_kit").glob("*.py"):
        used |= set(re.findall(r"snippet\(\s*\"([\w.\-]+)\"", test.read_text()))
    assert set(named) <= used, f"snippets no test runs: {sorted(set(named) - used)}"
    assert {"settings", "verl-append", "verl-after-old-log-prob", "verl-select-keys", "verl-actor-0.6",
            "verl-actor-0.4", "easyr1-actor", "released-driver", "released-actor"} <= set(named)  # fmt: skip
