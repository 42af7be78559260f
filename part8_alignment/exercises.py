"""Part 7 exercises: one function per exercise, each a worked solution (README.md, "Exercises").

    7.A Plackett-Luce: a listwise loss for K ranked answers, BT when K = 2 (7.3)   plackett_luce_loss
    7.B length debiasing: regress the reward on the length, keep the residual      length_residuals
    7.C calibration: are sigma(r_c - r_r) honest probabilities? (7.3)              calibration_table,
                                                                                   expected_calibration_error

All three work on plain tensors of rewards, so no model is needed. Replace a solution with your own and run
the same test:

    python -m pytest tests/part7/test_part7_exercises.py

The tests check each function against an independent computation (rm_loss.bradley_terry_loss, a loop with
math.log and math.exp, every permutation of a short list, numpy.polyfit, hand-worked cases), so they pass
for any correct answer. A short worked demo of each, well under a second:

    python part7_reward/exercises.py
"""

import torch

from rm_loss import bradley_terry_loss, pair_accuracy


# ----------------------------------------------------------------------------------------------------
# Exercise 7.A (builds on 7.3): Plackett-Luce, the listwise loss
def plackett_luce_loss(rewards) -> torch.Tensor:
    """Task: rewards (B, K) of K answers to one prompt, ranked best first -> the mean over the B lists of
    -log P(this ranking), where Plackett-Luce draws the ranking one place at a time: the best of all K by a
    softmax, then the best of the K - 1 left, ... So each list costs
        sum_k  logsumexp(r_k, ..., r_K) - r_k.
    Why: annotators who rank 4 answers give 6 pairs, but 6 BT terms count the top answer 3 times and are not
    independent; PL is one likelihood for the whole ranking (used for InstructGPT-style K-way data, and in
    DPO's listwise form). For K = 2 it is log(1 + e^(r_2 - r_1)) = bradley_terry_loss exactly.
    [[2, 1, 0]] -> (log(e^2 + e^1 + e^0) - 2) + (log(e^1 + e^0) - 1) + 0 = 0.7209."""
    if rewards.dim() != 2:
        raise ValueError(f"rewards must be (B, K), ranked best first along K; got shape {tuple(rewards.shape)}")
    # 7.A logcumsumexp from the end: tail[:, k] = logsumexp(r_k..r_K), stable for any size of reward
    tail = rewards.flip(-1).logcumsumexp(-1).flip(-1)
    return (tail - rewards).sum(-1).mean()  # the last place costs log(e^r_K) - r_K = 0: a list of one is free


# ----------------------------------------------------------------------------------------------------
# Exercise 7.B: length debiasing
def length_residuals(rewards, lengths):
    """Task: rewards (N,) and response lengths (N,) -> (residuals (N,), slope float): fit r = a + b * len by
    least squares in closed form, b = cov(len, r) / var(len), a = mean(r) - b * mean(len), and return
    r - a - b * len with b.
    Why: reward models learn that longer answers win (Singhal et al. 2023, "A Long Way to Go"), and a policy
    trained on them learns to pad. The residual is the part of the reward that length does not predict; it
    has mean 0 and zero covariance with length, and it keeps the order of answers of the same length. Fit b
    on held-out pairs and reuse it when scoring a policy's samples (fitting on those lets the policy move b).
    Lengths all equal: nothing to fit, b = 0 and the residual is r - mean(r).
    r [1, 3, 2], len [1, 2, 3] -> b = (1/3) / (2/3) = 0.5, a = 1, residuals [-0.5, 1, -0.5]."""
    r = torch.as_tensor(rewards)
    x = torch.as_tensor(lengths, device=r.device).to(r.dtype if r.is_floating_point() else torch.float32)
    r = r.to(x.dtype)
    if r.dim() != 1 or r.shape != x.shape or len(r) < 2:
        raise ValueError(f"rewards and lengths must be two (N,) tensors, N >= 2; got {tuple(r.shape)} "
                         f"and {tuple(x.shape)}")
    rc, xc = r - r.mean(), x - x.mean()  # centred first: no cancellation in sum(x^2) - N mean(x)^2
    var = (xc * xc).sum()
    slope = ((xc * rc).sum() / var).item() if var > 0 else 0.0
    return rc - slope * xc, slope  # r - (mean r - b mean x) - b x


