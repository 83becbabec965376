"""Adaptive lambda (calibrl_ext/adaptive_lam.py) on synthetic entropy traces: it steers the entropy into the band,
never leaves its lambda bounds nor its step bound, continues identically after a save/restore, validates its keys;
and the per-row lambda field reaches the registered loss exactly like ``policy_loss.lam``."""

import json
import math

import pytest
import torch

from calibrl_ext import verl_losses
from calibrl_ext.adaptive_lam import AdaptiveLamConfigError, AdaptiveLamController, AdaptiveLamSettings

#: Float slack of the step bound check (log(exp(x)) round trip).
EPS = 1e-12


class EntropyPlant:
    """A policy whose entropy relaxes toward an equilibrium that rises with lambda: H* = h_ref * (lam / lam_ref)^beta,
    H_{k+1} = H_k + rate * (H*(lam_k) - H_k) + noise_k (a first-order lag, like RL's bounded per-update change)."""

    def __init__(self, h0=2.0, h_ref=1.0, lam_ref=0.1, beta=0.5, rate=0.3, noise=0.0, seed=0):
        self.h, self.h_ref, self.lam_ref, self.beta, self.rate, self.noise = h0, h_ref, lam_ref, beta, rate, noise
        self.gen = torch.Generator().manual_seed(seed)

    def step(self, lam):
        target = self.h_ref * (lam / self.lam_ref) ** self.beta
        self.h += self.rate * (target - self.h) + self.noise * float(torch.randn((), generator=self.gen))
        return self.h


def _drive(controller, plant, steps):
    """Alternate measure -> lambda -> update, as the trainer does; returns (entropies, lambdas)."""
    entropies, lams = [], []
    for _ in range(steps):
        h = plant.h
        lam = controller.update(h)
        entropies.append(h)
        lams.append(lam)
        plant.step(lam)
    return entropies, lams


def test_converges_into_band_within_bounds_and_step_bound():
    """At lambda 0.1 this policy's entropy collapses from 2.0 toward 1.0; with the band [1.8, 2.2] the controller
    raises lambda until the entropy sits in the band (the last 20 of 150 updates inside it), lambda stays in
    [lam_min, lam_max] and no update changes log(lambda) by more than max_log_step."""
    settings = AdaptiveLamSettings(enable=True, target_entropy=(1.8, 2.2), gain=1.0, max_log_step=0.1,
                                   lam_min=0.01, lam_max=1.0)  # fmt: skip
    controller = AdaptiveLamController(settings, initial_lam=0.1)
    entropies, lams = _drive(controller, EntropyPlant(noise=0.01), 150)
    assert all(1.8 <= h <= 2.2 for h in entropies[-20:]), entropies[-20:]
    assert lams[-1] > 0.3  # it had to raise lambda: H*(0.1) = 1.0
    assert all(0.01 <= lam <= 1.0 for lam in lams)
    steps = [abs(math.log(b / a)) for a, b in zip([0.1, *lams], lams)]
    assert max(steps) <= 0.1 + EPS
    assert controller.last_error == 0.0


@pytest.mark.parametrize("band, bound", [((50.0, 60.0), 0.5), ((0.001, 0.002), 0.05)])
def test_unreachable_band_saturates_at_the_bound(band, bound):
    """A band the policy cannot reach drives lambda to the bound on that side and holds it there, never past it."""
    settings = AdaptiveLamSettings(enable=True, target_entropy=band, max_log_step=0.2, lam_min=0.05, lam_max=0.5)
    controller = AdaptiveLamController(settings, initial_lam=0.1)
    _, lams = _drive(controller, EntropyPlant(), 60)
    assert all(0.05 <= lam <= 0.5 for lam in lams)
    assert lams[-10:] == [bound] * 10


def test_ratio_band_follows_the_first_measurement():
    """target_ratio sets the band from the first measured entropy H_0; the first update keeps lambda (H_0 is in
    [0.9, 1.1] * H_0) and records no error."""
    settings = AdaptiveLamSettings(enable=True, target_ratio=(0.9, 1.1))
    controller = AdaptiveLamController(settings, initial_lam=0.1)
    assert controller.update(2.0) == 0.1 and controller.last_error == 0.0
    assert controller.band() == pytest.approx((1.8, 2.2))
    controller.update(1.0)  # below the band: error log(1.8 / 1.0) > 0, lambda rises by the clipped step
    assert controller.last_error == pytest.approx(math.log(1.8))
    assert controller.lam == pytest.approx(0.1 * math.exp(0.1))


