"""verl glue: registered policy losses, the actor loss wrapper, the advantage estimator and the config dataclass."""

import numpy as np
import pytest
import torch
from calibrl_ext import core, verl_losses
from calibrl_ext.config import CalibRLPolicyLossConfig, ConfigValueError
from verl.trainer.ppo.core_algos import ADV_ESTIMATOR_REGISTRY, POLICY_LOSS_REGISTRY, compute_policy_loss_vanilla

PROMPT_LENS = [3, 5, 2, 4, 6, 2]


def _rows(seed=0, n=6, T=5):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([5, 3, 4, 2, 5, 1])[:n]
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    old = (torch.randn(n, T, generator=gen) - 1.0) * mask
    new = (old + 0.3 * torch.randn(n, T, generator=gen)) * mask
    adv = torch.tensor([0.6, -0.4, 0.6, -0.4, 0.2, -0.2])[:n, None] * mask
    baseline = (torch.randn(n, T, generator=gen) - 1.0) * mask
    return {
        "log_probs": new.requires_grad_(),
        "old_log_probs": old,
        "advantages": adv,
        "response_mask": mask,
        verl_losses.EXPERT_BASELINE: baseline,
        verl_losses.CALIBRATION_MASK: mask * torch.tensor([1, 1, 0, 1, 1, 1])[:n, None],
        verl_losses.PASSED: torch.tensor([True, False, True, False, True, False])[:n],
        verl_losses.IS_EXPERT: torch.tensor([False, False, False, False, True, False])[:n],
    }


def _global_info(rows, tokens_mask=None):
    mask = rows["response_mask"] if tokens_mask is None else tokens_mask
    return {"dp_size": 1, "batch_num_tokens": int(mask.sum()), "global_batch_size": int(mask.shape[0])}


def test_registries_hold_calibrl_and_keep_verls_own_entries():
    """calibrl, luffy, rlplus, chord, hpt are registered losses and calibrl an estimator; verl's own entries are
    untouched."""
    for name in ("calibrl", "luffy", "rlplus", "chord", "hpt"):
        assert POLICY_LOSS_REGISTRY[name].__module__ == "calibrl_ext.verl_losses"
    assert ADV_ESTIMATOR_REGISTRY["calibrl"].__module__ == "calibrl_ext.verl_advantage"
    assert POLICY_LOSS_REGISTRY["vanilla"] is compute_policy_loss_vanilla
    assert {"vanilla", "gspo", "gpg", "clip_cov", "kl_cov"} <= set(POLICY_LOSS_REGISTRY)
    assert all(fn.__module__.startswith("verl.") for name, fn in ADV_ESTIMATOR_REGISTRY.items() if name != "calibrl")


@pytest.mark.parametrize("loss_agg_mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum"])
def test_actor_loss_through_verl_ppo_loss_equals_core(actor_config, micro_batch, loss_agg_mode):
    """calibrl_actor_loss (verl's ppo_loss + registered 'calibrl' loss) gives the same loss and gradient as
    core.calibrl_policy_loss on the same padded rows, also with a calibration mask that ends inside a row
    (beyond_expert=drop), and reports the two parts separately."""
    rows = _rows()
    rows[verl_losses.CALIBRATION_MASK][0, 3:] = 0.0
    on_policy = rows["response_mask"] * (~rows[verl_losses.IS_EXPERT]).float()[:, None]
    info = _global_info(rows, on_policy)
    info["global_batch_size"] = int(on_policy.any(-1).sum())
    data, output = micro_batch(rows, PROMPT_LENS, info)
    loss, metrics = verl_losses.calibrl_actor_loss(actor_config(loss_agg_mode=loss_agg_mode), output, data)
    (grad,) = torch.autograd.grad(loss, rows["log_probs"])

    expected, parts = core.calibrl_policy_loss(
        rows["old_log_probs"], rows["log_probs"], rows["advantages"], rows["response_mask"],
        rows[verl_losses.EXPERT_BASELINE], rows[verl_losses.PASSED], rows[verl_losses.IS_EXPERT],
        calibration_token_mask=rows[verl_losses.CALIBRATION_MASK], loss_agg_mode=loss_agg_mode,
        batch_num_tokens=info["batch_num_tokens"], global_batch_size=info["global_batch_size"],
    )  # fmt: skip
    (expected_grad,) = torch.autograd.grad(expected, rows["log_probs"])
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(grad, expected_grad)
    assert metrics["actor/calibration_loss"].aggregate() == pytest.approx(parts["calibration_loss"].item(), rel=1e-5)
    assert metrics["actor/pg_loss"].aggregate() == pytest.approx(parts["pg_loss"].item(), rel=1e-5)


