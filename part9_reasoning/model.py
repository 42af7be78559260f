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

Part 3 modernises it the way LLaMA and Mistral did. Each upgrade has a switch in GPTConfig, so the same
code trains Part 2's model (norm="layernorm", pos_embedding="learned", mlp="gelu") and every step between:
  3.1 RMSNorm instead of LayerNorm
  3.2 RoPE: rotate queries and keys by their position instead of adding a position vector
  3.3 SwiGLU feed-forward network
  3.4 KV cache: generate one token per step without recomputing the text before it (kv_cache.py)
  3.5 sliding-window attention and attention sinks
  3.6 rolling-buffer KV cache: stream text of any length in a fixed amount of memory (kv_cache.py)

Part 5 swaps the MLP of some blocks for a Mixture-of-Experts layer (moe.py). n_expert=0 keeps the dense
model, so every later part can use either:
  5.2 Block takes an MoE layer where the config says so; GPT.forward adds the router's auxiliary losses
  5.4 hybrids: MoE in every moe_every-th block only, dense MLPs in the others; shared experts (moe.py)

Part 9 shrinks the KV cache, the memory that limits how many sequences a GPU decodes at once:
  9.2 grouped-query attention (n_kv_head key/value heads shared by groups of query heads) and DeepSeek-V2's
      multi-head latent attention (attention="mla": the cache keeps one small latent per token for all heads)
