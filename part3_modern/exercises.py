"""Part 3 exercises: one class or function per exercise, each a worked solution (README.md, "Exercises").

Replace a solution with your own and run the same test:

    python -m pytest tests/part3/test_part3_exercises.py

The tests check each solution against an independent computation (a loop over heads, the formula, the
unchanged model), so they pass for any correct answer, not only for this one.
"""
import copy
import dataclasses

import torch
import torch.nn as nn

from model import GPT, GPTConfig, CausalSelfAttention, apply_rope, causal_attention, rope_tables


# ----------------------------------------------------------------------------------------------------
# Exercise 3.A (builds on 3.4): grouped-query attention, and a KV cache n_head / n_kv_head times smaller
class GQASelfAttention(CausalSelfAttention):
    """Task: attention with n_head query heads but only n_kv_head key/value heads (n_kv_head divides
    n_head); query head h reads key/value head h // (n_head // n_kv_head). The KV cache (3.4) then stores
    n_kv_head heads per layer: LLaMA-2 70B and Mistral 7B use this to cut its memory 8x / 4x.
    n_kv_head = n_head is ordinary multi-head attention, n_kv_head = 1 is multi-query attention.
    (Sliding windows and the SDPA fast path are left out to keep the exercise short.)"""

    def __init__(self, config: GPTConfig, n_kv_head: int):
        super().__init__(config)
        if n_kv_head < 1 or config.n_head % n_kv_head:
            raise ValueError(f"n_kv_head ({n_kv_head}) must divide n_head ({config.n_head})")
        if config.window:
            raise ValueError("this GQA exercise supports window=0 only")
        self.n_kv_head, self.head_size = n_kv_head, config.n_embd // config.n_head
        kv_dim = n_kv_head * self.head_size
        self.c_attn = nn.Linear(config.n_embd, config.n_embd + 2 * kv_dim, bias=config.bias)  # q, then smaller k, v

    def forward(self, x, cache=None):
        B, T, C = x.shape
        kv_dim = self.n_kv_head * self.head_size
        q, k, v = self.c_attn(x).split([C, kv_dim, kv_dim], dim=2)                       # (B, T, C), 2x (B, T, kv_dim)
        q = q.view(B, T, self.n_head, self.head_size).transpose(1, 2)                    # (B, nh, T, hs)
        k, v = (t.view(B, T, self.n_kv_head, self.head_size).transpose(1, 2) for t in (k, v))  # (B, n_kv, T, hs)
        start = 0 if cache is None else cache.make_room(T)
        if self.rope:
            cos, sin = self.rope_cos[start:start + T], self.rope_sin[start:start + T]
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:  # the cache only ever holds the n_kv_head shared heads
            k, v = cache.append(k, v)                                                     # (B, n_kv, L, hs)
        group = self.n_head // self.n_kv_head
        k, v = (t.repeat_interleave(group, dim=1) for t in (k, v))  # (B, nh, L, hs), after the cache: only n_kv kept
        y = causal_attention(q, k, v, self.dropout if self.training else 0.0, self.training)   # (B, nh, T, hs)
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, C)))

    @torch.no_grad()
    def load_from(self, mha: CausalSelfAttention):
        """Start from a multi-head layer: keep its queries and output projection, and give each key/value
        head the mean of its group's heads (Ainslie et al., 2023, who then "uptrain" it: see uptrain)."""
        C, hs, n_kv = self.c_proj.in_features, self.head_size, self.n_kv_head
        group = self.n_head // n_kv

        def pool(t):  # (C, ...) rows of n_head heads -> (n_kv * hs, ...) rows, each group averaged
            return t.reshape(n_kv, group, hs, *t.shape[1:]).mean(1).reshape(n_kv * hs, *t.shape[1:])

        for name in ("weight", "bias"):
            full = getattr(mha.c_attn, name)
            if full is not None:
                wq, wk, wv = full.split(C, dim=0)
                getattr(self.c_attn, name).copy_(torch.cat([wq, pool(wk), pool(wv)]))
        self.c_proj.load_state_dict(mha.c_proj.state_dict())


def gqa_gpt(n_kv_head: int, config: GPTConfig = None, mha: GPT = None) -> GPT:
    """A GPT whose attention layers are GQASelfAttention: a new one from config (initialised like GPT,
    then pooled), or converted from a trained multi-head GPT `mha` (which is left untouched)."""
    gpt = copy.deepcopy(mha) if mha is not None else GPT(config)
    for block in gpt.blocks:
        gqa = GQASelfAttention(gpt.config, n_kv_head)
        gqa.load_from(block.attn)
        block.attn = gqa
    return gpt


# ----------------------------------------------------------------------------------------------------
# Exercise 3.B (builds on 3.2): stretch RoPE past the training context
def scaled_rope_tables(n_positions, head_size, scale, kind="ntk", base=10000.0):
    """Task: RoPE tables (cos, sin) for a model trained on contexts `scale` times shorter.
    kind="linear" (position interpolation, Chen et al. 2023): position p is read as p / scale, so every
        angle stays inside the trained range, but neighbouring tokens get closer than ever seen in training;
    kind="ntk" (NTK-aware, bloc97 2023): raise the base to base * scale^(hs / (hs - 2)), which leaves the
        fastest pair (local order) untouched and slows the slowest pair exactly by `scale`."""
    if kind == "ntk":
        return rope_tables(n_positions, head_size, base * scale ** (head_size / (head_size - 2)))
    if kind != "linear":
        raise ValueError(f"kind must be 'linear' or 'ntk', got {kind!r}")
    inv_freq = base ** (-torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)  # (hs/2,) as in 3.2
    angles = (torch.arange(n_positions, dtype=torch.float32)[:, None] / scale) * inv_freq   # (T, hs/2)
    angles = torch.cat([angles, angles], dim=-1)                                           # (T, hs)
    return angles.cos(), angles.sin()