@pytest.mark.parametrize("loss_mode", ["calibrl", "luffy"])
@pytest.mark.parametrize("loss_agg_mode", ["token-mean", "seq-mean-token-mean"])
def test_micro_batches_add_up_through_verl(actor_config, micro_batch, loss_mode, loss_agg_mode):
    """Through verl's ppo_loss and agg_loss with global batch info, micro-batch losses and gradients add up to the
    whole batch's."""
    rows = _rows(seed=1)
    config = actor_config(loss_mode=loss_mode, loss_agg_mode=loss_agg_mode)
    on_policy = rows["response_mask"] * (~rows[verl_losses.IS_EXPERT]).float()[:, None]
    info = _global_info(rows, on_policy if loss_mode == "calibrl" else None)
    if loss_mode == "calibrl":
        info["global_batch_size"] = int(on_policy.any(-1).sum())

    def loss_of(index):
        part = {k: v[index] for k, v in rows.items()}
        data, output = micro_batch(part, [PROMPT_LENS[i] for i in index], info)
        return verl_losses.calibrl_actor_loss(config, output, data)[0]

    whole = loss_of(list(range(6)))
    (whole_grad,) = torch.autograd.grad(whole, rows["log_probs"])
    split = loss_of([0, 1, 2]) + loss_of([3, 4, 5])
    (split_grad,) = torch.autograd.grad(split, rows["log_probs"])
    torch.testing.assert_close(split, whole)
    torch.testing.assert_close(split_grad, whole_grad)


def test_luffy_through_verl_equals_core(actor_config, micro_batch):
    """The registered 'luffy' loss equals core.luffy_policy_loss (one aggregation over all tokens)."""
    rows = _rows(seed=2)
    info = _global_info(rows)
    data, output = micro_batch(rows, PROMPT_LENS, info)
    loss, metrics = verl_losses.calibrl_actor_loss(actor_config(loss_mode="luffy"), output, data)
    expected, _ = core.luffy_policy_loss(
        rows["old_log_probs"], rows["log_probs"], rows["advantages"], rows["response_mask"],
        rows[verl_losses.IS_EXPERT], batch_num_tokens=info["batch_num_tokens"],
        global_batch_size=info["global_batch_size"],
    )  # fmt: skip
    torch.testing.assert_close(loss, expected)
    assert "actor/luffy_expert_loss" in metrics


def test_missing_fields_and_wrong_config_name_the_fix(actor_config, micro_batch):
    """A calibrl loss without its batch fields, or with verl's plain PolicyLossConfig, fails with a message naming
    the fields / the _target_ to set."""
    rows = {k: v for k, v in _rows().items() if not k.startswith("calibrl_")}
    data, output = micro_batch(rows, PROMPT_LENS, _global_info(rows))
    with pytest.raises(verl_losses.MissingBatchFieldError, match="calibrl_expert_baseline.*set_loss_fn"):
        verl_losses.calibrl_actor_loss(actor_config(), output, data)
    from verl.utils.config import omega_conf_to_dataclass
    from omegaconf import OmegaConf

    plain = omega_conf_to_dataclass(OmegaConf.create({
        "_target_": "verl.workers.config.FSDPActorConfig", "strategy": "fsdp", "ppo_mini_batch_size": 4,
        "ppo_micro_batch_size_per_gpu": 2, "rollout_n": 1, "policy_loss": {"loss_mode": "calibrl"}}))  # fmt: skip
    full = _rows()
    data, output = micro_batch(full, PROMPT_LENS, _global_info(full))
    with pytest.raises(ConfigValueError, match=r"policy_loss._target_=calibrl_ext.config.CalibRLPolicyLossConfig"):
        verl_losses.calibrl_actor_loss(plain, output, data)


