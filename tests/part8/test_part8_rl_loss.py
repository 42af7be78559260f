"""8.1-8.5 RLHF losses and helpers (part8_alignment/rl_loss.py), each against an independent computation:
numbers worked by hand with math, numpy on the masked entries, torch's own Categorical, logsigmoid and
SGD, or a naive per-row Python loop.

Run: python -m pytest -q tests/part8/test_part8_rl_loss.py
"""
import math
import statistics

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from partloader import load_part

rl = load_part("part8_alignment", "rl_loss")


def spans(starts, lengths, T):
    """A (B, T) bool mask, True on columns start <= t < start + length of each row: a prompt of `start`
    tokens, then the response, then right padding."""
    t = torch.arange(T)
    return torch.stack([(t >= s) & (t < s + n) for s, n in zip(starts, lengths)])


def randn(seed, *shape, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * scale


# rows of different lengths, the responses starting at different columns (prompt first, padding after)
MASK = spans([0, 2, 1, 3], [5, 3, 1, 4], T=7)


# ----------------------------------------------------------------------------------------------------
# 8.5 Masked statistics
def test_masked_var_by_hand():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[True, True, True, False]])
    # mean 2, ((1 - 2)^2 + 0 + (3 - 2)^2) / 3: the population variance, the 100 at padding ignored
    assert rl.masked_var(values, mask).item() == pytest.approx(2 / 3)


def test_masked_var_and_normalize_match_numpy_on_the_masked_entries():
    values = randn(0, 4, 7, scale=3.0) + 5
    kept = values[MASK].double().numpy()
    assert rl.masked_var(values, MASK).item() == pytest.approx(np.var(kept), rel=1e-5)
    got = rl.masked_normalize(values, MASK)
    expected = (kept - kept.mean()) / np.sqrt(np.var(kept) + 1e-8)
    assert np.allclose(got[MASK].numpy(), expected, atol=1e-5)


def test_normalize_gives_mean_0_std_1_on_the_mask_and_0_outside():
    values = randn(1, 4, 7, scale=10.0) - 3
    got = rl.masked_normalize(values, MASK)
    assert got[MASK].mean().item() == pytest.approx(0.0, abs=1e-5)
    assert got[MASK].std(unbiased=False).item() == pytest.approx(1.0, rel=1e-5)
    assert (got[~MASK] == 0).all()


def test_normalize_without_shift_keeps_the_mean():
    values = randn(2, 4, 7) + 4.0
    mean = values[MASK].mean().item()
    got = rl.masked_normalize(values, MASK, shift_mean=False)
    assert got[MASK].mean().item() == pytest.approx(mean, rel=1e-5)     # the mean is kept...
    assert got[MASK].std(unbiased=False).item() == pytest.approx(1.0, rel=1e-5)  # ...the spread rescaled
    assert (got[~MASK] == 0).all()


def test_statistics_ignore_whatever_is_outside_the_mask():
    values = randn(3, 4, 7)
    junk = values.masked_fill(~MASK, float("nan"))  # nan, not just a large number: nothing may leak
    assert rl.masked_var(junk, MASK) == rl.masked_var(values, MASK)
    assert torch.equal(rl.masked_normalize(junk, MASK), rl.masked_normalize(values, MASK))


# ----------------------------------------------------------------------------------------------------
# 8.1 Entropy
def test_entropy_of_uniform_logits_is_log_V():
    got = rl.entropy_from_logits(torch.full((2, 3, 50), 1.7))
    assert got.shape == (2, 3)
    assert torch.allclose(got, torch.full((2, 3), math.log(50)))


def test_entropy_of_a_near_one_hot_distribution_is_about_0():
    logits = torch.zeros(1, 1, 10)
    logits[..., 4] = 40.0  # p(other) = e^-40 each: H ~ 9 * 40 e^-40
    assert rl.entropy_from_logits(logits).item() == pytest.approx(0.0, abs=1e-6)


def test_entropy_matches_torch_categorical():
    logits = randn(4, 3, 5, 32, scale=3.0)
    expected = torch.distributions.Categorical(logits=logits).entropy()
    assert torch.allclose(rl.entropy_from_logits(logits), expected, atol=1e-5)


