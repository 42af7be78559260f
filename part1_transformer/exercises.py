"""Part 1 exercises: one function per exercise, each a worked solution (README.md, "Exercises").

Replace a solution with your own and run the same test:

    python -m pytest tests/part1/test_part1_exercises.py

The tests check each function against an independent computation (a loop, the formula, the model itself),
so they pass for any correct answer, not only for this one.
"""
import math

import torch
import torch.nn.functional as F

from model import GPT, GPTConfig


# ----------------------------------------------------------------------------------------------------
# Exercise 1.A (builds on 1.4-1.6): count the parameters of the GPT by hand
def count_params(config: GPTConfig) -> int:
    """Task: return the number of trainable parameters of GPT(config) from the config alone, with a
    formula you worked out layer by layer, then check it against GPT(config).num_params()."""
    C, b = config.n_embd, int(config.bias)
    embeddings = config.vocab_size * C                    # wte; lm_head shares this matrix (weight tying)
    if config.pos_embedding == "learned":                 # sinusoidal positions are a buffer: no parameters
        embeddings += config.block_size * C
    norm = C + b * C                                      # LayerNorm: weight, and bias if config.bias
    attention = 3 * C * C + b * 3 * C + C * C + b * C     # c_attn (q, k, v together) + c_proj
    mlp = 4 * C * C + b * 4 * C + 4 * C * C + b * C       # c_fc (C -> 4C) + c_proj (4C -> C)
    block = 2 * norm + attention + mlp                    # = 12 C^2 + 2C + 11 b C
    return embeddings + config.n_layer * block + norm     # + ln_f


# ----------------------------------------------------------------------------------------------------
# Exercise 1.B (builds on 1.2/1.3): take the causal mask away and catch the leak
def full_attention(q, k, v, dropout_p=0.0, training=False):
    """Task, part 1: attention WITHOUT the causal mask, same signature as model.causal_attention:
    softmax(Q K^T / sqrt(d)) V, where every token sees every other one, the future included.
    q, k, v: (..., T, hs) -> (..., T, hs)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))               # (..., T, T), nothing masked
    weights = F.dropout(F.softmax(scores, dim=-1), dropout_p, training)
    return weights @ v


@torch.no_grad()
def future_leak(gpt: GPT, idx: torch.Tensor, t: int) -> float:
    """Task, part 2: how much do the outputs at positions < t move when every token from position t on is
    rewritten? Return the largest absolute change of the logits. A causal model gives 0: position i must
    not read the tokens it is trained to predict. Plug full_attention into model.py (use_sdpa=False) and
    this number, and tests/part1/test_part1_model.py -k causality, catch it."""
    changed = idx.clone()
    changed[:, t:] = (idx[:, t:] + 1) % gpt.config.vocab_size  # a different token at every later position
    before, after = gpt(idx)[0][:, :t], gpt(changed)[0][:, :t]              # (B, t, vocab)
    return (before - after).abs().max().item()


# ----------------------------------------------------------------------------------------------------
# Exercise 1.C (builds on 1.1): sinusoidal positions encode offsets as rotations
def sinusoidal_shift(k: int, dim: int) -> torch.Tensor:
    """Task: find the (dim, dim) matrix M with PE[p + k] = PE[p] @ M for EVERY position p, where PE is
    model.sinusoidal_positions. It exists because sin(a + b) and cos(a + b) are linear in (sin a, cos a):
    each (sin, cos) pair of channels is turned by the angle k * freq_i, whatever p is. This is why the
    paper expected the model to "attend by relative position", and the idea RoPE (3.2) builds on."""
    inv_freq = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (dim/2,) as in 1.1
    c, s = torch.cos(k * inv_freq), torch.sin(k * inv_freq)
    M = torch.zeros(dim, dim)
    # row vector (sin a, cos a) @ [[cos b, -sin b], [sin b, cos b]] = (sin(a + b), cos(a + b))
    M[0::2, 0::2] = torch.diag(c)
    M[0::2, 1::2] = torch.diag(-s)
    M[1::2, 0::2] = torch.diag(s)
    M[1::2, 1::2] = torch.diag(c)
    return M