@pytest.mark.parametrize(
    "key,value",
    [("alpha", 1.5), ("alpha", -0.1), ("lam", -1.0), ("lam", float("nan")), ("activation", "gelu"),
     ("huber_delta", 0.0), ("beyond_expert", "cut"), ("luffy_gamma", 0.0), ("expert_adv_clip", -1.0),
     ("weight_by_abs_advantage", "yes"), ("chord_mu_warmup_steps", -1), ("chord_mu_decay_steps", 1.5),
     ("chord_mu_peak", 1.5), ("chord_mu_valley", -0.1), ("chord_enable_phi", "yes"), ("hpt_gamma", 1.0),
     ("hpt_gamma", -0.1), ("hpt_sft_coef", 0.0)],
)  # fmt: skip
def test_out_of_range_config_raises_with_the_full_key(key, value):
    """Out-of-range values raise at construction (verl builds the actor config at start-up) naming the full key."""
    with pytest.raises(ConfigValueError, match=rf"actor_rollout_ref\.actor\.policy_loss\.{key}="):
        CalibRLPolicyLossConfig(**{key: value})


def test_config_defaults_are_the_released_values():
    """Defaults reproduce the released code: alpha 0.5, lambda 0.1, LeakyReLU, |A| weighting, pass > 0.1."""
    c = CalibRLPolicyLossConfig()
    assert (c.loss_mode, c.alpha, c.lam, c.activation, c.weight_by_abs_advantage, c.pass_threshold) == (
        "calibrl", 0.5, 0.1, "leaky_relu", True, 0.1)  # fmt: skip
    assert c.beyond_expert == "zero_baseline"


def test_chord_and_hpt_defaults_are_the_published_values():
    """CHORD: Trinity-RFT MIXCHORDPolicyLossFn.default_args (constant mu 0.1, phi on); HPT: Unify-Post-Training
    exp_scripts/train.sh (switch_gate 0 of n = 8 -> gamma 0.0, sft_loss_coef 1.0). The recipe yaml says the same."""
    from omegaconf import OmegaConf

    c = CalibRLPolicyLossConfig()
    assert (c.chord_mu_warmup_steps, c.chord_mu_decay_steps, c.chord_mu_peak, c.chord_mu_valley) == (0, 0, 0.1, 0.1)
    assert c.chord_enable_phi is True and (c.hpt_gamma, c.hpt_sft_coef) == (0.0, 1.0)
    yaml = OmegaConf.load("recipe/calibrl/config/calibrl_trainer.yaml").actor_rollout_ref.actor.policy_loss
    for key in ("chord_mu_warmup_steps", "chord_mu_decay_steps", "chord_mu_peak", "chord_mu_valley",
                "chord_enable_phi", "hpt_gamma", "hpt_sft_coef"):  # fmt: skip
        assert yaml[key] == getattr(c, key), key


