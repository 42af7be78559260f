"""7.3 Reward-model losses (part7_reward/rm_loss.py), each against an independent computation: numbers worked
by hand with math.log and math.exp, torch's own BCE-with-logits and margin ranking losses, or a naive loop.

Run: python -m pytest -q tests/part7/test_part7_rm_loss.py
"""
import math
import random

import pytest
import torch
import torch.nn.functional as F
from partloader import load_part

rm = load_part("part7_reward", "rm_loss")


def rewards(seed, n=16, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g) * scale, torch.randn(n, generator=g) * scale


# ----------------------------------------------------------------------------------------------------
# Bradley-Terry
def test_bradley_terry_by_hand():
    assert rm.bradley_terry_loss(torch.tensor([2.0]), torch.tensor([0.0])).item() == pytest.approx(
        math.log(1 + math.exp(-2)), rel=1e-6)
    # two pairs, one right by 1 and one wrong by 3: the mean of log(1 + e^-1) and log(1 + e^3)
    got = rm.bradley_terry_loss(torch.tensor([1.0, -1.0]), torch.tensor([0.0, 2.0])).item()
    assert got == pytest.approx((math.log(1 + math.exp(-1)) + math.log(1 + math.exp(3))) / 2, rel=1e-6)
    assert rm.bradley_terry_loss(torch.zeros(3), torch.zeros(3)).item() == pytest.approx(math.log(2))


def test_bradley_terry_is_bce_with_logits_on_the_difference():
    for seed in range(3):
        rc, rr = rewards(seed)
        diff = rc - rr
        expected = F.binary_cross_entropy_with_logits(diff, torch.ones_like(diff))
        assert torch.allclose(rm.bradley_terry_loss(rc, rr), expected, atol=1e-6)


def test_bradley_terry_stays_finite_for_huge_differences():
    rc = torch.tensor([1000.0, -1000.0], requires_grad=True)
    rr = torch.zeros(2)
    assert torch.isinf(-torch.log(torch.sigmoid(rc - rr))).any()  # the naive formula overflows here
    loss = rm.bradley_terry_loss(rc, rr)
    # -log sigma(1000) = log(1 + e^-1000) ~ 0 and -log sigma(-1000) = 1000 + log(1 + e^-1000) ~ 1000
    assert loss.item() == pytest.approx(500.0)
    loss.backward()
    assert torch.isfinite(rc.grad).all()
    assert rc.grad.tolist() == pytest.approx([0.0, -0.5])  # -(1 - sigma(d)) / N with N = 2


def test_margin_shifts_the_difference():
    rc, rr = rewards(3)
    per_pair = torch.rand(16, generator=torch.Generator().manual_seed(3)) * 2
    assert torch.allclose(rm.bradley_terry_loss(rc, rr, per_pair), rm.bradley_terry_loss(rc - per_pair, rr))
    assert torch.allclose(rm.bradley_terry_loss(rc, rr, 0.7), rm.bradley_terry_loss(rc, rr + 0.7))
    assert rm.bradley_terry_loss(rc, rr, 0.0) == rm.bradley_terry_loss(rc, rr, None)
    # a naive loop with math: mean of log(1 + e^-(c - r - m))
    naive = sum(math.log(1 + math.exp(-(c - r - m))) for c, r, m in zip(rc.tolist(), rr.tolist(), per_pair.tolist()))
    assert rm.bradley_terry_loss(rc, rr, per_pair).item() == pytest.approx(naive / 16, rel=1e-5)
    assert rm.bradley_terry_loss(rc, rr, per_pair) > rm.bradley_terry_loss(rc, rr)  # a margin only adds cost


def test_bradley_terry_gradient_pushes_chosen_up_and_rejected_down():
    rc, rr = rewards(4)
    rc.requires_grad_()
    rr.requires_grad_()
    rm.bradley_terry_loss(rc, rr).backward()
    assert (rc.grad < 0).all() and (rr.grad > 0).all()  # gradient descent raises r_c, lowers r_r
    sig = [1 / (1 + math.exp(-(c - r))) for c, r in zip(rc.tolist(), rr.tolist())]
    assert rc.grad.tolist() == pytest.approx([-(1 - s) / 16 for s in sig], rel=1e-5)
    assert torch.allclose(rr.grad, -rc.grad)


# ----------------------------------------------------------------------------------------------------
# Margin ranking and centering
def test_margin_ranking_by_hand_and_against_torch():
    rc, rr = torch.tensor([2.0, 0.5, 0.0]), torch.tensor([0.0, 0.0, 1.0])
    # margin 1: max(0, 1 - 2) = 0, max(0, 1 - 0.5) = 0.5, max(0, 1 + 1) = 2
    assert rm.margin_ranking_loss(rc, rr).item() == pytest.approx(2.5 / 3)
    assert rm.margin_ranking_loss(rc, rr, margin=0.0).item() == pytest.approx(1 / 3)
    for seed in range(3):
        a, b = rewards(seed)
        for m in (0.0, 0.5, 2.0):
            assert torch.allclose(rm.margin_ranking_loss(a, b, m),
                                  F.margin_ranking_loss(a, b, torch.ones_like(a), margin=m), atol=1e-6)


