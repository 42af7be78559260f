"""Part 8 exercises (part8_alignment/exercises.py): put your own solution there and run this file.

Each function is checked against an independent computation: RLOO against a Python loop, Dr. GRPO's
r - group mean (rl_loss.group_normalized_rewards) times G / (G - 1) and its Jacobian worked by hand; IPO
against a loop, hand-worked losses and gradients, rl_loss.dpo_loss and plain SGD; the KL estimators against
a loop with math.exp, and their sampled means and stds against the exact ones, summed over the categories
with numpy.
Run: python -m pytest -q tests/part8/test_part8_exercises.py
"""
import functools
import math

import numpy as np
import pytest
import torch
from partloader import load_part

ex, rl = load_part("part8_alignment", "exercises", "rl_loss")


def randn(seed, *shape, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


# ----------------------------------------------------------------------------------------------------
# 8.A RLOO
def naive_rloo(rewards, G):
    out = []
    for start in range(0, len(rewards), G):
        group = rewards[start:start + G]
        for i, r in enumerate(group):
            others = [v for j, v in enumerate(group) if j != i]
            out.append(r - sum(others) / len(others))
    return out


def test_rloo_by_hand():
    got = ex.rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 3.0, 1.0]), 2)
    assert got.tolist() == pytest.approx([1.0, -1.0, -1.0, 1.0, 2.0, -2.0])   # G = 2: r_1 - r_2, r_2 - r_1
    got = ex.rloo_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0]), 4)
    assert got.tolist() == pytest.approx([2 / 3, -2 / 3, -2 / 3, 2 / 3])


@pytest.mark.parametrize("seed, G", [(0, 2), (1, 3), (2, 4), (3, 8)])
def test_rloo_matches_a_loop(seed, G):
    rewards = randn(seed, 5 * G, scale=2.0)
    got = ex.rloo_advantages(rewards, G)
    assert got.shape == (5 * G,)
    assert np.allclose(got.double().numpy(), naive_rloo(rewards.tolist(), G), atol=1e-12)


@pytest.mark.parametrize("G", [2, 3, 4, 16])
def test_rloo_is_the_group_mean_advantage_scaled_by_g_over_g_minus_1(G):
    rewards = randn(G, 6 * G).float()
    centered = rl.group_normalized_rewards(rewards, G, scale_by_std=False)   # Dr. GRPO: r - group mean
    assert torch.allclose(ex.rloo_advantages(rewards, G).float(), G / (G - 1) * centered, atol=1e-5)
    assert torch.allclose(ex.rloo_advantages(rewards, G).view(-1, G).sum(1).float(), torch.zeros(6), atol=1e-5)


def test_each_answers_baseline_ignores_its_own_reward():
    """d A_i / d r_i = 1 (the baseline holds no r_i), -1 / (G - 1) for the others of the group, 0 elsewhere."""
    G = 4
    jacobian = torch.autograd.functional.jacobian(lambda r: ex.rloo_advantages(r, G), randn(4, 2 * G))
    block = torch.full((G, G), -1 / (G - 1), dtype=torch.float64).fill_diagonal_(1.0)
    assert torch.allclose(jacobian, torch.block_diag(block, block), atol=1e-12)


def test_rloo_of_equal_rewards_is_zero_and_bad_groups_are_refused():
    rewards = torch.tensor([0.9, 0.9, 0.9, -2.5, -2.5, -2.5, 0.1, 0.1, 0.1])
    assert ex.rloo_advantages(rewards, 3).abs().max().item() < 1e-6
    for n, G in ((8, 1), (8, 0), (7, 3), (6, 4)):
        with pytest.raises(ValueError, match="group_size"):
            ex.rloo_advantages(torch.zeros(n), G)


# ----------------------------------------------------------------------------------------------------
# 8.B IPO
def ipo_by_loop(pc, pr, rc, rr, beta):
    return sum(((a - c) - (b - d) - 1 / (2 * beta)) ** 2 for a, b, c, d in zip(pc, pr, rc, rr)) / len(pc)