def test_estimator_through_verls_compute_advantage():
    """algorithm.adv_estimator=calibrl through verl's own compute_advantage: on-policy statistics with the expert
    rows flagged; without flags it equals verl's GRPO / Dr.GRPO."""
    from omegaconf import OmegaConf
    from verl import DataProto
    from verl.trainer.ppo.ray_trainer import compute_advantage

    from calibrl_ext.verl_advantage import expert_rows

    scores = torch.tensor([1.1, 0.1, 0.1, 1.1, 0.0, 1.1, 1.1, 0.1])
    uid = np.array(["a"] * 4 + ["b"] * 4, dtype=object)
    is_expert = np.array([False, False, False, True] * 2)

    def run(estimator, norm, flags=None):
        rewards = torch.zeros(8, 3)
        rewards[:, -1] = scores
        data = DataProto.from_dict(tensors={"token_level_rewards": rewards, "response_mask": torch.ones(8, 3)},
                                   non_tensors={"uid": uid})  # fmt: skip
        config = OmegaConf.create({"norm_adv_by_std_in_grpo": norm})
        if flags is None:
            return compute_advantage(data, estimator, norm_adv_by_std_in_grpo=norm, config=config).batch["advantages"]
        with expert_rows(flags):
            return compute_advantage(data, estimator, norm_adv_by_std_in_grpo=norm, config=config).batch["advantages"]

    for norm in (False, True):
        flagged = run("calibrl", norm, is_expert)
        expected = core.group_advantages(scores, uid, is_expert, norm_by_std=norm)
        torch.testing.assert_close(flagged[:, 0], expected)
        torch.testing.assert_close(run("calibrl", norm), run("grpo", norm))


@pytest.mark.parametrize("loss_agg_mode", ["token-mean", "seq-mean-token-sum-norm"])
@pytest.mark.parametrize("with_weights", [False, True])
def test_calibrl_with_lambda_zero_is_verls_vanilla_loss(actor_config, loss_agg_mode, with_weights):
    """With lambda = 0 the registered 'calibrl' loss (which computes verl's PPO formula per token so that one
    agg_loss call aggregates both terms) returns exactly verl's vanilla loss, gradient and metrics, rollout-correction
    weights included."""
    from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla

    rows = _rows(seed=7)
    rows["old_log_probs"][0, :2] -= 1.0  # large ratios: the clip and the dual clip both act
    rows["advantages"][1] *= 10
    mask = rows["response_mask"].bool()
    config = actor_config(loss_agg_mode=loss_agg_mode, lam=0.0)
    config.global_batch_info.update(dp_size=1, batch_num_tokens=int(mask.sum()), global_batch_size=6, loss_scale_factor=5)
    weights = torch.rand(mask.shape, generator=torch.Generator().manual_seed(1)) if with_weights else None
    kwargs = dict(old_log_prob=rows["old_log_probs"], advantages=rows["advantages"], response_mask=mask,
                  loss_agg_mode=loss_agg_mode, config=config, rollout_is_weights=weights)  # fmt: skip
    extras = {k: rows[k] for k in (verl_losses.EXPERT_BASELINE, verl_losses.PASSED)}
    with verl_losses.micro_batch_extras(**extras):
        ours, our_metrics = POLICY_LOSS_REGISTRY["calibrl"](log_prob=rows["log_probs"], **kwargs)
    (our_grad,) = torch.autograd.grad(ours, rows["log_probs"])
    theirs, their_metrics = compute_policy_loss_vanilla(log_prob=rows["log_probs"], **kwargs)
    (their_grad,) = torch.autograd.grad(theirs, rows["log_probs"])
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(our_grad, their_grad)
    assert our_metrics == pytest.approx(their_metrics)
    assert their_metrics["actor/pg_clipfrac"] > 0


def _sft_mix_rows(seed: int, loss_mode: str):
    """Rows for chord / hpt: row 4 is the expert row; in hpt rows 3-4 form the SFT group (row 3 its rollout)."""
    rows = _rows(seed=seed)
    mask = rows["response_mask"]
    expert = rows[verl_losses.IS_EXPERT]
    tokens = mask.sum(-1)
    policy = ~expert
    if loss_mode == "hpt":
        sft_group = torch.tensor([False, False, False, True, True, False])
        rows[verl_losses.HPT_SFT_GROUP] = sft_group
        policy = ~expert & ~sft_group
    else:
        rows[verl_losses.CHORD_MU] = torch.full((6,), 0.3)
    rows[verl_losses.POLICY_TOKEN_SHARE] = torch.full((6,), float(tokens[policy].sum() / tokens.sum()))
    rows[verl_losses.EXPERT_TOKEN_SHARE] = torch.full((6,), float(tokens[expert].sum() / tokens.sum()))
    return rows


