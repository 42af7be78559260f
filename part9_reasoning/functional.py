"""2.3 Softmax and cross-entropy, written out.

torch has both (F.softmax, F.cross_entropy); the course writes them here so the loss a model is trained
on is code you can read. tests/test_scratch_ops.py checks them against torch's to 1e-6.

The one trick: exp(1000) overflows float32 (it is inf), but softmax does not change when the same number
is subtracted from every logit of a row, since it cancels in the fraction:
    exp(x_i - m) / sum_j exp(x_j - m) = exp(x_i) / sum_j exp(x_j)
so we subtract the row's largest logit m first; the largest exp is then exp(0) = 1 and nothing overflows.
"""
import torch


def softmax(x, dim=-1):
    """exp(x) / sum(exp(x)) along dim, e.g. [1., 2., 3.] -> [0.090, 0.245, 0.665]; rows sum to 1."""
    e = (x - x.amax(dim, keepdim=True)).exp()  # largest entry becomes exp(0) = 1: no overflow
    return e / e.sum(dim, keepdim=True)


def logsumexp(x, dim=-1):
    """log(sum(exp(x))) along dim, computed as m + log(sum(exp(x - m))) with m the largest entry."""
    # subtle: m only keeps exp in range, the result does not depend on it, so no gradient needs to flow
    # through it (its gradient would be exactly zero; detaching saves autograd the work)
    m = x.amax(dim, keepdim=True).detach()
    return (m + (x - m).exp().sum(dim, keepdim=True).log()).squeeze(dim)


def cross_entropy(logits, targets):
    """Mean negative log-likelihood of the targets. logits (N, V), targets (N,) of ints in [0, V).

    -log softmax(logits)[target] = logsumexp(logits) - logits[target]: one subtraction per row, and the
    log is never taken of a probability that rounded to 0."""
    if logits.dtype in (torch.float16, torch.bfloat16):  # mixed precision: sums of exps need float32
        logits = logits.float()
    target_logits = logits.gather(1, targets[:, None]).squeeze(1)             # (N,)
    return (logsumexp(logits) - target_logits).mean()