def loss_and_grad(loss_fn, h, beta):
    """The loss of one pair with margin h (pc = h, the rest 0) and d loss / d pc."""
    pc = torch.tensor([float(h)], dtype=torch.float64, requires_grad=True)
    zero = torch.zeros(1, dtype=torch.float64)
    loss = loss_fn(pc, zero, zero, zero, beta)
    loss = loss[0] if isinstance(loss, tuple) else loss   # dpo_loss returns (loss, rewards, rewards)
    loss.backward()
    return loss.item(), pc.grad.item()


def test_ipo_by_hand():
    # beta 0.1: target 5; h = (1 - 0) - (-1 - 0) = 2 -> (2 - 5)^2 = 9; d / d pc = 2 (h - 5) = -6, d / d pr = +6
    pc, pr = torch.tensor([1.0], requires_grad=True), torch.tensor([-1.0], requires_grad=True)
    loss = ex.ipo_loss(pc, pr, torch.zeros(1), torch.zeros(1), 0.1)
    loss.backward()
    assert loss.item() == pytest.approx(9.0, rel=1e-6)
    assert pc.grad.item() == pytest.approx(-6.0, rel=1e-6) and pr.grad.item() == pytest.approx(6.0, rel=1e-6)
    # two pairs, h = 2 and 8: both cost 9, the mean is 9; the gradients -6 and +6 are divided by B = 2
    pc = torch.tensor([2.0, 8.0], requires_grad=True)
    loss = ex.ipo_loss(pc, torch.zeros(2), torch.zeros(2), torch.zeros(2), 0.1)
    loss.backward()
    assert loss.item() == pytest.approx(9.0, rel=1e-6)
    assert pc.grad.tolist() == pytest.approx([-3.0, 3.0], rel=1e-6)


@pytest.mark.parametrize("seed, beta", [(0, 0.1), (1, 0.5), (2, 2.0)])
def test_ipo_matches_a_loop(seed, beta):
    pc, pr, rc, rr = (randn(seed * 4 + i, 16, scale=5.0) for i in range(4))
    assert ex.ipo_loss(pc, pr, rc, rr, beta).item() == pytest.approx(
        ipo_by_loop(pc.tolist(), pr.tolist(), rc.tolist(), rr.tolist(), beta), rel=1e-5)


def test_only_the_log_ratios_matter_and_the_reference_gets_no_gradient():
    pc, pr, rc, rr = (randn(10 + i, 8) for i in range(4))
    shift = randn(20, 8, scale=10.0)
    assert ex.ipo_loss(pc + shift, pr, rc + shift, rr).item() == pytest.approx(ex.ipo_loss(pc, pr, rc, rr).item(),
                                                                                rel=1e-5)
    rc, rr = rc.clone().requires_grad_(), rr.clone().requires_grad_()
    pc = pc.clone().requires_grad_()
    ex.ipo_loss(pc, pr, rc, rr).backward()
    assert pc.grad is not None and rc.grad is None and rr.grad is None


@pytest.mark.parametrize("beta", [0.05, 0.1, 0.5, 2.0])
def test_ipo_is_lowest_at_the_margin_one_over_two_beta(beta):
    target = 1 / (2 * beta)
    loss, grad = loss_and_grad(ex.ipo_loss, target, beta)
    assert loss == pytest.approx(0.0, abs=1e-6) and grad == pytest.approx(0.0, abs=1e-5)
    for h in (target - 3, target - 0.1, target + 0.1, target + 3, target * 10):
        loss_h, grad_h = loss_and_grad(ex.ipo_loss, h, beta)
        assert loss_h > loss
        assert grad_h == pytest.approx(2 * (h - target), rel=1e-4)   # below: push up; past it: push back


def test_dpo_keeps_pushing_where_ipo_pushes_back():
    beta = 0.1
    margins = [0.0, 2.0, 5.0, 8.0, 20.0, 50.0]
    dpo = [loss_and_grad(rl.dpo_loss, h, beta) for h in margins]
    ipo = [loss_and_grad(ex.ipo_loss, h, beta) for h in margins]
    assert all(a[0] > b[0] for a, b in zip(dpo, dpo[1:]))                # DPO's loss falls all the way
    assert all(grad < 0 for _, grad in dpo)                              # and its gradient always says "more"
    assert 0 < -dpo[-1][1] < 1e-3                                        # tiny at h = 50, but not 0
    assert dpo[-1][1] == pytest.approx(-beta / (1 + math.exp(beta * 50)), rel=1e-6)
    assert [grad > 0 for _, grad in ipo] == [h > 5 for h in margins]     # IPO pushes back past 1 / (2 beta)