def test_margin_ranking_gives_no_gradient_to_satisfied_pairs():
    rc = torch.tensor([3.0, 0.2], requires_grad=True)
    rm.margin_ranking_loss(rc, torch.zeros(2)).backward()
    assert rc.grad.tolist() == pytest.approx([0.0, -0.5])


def test_centering_by_hand_and_why_it_is_needed():
    rc, rr = torch.tensor([1.0, 2.0]), torch.tensor([1.0, -2.0])
    assert rm.centering_penalty(rc, rr).item() == pytest.approx((2.0 ** 2 + 0.0 ** 2) / 2)
    a, b = rewards(5)
    # BT cannot see a common offset; the centering penalty can
    assert torch.allclose(rm.bradley_terry_loss(a + 50, b + 50), rm.bradley_terry_loss(a, b), atol=1e-5)
    assert rm.centering_penalty(a + 50, b + 50) > 100 * rm.centering_penalty(a, b)


def test_reward_loss_combines_and_rejects_a_bad_name():
    rc, rr = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 1.0])
    bt = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(1))) / 2
    center = (4 + 1) / 2
    assert rm.reward_loss(rc, rr).item() == pytest.approx(bt, rel=1e-6)
    assert rm.reward_loss(rc, rr, "bt", center_coef=0.1).item() == pytest.approx(bt + 0.1 * center, rel=1e-6)
    bt_m = (math.log(1 + math.exp(-1.5)) + math.log(1 + math.exp(1.5))) / 2
    assert rm.reward_loss(rc, rr, "bt", margin=0.5).item() == pytest.approx(bt_m, rel=1e-6)
    # hinge with margin 1 (the default): max(0, 1 - 2) = 0 and max(0, 1 + 1) = 2
    assert rm.reward_loss(rc, rr, "margin").item() == pytest.approx(1.0)
    assert rm.reward_loss(rc, rr, "margin", margin=3.0, center_coef=1.0).item() == pytest.approx((1 + 4) / 2 + center)
    with pytest.raises(ValueError, match="'hinge'") as e:
        rm.reward_loss(rc, rr, "hinge")
    assert "\n" not in str(e.value) and "bt" in str(e.value)


# ----------------------------------------------------------------------------------------------------
# Accuracy, and where the reward is read
def test_pair_accuracy_counts_ties_as_wrong():
    assert rm.pair_accuracy(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 2.0, 4.0])) == pytest.approx(1 / 3)
    assert rm.pair_accuracy(torch.full((5,), 0.3), torch.full((5,), 0.3)) == 0.0  # a constant model scores 0
    assert rm.pair_accuracy(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0])) == 1.0


def naive_last_index(mask):
    return [max(t for t, m in enumerate(row) if m) for row in mask.tolist()]


def test_last_token_index_right_left_and_no_padding():
    right = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]])
    assert rm.last_token_index(right).tolist() == [2, 0, 3]
    left = torch.tensor([[0, 1, 1, 1], [0, 0, 0, 1], [1, 1, 1, 1]])
    assert rm.last_token_index(left).tolist() == [3, 3, 3]
    assert rm.last_token_index(right.bool()).tolist() == [2, 0, 3]
    assert rm.last_token_index(torch.ones(2, 5)).tolist() == [4, 4]
    rng = random.Random(0)
    for _ in range(30):
        T = rng.randint(1, 9)
        rows = []
        for _ in range(rng.randint(1, 5)):
            n = rng.randint(1, T)
            rows.append([1] * n + [0] * (T - n) if rng.random() < 0.5 else [0] * (T - n) + [1] * n)
        mask = torch.tensor(rows)
        assert rm.last_token_index(mask).tolist() == naive_last_index(mask)


def test_last_token_index_rejects_an_empty_row():
    with pytest.raises(ValueError, match=r"rows \[1\]") as e:
        rm.last_token_index(torch.tensor([[1, 1, 0], [0, 0, 0]]))
    assert "\n" not in str(e.value)


def test_gather_last_2d_and_3d():
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1], [1, 0, 0, 0]])
    values = torch.arange(12.0).view(3, 4)
    assert rm.gather_last(values, mask).tolist() == [1.0, 7.0, 8.0]
    hidden = torch.randn(3, 4, 5)
    expected = torch.stack([hidden[b, t] for b, t in enumerate(naive_last_index(mask))])
    assert torch.equal(rm.gather_last(hidden, mask), expected)
    assert rm.gather_last(hidden, mask).shape == (3, 5)
