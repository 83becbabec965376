"""Start-up checks of the issue-13 switches (calibrl.adaptive_lam.*, calibrl.baseline_alignment): the recipe yaml
composes with both off (the released defaults) and with both on; every misconfiguration fails at start-up naming
the key, before any worker starts."""

import pytest

from recipe.calibrl.settings import CalibRLConfigError
from recipe.calibrl.startup_checks import validate_startup


def test_switches_default_off_and_compose_on(compose_recipe):
    off = validate_startup(compose_recipe())
    assert off.baseline_alignment == "position" and off.adaptive_lam.enable is False
    on = validate_startup(compose_recipe("calibrl.baseline_alignment=lcs", "calibrl.adaptive_lam.enable=true",
                                         "calibrl.adaptive_lam.target_entropy=[1.0,2.0]"))  # fmt: skip
    assert on.baseline_alignment == "lcs" and on.adaptive_lam.enable
    assert on.adaptive_lam.target_entropy == (1.0, 2.0) and on.adaptive_lam.target_ratio == (0.9, 1.1)


@pytest.mark.parametrize(
    "overrides, match",
    [(["calibrl.baseline_alignment=fuzzy"], r"calibrl.baseline_alignment='fuzzy'.*one of"),
     (["calibrl.mode=grpo", "calibrl.baseline_alignment=lcs"], r"calibrl.baseline_alignment='lcs'.*only mode"),
     (["calibrl.baseline_alignment_window=-1"], r"calibrl.baseline_alignment_window=-1"),
     (["calibrl.mode=luffy", "calibrl.adaptive_lam.enable=true"], r"calibrl.adaptive_lam.enable=True.*only mode"),
     (["calibrl.adaptive_lam.enable=true", "calibrl.adaptive_lam.lam_min=0.2"], r"policy_loss.lam=0.1.*lam_min"),
     (["calibrl.adaptive_lam.max_log_step=0"], r"calibrl.adaptive_lam.max_log_step=0")],
)  # fmt: skip
def test_bad_switch_settings_fail_at_startup_naming_the_key(compose_recipe, overrides, match):
    with pytest.raises(CalibRLConfigError, match=match):
        validate_startup(compose_recipe(*overrides))