def test_sgd_on_ipo_settles_at_the_target_while_dpo_runs_on():
    def train(loss_fn, lr, steps=300):
        pc = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        zero = torch.zeros(1, dtype=torch.float64)
        history = []
        for _ in range(steps):
            loss = loss_fn(pc, zero, zero, zero, 0.1)
            loss = loss[0] if isinstance(loss, tuple) else loss
            pc.grad = None
            loss.backward()
            with torch.no_grad():
                pc -= lr * pc.grad
            history.append(pc.item())
        return history
    ipo = train(ex.ipo_loss, lr=0.1)
    dpo = train(rl.dpo_loss, lr=100.0)
    assert ipo[-1] == pytest.approx(5.0, abs=1e-6)
    assert dpo[-1] > 20 and all(b > a for a, b in zip(dpo, dpo[1:]))    # past IPO's target, and still rising


@pytest.mark.parametrize("k", [0.5, 2.0, 4.0])
def test_ipo_beta_scaling(k):
    """Divide beta by k and the target margin is k times larger: loss(beta / k, k h) = k^2 loss(beta, h)."""
    pc, pr, rc, rr = (randn(30 + i, 8, scale=3.0) for i in range(4))
    base = ex.ipo_loss(pc, pr, rc, rr, 0.2).item()
    scaled = ex.ipo_loss(k * pc, k * pr, k * rc, k * rr, 0.2 / k).item()
    assert scaled == pytest.approx(k * k * base, rel=1e-5)
    assert loss_and_grad(ex.ipo_loss, k * 2.5, 0.2 / k)[1] == pytest.approx(0.0, abs=1e-5)   # 1 / (2 * 0.2) = 2.5


# ----------------------------------------------------------------------------------------------------
# 8.C three estimators of KL
def test_kl_estimators_by_hand():
    got = ex.kl_estimators(torch.tensor([-1.0, -0.5]), torch.tensor([-2.0, -0.5]))
    assert set(got) == {"k1", "k2", "k3"}
    assert got["k1"].tolist() == pytest.approx([1.0, 0.0])
    assert got["k2"].tolist() == pytest.approx([0.5, 0.0])
    assert got["k3"].tolist() == pytest.approx([math.exp(-1), 0.0], rel=1e-6)   # e^-1 + 1 - 1; equal: 0


def test_kl_estimators_match_a_loop():
    logp, ref_logp = -randn(0, 3, 5).abs() * 3, -randn(1, 3, 5).abs() * 3
    got = ex.kl_estimators(logp, ref_logp)
    for name, fn in (("k1", lambda a, b: a - b), ("k2", lambda a, b: 0.5 * (a - b) ** 2),
                     ("k3", lambda a, b: math.exp(b - a) - (b - a) - 1)):
        assert got[name].shape == (3, 5)
        expected = [fn(a, b) for a, b in zip(logp.flatten().tolist(), ref_logp.flatten().tolist())]
        assert np.allclose(got[name].flatten().double().numpy(), expected, rtol=1e-5, atol=1e-6)


V = 8
LOGITS = np.linspace(0, 2, V)
LOPSIDED = LOGITS.copy()
LOPSIDED[0] += 3.0
PAIRS = {"close": 0.9 * LOGITS, "reversed": LOGITS[::-1].copy(), "lopsided": LOPSIDED}
N = 200_000


def log_softmax(logits):
    shifted = logits - logits.max()
    return shifted - np.log(np.exp(shifted).sum())


def exact_moments(p_logits, q_logits):
    """({name: (mean, std)} of each estimator under x ~ p, the exact KL), summed over the V categories."""
    logp, logq = log_softmax(p_logits), log_softmax(q_logits)
    p, d = np.exp(logp), logp - logq
    values = {"k1": d, "k2": 0.5 * d ** 2, "k3": np.exp(-d) - 1 + d}
    moments = {}
    for name, k in values.items():
        mean = (p * k).sum()
        moments[name] = (mean, math.sqrt((p * k ** 2).sum() - mean ** 2))
    return moments, (p * d).sum()


