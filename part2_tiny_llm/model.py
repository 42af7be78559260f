"""A minimal GPT, written out piece by piece.

Part 1 of the course builds each piece of a decoder-only Transformer by hand:
  1.1 positional embeddings (learned or sinusoidal)
  1.3 a single causal attention head (the Head module stays in Part 1; from here on: causal_attention)
  1.4 multi-head attention (split into heads, attend, concatenate, project)
  1.5 the feed-forward network (GELU, 4x expansion), residual connections and LayerNorm
  1.6 the Transformer block, stacked into a GPT

Names follow nanoGPT (GPTConfig, Block, forward(idx, targets) -> (logits, loss)) because they are the
ones most learners have already seen.

Part 2 trains it on real text, so it adds:
  2.3 cross-entropy over every position of the shifted targets (softmax and cross_entropy: functional.py)
  2.5 sampling with temperature, top-k and top-p (sampling.py; generate stays here)
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from functional import cross_entropy, softmax  # 2.3 written out in functional.py
from sampling import sample_next_token, top_k_filter, top_p_filter  # noqa: F401  2.5 in sampling.py


@dataclass
class GPTConfig:
    vocab_size: int = 256     # 2.1 byte-level: one token per possible byte value
    block_size: int = 64       # the longest context the model can see
    n_layer: int = 4           # Transformer blocks stacked
    n_head: int = 4            # attention heads (n_embd must divide by it)
    n_embd: int = 128          # width of the residual stream
    dropout: float = 0.0       # dropout probability while training (0 = off)
    bias: bool = True          # biases in Linear layers and LayerNorm
    pos_embedding: str = "learned"  # 1.1: "learned" or "sinusoidal"
    use_sdpa: bool = True      # fast path: F.scaled_dot_product_attention (same math, fused kernel)

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:  # subtle: also refuses nan, which compares False with everything
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.pos_embedding not in ("learned", "sinusoidal"):
            raise ValueError(f"pos_embedding must be 'learned' or 'sinusoidal', got {self.pos_embedding!r}")


# ----------------------------------------------------------------------------------------------------
# 1.1 Positional embeddings
def sinusoidal_positions(n_positions: int, dim: int) -> torch.Tensor:
    """The fixed encoding of "Attention Is All You Need":
    PE[pos, 2i] = sin(pos / 10000^(2i/dim)),  PE[pos, 2i+1] = cos(pos / 10000^(2i/dim))."""
    pos = torch.arange(n_positions, dtype=torch.float32)[:, None]          # (T, 1)
    inv_freq = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float32) / dim)  # (dim/2,)
    angles = pos * inv_freq                                                 # (T, dim/2)
    pe = torch.zeros(n_positions, dim)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return pe


# ----------------------------------------------------------------------------------------------------
# 1.2/1.3 Attention: softmax(Q K^T / sqrt(d)) V, with a causal mask so token t sees only tokens <= t
def causal_attention(q, k, v, dropout_p=0.0, training=False):
    """Manual attention. q, k, v: (..., T, hs). Returns (..., T, hs)."""
    T, hs = q.size(-2), q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)                        # (..., T, T)
    mask = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    scores = scores.masked_fill(~mask, float("-inf"))  # future positions get zero weight after softmax
    weights = softmax(scores, dim=-1)
    weights = F.dropout(weights, dropout_p, training)
    return weights @ v


def split_heads(x, n_head):
    """(B, T, C) -> (B, nh, T, hs): each head gets its own slice of the channels."""
    B, T, C = x.shape
    return x.view(B, T, n_head, C // n_head).transpose(1, 2)


def merge_heads(x):
    """(B, nh, T, hs) -> (B, T, C): the inverse of split_heads (concatenate the heads)."""
    B, nh, T, hs = x.shape
    return x.transpose(1, 2).contiguous().view(B, T, nh * hs)


class CausalSelfAttention(nn.Module):
    """1.4 Multi-head attention. All heads are computed at once: one Linear makes q, k, v for every
    head, split_heads gives each head its slice, and merge_heads concatenates them back."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.use_sdpa = config.use_sdpa
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v together
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)      # output projection
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        q, k, v = self.c_attn(x).split(x.size(-1), dim=2)                   # each (B, T, C)
        q, k, v = (split_heads(t, self.n_head) for t in (q, k, v))          # each (B, nh, T, hs)
        p = self.dropout if self.training else 0.0
        if self.use_sdpa:  # one fused kernel, same result as the manual path (tested)
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)
        else:
            y = causal_attention(q, k, v, p, self.training)
        return self.resid_dropout(self.c_proj(merge_heads(y)))             # (B, T, C)


# ----------------------------------------------------------------------------------------------------
# 1.5 Feed-forward network and LayerNorm
class MLP(nn.Module):
    """Position-wise feed-forward: expand to 4*C, GELU, project back to C."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class LayerNorm(nn.Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, over the last dimension."""

    def __init__(self, dim, bias=True, eps=1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x):
        # Part 1 wrote the formula out (and tested it against this call); for real training the fused
        # kernel computes the same thing in one pass and makes a whole training step ~2x faster on CPU.
        return F.layer_norm(x, (x.size(-1),), self.weight, self.bias, self.eps)


# ----------------------------------------------------------------------------------------------------
# 1.6 The Transformer block: pre-norm, with a residual connection around attention and around the MLP
class Block(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))  # the residual stream carries x through untouched
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)           # token embeddings
        if config.pos_embedding == "learned":
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
        else:  # a buffer, not a parameter: sinusoidal positions are not trained
            self.register_buffer("wpe_fixed", sinusoidal_positions(config.block_size, config.n_embd), persistent=False)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying: one matrix reads and writes tokens
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/sqrt(2*n_layer)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    def _init_weights(self, module):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def position_embedding(self, T, device):
        if self.config.pos_embedding == "learned":
            return self.wpe(torch.arange(T, device=device))                  # (T, C)
        return self.wpe_fixed[:T]

    def forward(self, idx, targets=None):
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}; crop the input")
        x = self.drop(self.wte(idx) + self.position_embedding(T, idx.device))  # (B, T, C)
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))                                   # (B, T, vocab)
        loss = None
        if targets is not None:  # 2.3 targets[b, t] is the token after idx[b, t]: score every position at once
            loss = cross_entropy(logits.flatten(0, 1), targets.flatten())  # functional.py
        return logits, loss

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None):
        """Append max_new_tokens tokens to idx (B, T), sampling each from the model (2.5)."""
        for _ in range(max_new_tokens):
            idx_cond = idx[:, -self.config.block_size:]  # the model only sees the last block_size tokens
            logits = self(idx_cond)[0][:, -1, :]
            next_id = sample_next_token(logits, temperature, top_k, top_p, generator)
            idx = torch.cat([idx, next_id], dim=1)
        return idx