def test_entropy_stays_finite_for_huge_logits():
    logits = randn(5, 2, 4, 16, scale=1e4)
    p = F.softmax(logits, dim=-1)
    assert torch.isnan(-(p * p.log()).sum(-1)).any()  # the naive formula: 0 * log 0 = nan
    got = rl.entropy_from_logits(logits)
    assert torch.isfinite(got).all()
    expected = torch.distributions.Categorical(logits=logits.double()).entropy()
    assert torch.allclose(got.double(), expected, atol=1e-4)


def test_entropy_is_float32_for_half_precision_logits():
    assert rl.entropy_from_logits(randn(6, 1, 2, 8).bfloat16()).dtype == torch.float32


# ----------------------------------------------------------------------------------------------------
# 8.3 GRPO group advantages
def test_group_normalized_rewards_by_hand():
    got = rl.group_normalized_rewards(torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0]), 4)
    # group 1: mean 0.5, unbiased std sqrt((4 * 0.25) / 3) = sqrt(1/3)
    a = 0.5 / (math.sqrt(1 / 3) + 1e-6)
    assert got[:4].tolist() == pytest.approx([a, -a, -a, a], rel=1e-6)
    assert got[4:].tolist() == [0.0, 0.0, 0.0, 0.0]  # all equal: exactly 0, nothing to prefer


def test_group_normalized_rewards_without_std_only_centers():
    got = rl.group_normalized_rewards(torch.tensor([1.0, 0.0, 0.0, 1.0, 2.0, 2.0, 2.0, 2.0]), 4,
                                      scale_by_std=False)
    assert got.tolist() == [0.5, -0.5, -0.5, 0.5, 0.0, 0.0, 0.0, 0.0]


def test_a_flat_group_is_exactly_0_even_when_its_float_mean_is_not_exact():
    rewards = torch.tensor([0.9, 0.9, 0.9])
    assert (rewards - rewards.mean()).abs().max() > 0   # float32: the mean misses 0.9 in the last bit
    assert rl.group_normalized_rewards(rewards, 3).tolist() == [0.0, 0.0, 0.0]


def test_group_normalized_rewards_match_a_naive_loop():
    rewards = randn(7, 12, scale=2.0)
    got = rl.group_normalized_rewards(rewards, 3)
    expected = []
    for i in range(0, 12, 3):
        group = rewards[i:i + 3].tolist()
        mean, std = statistics.mean(group), statistics.stdev(group)  # stdev: the n - 1 (unbiased) std
        expected += [(r - mean) / (std + 1e-6) for r in group]
    assert got.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("n, group_size", [(6, 4), (4, 1), (4, 0), (5, 2)])
def test_group_normalized_rewards_refuse_bad_sizes(n, group_size):
    with pytest.raises(ValueError, match="group_size"):
        rl.group_normalized_rewards(torch.zeros(n), group_size)


# ----------------------------------------------------------------------------------------------------
# 8.1 Aggregation and REINFORCE
# two rows: [1, 2] and [3] (padding aside)
PER_TOKEN = torch.tensor([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0]])
TWO_ROWS = torch.tensor([[True, True, False], [True, False, False]])


def test_token_and_sequence_aggregation_by_hand():
    assert rl.aggregate(PER_TOKEN, TWO_ROWS, "token").item() == pytest.approx((1 + 2 + 3) / 3)
    # each row counts once: ((1 + 2) / 2 + 3) / 2; the lone token of the short row weighs twice as much
    assert rl.aggregate(PER_TOKEN, TWO_ROWS, "sequence").item() == pytest.approx((1.5 + 3) / 2)


def test_sequence_aggregation_leaves_out_rows_without_tokens():
    mask = torch.cat([TWO_ROWS, torch.zeros(1, 3, dtype=torch.bool)])
    values = torch.cat([PER_TOKEN, torch.full((1, 3), 9.0)])
    assert rl.aggregate(values, mask, "sequence").item() == pytest.approx((1.5 + 3) / 2)


def test_unknown_aggregation_raises():
    with pytest.raises(ValueError, match="token"):
        rl.aggregate(PER_TOKEN, TWO_ROWS, "tokens")