@functools.cache
def measured(pair):
    return ex.measure_estimators(torch.tensor(LOGITS), torch.tensor(PAIRS[pair]), N, torch.Generator().manual_seed(0))


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_the_exact_kl(pair):
    _, exact = measured(pair)
    assert exact == pytest.approx(exact_moments(LOGITS, PAIRS[pair])[1], rel=1e-9)
    logp, logq = log_softmax(LOGITS), log_softmax(PAIRS[pair])
    assert exact == pytest.approx(sum(math.exp(a) * (a - b) for a, b in zip(logp, logq)), rel=1e-9)


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_k1_and_k3_are_unbiased(pair):
    stats, exact = measured(pair)
    moments, _ = exact_moments(LOGITS, PAIRS[pair])
    for name in ("k1", "k3"):
        assert moments[name][0] == pytest.approx(exact, rel=1e-9)               # in expectation: exactly KL
        standard_error = moments[name][1] / math.sqrt(N)
        assert abs(stats[name][0] - exact) < 4 * standard_error                 # and the sample mean is near it


@pytest.mark.parametrize("pair", sorted(PAIRS))
def test_every_mean_and_std_matches_the_exact_one(pair):
    stats, _ = measured(pair)
    moments, _ = exact_moments(LOGITS, PAIRS[pair])
    for name, (mean, std) in moments.items():
        assert abs(stats[name][0] - mean) < 4 * std / math.sqrt(N)
        assert stats[name][1] == pytest.approx(std, rel=0.05)


def test_k2_is_biased_when_far_apart_and_nearly_unbiased_when_close():
    for pair in ("reversed", "lopsided"):
        stats, exact = measured(pair)
        bias = stats["k2"][0] - exact
        assert abs(bias) > 0.1 * exact and abs(bias) > 20 * stats["k2"][1] / math.sqrt(N)
    assert measured("reversed")[0]["k2"][0] > measured("reversed")[1]       # too high here,
    assert measured("lopsided")[0]["k2"][0] < measured("lopsided")[1]       # too low there
    moments, exact = exact_moments(LOGITS, PAIRS["close"])
    assert moments["k2"][0] == pytest.approx(exact, rel=0.05)               # agrees with KL to second order


def test_k3_is_never_negative_while_k1_often_is():
    rng = np.random.default_rng(0)
    for q_logits in PAIRS.values():
        logp, logq = log_softmax(LOGITS), log_softmax(q_logits)
        tokens = rng.choice(V, size=50_000, p=np.exp(logp))
        got = ex.kl_estimators(torch.tensor(logp[tokens]), torch.tensor(logq[tokens]))
        assert got["k3"].min().item() >= 0 and got["k2"].min().item() >= 0
        share_negative = (got["k1"] < 0).double().mean().item()
        assert share_negative == pytest.approx(np.exp(logp)[logp < logq].sum(), abs=0.01)   # where q > p
        assert share_negative > 0.03


def test_k3_is_far_less_noisy_than_k1_when_p_and_q_are_close_but_not_always_when_far():
    stats, _ = measured("close")
    assert stats["k3"][1] < stats["k1"][1] / 10
    stats, _ = measured("lopsided")      # q puts mass on a token p rarely samples: r = q / p is huge there
    assert stats["k3"][1] > stats["k1"][1]


def test_the_same_generator_seed_gives_the_same_measurement():
    one = ex.measure_estimators(torch.tensor(LOGITS), torch.tensor(PAIRS["reversed"]), 1000,
                                torch.Generator().manual_seed(5))
    two = ex.measure_estimators(torch.tensor(LOGITS), torch.tensor(PAIRS["reversed"]), 1000,
                                torch.Generator().manual_seed(5))
    assert one == two


# ----------------------------------------------------------------------------------------------------
# The demo
def test_main_prints_a_demo_of_each(capsys):
    ex.main()
    out = capsys.readouterr().out
    for line in ("8.A", "x 4/3 = RLOO", "8.B", "target margin 1 / (2 beta) = 5", "8.C", "exact KL", "std/KL"):
        assert line in out
