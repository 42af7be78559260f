"""Part 7 exercises (part7_reward/exercises.py): put your own solution there and run this file.

Each function is checked against an independent computation: Plackett-Luce against rm_loss.bradley_terry_loss
(K = 2), a loop with math.log and math.exp, and every permutation of a short list (the probabilities of all
rankings sum to 1, the sorted one is the likeliest); length debiasing against numpy.polyfit and cases worked by
hand; calibration against a loop with math.exp, synthetic pairs whose outcomes follow Bradley-Terry exactly,
rm_loss.pair_accuracy and a 4-pair case worked by hand.
Run: python -m pytest -q tests/part7/test_part7_exercises.py
"""
import itertools
import math

import numpy as np
import pytest
import torch
from partloader import load_part

ex, rm = load_part("part7_reward", "exercises", "rm_loss")


def random_rewards(seed, shape, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * scale


# ----------------------------------------------------------------------------------------------------
# 7.A Plackett-Luce
def naive_plackett_luce(rows):
    """The mean over lists of -sum_k log(e^r_k / sum_{j >= k} e^r_j), in plain Python."""
    total = 0.0
    for r in rows:
        for k in range(len(r)):
            total -= math.log(math.exp(r[k]) / sum(math.exp(v) for v in r[k:]))
    return total / len(rows)


def test_plackett_luce_by_hand():
    by_hand = (math.log(math.exp(2) + math.exp(1) + 1) - 2) + (math.log(math.exp(1) + 1) - 1)
    assert ex.plackett_luce_loss(torch.tensor([[2.0, 1.0, 0.0]])).item() == pytest.approx(by_hand, rel=1e-6)
    assert by_hand == pytest.approx(0.7209, abs=1e-4)
    assert ex.plackett_luce_loss(torch.zeros(1, 3)).item() == pytest.approx(math.log(6))  # 1 of 3! orders
    assert ex.plackett_luce_loss(torch.tensor([[5.0]])).item() == 0.0  # one answer: one ranking, certain


@pytest.mark.parametrize("seed, K", [(0, 2), (1, 3), (2, 5), (3, 8)])
def test_plackett_luce_matches_a_loop(seed, K):
    r = random_rewards(seed, (6, K))
    assert ex.plackett_luce_loss(r).item() == pytest.approx(naive_plackett_luce(r.tolist()), rel=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_for_two_answers_it_is_bradley_terry(seed):
    r = random_rewards(seed, (16, 2)).requires_grad_()
    pl = ex.plackett_luce_loss(r)
    pl.backward()
    grad_pl, r.grad = r.grad.clone(), None
    bt = rm.bradley_terry_loss(r[:, 0], r[:, 1])
    bt.backward()
    assert pl.item() == pytest.approx(bt.item(), rel=1e-12)
    assert torch.allclose(grad_pl, r.grad, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_the_probabilities_of_all_rankings_sum_to_one(seed):
    """exp(-loss) of one list is the probability of that ranking; over all K! orders they must sum to 1."""
    r = random_rewards(seed, (4,))
    probabilities = [math.exp(-ex.plackett_luce_loss(r[list(order)].view(1, -1)).item())
                     for order in itertools.permutations(range(4))]
    assert sum(probabilities) == pytest.approx(1.0, rel=1e-9)


@pytest.mark.parametrize("seed", range(4))
def test_the_sorted_order_is_the_likeliest(seed):
    """Best first (rewards descending) has the lowest loss of all orders, and less than its reverse."""
    r = random_rewards(seed, (5,))
    ordered = r.sort(descending=True).values.view(1, -1)
    losses = [ex.plackett_luce_loss(r[list(order)].view(1, -1)).item() for order in itertools.permutations(range(5))]
    assert ex.plackett_luce_loss(ordered).item() == pytest.approx(min(losses), rel=1e-12)
    assert ex.plackett_luce_loss(ordered) < ex.plackett_luce_loss(ordered.flip(-1))


def test_the_gradient_raises_the_top_and_lowers_the_bottom():
    r = random_rewards(5, (8, 4)).requires_grad_()
    ex.plackett_luce_loss(r).backward()
    assert (r.grad[:, 0] < 0).all() and (r.grad[:, -1] > 0).all()  # descent: top up, bottom down
    assert torch.allclose(r.grad.sum(-1), torch.zeros(8, dtype=r.dtype), atol=1e-12)  # only differences matter
    stepped = (r - 1.0 * r.grad).detach()
    assert ex.plackett_luce_loss(stepped) < ex.plackett_luce_loss(r)
    assert (stepped[:, 0] > r[:, 0]).all()


def test_plackett_luce_ignores_a_shift_and_survives_huge_rewards():
    r = random_rewards(6, (5, 4))
    assert ex.plackett_luce_loss(r + 100).item() == pytest.approx(ex.plackett_luce_loss(r).item(), rel=1e-9)
    big = torch.tensor([[1000.0, 0.0, -1000.0], [-1000.0, 0.0, 1000.0]])
    assert ex.plackett_luce_loss(big).item() == pytest.approx((0 + 3000) / 2)  # right costs 0, reversed 1000 + 2000
    with pytest.raises(ValueError, match="best first"):
        ex.plackett_luce_loss(torch.zeros(4))


# ----------------------------------------------------------------------------------------------------
# 7.B length debiasing
def test_length_residuals_by_hand():
    residuals, slope = ex.length_residuals(torch.tensor([1.0, 3.0, 2.0]), torch.tensor([1, 2, 3]))
    assert slope == pytest.approx(0.5)
    assert residuals.tolist() == pytest.approx([-0.5, 1.0, -0.5])


def test_rewards_linear_in_length_leave_nothing():
    lengths = torch.arange(10, 60, dtype=torch.float64)
    residuals, slope = ex.length_residuals(3.0 + 0.25 * lengths, lengths)
    assert slope == pytest.approx(0.25, rel=1e-12)
    assert residuals.abs().max().item() < 1e-10


@pytest.mark.parametrize("seed", range(4))
def test_length_residuals_match_polyfit_and_are_uncorrelated_with_length(seed):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(5, 400, size=300)
    rewards = rng.normal(size=300) + rng.uniform(-0.05, 0.05) * lengths
    b, a = np.polyfit(lengths.astype(float), rewards, 1)
    residuals, slope = ex.length_residuals(torch.tensor(rewards), torch.tensor(lengths))
    assert slope == pytest.approx(b, rel=1e-9)
    assert np.allclose(residuals.numpy(), rewards - (a + b * lengths), atol=1e-9)
    assert abs(np.corrcoef(residuals.numpy(), lengths)[0, 1]) < 1e-9
    assert abs(residuals.mean().item()) < 1e-9


def test_a_constant_offset_is_removed():
    rewards = random_rewards(7, (50,))
    lengths = torch.randint(1, 100, (50,), generator=torch.Generator().manual_seed(7))
    plain, slope = ex.length_residuals(rewards, lengths)
    shifted, shifted_slope = ex.length_residuals(rewards + 12.5, lengths)
    assert shifted_slope == pytest.approx(slope, rel=1e-9)
    assert torch.allclose(plain, shifted, atol=1e-9)


def test_answers_of_one_length_keep_their_order():
    lengths = torch.tensor([10, 10, 10, 40, 40, 40])
    rewards = torch.tensor([0.1, 0.5, 0.3, 2.2, 1.9, 2.5])
    residuals, slope = ex.length_residuals(rewards, lengths)
    assert slope > 0
    assert residuals[:3].argsort().tolist() == rewards[:3].argsort().tolist()
    assert residuals[3:].argsort().tolist() == rewards[3:].argsort().tolist()


def test_equal_lengths_fit_no_slope_and_bad_shapes_are_refused():
    residuals, slope = ex.length_residuals(torch.tensor([1.0, 2.0, 6.0]), torch.tensor([7, 7, 7]))
    assert slope == 0.0 and residuals.tolist() == pytest.approx([-2.0, -1.0, 3.0])
    for rewards, lengths in ((torch.zeros(3), torch.zeros(4)), (torch.zeros(1), torch.zeros(1)),
                             (torch.zeros(2, 2), torch.zeros(2, 2))):
        with pytest.raises(ValueError, match="N >= 2"):
            ex.length_residuals(rewards, lengths)


# ----------------------------------------------------------------------------------------------------
# 7.C calibration
def bt_pairs(n, scale, seed):
    """n pairs whose outcomes follow BT with true gaps d ~ N(0, 2^2), numpy's generator; the model's rewards
    are the true ones times scale."""
    rng = np.random.default_rng(seed)
    d = rng.normal(0, 2, n)
    first_wins = rng.random(n) < 1 / (1 + np.exp(-d))
    first, second = d * scale, np.zeros(n)
    return torch.tensor(np.where(first_wins, first, second)), torch.tensor(np.where(first_wins, second, first))


def naive_ece(r_chosen, r_rejected, n_bins):
    bins = [[] for _ in range(n_bins)]
    for c, r in zip(r_chosen.tolist(), r_rejected.tolist()):
        p = 1 / (1 + math.exp(-(c - r)))
        confidence, correct = max(p, 1 - p), 1.0 if c > r else 0.5 if c == r else 0.0
        bins[min(int((confidence - 0.5) * 2 * n_bins), n_bins - 1)].append((confidence, correct))
    n = len(r_chosen)
    return sum(len(b) / n * abs(sum(x for _, x in b) / len(b) - sum(c for c, _ in b) / len(b)) for b in bins if b)


def test_calibration_by_hand():
    """p = 0.75 right and 0.25 (folded: 0.75) wrong share bin [0.7, 0.8): says 75%, right 50%, gap 0.25; 0.95
    right: bin [0.9, 1], gap 0.05; a tie: bin [0.5, 0.6), says 50%, half right, gap 0.
    ECE = 2/4 * 0.25 + 1/4 * 0.05 + 1/4 * 0 = 0.1375."""
    r_chosen = torch.tensor([math.log(3), 0.0, math.log(19), 1.0])
    r_rejected = torch.tensor([0.0, math.log(3), 0.0, 1.0])
    rows = ex.calibration_table(r_chosen, r_rejected, n_bins=5)
    assert [(round(lo, 6), round(hi, 6), n) for lo, hi, n, _, _ in rows] == [(0.5, 0.6, 1), (0.7, 0.8, 2),
                                                                              (0.9, 1.0, 1)]
    assert [conf for _, _, _, conf, _ in rows] == pytest.approx([0.5, 0.75, 0.95], rel=1e-6)
    assert [acc for _, _, _, _, acc in rows] == [0.5, 0.5, 1.0]
    assert ex.expected_calibration_error(r_chosen, r_rejected, n_bins=5) == pytest.approx(0.1375, rel=1e-6)


@pytest.mark.parametrize("n_bins", [1, 5, 10, 20])
def test_ece_matches_a_loop(n_bins):
    r_chosen, r_rejected = random_rewards(11, (400,)), random_rewards(12, (400,))
    assert ex.expected_calibration_error(r_chosen, r_rejected, n_bins) == pytest.approx(
        naive_ece(r_chosen, r_rejected, n_bins), rel=1e-9)


@pytest.mark.parametrize("seed", range(3))
def test_a_calibrated_model_has_a_small_ece_and_a_mis_scaled_one_a_large_one(seed):
    calibrated = ex.expected_calibration_error(*bt_pairs(50_000, 1.0, seed))
    over = ex.expected_calibration_error(*bt_pairs(50_000, 5.0, seed))
    under = ex.expected_calibration_error(*bt_pairs(50_000, 0.2, seed))
    assert calibrated < 0.02
    assert over > 0.1 and over > 5 * calibrated
    assert under > 0.1 and under > 5 * calibrated


def test_the_table_agrees_with_pair_accuracy_and_counts_every_pair():
    r_chosen, r_rejected = bt_pairs(2000, 1.0, 4)
    rows = ex.calibration_table(r_chosen, r_rejected, n_bins=7)
    assert sum(n for _, _, n, _, _ in rows) == 2000
    assert sum(n * acc for _, _, n, _, acc in rows) / 2000 == pytest.approx(rm.pair_accuracy(r_chosen, r_rejected))
    swapped = ex.calibration_table(r_rejected, r_chosen, n_bins=7)  # the same confidences, the other outcomes
    assert [(n, conf) for _, _, n, conf, _ in swapped] == [(n, conf) for _, _, n, conf, _ in rows]
    assert [acc for *_, acc in swapped] == pytest.approx([1 - acc for *_, acc in rows])


def test_ties_are_calibrated_and_certainty_lands_in_the_last_bin():
    assert ex.expected_calibration_error(torch.zeros(10), torch.zeros(10)) == 0.0
    rows = ex.calibration_table(torch.tensor([40.0, -40.0]), torch.zeros(2), n_bins=4)
    assert len(rows) == 1 and rows[0][:3] == (0.875, 1.0, 2) and rows[0][4] == 0.5
    with pytest.raises(ValueError, match="no pairs"):
        ex.expected_calibration_error(torch.zeros(0), torch.zeros(0))


# ----------------------------------------------------------------------------------------------------
# The demo
def test_main_prints_a_demo_of_each(capsys):
    ex.main()
    out = capsys.readouterr().out
    for line in ("7.A Plackett-Luce", "bradley_terry_loss 0.1269", "7.B", "fitted slope", "7.C", "over-confident"):
        assert line in out
