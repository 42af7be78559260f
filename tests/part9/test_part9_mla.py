"""9.2 Grouped-query attention and multi-head latent attention (part9_reasoning/model.py), each against an
independent computation: Part 8's model (the code before 9.2), a per-head loop written here from the module's
weights, recomputation without a cache, numbers counted in the caches themselves, torch's FLOP counter.

Run: python -m pytest -q tests/part9/test_part9_mla.py
"""
import math

import pytest
import test_carried_forward
import torch
from partloader import load_part
from torch.utils.flop_counter import FlopCounterMode

model, decode, checkpoint = load_part("part9_reasoning", "model", "decode", "checkpoint")
model8 = load_part("part8_alignment", "model")

BASE = dict(vocab_size=64, block_size=32, n_layer=2, n_head=4, n_embd=32)  # head size 8
VARIANTS = {  # name: (config overrides, absorbed MLA path)
    "mha": ({}, False),
    "gqa2": ({"n_kv_head": 2}, False),
    "mqa": ({"n_kv_head": 1}, False),
    "mla": ({"attention": "mla"}, False),  # defaults: rope_dim 4 (hs/2), kv_latent 8 (n_embd/4)
    "mla_absorbed": ({"attention": "mla"}, True),
}
PROMPTS = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [7, 8], [9], [3, 3, 3, 3]]


def make_model(variant="mla", big_weights=True, **overrides):
    flags, absorb = VARIANTS[variant]
    torch.manual_seed(0)
    gpt = model.GPT(model.GPTConfig(**{**BASE, **flags, **overrides})).eval()
    if big_weights:  # GPT-2's small init gives near-uniform logits that repeat the input token; larger weights
        with torch.no_grad():  # make greedy choices vary, so a wrong mask or a wrong position shows up
            for p in gpt.parameters():
                if p.dim() == 2:
                    p.normal_(0, 0.3)
    return model.set_absorb(gpt, absorb)


def random_tokens(*shape, seed=1):
    return torch.randint(0, 64, shape, generator=torch.Generator().manual_seed(seed))


decode_with_cache = test_carried_forward.decode_with_cache  # the prompt at once, then a token per call


# ----------------------------------------------------------------------------------------------------
# Config
@pytest.mark.parametrize("overrides, words", [
    ({"n_kv_head": 3}, "n_kv_head"),                                   # 4 query heads do not split into 3 groups
    ({"n_kv_head": -1}, "n_kv_head"),
    ({"attention": "gqa"}, "attention"),
    ({"attention": "mla", "pos_embedding": "learned"}, "rope"),        # MLA's positions live in its RoPE key
    ({"attention": "mla", "rope_dim": 3}, "rope_dim"),                 # RoPE turns pairs
    ({"attention": "mla", "rope_dim": -2}, "rope_dim"),
    ({"attention": "mla", "kv_latent": 2, "rope_dim": 4}, "kv_latent"),  # the rope key must fit in half the row
    ({"attention": "mla", "kv_latent": 9}, "kv_latent"),              # odd: no two equal halves
    ({"attention": "mla", "n_kv_head": 2}, "n_kv_head"),
    ({"kv_latent": 16}, "--attention mla"),                           # would be silently ignored by MHA
    ({"rope_dim": 4}, "--attention mla"),
])
def test_bad_attention_configs_are_one_line_errors(overrides, words):
    with pytest.raises(ValueError, match=words) as err:
        model.GPTConfig(**{**BASE, **overrides})
    assert "\n" not in str(err.value)


def test_mla_defaults_follow_deepseek_v2s_proportions():
    cfg = model.GPTConfig(n_embd=128, n_head=4, attention="mla")
    assert (cfg.rope_dim, cfg.kv_latent) == (16, 32)  # head size 32 / 2; width 128 / 4
    assert model.GPTConfig(**cfg.__dict__) == cfg  # the stored (resolved) config builds the same model