def test_policy_gradient_loss_by_hand():
    logp = torch.tensor([[-0.5, -1.0, -7.0], [-2.0, -7.0, -7.0]], requires_grad=True)
    advantages = torch.tensor([2.0, -1.0])  # one per answer, the same for all its tokens
    loss = rl.policy_gradient_loss(logp, advantages, TWO_ROWS)
    # -A logp per token: 2 * 0.5 = 1, 2 * 1 = 2, -1 * 2 = -2 -> mean over 3 tokens
    assert loss.item() == pytest.approx((1 + 2 - 2) / 3)
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-2 / 3, -2 / 3, 0.0], [1 / 3, 0.0, 0.0]]))
    seq = rl.policy_gradient_loss(logp, advantages, TWO_ROWS, aggregate="sequence")
    assert seq.item() == pytest.approx(((1 + 2) / 2 - 2) / 2)


def test_policy_gradient_loss_takes_per_token_advantages():
    logp, A = randn(8, 4, 7), randn(9, 4)
    per_token = A[:, None].expand(4, 7).clone()
    assert torch.allclose(rl.policy_gradient_loss(logp, A, MASK), rl.policy_gradient_loss(logp, per_token, MASK))


def test_advantages_get_no_gradient():
    logp, A = randn(10, 4, 7).requires_grad_(), randn(11, 4).requires_grad_()
    rl.policy_gradient_loss(logp, A, MASK).backward()
    assert A.grad is None and logp.grad is not None


# each loss as a function of the policy's log-probs alone, the rest of its inputs fixed
A_SEQ, OLD, VALS, RET = randn(12, 4), randn(13, 4, 7) - 1, randn(14, 4, 7), randn(15, 4, 7)
LOSSES = {
    "pg token": lambda lp: rl.policy_gradient_loss(lp, A_SEQ, MASK),
    "pg sequence": lambda lp: rl.policy_gradient_loss(lp, A_SEQ, MASK, aggregate="sequence"),
    "ppo token": lambda lp: rl.clipped_surrogate_loss(lp, OLD, A_SEQ, MASK)[0],
    "ppo sequence": lambda lp: rl.clipped_surrogate_loss(lp, OLD, RET, MASK, aggregate="sequence")[0],
    "value": lambda v: rl.value_loss(v, VALS, RET, MASK)[0],
    "value unclipped": lambda v: rl.value_loss(v, VALS, RET, MASK, clip_eps=None)[0],
}


@pytest.mark.parametrize("name", LOSSES)
def test_prompt_and_padding_positions_change_nothing(name):
    """The prompt and the padding are not the policy's actions: any value there must be ignored."""
    x = (randn(16, 4, 7) * 0.3 - 1).requires_grad_()
    loss = LOSSES[name](x)
    loss.backward()
    assert (x.grad[~MASK] == 0).all()
    changed = torch.where(MASK, x.detach(), torch.full_like(x, 5.0))
    assert LOSSES[name](changed).item() == pytest.approx(loss.item(), rel=1e-6)


# ----------------------------------------------------------------------------------------------------
# 8.2 PPO's clipped surrogate
def test_clipped_surrogate_by_hand():
    """The four cases of the docstring, clip_eps 0.2, old log-probs 0 so that ratio = exp(logp)."""
    ratio = torch.tensor([[1.5, 0.5, 0.5, 1.5]])
    A = torch.tensor([[1.0, 1.0, -1.0, -1.0]])
    logp = ratio.log().requires_grad_()
    mask = torch.ones(1, 4, dtype=torch.bool)
    loss, stats = rl.clipped_surrogate_loss(logp, torch.zeros(1, 4), A, mask)
    # min(1.5, 1.2) = 1.2 clipped; min(0.5, 0.8) = 0.5; min(-0.5, -0.8) = -0.8 clipped; min(-1.5, -1.2) = -1.5
    assert loss.item() == pytest.approx(-(1.2 + 0.5 - 0.8 - 1.5) / 4)
    assert stats["clip_fraction"].item() == pytest.approx(2 / 4)  # exactly the two clipped tokens
    loss.backward()
    # d(-ratio A / 4) / d logp = -ratio A / 4 where unclipped; 0 where the clipped (constant) term won
    assert torch.allclose(logp.grad, torch.tensor([[0.0, -0.5 / 4, 0.0, 1.5 / 4]]))


