"""Part 8 exercises: one function per exercise, each a worked solution (README.md, "Exercises").

    8.A RLOO: the leave-one-out baseline (8.2)                                   rloo_advantages
    8.B IPO: DPO's squared cousin, a margin it stops at (8.3)                     ipo_loss
    8.C three estimators of KL, and why GRPO picks k3 (8.1, 8.2)                  kl_estimators,
                                                                                  measure_estimators

All three work on plain tensors (rewards, log-probabilities, logits), so no model is needed. Replace a
solution with your own and run the same test:

    python -m pytest tests/part8/test_part8_exercises.py

The tests check each function against an independent computation (a Python loop, rl_loss's
group_normalized_rewards and dpo_loss, autograd, the exact mean and std of each estimator summed over the
categories with numpy, hand-worked cases), so they pass for any correct answer. A short worked demo of
each, well under a second:

    python part8_alignment/exercises.py
"""

import torch

from rl_loss import dpo_loss, group_normalized_rewards, k3_kl


# ----------------------------------------------------------------------------------------------------
# Exercise 8.A (builds on 8.2): RLOO, the leave-one-out baseline
def rloo_advantages(rewards, group_size) -> torch.Tensor:
    """Task: rewards (N,) as consecutive groups of `group_size` = G answers to the same prompt -> advantages
    (N,): each answer's reward minus the mean reward of the OTHER G - 1 answers of its group (REINFORCE
    Leave-One-Out, Ahmadian et al. 2024, "Back to Basics"). ValueError when G < 2 or G does not divide N.
    Hint: no loop needed. In a (N / G, G) view, the others' mean is (group sum - r_i) / (G - 1).
    Why: a baseline lowers the variance of the policy gradient without biasing it only when it does not
    depend on the answer it is subtracted from. The group mean that GRPO and Dr. GRPO subtract contains
    r_i itself; RLOO's baseline does not, so RLOO's gradient is exactly unbiased. The two differ only by a
    scale, r_i - mean(others) = G / (G - 1) * (r_i - group mean), so the group mean's gradient is the
    unbiased one times (G - 1) / G, as if the learning rate were lower (a lot for G = 2, little for G = 16).
    A group of equal rewards gets 0 (float rounding aside: with no std to divide by, as in GRPO, a
    1e-7 error stays 1e-7).
    [1, 0, 0, 1], G = 4 -> 1 - (0 + 0 + 1) / 3 = 2/3, 0 - 2/3 = -2/3: [2/3, -2/3, -2/3, 2/3], which is
    4/3 times r - mean = [0.5, -0.5, -0.5, 0.5]."""
    r = torch.as_tensor(rewards)
    r = (r if r.is_floating_point() else r.float()).flatten()
    n = r.numel()
    if group_size < 2 or n % group_size:
        raise ValueError(f"group_size must be >= 2 and divide the number of rewards; got {n} rewards "
                         f"with group_size {group_size} (each answer needs at least one other to compare with)")
    groups = r.view(-1, group_size)                                           # (N / G, G)
    others_mean = (groups.sum(dim=1, keepdim=True) - groups) / (group_size - 1)
    return (groups - others_mean).flatten()


# ----------------------------------------------------------------------------------------------------
# Exercise 8.B (builds on 8.3): IPO, DPO's squared cousin
def ipo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1) -> torch.Tensor:
    """Task: the IPO loss (Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from
    Human Preferences") -> scalar, the mean over the B pairs of
        (h - 1 / (2 beta))^2,   h = (pc - rc) - (pr - rr),
    with the same inputs as rl_loss.dpo_loss: summed response log-probs (B,) of the policy and of the frozen
    reference (detach the reference's: it is never trained).
    Hint: h is exactly the margin inside DPO's sigmoid, before the beta; only the outside changes.
    Why: DPO's -log sigma(beta h) keeps falling as h grows. On a pair whose preference is certain (one label
    per pair, as in most data sets, reads as "always"), its optimum is h -> infinity: the rejected answer's
    probability is pushed toward 0 however large beta is, and beta no longer keeps the policy near the
    reference. IPO regresses h onto a finite target 1 / (2 beta): below it the gradient pushes h up, past it
    the gradient pushes h back down, and beta again sets how far the policy moves (half the beta, twice the
    margin).
    beta = 0.1 (target 5), pc - rc = 1, pr - rr = -1: h = 2, loss (2 - 5)^2 = 9, d loss / d pc = 2 (h - 5)
    = -6 (push on). At h = 8 the loss is 9 again but the gradient is +6 (push back); DPO's there is
    -beta sigma(-beta h) = -0.031, small, and still pushing on."""
    chosen_logratio = policy_chosen.float() - ref_chosen.detach().float()
    rejected_logratio = policy_rejected.float() - ref_rejected.detach().float()
    h = chosen_logratio - rejected_logratio
    return ((h - 1 / (2 * beta)) ** 2).mean()