# ----------------------------------------------------------------------------------------------------
# 9.2 GQA
@pytest.mark.parametrize("use_sdpa", [True, False])
@pytest.mark.parametrize("n_kv_head", [0, 4])
def test_gqa_with_one_kv_head_per_query_head_is_exactly_part8s_attention(use_sdpa, n_kv_head):
    torch.manual_seed(0)
    old = model8.GPT(model8.GPTConfig(**BASE, use_sdpa=use_sdpa)).eval()
    new = model.GPT(model.GPTConfig(**BASE, use_sdpa=use_sdpa, n_kv_head=n_kv_head)).eval()
    new.load_state_dict(old.state_dict())  # the same names and shapes: Part 8's checkpoints load
    idx = random_tokens(2, 20)
    assert torch.equal(new(idx)[0], old(idx)[0])


def rotate(x, positions, base=10000.0):
    """RoPE written out: channel i pairs with channel i + d/2, and pair i turns by position * base^(-2i/d)."""
    d = x.size(-1)
    angle = positions[:, None].double() * base ** (-torch.arange(0, d, 2).double() / d)   # (T, d/2)
    cos, sin = angle.cos().float(), angle.sin().float()
    x1, x2 = x[..., :d // 2], x[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def visible(T, window=0, n_sink=0):
    """visible[i][j]: query i may read key j (causal, 3.5 window and sinks), written as nested loops."""
    return [[j <= i and (not window or i - j < window or j < n_sink) for j in range(T)] for i in range(T)]


def attend(q, k, v, scale, see):
    """One head by hand: softmax over the visible keys of q.k * scale, then the weighted sum of v."""
    T = q.size(0)
    out = torch.zeros(T, v.size(-1))
    for i in range(T):
        keys = [j for j in range(T) if see[i][j]]
        weights = torch.softmax(torch.stack([q[i] @ k[j] for j in keys]) * scale, dim=0)
        out[i] = sum(w * v[j] for w, j in zip(weights, keys))
    return out


@pytest.mark.parametrize("use_sdpa", [True, False])
@pytest.mark.parametrize("n_kv_head", [2, 1])
def test_gqa_equals_a_loop_over_query_heads_with_their_groups_kv_head(use_sdpa, n_kv_head):
    """4 query heads; query head h reads key/value head h // (4 / n_kv_head)."""
    cfg = model.GPTConfig(**BASE, n_kv_head=n_kv_head, use_sdpa=use_sdpa)
    attn = make_model("mha", n_kv_head=n_kv_head, use_sdpa=use_sdpa).blocks[0].attn
    x = torch.randn(1, 7, 32, generator=torch.Generator().manual_seed(3))
    hs, kv = 8, 8 * n_kv_head
    q, k, v = attn.c_attn(x)[0].split([32, kv, kv], dim=-1)
    pos = torch.arange(7)
    heads = []
    for h in range(4):
        g = h // (4 // n_kv_head)
        qh, kh = rotate(q[:, hs * h:hs * (h + 1)], pos), rotate(k[:, hs * g:hs * (g + 1)], pos)
        heads.append(attend(qh, kh, v[:, hs * g:hs * (g + 1)], 1 / math.sqrt(hs), visible(7)))
    expected = attn.c_proj(torch.cat(heads, dim=-1))
    assert cfg.n_kv_head == n_kv_head and attn.c_attn.out_features == 32 + 2 * kv
    assert torch.allclose(attn(x)[0], expected, atol=1e-4)


# ----------------------------------------------------------------------------------------------------
# 9.2 MLA
def mla_by_hand(attn, x, window=0, n_sink=0):
    """MLA for one sequence x (T, C) from the module's weights, head by head:
    q_h = [q_nope_h | q_rope_h];  [k_rope | c] = W_down x, c RMS-normalized;  k_h = W_uk_h c;  v_h = W_uv_h c;
    score_h = (q_nope_h . k_h + RoPE(q_rope_h) . RoPE(k_rope)) / sqrt(hs + rope_dim)."""
    T, nh, hs, dr = x.size(0), attn.n_head, attn.head_size, attn.rope_dim
    pos = torch.arange(T)
    q = attn.q_proj(x)                                                     # (T, nh * (hs + dr))
    down = x @ attn.kv_down.weight.T + attn.kv_down.bias                   # (T, dr + dc)
    k_rope, c = rotate(down[:, :dr], pos), down[:, dr:]
    c = c / (c.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt() * attn.kv_norm.weight  # RMSNorm, eps 1e-5
    heads = []
    for h in range(nh):
        q_h = q[:, h * (hs + dr):(h + 1) * (hs + dr)]
        w_uk, w_uv = attn.k_up.weight[h * hs:(h + 1) * hs], attn.v_up.weight[h * hs:(h + 1) * hs]  # (hs, d_c)
        k_h = torch.cat([c @ w_uk.T, k_rope], dim=-1)                      # (T, hs + dr)
        q_full = torch.cat([q_h[:, :hs], rotate(q_h[:, hs:], pos)], dim=-1)
        heads.append(attend(q_full, k_h, c @ w_uv.T, 1 / math.sqrt(hs + dr), visible(T, window, n_sink)))
    return attn.c_proj(torch.cat(heads, dim=-1))


@pytest.mark.parametrize("flags", [{}, {"use_sdpa": False}, {"window": 3, "n_sink": 1}, {"rope_dim": 2}])
@pytest.mark.parametrize("variant", ["mla", "mla_absorbed"])
def test_mla_equals_a_per_head_loop_from_its_weights(variant, flags):
    attn = make_model(variant, **flags).blocks[0].attn
    assert isinstance(attn, model.LatentAttention) and attn.absorb == (variant == "mla_absorbed")
    with torch.no_grad():
        attn.kv_norm.weight.uniform_(0.5, 1.5)  # a gain that is not all ones, so that using it is checked
    x = torch.randn(1, 7, 32, generator=torch.Generator().manual_seed(3))
    expected = mla_by_hand(attn, x[0], flags.get("window", 0), flags.get("n_sink", 0))
    assert torch.allclose(attn(x)[0], expected, atol=1e-4)


# window 5 without sinks: the rolling cache is exact at any length (sinks move to slots 0..n_sink-1, see below)
@pytest.mark.parametrize("flags", [{}, {"use_sdpa": False}, {"window": 5}])
def test_absorbed_equals_naive_over_a_sequence_and_step_by_step_with_a_cache(flags):
    gpt = make_model("mla", **flags)
    tokens = random_tokens(2, 32)
    naive = gpt(tokens)[0]
    model.set_absorb(gpt, True)
    assert torch.allclose(gpt(tokens)[0], naive, atol=1e-5)
    calls = []
    hooks = [b.attn.k_up.register_forward_hook(lambda *a: calls.append(1)) for b in gpt.blocks]
    stepped, _ = decode_with_cache(gpt, tokens, n_prompt=5)
    assert calls == []  # absorbed: the cached latents are never up-projected to keys
    for h in hooks:
        h.remove()
    assert torch.allclose(stepped, naive, atol=1e-5)
    model.set_absorb(gpt, False)
    assert torch.allclose(decode_with_cache(gpt, tokens, n_prompt=5)[0], naive, atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# Decoding with a cache equals recomputing, for every variant
@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("flags", [{}, {"window": 12}, {"use_sdpa": False}])
def test_cached_greedy_generation_equals_recomputation(variant, flags):
    gpt = make_model(variant, **flags)
    prompt = random_tokens(3, 4)
    fast = gpt.generate(prompt, 28, temperature=0, use_cache=True)
    slow = gpt.generate(prompt, 28, temperature=0, use_cache=False)
    assert torch.equal(fast, slow)


def recomputed(gpt, prompt, n):
    return gpt.generate(torch.tensor([prompt]), n, temperature=0, use_cache=False)[0, len(prompt):].tolist()


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("flags", [{}, {"window": 6, "n_sink": 2}, {"use_sdpa": False}])
def test_batched_decoding_of_prompts_of_different_lengths_equals_recomputation(variant, flags):
    gpt = make_model(variant, block_size=48, **flags)
    assert decode.generate_batch(gpt, PROMPTS, 30) == [recomputed(gpt, p, 30) for p in PROMPTS]


# ----------------------------------------------------------------------------------------------------
# 3.6 the rolling cache, for MLA (the checks Part 3 makes for MHA in tests/test_carried_forward.py)
@pytest.mark.parametrize("variant", ["mla", "mla_absorbed"])
def test_mla_rolling_cache_equals_full_windowed_attention_over_a_long_stream(variant):
    """Window only: every cached rope key is re-rotated to its slot at each eviction, so relative offsets stay
    the true ones and the stream equals full windowed attention however long it runs."""
    gpt = make_model(variant, big_weights=False, block_size=64, window=6)
    tokens = random_tokens(2, 64)  # 10x the window
    cached, cache = decode_with_cache(gpt, tokens, n_prompt=3)
    assert torch.allclose(cached, gpt(tokens)[0], atol=1e-5)
    half = (4 + 8) // 2  # [k_rope | latent] as two halves of (rope_dim + kv_latent) / 2
    assert all(c.k.shape == c.v.shape == (2, 1, 6, half) for c in cache)


@pytest.mark.parametrize("variant", ["mla", "mla_absorbed"])
def test_mla_rolling_cache_positions_are_slots_in_the_cache(variant):
    """StreamingLLM positions, with one layer: once tokens are evicted, the newest token's logits equal a fresh
    forward over just [sinks + last window tokens] at positions 0..n_sink+window-1."""
    gpt = make_model(variant, big_weights=False, n_layer=1, block_size=64, window=6, n_sink=2)
    tokens = random_tokens(1, 40)
    cached, _ = decode_with_cache(gpt, tokens, n_prompt=1)
    for t in (8, 20, 39):
        kept = torch.cat([tokens[:, :2], tokens[:, t - 5:t + 1]], dim=1)  # 2 sinks + the last 6 tokens
        assert torch.allclose(cached[:, t], gpt(kept)[0][:, -1], atol=1e-5)


def test_generating_past_the_context_rolls_the_mla_cache():
    gpt = make_model("mla")
    prompt = random_tokens(1, 40)  # longer than block_size 32: cropped, as without the cache
    out = gpt.generate(prompt, 200, temperature=0)
    assert out.shape == (1, 240) and torch.equal(out[:, :40], prompt)
    first = gpt.generate(prompt[:, -32:], 1, temperature=0, use_cache=False)[:, -1]
    assert torch.equal(out[:, 40], first)  # the first new token only saw the last 32 prompt tokens


# ----------------------------------------------------------------------------------------------------
# Cache size: the formula against what the caches hold
def held(tensors):
    return sum(t.numel() for t in tensors)


@pytest.mark.parametrize("variant, per_token", [("mha", 2 * 2 * 32), ("gqa2", 2 * 2 * 2 * 8), ("mqa", 2 * 2 * 8),
                                                ("mla", 2 * (4 + 8))])  # n_layer * numbers per layer
def test_kv_cache_numbers_per_token_is_what_the_caches_hold(variant, per_token):
    gpt = make_model(variant)
    assert model.kv_cache_numbers_per_token(gpt.config) == per_token
    _, cache = decode_with_cache(gpt, random_tokens(3, 20), n_prompt=5)  # Part 3's cache: 3 rows x 20 tokens
    assert held(t for c in cache for t in (c.k, c.v)) == per_token * 3 * 20
    fast = decode.DecodeCache(gpt, len(PROMPTS), 24)  # decode.py's buffers: 4 rows x 24 slots
    logits, lengths = decode.prefill(gpt, fast, PROMPTS)
    decode.decode_step(gpt, fast, logits.argmax(-1, keepdim=True), lengths[:, None], n_slots=10)
    assert held(t for c in fast.layers for t in (c.k, c.v)) == per_token * 4 * 24


# ----------------------------------------------------------------------------------------------------
# Training: FLOPs, gradients, checkpoints
@pytest.mark.parametrize("variant", ["gqa2", "mla"])
def test_flops_per_token_agrees_with_torchs_flop_counter(variant):
    """As Part 4's test (tests/test_carried_forward.py): the formula counts 6 FLOPs per parameter, so it is
    larger than the counted matmuls by exactly 6 per 1-d parameter (norm gains, biases); MLA's scores are
    hs + rope_dim wide, its up-projections ordinary matmuls over every token (the naive path trains)."""
    gpt = make_model(variant, big_weights=False, use_sdpa=False).train()
    idx, targets = random_tokens(2, 3, 32)  # 3 sequences of block_size tokens
    with FlopCounterMode(display=False) as counter:
        gpt(idx, targets)[1].backward()
    outside_matmuls = sum(p.numel() for p in gpt.parameters() if p.dim() == 1)
    assert gpt.flops_per_token() - 6 * outside_matmuls == counter.get_total_flops() / idx.numel()


@pytest.mark.parametrize("variant", ["gqa2", "mla"])
def test_every_weight_gets_a_gradient_and_a_checkpoint_round_trips(variant, tmp_path):
    gpt = make_model(variant, big_weights=False, dropout=0.1).train()
    idx, targets = random_tokens(2, 4, 32)
    gpt(idx, targets)[1].backward()
    for name, p in gpt.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    path = str(tmp_path / "mla.pt")
    checkpoint.save_checkpoint(path, gpt, gpt.config, step=1, val_loss=0.0)
    loaded, ckpt = checkpoint.load_checkpoint(path)
    assert loaded.config == gpt.config and ckpt["model_config"]["attention"] == gpt.config.attention
    gpt.eval(), loaded.eval()
    assert torch.equal(loaded(idx)[0], gpt(idx)[0])


# ----------------------------------------------------------------------------------------------------
# The benchmark (mla_bench.py)
def test_bench_refuses_bad_values_and_existing_results_in_one_line(tmp_path):
    bench = load_part("part9_reasoning", "mla_bench")
    for flags, words in ((["--steps", "0"], "--steps"), (["--rope_dim", "5"], "rope_dim"),
                         (["--n_head", "3"], "n_embd"), (["--data", str(tmp_path / "none.txt")], "not found")):
        with pytest.raises(SystemExit, match=words) as err:
            bench.check_args(bench.parse_args([*flags, "--out_dir", str(tmp_path)]))
        assert str(err.value).startswith("error: ") and "\n" not in str(err.value)
    (tmp_path / "mla.md").write_text("an earlier run")
    with pytest.raises(SystemExit, match="--overwrite true"):
        bench.check_args(bench.parse_args(["--out_dir", str(tmp_path)]))
    bench.check_args(bench.parse_args(["--out_dir", str(tmp_path), "--overwrite", "true"]))  # allowed


TINY = ["--n_layer", "2", "--n_embd", "64", "--n_head", "4", "--block_size", "64", "--batch_size", "16",
        "--steps", "500", "--lr", "3e-3", "--warmup_steps", "30", "--kv_latent", "24", "--rope_dim", "8",
        "--eval_interval", "250", "--eval_iters", "10", "--log_interval", "250", "--decode_tokens", "16",
        "--decode_batch", "2", "--decode_rounds", "1"]  # ~33 s on one CPU thread
# MLA's val loss minus MHA's on TINY, measured: +0.101 with the default seed 1337 (the one this test runs); seeds
# 1, 2, 3: +0.053, +0.123, +0.081 (GQA: +0.080 with 1337, then -0.011, +0.146, +0.015). 500 steps of this small
# model are early training, where seeds differ by +-0.04, hence the wide margin. The target (+0.05) is
# measured by the default bench run, part9_reasoning/results/mla.md.
MAX_GAP = 0.2


@pytest.mark.milestone
def test_mla_caches_under_a_quarter_of_mhas_numbers_at_a_small_loss_gap(tmp_path):
    """The issue's target, on a config small enough for CI: MLA (latent 24 + RoPE key 8 = 32 numbers per layer
    against MHA's 2 x 64 = 128) trained with the same recipe, batches and seed as MHA."""
    bench = load_part("part9_reasoning", "mla_bench")
    rows, verdict = bench.main([*TINY, "--out_dir", str(tmp_path)])
    assert verdict["mla_share"] == 32 / 128 <= 0.25
    assert verdict["mla_gap"] <= MAX_GAP, verdict
    assert [r["cache_numbers_held"] for r in rows] == [2 * 128, 2 * 32, 2 * 32]  # counted in real caches
    assert all((tmp_path / name).is_file() for name in ("mla.md", "mla.json", "mla.png"))