"""
import math
from dataclasses import dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F

from functional import softmax  # 2.3 written out in functional.py
from kv_cache import KVCache  # 3.4/3.6 in kv_cache.py
from moe import MoE  # 5.2 in moe.py
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
    pos_embedding: str = "rope"  # 1.1: "learned" or "sinusoidal"; 3.2: "rope"
    norm: str = "rmsnorm"      # 3.1: "rmsnorm" or Part 2's "layernorm"
    mlp: str = "swiglu"        # 3.3: "swiglu" or Part 2's "gelu"
    window: int = 0            # 3.5: a token sees only the last `window` tokens (0 = all of them)
    n_sink: int = 0            # 3.5: ...plus the first n_sink tokens of the text (attention sinks)
    use_sdpa: bool = True      # fast path: F.scaled_dot_product_attention (same math, fused kernel)
    mlp_hidden: int = 0        # hidden units of the dense MLP (0 = 4*n_embd for GELU, 8*n_embd/3 for SwiGLU)
    n_expert: int = 0          # 5.2 experts per MoE layer (0 = a dense MLP in every block)
    top_k: int = 2             # 5.1 experts each token is sent to
    expert_hidden: int = 0     # 5.2 hidden units of each expert (0 = the dense MLP's / top_k: same active params)
    capacity_factor: float = 1.25  # 5.2 slots per expert, x the balanced share; extra tokens are dropped (0 = dropless)
    moe_every: int = 1         # 5.4 MoE in every moe_every-th block, dense MLPs in the others (1 = all MoE)
    n_shared_expert: int = 0   # 5.4 experts that every token passes through besides its routed ones (DeepSeekMoE)
    aux_loss_coef: float = 0.01  # 5.1 weight of the load-balancing loss in the training loss (0 = off)
    z_loss_coef: float = 0.001   # 5.3 weight of the router z-loss (0 = off)
    bias_update_rate: float = 0.0  # 5.3 > 0: aux-loss-free balancing, the selection bias moves this much per step
    n_kv_head: int = 0         # 9.2 GQA: key/value heads, each shared by n_head/n_kv_head query heads (0 = n_head: MHA)
    attention: str = "mha"     # 9.2 "mha" (GQA with --n_kv_head) or "mla": multi-head latent attention (DeepSeek-V2)
    kv_latent: int = 0         # 9.2 mla: width d_c of the latent the cache keeps for k and v (0 = n_embd/4, even)
    rope_dim: int = 0          # 9.2 mla: width of the RoPE key all heads share, and of each RoPE query (0 = hs/2)

    def __post_init__(self):
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:  # subtle: also refuses nan, which compares False with everything
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        choices = {"pos_embedding": ("learned", "sinusoidal", "rope"), "norm": ("layernorm", "rmsnorm"),
                   "mlp": ("gelu", "swiglu"), "attention": ("mha", "mla")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}; got {getattr(self, name)!r}")
        if self.pos_embedding == "rope" and (self.n_embd // self.n_head) % 2:
            raise ValueError(f"RoPE rotates pairs of channels: head size {self.n_embd // self.n_head} must be even")
        if self.window < 0 or self.n_sink < 0:
            raise ValueError(f"window and n_sink must be >= 0; got window {self.window}, n_sink {self.n_sink}")
        if self.n_sink + self.window > self.block_size or self.n_sink >= self.block_size:
            raise ValueError(f"n_sink + window ({self.n_sink} + {self.window}) must fit in block_size "
                             f"{self.block_size}")
        if self.pos_embedding == "rope" and self.block_size < 2:  # subtle: the rolling cache (3.6) keeps a token
            raise ValueError("block_size must be >= 2 with RoPE: the rolling KV cache keeps one old token")
        if min(self.mlp_hidden, self.n_expert, self.expert_hidden, self.n_shared_expert) < 0 or self.moe_every < 1:
            raise ValueError("mlp_hidden, n_expert, expert_hidden and n_shared_expert must be >= 0, moe_every >= 1")
        if self.top_k < 1 or self.n_expert and self.top_k > self.n_expert:
            raise ValueError(f"top_k must be between 1 and n_expert ({self.n_expert}), got {self.top_k}")
        if self.n_expert and self.mlp != "swiglu":
            raise ValueError("the experts are SwiGLU networks: use --mlp swiglu with --n_expert")
        for name in ("capacity_factor", "aux_loss_coef", "z_loss_coef", "bias_update_rate"):
            if not 0 <= getattr(self, name) < float("inf"):  # subtle: written so that nan fails too
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.n_expert and not self.expert_hidden:  # 0 = the dense MLP's hidden units split over top_k experts
            self.expert_hidden = max(1, round((self.mlp_hidden or swiglu_hidden(self.n_embd)) / self.top_k))
        if self.n_kv_head < 0 or self.n_kv_head and self.n_head % self.n_kv_head:
            raise ValueError(f"n_head ({self.n_head}) must be divisible by n_kv_head ({self.n_kv_head}); 0 = n_head")
        if min(self.kv_latent, self.rope_dim) < 0 or self.rope_dim % 2:
            raise ValueError(f"kv_latent must be >= 0 and rope_dim even (RoPE turns pairs of channels); got kv_latent "
                             f"{self.kv_latent}, rope_dim {self.rope_dim}")
        if self.attention == "mha" and (self.kv_latent or self.rope_dim):  # subtle: else silently ignored
            raise ValueError("kv_latent and rope_dim size MLA's cache: add --attention mla, or leave them 0")
        if self.attention == "mla" and self.n_kv_head:
            raise ValueError("n_kv_head is GQA's (--attention mha); MLA caches one latent for all heads: leave it 0")
        if self.attention == "mla" and self.pos_embedding != "rope":
            raise ValueError("MLA keeps positions in its own RoPE key: use --pos_embedding rope with --attention mla")
        if self.attention == "mla":  # 0 = rope_dim hs/2 as in DeepSeek-V2; the latent a quarter of the width
            self.rope_dim = self.rope_dim or max(2, self.n_embd // self.n_head // 4 * 2)
            self.kv_latent = self.kv_latent or max(self.rope_dim, self.n_embd // 8 * 2)
            if self.kv_latent % 2 or self.kv_latent < self.rope_dim:  # subtle: the cache row travels in two halves
                raise ValueError(f"kv_latent ({self.kv_latent}) must be even and >= rope_dim ({self.rope_dim}): the "
                                 "cache keeps [k_rope || latent] as two equal halves, the RoPE key in the first")

    def is_moe(self, layer):
        """5.4 Whether block `layer` (0-based) holds an MoE layer: every moe_every-th one, counting from 1."""
        return self.n_expert > 0 and (layer + 1) % self.moe_every == 0


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


# 3.2 RoPE. Channels are paired as split halves (channel i with channel i + hs/2, as in GPT-NeoX and
# Hugging Face's LLaMA; Meta's LLaMA code pairs neighbours 2i, 2i+1 instead: same idea, other order).
# Pair i of the vector at position p is rotated by the angle p * base^(-2i/hs). A rotation by angle a
# followed by the dot product with a vector rotated by b only sees b - a, so q.k depends on the
# relative offset of the two tokens, never on where they sit in the text.
def rope_tables(n_positions: int, head_size: int, base: float = 10000.0):
    """cos and sin of every rotation angle, each (n_positions, head_size); both halves of a pair share an angle."""
    inv_freq = base ** (-torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)  # (hs/2,)
    angles = torch.arange(n_positions, dtype=torch.float32)[:, None] * inv_freq          # (T, hs/2)
    angles = torch.cat([angles, angles], dim=-1)                                          # (T, hs)
    return angles.cos(), angles.sin()


def rotate_half(x):
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension: a 90-degree turn of every pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x, cos, sin):
    """Rotate every pair of x (..., T, hs) by the angles in cos, sin (T, hs), or any shapes that broadcast:
    (x1, x2) -> (x1 cos - x2 sin, x2 cos + x1 sin), the 2-d rotation written for all pairs at once."""
    return x * cos + rotate_half(x) * sin


# ----------------------------------------------------------------------------------------------------
# 1.2/1.3 Attention: softmax(Q K^T / sqrt(d)) V, with a causal mask so token t sees only tokens <= t
def causal_attention(q, k, v, dropout_p=0.0, training=False, mask=None, scale=None):
    """Manual attention. q: (..., Tq, hs), k, v: (..., Tk, hs). Returns (..., Tq, hs).
    mask (Tq, Tk) bool, or any shape that broadcasts to (..., Tq, Tk), True where a query may attend;
    None = causal, the queries being the last Tq tokens.
    9.2 scale: the scores' factor when it is not 1/sqrt(hs) (MLA's absorbed queries are wider than its heads)."""
    Tq, Tk, hs = q.size(-2), k.size(-2), q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs) if scale is None else q @ k.transpose(-2, -1) * scale
    if mask is None:  # subtle: with a KV cache (3.4) the Tq new queries come after Tk - Tq cached keys
        mask = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(Tk - Tq)
    scores = scores.masked_fill(~mask, float("-inf"))  # future positions get zero weight after softmax
    weights = softmax(scores, dim=-1)
    weights = F.dropout(weights, dropout_p, training)
    return weights @ v


# 3.5 Sliding window and attention sinks
def attention_mask(T, window=0, n_sink=0, device=None):
    """(T, T) bool, True where query i may see key j: causal (j <= i); with window > 0 only the last `window`
    tokens (i - j < window) plus the first n_sink tokens (j < n_sink), which every query keeps seeing.
    T=5, window=2, n_sink=1:  1 . . . .
                              1 1 . . .
                              1 1 1 . .
                              1 . 1 1 .
                              1 . . 1 1"""
    i = torch.arange(T, device=device)[:, None]                            # (T, 1) query positions
    j = torch.arange(T, device=device)[None, :]                            # (1, T) key positions
    mask = j <= i
    if window > 0:
        mask &= (i - j < window) | (j < n_sink)
    return mask


def split_heads(x, n_head, rope=None):
    """(B, T, C) -> (B, nh, T, hs): each head gets its own slice of the channels.
    3.2 rope = (cos, sin), each (T, hs), or (B, T, hs) when every row has its own positions (decode.py):
    also rotate every head's vectors by their positions."""
    B, T, C = x.shape
    x = x.view(B, T, n_head, C // n_head)                                  # (B, T, nh, hs)
    if rope is not None:
        # rotated before the heads move to dim 1, as in Meta's LLaMA code: each token's channels stay together
        # in memory, which the GPU kernels read faster (MFU 35.8% -> 38.3% on an H100, part4_scaling/README.md)
        cos, sin = rope
        x = apply_rope(x, cos.unsqueeze(-2), sin.unsqueeze(-2))  # tables ([B,] T, 1, hs): same for every head
    return x.transpose(1, 2)


def merge_heads(x):
    """(B, nh, T, hs) -> (B, T, C): the inverse of split_heads (concatenate the heads)."""
    B, nh, T, hs = x.shape
    return x.transpose(1, 2).contiguous().view(B, T, nh * hs)


def repeat_kv(x, n_head):
    """9.2 GQA: (B, n_kv_head, T, hs) -> (B, n_head, T, hs), each key/value head repeated for its group of
    query heads: query head h reads kv head h // (n_head / n_kv_head). The manual path needs the copy; SDPA's
    enable_gqa reads the shared heads in place."""
    return x.repeat_interleave(n_head // x.size(1), dim=1)


class CausalSelfAttention(nn.Module):
    """1.4 Multi-head attention. All heads are computed at once: one Linear makes q, k, v for every
    head, split_heads gives each head its slice, and merge_heads concatenates them back."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.n_kv_head = config.n_kv_head or config.n_head  # 9.2 GQA: fewer k, v heads, so a smaller cache
        self.kv_width = self.n_kv_head * (config.n_embd // config.n_head)  # 9.2 of k and of v (n_embd for MHA)
        self.dropout = config.dropout
        self.use_sdpa = config.use_sdpa
        self.window, self.n_sink = config.window, config.n_sink
        self.rope = config.pos_embedding == "rope"
        self.c_attn = nn.Linear(config.n_embd, config.n_embd + 2 * self.kv_width, bias=config.bias)  # q, k, v together
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)      # output projection
        self.resid_dropout = nn.Dropout(config.dropout)
        if self.rope:  # 3.2 buffers, not parameters: nothing to learn, and not saved in checkpoints
            cos, sin = rope_tables(config.block_size, config.n_embd // config.n_head)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)

    def rotate_back(self, k, n):
        """3.6 Turn cached keys (..., hs) back by n positions: R(-n) has cos(-a) = cos(a), sin(-a) = -sin(a)."""
        return apply_rope(k, self.rope_cos[n], -self.rope_sin[n])

    def forward(self, x, cache=None):
        T = x.size(1)
        start = 0 if cache is None else cache.make_room(T)  # 3.4 position (cache slot) of the first new token
        # 3.2 q and k are rotated by their positions start..start+T-1; v is not. Fast path (decode.py): its
        # cache gives every row its own positions instead, a (B, T) tensor that picks rows of the tables
        where = slice(start, start + T) if isinstance(start, int) else start
        rope = (self.rope_cos[where], self.rope_sin[where]) if self.rope else None
        q, k, v = self.c_attn(x).split([x.size(-1), self.kv_width, self.kv_width], dim=2)  # (B, T, C), 9.2 k, v
        q, k = split_heads(q, self.n_head, rope), split_heads(k, self.n_kv_head, rope)  # (B, nh or n_kv_head, T, hs)
        v = split_heads(v, self.n_kv_head)
        if cache is not None:  # 3.4 the new tokens also attend to the cached ones (9.2 only n_kv_head heads are kept)
            k, v = cache.append(k, v)                                       # each (B, n_kv_head, L, hs)
        # 3.5 window/sinks need an explicit mask; a single new query may see every key the cache kept (3.6)
        mask = attention_mask(T, self.window, self.n_sink, x.device) if self.window and T > 1 else None
        if getattr(cache, "mask", None) is not None:  # fast path (decode.py): (B, 1, T, L), padded keys hidden
            mask = cache.mask
        p = self.dropout if self.training else 0.0
        grouped = self.n_kv_head < self.n_head  # 9.2 GQA: every group of query heads shares one k, v head
        if self.use_sdpa:  # one fused kernel, same result as the manual path (tested)
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, is_causal=mask is None and T > 1,
                                               enable_gqa=grouped)
        else:
            if grouped:
                k, v = repeat_kv(k, self.n_head), repeat_kv(v, self.n_head)
            y = causal_attention(q, k, v, p, self.training, mask)
        return self.resid_dropout(self.c_proj(merge_heads(y)))             # (B, T, C)


# ----------------------------------------------------------------------------------------------------
# 9.2 Multi-head latent attention (DeepSeek-V2, 2024). MHA's cache holds every head's k and v: 2 * n_embd
# numbers per token and layer. MLA caches one small latent c per token instead (kv_latent = d_c wide), shared
# by every head; each head rebuilds its own k and v from it:
#     c = RMSNorm(W_dkv x)   k_h = W_uk_h c            v_h = W_uv_h c
# RoPE cannot live in k_h: a key rotated by its position is no longer W_uk_h c, and the absorbed path below
# needs it to be. So position gets its own key, k_rope = RoPE(W_kr x), rope_dim wide and ONE for all heads
# (decoupled RoPE), and every query gets a matching part q_rope_h:
#     score_h = (q_nope_h . k_h + q_rope_h . k_rope) / sqrt(hs + rope_dim)
# The cache keeps [k_rope || c], rope_dim + kv_latent numbers per token and layer (kv_cache_numbers_per_token).
#
# Two ways to compute the same attention from that cache:
#   naive     up-project every cached latent to k_h and v_h, then attention as in 1.4;
#   absorbed  q_nope_h . (W_uk_h c) = (W_uk_h^T q_nope_h) . c: move the query into the latent space instead, and
#             [q_rope_h || q_lat_h] . [k_rope || c] is the whole score, one dot product against the cache as it
#             is. Likewise sum_j a_j W_uv_h c_j = W_uv_h (sum_j a_j c_j): attend over the latents, up-project once.
# Decoding one token, naive pays L x d_c x 2C multiply-adds per layer to rebuild L cached keys and values;
# absorbed pays nothing per cached token beyond the scores. Training (T queries over the same T keys) uses the
# naive path: each token is up-projected once anyway, and its scores are hs + rope_dim wide instead of the
# latent's d_c + rope_dim (DeepSeek-V2: 192 vs 576). Both are tested equal.
class LatentAttention(nn.Module):
    """9.2 MLA: the cache holds only the rope key and the latent, as one "head" shared by all heads.

    It speaks the cache interface of CausalSelfAttention (kv_cache.KVCache, decode.DecodeCache, PaddedRows),
    which takes a key and a value of the same shape (decode.py allocates its value buffer like the key's). So the
    row [k_rope || c] travels as its two halves, each (B, 1, T, (rope_dim + d_c) / 2): nothing is stored twice.
    The rope key lies wholly in the first half (rope_dim <= d_c), the one 3.6's rotate_back is given."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.head_size = config.n_head, config.n_embd // config.n_head
        self.kv_latent, self.rope_dim = config.kv_latent, config.rope_dim
        self.dropout = config.dropout
        self.use_sdpa = config.use_sdpa
        self.window, self.n_sink = config.window, config.n_sink
        self.scale = 1 / math.sqrt(self.head_size + self.rope_dim)  # a score sums hs + rope_dim products
        self.absorb = False  # the inference path (set_absorb); both give the same result
        self.q_proj = nn.Linear(config.n_embd, config.n_head * (self.head_size + self.rope_dim), bias=config.bias)
        self.kv_down = nn.Linear(config.n_embd, self.rope_dim + self.kv_latent, bias=config.bias)  # W_kr, W_dkv
        # no bias in the up-projections: the absorbed path folds these matrices into q and into the output
        # DeepSeek-V2's code normalizes the latent before caching it (kv_a_layernorm). Measured with mla_bench.py,
        # 450 steps, 2 seeds x lr 2e-3 and 3e-3: MLA's val loss +0.047 from MHA's on average with it, +0.059 without
        self.kv_norm = RMSNorm(self.kv_latent)
        self.k_up = nn.Linear(self.kv_latent, config.n_embd, bias=False)  # W_uk of every head, stacked
        self.v_up = nn.Linear(self.kv_latent, config.n_embd, bias=False)  # W_uv of every head, stacked
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)  # output projection
        self.resid_dropout = nn.Dropout(config.dropout)
        cos, sin = rope_tables(config.block_size, self.rope_dim)  # 3.2 for the rope_dim channels only
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)

    def rotate_back(self, k, n):
        """3.6 on the cache's first half, [k_rope || start of c]: only k_rope was rotated, so only it turns back."""
        k_rope, rest = k.split([self.rope_dim, k.size(-1) - self.rope_dim], dim=-1)
        return torch.cat([apply_rope(k_rope, self.rope_cos[n], -self.rope_sin[n]), rest], dim=-1)

    def forward(self, x, cache=None):
        B, T, _ = x.shape
        start = 0 if cache is None else cache.make_room(T)  # 3.4 slot of the first new token; decode.py: (B, T)
        where = slice(start, start + T) if isinstance(start, int) else start
        cos, sin = self.rope_cos[where], self.rope_sin[where]             # ([B,] T, rope_dim)
        q = self.q_proj(x).view(B, T, self.n_head, self.head_size + self.rope_dim)
        q_nope, q_rope = q.split([self.head_size, self.rope_dim], dim=-1)  # (B, T, nh, hs), (B, T, nh, rope_dim)
        q_rope = apply_rope(q_rope, cos.unsqueeze(-2), sin.unsqueeze(-2))  # the same angles for every head
        k_rope, c = self.kv_down(x).split([self.rope_dim, self.kv_latent], dim=-1)  # (B, T, rope_dim), (B, T, d_c)
        kv = torch.cat([apply_rope(k_rope, cos, sin), self.kv_norm(c)], dim=-1)[:, None]  # (B, 1, T, rope_dim + d_c)
        if cache is not None:  # 3.4 only this row is kept, as a "key" half and a "value" half (see the docstring)
            kv = torch.cat(cache.append(*kv.chunk(2, dim=-1)), dim=-1)     # (B, 1, L, rope_dim + d_c)
        # 3.5 window/sinks and decode.py's padding mask, exactly as in CausalSelfAttention
        mask = attention_mask(T, self.window, self.n_sink, x.device) if self.window and T > 1 else None
        if getattr(cache, "mask", None) is not None:
            mask = cache.mask
        attend = self.attend_absorbed if self.absorb else self.attend_naive
        y = attend(q_nope.transpose(1, 2), q_rope.transpose(1, 2), kv, mask)  # (B, nh, T, hs)
        return self.resid_dropout(self.c_proj(merge_heads(y)))             # (B, T, C)

    def attend_naive(self, q_nope, q_rope, kv, mask):
        """Rebuild every head's keys and values from the cached latents, then attention as in 1.4."""
        k_rope, c = kv[:, 0].split([self.rope_dim, self.kv_latent], dim=-1)  # (B, L, rope_dim), (B, L, d_c)
        k_nope = split_heads(self.k_up(c), self.n_head)                     # (B, nh, L, hs)
        v = split_heads(self.v_up(c), self.n_head)                          # (B, nh, L, hs)
        k = torch.cat([k_nope, k_rope[:, None].expand(-1, self.n_head, -1, -1)], dim=-1)  # one rope key for all
        return self.attention(torch.cat([q_nope, q_rope], dim=-1), k, v, mask)

    def attend_absorbed(self, q_nope, q_rope, kv, mask):
        """The same attention against the cache as it is: W_uk folded into the queries, W_uv into the output.
        (A server would also fold W_uk into q_proj once; here it stays a step, to show the algebra.)"""
        w_uk = self.k_up.weight.view(self.n_head, self.head_size, self.kv_latent)  # k_h = w_uk[h] @ c
        w_uv = self.v_up.weight.view(self.n_head, self.head_size, self.kv_latent)  # v_h = w_uv[h] @ c
        q_lat = q_nope @ w_uk                                                # W_uk_h^T q_nope_h: (B, nh, T, d_c)
        c = kv[..., self.rope_dim:]                                          # (B, 1, L, d_c): the values
        y_lat = self.attention(torch.cat([q_rope, q_lat], dim=-1), kv, c, mask)  # sum_j a_j c_j: (B, nh, T, d_c)
        return y_lat @ w_uv.transpose(1, 2)                                  # W_uv_h (sum_j a_j c_j): (B, nh, T, hs)

    def attention(self, q, k, v, mask):
        """softmax(q.k * scale) v for both paths. k and v may have one head that every query head reads
        (absorbed): SDPA's enable_gqa, or broadcasting in the manual path."""
        p = self.dropout if self.training else 0.0
        if self.use_sdpa:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p, scale=self.scale,
                                                  is_causal=mask is None and q.size(-2) > 1,
                                                  enable_gqa=k.size(1) < q.size(1))
        return causal_attention(q, k, v, p, self.training, mask, scale=self.scale)