def test_non_finite_entropy_holds_lambda():
    """A nan entropy (a broken forward pass) never becomes a lambda: lambda is held and the error is nan."""
    controller = AdaptiveLamController(AdaptiveLamSettings(enable=True, target_entropy=(1.0, 2.0)), 0.1)
    controller.update(0.5)
    lam = controller.lam
    assert controller.update(float("nan")) == lam and math.isnan(controller.last_error)


def test_save_restore_mid_trace_continues_identically():
    """Saving the state after 25 updates (through JSON, as the trainer's checkpoint does) and restoring it in a fresh
    controller gives exactly the lambdas of an uninterrupted run for the remaining 25 updates (ratio mode: H_0 is
    part of the state)."""
    settings = AdaptiveLamSettings(enable=True, target_ratio=(1.05, 1.2), gain=0.7, max_log_step=0.05)
    straight = AdaptiveLamController(settings, 0.1)
    _, expected = _drive(straight, EntropyPlant(noise=0.02, seed=3), 50)

    plant = EntropyPlant(noise=0.02, seed=3)
    first = AdaptiveLamController(settings, 0.1)
    _, head = _drive(first, plant, 25)
    saved = json.dumps(first.state_dict())
    resumed = AdaptiveLamController(settings, 0.1)
    resumed.load_state_dict(json.loads(saved))
    _, tail = _drive(resumed, plant, 25)
    assert head + tail == expected
    assert resumed.state_dict() == straight.state_dict()


@pytest.mark.parametrize(
    "section, key",
    [({"gain": 0}, "gain"), ({"max_log_step": 0}, "max_log_step"), ({"lam_min": 0}, "lam_min"),
     ({"lam_min": 0.5, "lam_max": 0.1}, "lam_max"), ({"target_ratio": [1.2, 1.1]}, "target_ratio"),
     ({"target_entropy": [-1, 1]}, "target_entropy"), ({"enable": "yes"}, "enable"), ({"gian": 1}, "gian")],
)  # fmt: skip
def test_bad_settings_fail_naming_the_key(section, key):
    with pytest.raises(AdaptiveLamConfigError, match=f"calibrl.adaptive_lam.{key}"):
        AdaptiveLamSettings.from_section(section)


def test_initial_lambda_outside_bounds_is_refused():
    with pytest.raises(AdaptiveLamConfigError, match="policy_loss.lam"):
        AdaptiveLamController(AdaptiveLamSettings(enable=True, lam_min=0.2), initial_lam=0.1)


def _rows():
    gen = torch.Generator().manual_seed(0)
    lengths = torch.tensor([5, 3, 4, 2])
    mask = (torch.arange(5)[None] < lengths[:, None]).float()
    old = (torch.randn(4, 5, generator=gen) - 1.0) * mask
    return {
        "log_probs": ((old + 0.3 * torch.randn(4, 5, generator=gen)) * mask).requires_grad_(),
        "old_log_probs": old,
        "advantages": torch.tensor([0.6, -0.4, 0.6, -0.4])[:, None] * mask,
        "response_mask": mask,
        verl_losses.EXPERT_BASELINE: (torch.randn(4, 5, generator=gen) - 1.0) * mask,
        verl_losses.CALIBRATION_MASK: mask,
        verl_losses.PASSED: torch.tensor([True, False, True, False]),
        verl_losses.IS_EXPERT: torch.tensor([False, False, False, False]),
    }


def test_per_row_lambda_field_equals_config_lambda(actor_config, micro_batch):
    """The driver's per-row lambda field (calibrl_lam = 0.37 on every row) gives the loss, gradient and parts of
    policy_loss.lam = 0.37 without the field; without the field the config's lambda is used (0.1 != 0.37)."""
    info = {"dp_size": 1, "batch_num_tokens": 14, "global_batch_size": 4}

    def run(config_lam, field_lam=None):
        rows = _rows()
        if field_lam is not None:
            rows[verl_losses.LAM] = torch.full((4,), field_lam)
        data, output = micro_batch(rows, [3, 5, 2, 4], info)
        loss, metrics = verl_losses.calibrl_actor_loss(actor_config(lam=config_lam), output, data)
        (grad,) = torch.autograd.grad(loss, rows["log_probs"])
        return loss, grad, metrics["actor/pg_loss"].aggregate(), metrics["actor/calibration_loss"].aggregate()

    by_field, by_config, default = run(0.1, 0.37), run(0.37), run(0.1)
    torch.testing.assert_close(by_field[0], by_config[0])
    torch.testing.assert_close(by_field[1], by_config[1])
    assert by_field[2] == pytest.approx(by_config[2]) and by_field[3] == pytest.approx(by_config[3])
    assert not torch.allclose(default[0], by_field[0])