def extend_context(gpt: GPT, block_size: int, kind: str = "ntk") -> GPT:
    """A copy of a trained RoPE model that accepts block_size tokens, with kind "ntk", "linear" or "none"
    (plain RoPE tables, longer: positions the model never saw)."""
    longer = GPT(dataclasses.replace(gpt.config, block_size=block_size))
    longer.load_state_dict(gpt.state_dict())  # RoPE tables are buffers outside the state dict
    hs, scale = gpt.config.n_embd // gpt.config.n_head, block_size / gpt.config.block_size
    if kind != "none":
        cos, sin = scaled_rope_tables(block_size, hs, scale, kind)
        for block in longer.blocks:
            block.attn.rope_cos, block.attn.rope_sin = cos, sin
    return longer.eval()


@torch.no_grad()
def loss_by_position(gpt: GPT, data: torch.Tensor, T: int, batch_size: int = 16) -> torch.Tensor:
    """Mean loss at each position 0..T-1 over the consecutive windows of T + 1 tokens of data: (T,).
    Positions past the training context show what a scaling trick buys."""
    n = (len(data) - 1) // T
    x, y = data[:n * T].view(n, T), data[1:n * T + 1].view(n, T)                  # (n, T) each
    losses = []
    for i in range(0, n, batch_size):
        logits = gpt(x[i:i + batch_size])[0]                                         # (b, T, vocab)
        losses.append(nn.functional.cross_entropy(logits.transpose(1, 2), y[i:i + batch_size], reduction="none"))
    return torch.cat(losses).mean(0)


def uptrain(gpt: GPT, data: torch.Tensor, steps: int, lr: float = 3e-4, batch_size: int = 12, seed: int = 0) -> GPT:
    """Go on training every weight for a few steps (the GQA paper "uptrains" a converted model for 5% of
    the original steps). train.py's loop reduced to its core: warmup and decay, clipping, AdamW."""
    from train import TrainConfig, get_batch, lr_at, make_optimizer

    cfg = TrainConfig(max_steps=steps, lr=lr, warmup_steps=max(1, steps // 10), batch_size=batch_size)
    optimizer, gen = make_optimizer(gpt, cfg), torch.Generator().manual_seed(seed)
    gpt.train()
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, cfg)
        _, loss = gpt(*get_batch(data, gpt.config.block_size, batch_size, gen))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(gpt.parameters(), cfg.grad_clip)
        optimizer.step()
    return gpt.eval()


# ----------------------------------------------------------------------------------------------------
# The figures in README.md, "Exercises": python part3_modern/exercises.py [checkpoint]
def main(ckpt_path="out/part3/best.pt", data_path="data/shakespeare_100k.txt"):
    from tokenizer import ByteTokenizer
    from train import TrainConfig, load_checkpoint, load_text, split_data

    gpt, _ = load_checkpoint(ckpt_path)
    gpt.eval()
    T = gpt.config.block_size
    train, val = split_data(ByteTokenizer().encode(load_text(data_path)), TrainConfig().val_fraction, T)
    print(f"3.B val loss by position, trained on {T} tokens (mean over positions 0-{T - 1} | {T}-{2 * T - 1})")
    print(f"  trained context {T}:  {loss_by_position(gpt, val, T).mean():.4f}")
    for kind in ("none", "linear", "ntk"):
        by_pos = loss_by_position(extend_context(gpt, 2 * T, kind), val, 2 * T)
        print(f"  {kind:6s} at {2 * T}:  {by_pos[:T].mean():.4f} | {by_pos[T:].mean():.4f}")
    mha_cache = sum(c.k.numel() + c.v.numel() for c in _filled_cache(gpt, val, T))
    steps = 100  # 5% of the default run's 2000 steps, as in the GQA paper
    print(f"3.A val loss (whole split) right after conversion | after {steps} more steps; KV cache size")
    for n_kv in (gpt.config.n_head, 2, 1):  # n_kv = n_head: the unchanged model, trained as long (the control)
        gqa = gqa_gpt(n_kv, mha=gpt).eval()
        cache = sum(c.k.numel() + c.v.numel() for c in _filled_cache(gqa, val, T))
        before = loss_by_position(gqa, val, T).mean()
        after = loss_by_position(uptrain(gqa, train, steps), val, T).mean()
        print(f"  n_kv_head {n_kv}: {before:.4f} | {after:.4f}; KV cache {cache / mha_cache:.2f}x")


def _filled_cache(gpt, data, T):
    cache = gpt.new_cache()
    gpt(data[None, :T], cache=cache)
    return cache


if __name__ == "__main__":
    import sys

    main(*sys.argv[1:2])