def test_at_ratio_1_ppo_is_the_policy_gradient():
    """First epoch, policy = the sampler: nothing is clipped and the gradient is REINFORCE's."""
    logp = (randn(17, 4, 7) - 2).requires_grad_()
    A = randn(18, 4, 7)
    loss, stats = rl.clipped_surrogate_loss(logp, logp.detach(), A, MASK)
    assert loss.item() == pytest.approx(-A[MASK].mean().item(), rel=1e-5)  # ratio * A = A
    assert stats["clip_fraction"].item() == 0.0 and stats["approx_kl"].item() == 0.0
    (grad,) = torch.autograd.grad(loss, logp)
    (expected,) = torch.autograd.grad(rl.policy_gradient_loss(logp, A, MASK), logp)
    assert torch.allclose(grad, expected)


def test_approx_kl_is_k3_of_old_and_new():
    logp, old = torch.tensor([[math.log(2.0), 0.0]]), torch.zeros(1, 2)
    mask = torch.tensor([[True, False]])
    _, stats = rl.clipped_surrogate_loss(logp, old, torch.ones(1), mask)
    assert stats["approx_kl"].item() == pytest.approx(2 - 1 - math.log(2))  # ratio - 1 - log ratio


def test_ppo_advantages_per_answer_or_per_token_agree():
    logp, old, A = randn(19, 4, 7) * 0.3, randn(20, 4, 7) * 0.3, randn(21, 4)
    a, _ = rl.clipped_surrogate_loss(logp, old, A, MASK)
    b, _ = rl.clipped_surrogate_loss(logp, old, A[:, None].expand(4, 7), MASK)
    assert torch.allclose(a, b)


