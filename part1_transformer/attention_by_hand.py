"""1.2 Self-attention from first principles, on 3 tokens with d = 4.

    python part1_transformer/attention_by_hand.py

Prints every intermediate step (Q, K, V, scores, scaling, causal mask, softmax, output) and checks the
result against the `Head` module of model.py given the same weights.
"""
import math

import torch

from model import Head

torch.set_printoptions(precision=3, sci_mode=False)


def show(title, tensor):
    print(f"\n{title}  shape={tuple(tensor.shape)}\n{tensor}")


def attention_step_by_step(x, Wq, Wk, Wv, verbose=True):
    """x: (T, d) token vectors; W*: (d, d) projection matrices. Returns the (T, d) output."""
    say = show if verbose else (lambda *a: None)
    say("x: one row per token", x)
    Q, K, V = x @ Wq, x @ Wk, x @ Wv  # every token asks (Q), advertises (K) and carries (V)
    say("Q = x @ Wq", Q)
    say("K = x @ Wk", K)
    say("V = x @ Wv", V)
    scores = Q @ K.T  # scores[i, j]: how well query i matches key j
    say("scores = Q @ K^T", scores)
    scores = scores / math.sqrt(K.shape[1])  # keeps the variance ~1 so softmax does not saturate
    say(f"scaled by 1/sqrt(d) = 1/{math.sqrt(K.shape[1]):.0f}", scores)
    T = x.shape[0]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))  # token i may look at tokens 0..i only
    say("causal mask (True = allowed)", mask)
    scores = scores.masked_fill(~mask, float("-inf"))
    say("masked scores (-inf = the future)", scores)
    weights = torch.softmax(scores, dim=-1)  # each row sums to 1; exp(-inf) = 0
    say("softmax weights (rows sum to 1)", weights)
    out = weights @ V  # each output is a weighted average of the values it may see
    say("output = weights @ V", out)
    return out


def main():
    torch.manual_seed(0)
    T, d = 3, 4
    x = torch.randn(T, d)
    head = Head(n_embd=d, head_size=d, bias=False)
    # nn.Linear stores W as (out, in) and computes x @ W.T, so the by-hand matrices are the transposes.
    Wq, Wk, Wv = (layer.weight.detach().T for layer in (head.query, head.key, head.value))
    by_hand = attention_step_by_step(x, Wq, Wk, Wv)
    with torch.no_grad():
        by_module = head(x[None])[0]
    max_diff = (by_hand - by_module).abs().max().item()
    print(f"\nmax |by hand - Head module| = {max_diff:.2e}")
    assert max_diff < 1e-5, "the step-by-step computation disagrees with the module"
    print("OK: the step-by-step computation matches model.Head")
    return by_hand, by_module


if __name__ == "__main__":
    main()