def _sft_mix_core(rows, loss_mode, settings):
    args = (rows["old_log_probs"], rows["log_probs"], rows["advantages"], rows["response_mask"],
            rows[verl_losses.IS_EXPERT])  # fmt: skip
    if loss_mode == "hpt":
        return core.hpt_policy_loss(*args, rows[verl_losses.HPT_SFT_GROUP], sft_coef=settings["hpt_sft_coef"])
    return core.chord_policy_loss(*args, mu=0.3, enable_phi=settings["chord_enable_phi"])


@pytest.mark.parametrize("loss_mode", ["chord", "hpt"])
def test_chord_and_hpt_through_verl_equal_core_and_micro_batches_add_up(actor_config, micro_batch, loss_mode):
    """The registered 'chord' / 'hpt' losses, through verl's ppo_loss with global batch info, equal the pure-torch
    losses (each part a token mean over its own tokens) on the whole batch, and two micro-batches (expert row in
    one of them only) add up to the same loss and gradient: each part is normalised by the mini-batch's token count
    times the part's share, not by the micro-batch's own count. The parts are reported before their weights."""
    rows = _sft_mix_rows(3, loss_mode)
    settings = {"hpt_sft_coef": 0.7, "chord_enable_phi": True}
    config = actor_config(loss_mode=loss_mode, hpt_sft_coef=0.7)
    info = _global_info(rows)

    def loss_of(index):
        part = {k: v[index] for k, v in rows.items()}
        data, output = micro_batch(part, [PROMPT_LENS[i] for i in index], info)
        return verl_losses.calibrl_actor_loss(config, output, data)

    whole, metrics = loss_of(list(range(6)))
    (whole_grad,) = torch.autograd.grad(whole, rows["log_probs"])
    expected, parts = _sft_mix_core(rows, loss_mode, settings)
    (expected_grad,) = torch.autograd.grad(expected, rows["log_probs"])
    torch.testing.assert_close(whole, expected)
    torch.testing.assert_close(whole_grad, expected_grad)
    expert_name = "hpt_sft_loss" if loss_mode == "hpt" else "chord_expert_loss"
    assert metrics[f"actor/{expert_name}"].aggregate() == pytest.approx(parts[expert_name].item(), rel=1e-5)
    assert metrics["actor/pg_loss"].aggregate() == pytest.approx(parts["pg_loss"].item(), rel=1e-5)
    split = loss_of([0, 1, 2])[0] + loss_of([3, 4, 5])[0]
    (split_grad,) = torch.autograd.grad(split, rows["log_probs"])
    torch.testing.assert_close(split, whole)
    torch.testing.assert_close(split_grad, whole_grad)


@pytest.mark.parametrize("loss_mode", ["chord", "hpt"])
def test_chord_and_hpt_refuse_missing_fields_and_other_aggregations(actor_config, micro_batch, loss_mode):
    """Without the driver's per-row fields the loss names them and the fix; another loss_agg_mode names the key."""
    rows = _sft_mix_rows(4, loss_mode)
    info = _global_info(rows)
    missing = {k: v for k, v in rows.items() if k != verl_losses.EXPERT_TOKEN_SHARE}
    data, output = micro_batch(missing, PROMPT_LENS, info)
    with pytest.raises(verl_losses.MissingBatchFieldError, match=verl_losses.EXPERT_TOKEN_SHARE):
        verl_losses.calibrl_actor_loss(actor_config(loss_mode=loss_mode), output, data)
    data, output = micro_batch(rows, PROMPT_LENS, info)
    with pytest.raises(ValueError, match="loss_agg_mode=token-mean"):
        config = actor_config(loss_mode=loss_mode, loss_agg_mode="seq-mean-token-sum")
        verl_losses.calibrl_actor_loss(config, output, data)