# ----------------------------------------------------------------------------------------------------
# Exercise 7.C (builds on 7.3): calibration of a Bradley-Terry reward model
def calibration_table(r_chosen, r_rejected, n_bins=10):
    """Task: the reliability table of a BT reward model on preference pairs (chosen = the one people
    preferred). It claims P(chosen wins) = p = sigma(r_c - r_r). Fold each pair onto its predicted winner:
    confidence max(p, 1 - p) in [0.5, 1], correct 1 when that winner is the chosen one (p > 0.5), else 0.
    Cut [0.5, 1] into n_bins equal bins (confidence 1.0 goes into the last) and return one row
    (low, high, count, mean confidence, accuracy) per non-empty bin.
    Why fold: every label is "chosen won", so bins of p on [0, 1] would hold outcomes that are all 1; the
    folded table asks the real question, "when the model says 80%, is it right 80% of the time?".
    subtle: a tie (p = 0.5) counts as half correct, not wrong as in pair_accuracy. The fold has no winner to
    pick there, and "50%" on a coin flip is an honest forecast: all ties is calibrated, however useless."""
    diff = (r_chosen - r_rejected).double()  # sigma(|d|) rounds to 1.0 in float32 once |d| > 17
    confidence = torch.sigmoid(diff.abs())
    correct = (diff > 0).double() + 0.5 * (diff == 0).double()
    width = 0.5 / n_bins
    index = ((confidence - 0.5) / width).long().clamp(max=n_bins - 1)
    rows = []
    for b in range(n_bins):
        inside = index == b
        if inside.any():
            rows.append((0.5 + b * width, 0.5 + (b + 1) * width, int(inside.sum()),
                         confidence[inside].mean().item(), correct[inside].mean().item()))
    return rows


def expected_calibration_error(r_chosen, r_rejected, n_bins=10) -> float:
    """ECE = sum over bins of (count / N) * |accuracy - mean confidence| (Guo et al. 2017): the gap between
    what the model claims and what happens, weighted by how often it claims it. 0 is perfect; an
    over-confident model (rewards too far apart: sigma of a scaled difference) has a gap in every bin.
    Note BT's loss pins down only r_c - r_r, and its scale is what calibration checks: dividing every reward
    by one fitted temperature (on held-out pairs) fixes ECE without changing any ranking."""
    rows = calibration_table(r_chosen, r_rejected, n_bins)
    n = sum(count for _, _, count, _, _ in rows)
    if n == 0:
        raise ValueError("no pairs to calibrate on")
    return sum(count / n * abs(accuracy - confidence) for _, _, count, confidence, accuracy in rows)


# ----------------------------------------------------------------------------------------------------
# A worked demo of each: python part7_reward/exercises.py
def synthetic_pairs(n, scale=1.0, seed=0):
    """n preference pairs whose outcomes follow BT exactly: a true gap d ~ N(0, 2^2), the first answer wins
    with probability sigma(d). The model's rewards are the true ones times `scale` (1 = calibrated)."""
    g = torch.Generator().manual_seed(seed)
    d = torch.randn(n, generator=g, dtype=torch.float64) * 2
    first_wins = torch.rand(n, generator=g, dtype=torch.float64) < torch.sigmoid(d)
    first, second = d * scale, torch.zeros_like(d)
    return torch.where(first_wins, first, second), torch.where(first_wins, second, first)


def main():
    r = torch.tensor([[2.0, 1.0, 0.0]])
    print(f"7.A Plackett-Luce on rewards {r.tolist()[0]} ranked best first: {plackett_luce_loss(r).item():.4f}; "
          f"reversed {plackett_luce_loss(r.flip(-1)).item():.4f}")
    pair = torch.tensor([[2.0, 0.0]])
    print(f"    K = 2, rewards [2, 0]: {plackett_luce_loss(pair).item():.4f}, bradley_terry_loss "
          f"{bradley_terry_loss(pair[:, 0], pair[:, 1]).item():.4f}")

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(20, 200, (1000,), generator=g).float()
    quality = torch.randn(1000, generator=g)
    rewards = quality + 0.02 * lengths  # a length bias of 0.02 per token on top of the answer's quality
    residuals, slope = length_residuals(rewards, lengths)

    def corr(a, b):
        return round(torch.corrcoef(torch.stack([a, b]))[0, 1].item(), 3) + 0.0  # + 0.0: no "-0.000"

    print(f"7.B 1000 rewards = quality + 0.02 * length: fitted slope {slope:.4f}; correlation with length "
          f"{corr(rewards, lengths):.3f} before, {corr(residuals, lengths):.3f} after; with the quality "
          f"{corr(rewards, quality):.3f} before, {corr(residuals, quality):.3f} after")

    print("7.C 20000 pairs whose outcomes follow BT, n_bins 5: expected calibration error")
    for scale, name in ((1.0, "calibrated"), (5.0, "over-confident"), (0.2, "under-confident")):
        r_c, r_r = synthetic_pairs(20000, scale)
        print(f"    rewards x {scale:g} ({name}): ECE {expected_calibration_error(r_c, r_r, 5):.3f}, "
              f"pair accuracy {pair_accuracy(r_c, r_r):.3f}")
    r_c, r_r = synthetic_pairs(20000, 5.0)
    print("    over-confident, bin | pairs | says | right")
    for low, high, count, confidence, accuracy in calibration_table(r_c, r_r, 5):
        print(f"    {low:.1f}-{high:.1f} | {count:5d} | {confidence:4.0%} | {accuracy:5.0%}")


if __name__ == "__main__":
    main()
