"""Start-up checks of the several-experts keys (calibrl.max_experts_per_prompt, expert_combine, expert_list_column)."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from omegaconf import OmegaConf

from recipe.calibrl.settings import CalibRLConfigError, CalibRLRecipeSettings
from recipe.calibrl.startup_checks import check_expert_column


def _settings(**calibrl):
    return CalibRLRecipeSettings.from_config(OmegaConf.create({"calibrl": calibrl}))


def test_defaults_are_one_expert_and_mean():
    """The defaults keep the released path: one expert row from expert_column."""
    settings = _settings()
    assert settings.max_experts_per_prompt == 1 and not settings.multi_expert and settings.expert_combine == "mean"


@pytest.mark.parametrize(
    "calibrl, key",
    [
        ({"max_experts_per_prompt": 0}, "calibrl.max_experts_per_prompt"),
        ({"max_experts_per_prompt": 2, "mode": "luffy"}, "calibrl.max_experts_per_prompt"),
        ({"max_experts_per_prompt": 2, "mode": "rlplus"}, "calibrl.max_experts_per_prompt"),
        ({"expert_combine": "median"}, "calibrl.expert_combine"),
    ],
)
def test_bad_values_fail_naming_the_key(calibrl, key):
    """A cap < 1, several experts in a mode that trains the expert row, or an unknown rule fail at start-up."""
    with pytest.raises(CalibRLConfigError, match=key):
        _settings(**calibrl)


def test_multi_expert_needs_the_list_column_in_the_training_parquet(tmp_path):
    """max_experts_per_prompt > 1 with a parquet that lacks expert_solutions fails naming the key and the fix."""
    path = tmp_path / "train.parquet"
    pq.write_table(pa.table({"expert_solution": ["x"]}), path)
    config = OmegaConf.create({"data": {"train_files": [str(path)]}})
    check_expert_column(config, _settings())  # one expert: the single column is enough
    with pytest.raises(CalibRLConfigError, match="--max-experts"):
        check_expert_column(config, _settings(max_experts_per_prompt=2))