# ----------------------------------------------------------------------------------------------------
# 8.2 The value loss
def test_value_loss_clips_on_both_sides_by_hand():
    old = torch.zeros(1, 4)
    v = torch.tensor([[0.5, -0.5, 0.1, -0.5]], requires_grad=True)
    R = torch.tensor([[1.0, -1.0, 1.0, 1.0]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    loss, clip_fraction = rl.value_loss(v, old, R, mask, clip_eps=0.2)
    # 0.5 -> clipped to +0.2: max(0.25, 0.64) = 0.64      -0.5 -> clipped to -0.2 (R = -1): max(0.25, 0.64)
    # 0.1 inside the range: both 0.81, not clipped       -0.5 moving away from R = 1: max(2.25, 1.44) = 2.25
    assert loss.item() == pytest.approx(0.5 * (0.64 + 0.64 + 0.81 + 2.25) / 4)
    assert clip_fraction.item() == pytest.approx(2 / 4)
    loss.backward()
    # 0.5 * 2 (v - R) / 4 where unclipped, 0 where the clipped value (a constant there) won
    assert torch.allclose(v.grad, torch.tensor([[0.0, 0.0, (0.1 - 1) / 4, (-0.5 - 1) / 4]]))


@pytest.mark.parametrize("clip_eps", [None, 0.0])
def test_unclipped_value_loss_is_half_the_masked_mse(clip_eps):
    v, old, R = randn(22, 4, 7), randn(23, 4, 7), randn(24, 4, 7)
    loss, clip_fraction = rl.value_loss(v, old, R, MASK, clip_eps=clip_eps)
    assert loss.item() == pytest.approx(0.5 * F.mse_loss(v[MASK], R[MASK]).item(), rel=1e-6)
    assert clip_fraction.item() == 0.0


# ----------------------------------------------------------------------------------------------------
# 8.2 GAE
def naive_gae(rewards, values, mask, gamma, lam):
    """Row by row, over the response span only, straight from the definitions."""
    adv, ret = torch.zeros(rewards.shape), torch.zeros(rewards.shape)
    for b in range(rewards.size(0)):
        cols = mask[b].nonzero().flatten().tolist()
        r, v = [rewards[b, c].item() for c in cols], [values[b, c].item() for c in cols]
        a = 0.0
        for i in reversed(range(len(cols))):
            next_v = v[i + 1] if i + 1 < len(cols) else 0.0  # the episode ends after the last token
            a = r[i] + gamma * next_v - v[i] + gamma * lam * a
            adv[b, cols[i]], ret[b, cols[i]] = a, a + v[i]
    return adv, ret


def test_gae_by_hand():
    adv, ret = rl.gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.ones(1, 2, dtype=torch.bool),
                      gamma=1.0, lam=1.0)
    assert adv.tolist() == [[0.5, 0.5]] and ret.tolist() == [[1.0, 1.0]]


def test_gae_matches_a_naive_loop():
    rewards, values = randn(25, 4, 7), randn(26, 4, 7)
    adv, ret = rl.gae(rewards, values, MASK, gamma=0.9, lam=0.8)
    exp_adv, exp_ret = naive_gae(rewards, values, MASK, 0.9, 0.8)
    assert torch.allclose(adv, exp_adv, atol=1e-6) and torch.allclose(ret, exp_ret, atol=1e-6)


def test_gae_with_gamma_and_lambda_1_is_monte_carlo():
    rewards, values = randn(27, 4, 7), randn(28, 4, 7)
    adv, ret = rl.gae(rewards, values, MASK, gamma=1.0, lam=1.0)
    for b in range(4):
        for t in MASK[b].nonzero().flatten().tolist():
            future = rewards[b, t:][MASK[b, t:]].sum().item()   # every reward from t to the end
            assert adv[b, t].item() == pytest.approx(future - values[b, t].item(), abs=1e-5)
            assert ret[b, t].item() == pytest.approx(future, abs=1e-5)


def test_gae_with_lambda_0_is_the_one_step_delta():
    rewards, values = randn(29, 1, 4), randn(30, 1, 4)
    mask = torch.ones(1, 4, dtype=torch.bool)
    adv, _ = rl.gae(rewards, values, mask, gamma=0.5, lam=0.0)
    next_v = torch.cat([values[:, 1:], torch.zeros(1, 1)], dim=1)
    assert torch.allclose(adv, rewards + 0.5 * next_v - values)


def test_gae_ignores_prompt_and_padding():
    rewards, values = randn(31, 4, 7), randn(32, 4, 7)
    junk_r = rewards.masked_fill(~MASK, float("nan"))
    junk_v = values.masked_fill(~MASK, 1e6)
    adv, ret = rl.gae(junk_r, junk_v, MASK)
    clean_adv, clean_ret = rl.gae(rewards, values, MASK)
    assert torch.equal(adv, clean_adv) and torch.equal(ret, clean_ret)
    assert (adv[~MASK] == 0).all() and (ret[~MASK] == 0).all()


# ----------------------------------------------------------------------------------------------------
# 8.2 KL to the reference
def test_k3_by_hand():
    # logp = -1, ref = -2: log ratio -1 -> e^-1 + 1 - 1
    assert rl.k3_kl(torch.tensor(-1.0), torch.tensor(-2.0)).item() == pytest.approx(math.exp(-1))


def test_k3_is_nonnegative_and_0_when_equal():
    logp, ref = randn(33, 8, 16, scale=2.0), randn(34, 8, 16, scale=2.0)
    assert (rl.k3_kl(logp, ref) >= 0).all()
    assert (rl.k3_kl(logp, logp) == 0).all()


def test_k3_averages_to_the_exact_kl_and_is_less_noisy_than_k1():
    p, ref = torch.tensor([0.4, 0.3, 0.2, 0.1]), torch.tensor([0.25, 0.25, 0.25, 0.25])
    exact = (p * (p / ref).log()).sum().item()                 # KL(p || ref) = 0.106
    tokens = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    logp, ref_logp = p.log()[tokens], ref.log()[tokens]       # tokens sampled from the policy p
    k3 = rl.k3_kl(logp, ref_logp)
    assert k3.mean().item() == pytest.approx(exact, abs=3e-3)  # the standard error is ~4e-4
    k1 = logp - ref_logp
    assert (k1 < 0).any() and k3.var() < k1.var()


def test_kl_shaped_rewards_by_hand():
    mask = spans([1, 0], [2, 3], T=4)        # row 0: prompt, 2 tokens, padding; row 1: 3 tokens, padding
    logp = torch.full((2, 4), -1.0)
    ref = torch.full((2, 4), -1.5)           # logp - ref = 0.5 on every token
    got = rl.kl_shaped_rewards(torch.tensor([3.0, -2.0]), logp, ref, mask, beta=0.1)
    # -0.1 * 0.5 = -0.05 on each response token; the score added at the LAST response token, not T - 1
    assert torch.allclose(got, torch.tensor([[0.0, -0.05, 3 - 0.05, 0.0], [-0.05, -0.05, -2 - 0.05, 0.0]]))


def test_last_token_index_on_right_padding_and_empty_rows():
    assert rl.last_token_index(spans([0, 2, 1], [2, 2, 3], T=5)).tolist() == [1, 3, 3]
    with pytest.raises(ValueError, match="no real token"):
        rl.last_token_index(spans([0, 0], [2, 0], T=3))


# ----------------------------------------------------------------------------------------------------
# 8.4 DPO
def test_dpo_by_hand():
    loss, chosen, rejected = rl.dpo_loss(torch.tensor([-1.0]), torch.tensor([-3.0]), torch.tensor([-2.0]),
                                         torch.tensor([-2.0]), beta=0.1)
    # log-ratios +1 and -1: margin 0.1 * 2 = 0.2, loss -log sigma(0.2) = log(1 + e^-0.2)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-0.2)), rel=1e-6)
    assert chosen.tolist() == pytest.approx([0.1]) and rejected.tolist() == pytest.approx([-0.1])


def test_dpo_is_logsigmoid_of_the_margin():
    pc, pr, rc, rr = (randn(s, 8, scale=5.0) - 20 for s in range(35, 39))
    loss, _, _ = rl.dpo_loss(pc, pr, rc, rr, beta=0.3)
    assert torch.allclose(loss, -F.logsigmoid(0.3 * ((pc - rc) - (pr - rr))).mean())


def test_dpo_starts_at_log_2():
    """Policy = reference (DPO starts from the SFT model): every margin is 0, sigma(0) = 1/2."""
    logps = randn(39, 5) - 10
    loss, chosen, rejected = rl.dpo_loss(logps, logps + 1, logps, logps + 1)
    assert loss.item() == pytest.approx(math.log(2)) and (chosen == 0).all() and (rejected == 0).all()


def test_dpo_gradient_raises_chosen_and_lowers_rejected():
    pc, pr = (randn(40, 6) - 10).requires_grad_(), (randn(41, 6) - 10).requires_grad_()
    rc, rr = randn(42, 6) - 10, randn(43, 6) - 10      # requires_grad False: a frozen reference
    loss, chosen, rejected = rl.dpo_loss(pc, pr, rc, rr)
    loss.backward()
    assert (pc.grad < 0).all() and (pr.grad > 0).all()  # gradient descent: chosen up, rejected down
    assert not chosen.requires_grad and not rejected.requires_grad


def test_dpo_never_trains_the_reference():
    pc, pr = (randn(44, 3) - 5).requires_grad_(), (randn(45, 3) - 5).requires_grad_()
    rc, rr = (randn(46, 3) - 5).requires_grad_(), (randn(47, 3) - 5).requires_grad_()
    rl.dpo_loss(pc, pr, rc, rr)[0].backward()
    assert rc.grad is None and rr.grad is None and pc.grad is not None


def test_dpo_implicit_rewards_scale_with_beta():
    pc, pr, rc, rr = (randn(s, 4) for s in range(48, 52))
    _, c1, r1 = rl.dpo_loss(pc, pr, rc, rr, beta=0.1)
    _, c5, r5 = rl.dpo_loss(pc, pr, rc, rr, beta=0.5)
    assert torch.allclose(c5, 5 * c1) and torch.allclose(r5, 5 * r1)
    assert torch.allclose(c1, 0.1 * (pc - rc))


# ----------------------------------------------------------------------------------------------------
# 8.5 Running reward statistics
def test_running_mean_std_starts_neutral():
    stats = rl.RunningMeanStd()
    assert (stats.count, stats.mean, stats.std) == (0, 0.0, 1.0)
    x = torch.tensor([1.0, -2.0])
    assert torch.allclose(stats.normalize(x), x)


def test_running_mean_std_equals_numpy_over_everything_seen():
    batches = [randn(52, 5) * 3 + 1000, randn(53, 2, 7) + 998, randn(54, 1) + 1001, randn(55, 40) * 0.1 + 1000]
    stats = rl.RunningMeanStd()
    for b in batches:
        stats.update(b)
    everything = np.concatenate([b.double().flatten().numpy() for b in batches])
    assert stats.count == everything.size
    assert stats.mean == pytest.approx(everything.mean(), rel=1e-12)
    assert stats.std == pytest.approx(everything.std(), rel=1e-9)  # numpy's default: the population std


def test_running_mean_std_normalize_by_hand():
    stats = rl.RunningMeanStd()
    stats.update(torch.tensor([1.0, 3.0]))  # mean 2, population std 1
    assert stats.normalize(torch.tensor([4.0])).item() == pytest.approx(2.0)
    assert stats.normalize(torch.tensor([4.0]), shift_mean=False).item() == pytest.approx(4.0)


def test_running_mean_std_state_dict_round_trip():
    a = rl.RunningMeanStd()
    a.update(randn(56, 10))
    state = a.state_dict()
    assert all(type(v) is float for v in state.values())  # plain floats: any checkpoint format holds them
    b = rl.RunningMeanStd()
    b.load_state_dict(state)
    for s in (a, b):           # the resumed one continues exactly like the original
        s.update(randn(57, 6) + 2)
    assert (b.count, b.mean, b.std) == (a.count, a.mean, a.std)


# ----------------------------------------------------------------------------------------------------
# 8.5 Gradient accumulation
def tiny_batch(seed, rows, T, lengths):
    """A fake token-level batch: features (rows, T, 3), targets (rows, T) and a right-padded mask."""
    return randn(seed, rows, T, 3), randn(seed + 100, rows, T), spans([0] * rows, lengths, T)


def token_loss(model, mb):
    x, y, mask = mb
    return rl.masked_mean((model(x).squeeze(-1) - y) ** 2, mask)


def one_step(micro_batches, weights=None):
    """SGD on a fresh nn.Linear(3, 1): with accumulate_and_step (weights None), or by hand with the given
    weights per micro-batch loss. -> (parameters after the step, the returned info or None)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    info = None
    if weights is None:
        info = rl.accumulate_and_step(model.parameters(), opt, micro_batches, lambda mb: token_loss(model, mb),
                                      lambda mb: mb[2].sum(), grad_clip=None)
    else:
        opt.zero_grad()
        for mb, w in zip(micro_batches, weights):
            (token_loss(model, mb) * w).backward()
        opt.step()
    return torch.cat([p.detach().flatten() for p in model.parameters()]), info


SMALL = tiny_batch(60, 1, 4, [2])             # 2 tokens
LARGE = tiny_batch(61, 3, 4, [4, 3, 4])       # 11 tokens
WHOLE = tuple(torch.cat([a, b]) for a, b in zip(SMALL, LARGE))


def test_token_weighted_accumulation_equals_one_big_batch():
    accumulated, info = one_step([SMALL, LARGE])
    whole, _ = one_step([WHOLE], weights=[1.0])
    assert torch.allclose(accumulated, whole, atol=1e-6)
    torch.manual_seed(0)
    assert info["loss"] == pytest.approx(token_loss(torch.nn.Linear(3, 1), WHOLE).item(), rel=1e-5)


def test_averaging_micro_batch_losses_would_be_wrong():
    plain, _ = one_step([SMALL, LARGE], weights=[0.5, 0.5])  # 1 / n_micro_batches each
    whole, _ = one_step([WHOLE], weights=[1.0])
    assert not torch.allclose(plain, whole, atol=1e-4)  # the 2 short-row tokens would count as much as 11


def test_accumulate_clips_and_reports_the_norm_before_clipping():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1)
    before = [p.detach().clone() for p in model.parameters()]
    token_loss(model, WHOLE).backward()
    norm = torch.cat([p.grad.flatten() for p in model.parameters()]).norm().item()
    model.zero_grad()
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    info = rl.accumulate_and_step(model.parameters(), opt, [SMALL, LARGE], lambda mb: token_loss(model, mb),
                                  lambda mb: mb[2].sum(), grad_clip=1e-3)
    assert info["grad_norm"] == pytest.approx(norm, rel=1e-5)
    step = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert step.norm().item() == pytest.approx(1e-3, rel=1e-3)  # lr 1 times the clipped norm


def test_accumulate_refuses_a_step_with_nothing_to_learn_from():
    model = torch.nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    empty = tiny_batch(62, 2, 4, [0, 0])
    with pytest.raises(ValueError, match="no units"):
        rl.accumulate_and_step(model.parameters(), opt, [empty], lambda mb: token_loss(model, mb),
                               lambda mb: mb[2].sum())