# ----------------------------------------------------------------------------------------------------
# Exercise 8.C (builds on 8.1): three estimators of KL
def kl_estimators(logp, ref_logp) -> dict:
    """Task: logp = log p(x) and ref_logp = log q(x) at tokens x sampled from p (any shape) -> a dict of three
    per-sample estimates of KL(p || q), float32, same shape (Schulman, "Approximating KL Divergence", 2020):
        k1 = logp - ref_logp                       = -log r,        r = q(x) / p(x)
        k2 = 0.5 * (logp - ref_logp)^2             =  0.5 (log r)^2
        k3 = exp(ref - logp) - (ref - logp) - 1    =  (r - 1) - log r        (rl_loss.k3_kl)
    Hint: three lines; k3 is rl_loss.k3_kl.
    Why three: the exact KL is a sum over every token (and over every whole answer, for a sequence), so RLHF
    estimates it from the tokens the policy sampled. k1 is unbiased (its mean is the definition of KL) but
    negative on every token q likes more than p, and noisy. k2 is >= 0 and quiet, but its mean is another
    divergence that agrees with KL only to second order: biased once p and q are far apart. k3 adds r - 1,
    whose mean under p is sum q - sum p = 0, to k1: still unbiased, >= 0 on every sample (e^y >= 1 + y),
    and when p and q are close, r - 1 cancels k1's first-order noise, leaving only the second-order part.
    logp = -1, ref_logp = -2: k1 = 1, k2 = 0.5, k3 = e^-1 + 1 - 1 = 0.368."""
    log_ratio = logp.float() - ref_logp.float()                               # log p - log q = -log r
    return {"k1": log_ratio, "k2": 0.5 * log_ratio ** 2, "k3": k3_kl(logp, ref_logp)}


def measure_estimators(p_logits, q_logits, n_samples, generator=None):
    """Task: p = softmax(p_logits), q = softmax(q_logits), both (V,). Sample n_samples tokens from p, compute
    each estimator of KL(p || q) on each sample with kl_estimators, and return
        ({"k1": (mean, std), "k2": (mean, std), "k3": (mean, std)}, exact KL)
    as Python floats: std is the spread of one sample's estimate (not of the mean, which is std / sqrt(n)),
    and the exact KL is sum_x p(x) (log p(x) - log q(x)).
    Hint: log_softmax in float64; torch.multinomial(p, n, replacement=True, generator=generator) samples;
    index the two log-prob vectors with the sampled tokens.
    Why: the means show which estimators are unbiased (k1, k3) and which is not (k2, once p and q are far
    apart); the stds show why GRPO (and PPO's approx_kl) use k3: when p and q are close, which is where a
    KL penalty keeps the policy (and PPO's clip keeps the new policy near the old), one token's k3 is tens
    of times less noisy than its k1. Far apart it can be the noisier one (the demo's third pair)."""
    logp_all = torch.log_softmax(torch.as_tensor(p_logits).double(), dim=-1)
    logq_all = torch.log_softmax(torch.as_tensor(q_logits).double(), dim=-1)
    tokens = torch.multinomial(logp_all.exp(), n_samples, replacement=True, generator=generator)
    estimates = kl_estimators(logp_all[tokens], logq_all[tokens])
    stats = {name: (k.double().mean().item(), k.double().std().item()) for name, k in estimates.items()}
    exact = (logp_all.exp() * (logp_all - logq_all)).sum().item()
    return stats, exact


# ----------------------------------------------------------------------------------------------------
# A worked demo of each: python part8_alignment/exercises.py
def main():
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 0.2, 0.9, 0.4, 0.5])
    rloo = rloo_advantages(rewards, 4)
    centered = group_normalized_rewards(rewards, 4, scale_by_std=False)
    print(f"8.A rewards {[round(r, 3) for r in rewards.tolist()]}, two groups of 4")
    print(f"    RLOO r - mean(others): {[round(a, 3) for a in rloo.tolist()]}")
    print(f"    r - group mean:        {[round(a, 3) for a in centered.tolist()]}  (x 4/3 = RLOO; "
          f"largest gap {(rloo - 4 / 3 * centered).abs().max().item():.1e})")

    beta = 0.1
    print(f"8.B IPO and DPO on one pair, beta {beta} (IPO's target margin 1 / (2 beta) = {1 / (2 * beta):g}); "
          "gradient d loss / d pc")
    print("       h | IPO loss  gradient | DPO loss  gradient")
    for h in (0.0, 2.0, 5.0, 8.0, 20.0, 50.0):
        row = []
        for loss_fn in (ipo_loss, lambda *a: dpo_loss(*a)[0]):
            pc = torch.tensor([h], requires_grad=True)
            loss = loss_fn(pc, torch.zeros(1), torch.zeros(1), torch.zeros(1), beta)
            loss.backward()
            row.append(f"{loss.item():8.3f}  {pc.grad.item():+8.4f}")
        print(f"    {h:4g} | {row[0]} | {row[1]}")

    n, V = 200_000, 8
    logits = torch.linspace(0, 2, V)
    lopsided = logits.clone()
    lopsided[0] += 3.0
    pairs = (("close: q = softmax(0.9 x p's logits)", logits * 0.9),
             ("far: q = softmax(p's logits reversed)", logits.flip(0)),
             ("far: q = p's logits, +3 on p's rarest token", lopsided))
    print(f"8.C KL(p || q) estimated from {n} tokens sampled from p = softmax(linspace(0, 2, {V})); "
          "std: of one token's estimate,\n"
          f"    the standard error of a mean std / sqrt(n) = std / {n ** 0.5:.0f}")
    for name, q_logits in pairs:
        stats, exact = measure_estimators(logits, q_logits, n, torch.Generator().manual_seed(0))
        p, q = torch.softmax(logits.double(), -1), torch.softmax(q_logits.double(), -1)
        negative = p[p < q].sum().item()  # the share of samples where k1 = log p - log q < 0
        print(f"    {name}: exact KL {exact:.5f}; k1 < 0 on {negative:.0%} of the samples")
        print("      estimator      mean      bias     std   std/KL")
        for k, (mean, std) in stats.items():
            print(f"      {k:9s} {mean:9.5f} {mean - exact:+9.5f} {std:7.4f} {std / exact:8.2f}")


if __name__ == "__main__":
    main()