def set_absorb(model, absorb=True):
    """9.2 Switch every MLA layer of model to the absorbed (True) or the naive (False) path; returns model."""
    for module in model.modules():
        if isinstance(module, LatentAttention):
            module.absorb = absorb
    return model


def kv_cache_numbers_per_token(config: GPTConfig):
    """9.2 Numbers the KV cache keeps per token, all layers together (x 2 bytes in bf16). Per layer, with hs the
    head size (n_embd / n_head); the figures for n_embd 128, 4 heads (hs 32):
        MHA  k and v of every head           2 * n_head * hs = 2 * n_embd    2 * 128          = 256
        GQA  k and v of n_kv_head heads      2 * n_kv_head * hs              2 * 1 * 32       =  64
        MLA  the rope key and the latent     rope_dim + kv_latent            16 + 32          =  48"""
    if config.attention == "mla":
        per_layer = config.rope_dim + config.kv_latent
    else:
        per_layer = 2 * (config.n_kv_head or config.n_head) * (config.n_embd // config.n_head)
    return config.n_layer * per_layer


# ----------------------------------------------------------------------------------------------------
# 1.5 Feed-forward network and LayerNorm
def swiglu_hidden(n_embd):
    """3.3 SwiGLU has three matrices instead of two, so its hidden size is 2/3 of 4*C = 8C/3 to keep the
    parameter count; rounded to the nearest integer (C=128 -> 341, 130,944 weights vs GELU's 131,072)."""
    return round(8 * n_embd / 3)


class MLP(nn.Module):
    """Position-wise feed-forward: expand to 4*C, GELU, project back to C.
    3.3 SwiGLU: silu(x W_gate) * (x W_up), then project back: the gate decides, per hidden unit, how much
    of the "up" value passes. Gate and up come out of one Linear (like q, k, v) and are split."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.swiglu = config.mlp == "swiglu"
        hidden = config.mlp_hidden or (swiglu_hidden(config.n_embd) if self.swiglu else 4 * config.n_embd)
        n_fc = 2 * hidden if self.swiglu else hidden  # SwiGLU: gate and up together
        self.c_fc = nn.Linear(config.n_embd, n_fc, bias=config.bias)
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x):
        h = self.c_fc(x)                                                    # (B, T, hidden or 2*hidden)
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)                                   # each (B, T, hidden)
            h = F.silu(gate) * up
        else:
            h = F.gelu(h)
        return self.dropout(self.c_proj(h))


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


class RMSNorm(nn.Module):
    """3.1 y = x / sqrt(mean(x^2) + eps) * weight: LayerNorm without subtracting the mean and without a
    bias. It only rescales each vector to unit root-mean-square; one statistic instead of two."""

    def __init__(self, dim, eps=1e-5):
        super().__init__()
        self.eps = eps  # the same eps as LayerNorm, so the comparison changes one thing
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def make_norm(config: GPTConfig):
    return RMSNorm(config.n_embd) if config.norm == "rmsnorm" else LayerNorm(config.n_embd, bias=config.bias)


# ----------------------------------------------------------------------------------------------------
# 1.6 The Transformer block: pre-norm, with a residual connection around attention and around the MLP
class Block(nn.Module):
    def __init__(self, config: GPTConfig, layer=0):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = LatentAttention(config) if config.attention == "mla" else CausalSelfAttention(config)  # 9.2
        self.ln_2 = make_norm(config)
        self.mlp = MoE(config) if config.is_moe(layer) else MLP(config)  # 5.2 the same place, the same shapes

    def forward(self, x, cache=None):
        x = x + self.attn(self.ln_1(x), cache)  # the residual stream carries x through untouched
        x = x + self.mlp(self.ln_2(x))
        return x


class GPT(nn.Module):
    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)           # token embeddings
        if config.pos_embedding == "learned":
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
        elif config.pos_embedding == "sinusoidal":  # a buffer, not a parameter: sinusoidal positions are not trained
            self.register_buffer("wpe_fixed", sinusoidal_positions(config.block_size, config.n_embd), persistent=False)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config, i) for i in range(config.n_layer)])
        self.ln_f = make_norm(config)
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

    def num_active_params(self):
        """5.2 The parameters one token uses: all of them, less the routed experts it is not sent to
        (top_k of n_expert per MoE layer). The total grows with n_expert; this, and the FLOPs, do not."""
        unused = sum(m.experts.c_fc.numel() + m.experts.c_proj.numel() for m in self.modules() if isinstance(m, MoE))
        return self.num_params() - unused * (1 - self.config.top_k / max(1, self.config.n_expert))

    @torch.no_grad()
    def grow_vocab(self, vocab_size):
        """6.1 Room for new tokens (the chat tokens): the embedding, and the output layer tied to it, get
        rows for ids vocab_size_old .. vocab_size-1. A new row starts at the mean of the old rows, not at
        random: its logit then starts near the average token's, so the new tokens neither dominate the first
        predictions nor start impossibly unlikely (Hewitt, "Initializing new word embeddings", 2021)."""
        old = self.wte.weight
        if vocab_size < old.size(0):
            raise ValueError(f"grow_vocab cannot shrink the vocabulary ({old.size(0)} -> {vocab_size})")
        new_rows = old.mean(0, keepdim=True).expand(vocab_size - old.size(0), -1)
        self.wte = nn.Embedding(vocab_size, old.size(1), device=old.device, dtype=old.dtype)
        self.wte.weight.copy_(torch.cat([old, new_rows]))
        self.lm_head = nn.Linear(old.size(1), vocab_size, bias=False, device=old.device, dtype=old.dtype)
        self.lm_head.weight = self.wte.weight  # tie them again: the new matrix both reads and writes tokens
        self.config = replace(self.config, vocab_size=vocab_size)

    def position_embedding(self, start, T, device):
        if self.config.pos_embedding == "learned":
            return self.wpe(torch.arange(start, start + T, device=device))   # (T, C)
        return self.wpe_fixed[start:start + T]

    def new_cache(self):
        """3.4/3.6 One KVCache per layer. With window=0 the cache keeps the last block_size tokens (minus the
        sinks): a model never attends further back than it was trained to."""
        window = self.config.window or self.config.block_size - self.config.n_sink
        rope = self.config.pos_embedding == "rope"
        return [KVCache(window, self.config.n_sink, b.attn.rotate_back if rope else None) for b in self.blocks]

    def forward(self, idx, targets=None, cache=None):
        logits = self.lm_head(self.features(idx, cache))                      # (B, T, vocab)
        loss = None
        if targets is not None:  # 2.3 targets[b, t] is the token after idx[b, t]: score every position at once
            # torch's fused loss, on every device: the same result as functional.cross_entropy (tested to 1e-6);
            # with the course's, a training step of the GPU preset on an H100 takes 1.03x as long (compiled;
            # 1.04x eager), and on CPU the two are as fast (part2_tiny_llm/bench_ops.py)
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
            if self.training:  # 5.1/5.3 zero for a dense model; validation losses stay pure cross-entropy
                loss = loss + self.aux_loss()
        return logits, loss

    def features(self, idx, cache=None):
        """7.2 The last hidden state after the final norm, (B, T, C): what lm_head turns into logits, and
        what a reward model's head reads instead."""
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}; crop the input")
        x = self.wte(idx)                                                     # (B, T, C)
        if self.config.pos_embedding != "rope":  # 3.2 RoPE adds nothing here: it rotates q and k in attention
            start = cache[0].n_seen if cache else 0  # 3.4 position of idx[:, 0] in the text
            if start + T > self.config.block_size:
                raise ValueError(f"{self.config.pos_embedding} positions stop at block_size "
                                 f"{self.config.block_size}; only RoPE models can stream past it")
            x = x + self.position_embedding(start, T, idx.device)
        x = self.drop(x)
        for i, block in enumerate(self.blocks):
            x = block(x, None if cache is None else cache[i])
        return self.ln_f(x)

    def aux_loss(self):
        """5.1 load balancing and 5.3 router z-loss of every MoE layer's last forward, weighted by the config."""
        c = self.config
        layers = [b.mlp for b in self.blocks if isinstance(b.mlp, MoE)]
        return sum(c.aux_loss_coef * m.aux["balance"] + c.z_loss_coef * m.aux["z"] for m in layers)

    @torch.no_grad()
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None,
                 use_cache=True):
        """Append max_new_tokens tokens to idx (B, T), sampling each from the model (2.5).
        use_cache (3.4): run the prompt once, then feed only the newest token; off = rerun the last
        block_size tokens for every new token (Part 2). The two agree exactly while the text fits in
        block_size; past it the cache rolls (3.6) while the rerun starts each time from a cropped text."""
        if use_cache and self.config.pos_embedding != "rope" and idx.size(1) + max_new_tokens > self.config.block_size:
            use_cache = False  # subtle: learned/sinusoidal positions end at block_size, so only RoPE caches can roll
        cache = self.new_cache() if use_cache else None
        idx_cond = idx[:, -self.config.block_size:]  # the model only sees the last block_size tokens
        for _ in range(max_new_tokens):
            logits = self(idx_cond, cache=cache)[0][:, -1, :]
            next_id = sample_next_token(logits, temperature, top_k, top_p, generator)
            idx = torch.cat([idx, next_id], dim=1)
            # 3.4 the cache holds the past: only the new token goes in next; without it, the whole text again
            idx_cond = next_id if cache is not None else idx[:, -self.config.block_size:]
        return idx

    def flops_per_token(self):
        """Training FLOPs per token: 6 per parameter (2 forward + 4 backward, one multiply-add each), plus
        attention's scores and weighted sum, 12 * n_layer * n_embd * block_size (PaLM appendix B).
        5.2 only the parameters a token uses count: an MoE's idle experts cost it nothing.
        9.2 GQA: the same (every query head still scores hs-wide keys). MLA, naive path (the one training takes):
        scores hs + rope_dim wide, so 6 * n_layer * n_head * rope_dim * block_size more."""
        c = self.config
        rope_scores = 6 * c.n_layer * c.n_head * c.rope_dim * c.block_size if c.attention == "mla" else 0  # 9.2
        return 6 * self.num_active_params() + 12 * c.n_layer * c.n_embd * c.block_size + rope_scores
