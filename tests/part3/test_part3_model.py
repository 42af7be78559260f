"""Part 3: each upgrade checked against an independent computation (formulas, naive loops, full recomputes)."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from partloader import assert_one_line_error, load_part, run_script

model, train, sample = load_part("part3_modern", "model", "train", "sample")

PART2_FLAGS = dict(norm="layernorm", pos_embedding="learned", mlp="gelu")


def small_config(**overrides):
    base = dict(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_embd=32)
    return model.GPTConfig(**{**base, **overrides})


def small_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return model.GPT(small_config(**overrides)).eval()


# --- 3.1 RMSNorm
def test_rmsnorm_matches_the_formula():
    torch.manual_seed(0)
    norm = model.RMSNorm(16)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(4, 7, 16, dtype=torch.float64) * 3 + 1
    expected = torch.empty_like(x)
    for idx in torch.cartesian_prod(torch.arange(4), torch.arange(7)).tolist():  # one vector at a time
        v = x[idx[0], idx[1]]
        rms = math.sqrt(sum(a * a for a in v.tolist()) / 16 + 1e-5)
        expected[idx[0], idx[1]] = v / rms * norm.weight.double()
    assert torch.allclose(norm(x.float()).double(), expected, atol=1e-5)


def test_rmsnorm_differs_from_layernorm_only_by_the_mean():
    x = torch.randn(3, 5, 16)
    centred = x - x.mean(-1, keepdim=True)
    layer = model.LayerNorm(16, bias=False)
    assert torch.allclose(model.RMSNorm(16)(centred), layer(centred), atol=1e-5)  # zero-mean input: the same
    assert not torch.allclose(model.RMSNorm(16)(x + 2), layer(x + 2), atol=1e-2)


# --- 3.2 RoPE
def rotate_by_hand(x, pos, base=10000.0):
    """Split-halves RoPE with an explicit 2x2 rotation per pair: channel i pairs with channel i + hs/2."""
    hs = x.numel()
    out = x.clone()
    for i in range(hs // 2):
        angle = pos * base ** (-2 * i / hs)
        a, b = x[i].item(), x[i + hs // 2].item()
        out[i] = a * math.cos(angle) - b * math.sin(angle)
        out[i + hs // 2] = a * math.sin(angle) + b * math.cos(angle)
    return out


def test_rope_matches_explicit_pair_rotations():
    cos, sin = model.rope_tables(20, 8)
    x = torch.randn(20, 8)
    rotated = model.apply_rope(x, cos, sin)
    for pos in (0, 1, 7, 19):
        assert torch.allclose(rotated[pos], rotate_by_hand(x[pos], pos), atol=1e-5)


def test_rope_at_position_zero_is_the_identity_and_keeps_lengths():
    cos, sin = model.rope_tables(50, 16)
    x = torch.randn(2, 3, 50, 16)
    rotated = model.apply_rope(x, cos, sin)
    assert torch.equal(rotated[:, :, 0], x[:, :, 0])
    assert torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-4)  # a rotation changes no lengths


@settings(max_examples=50, deadline=None)
@given(m=st.integers(0, 60), n=st.integers(0, 60), shift=st.integers(1, 60))
def test_rope_score_depends_only_on_the_relative_offset(m, n, shift):
    """q at position m, k at position n: moving both by the same shift leaves q.k unchanged."""
    cos, sin = model.rope_tables(128, 16)
    gen = torch.Generator().manual_seed(m * 1000 + n)
    q, k = torch.randn(2, 16, generator=gen)

    def score(pq, pk):
        return model.apply_rope(q, cos[pq], sin[pq]) @ model.apply_rope(k, cos[pk], sin[pk])

    assert score(m + shift, n + shift).item() == pytest.approx(score(m, n).item(), abs=1e-4)


def test_rope_score_does_change_with_the_offset():
    cos, sin = model.rope_tables(64, 16)
    q = k = torch.ones(16)
    scores = [(model.apply_rope(q, cos[10], sin[10]) @ model.apply_rope(k, cos[10 - d], sin[10 - d])).item()
              for d in range(4)]
    assert scores[0] == pytest.approx(16.0) and len({round(s, 4) for s in scores}) == 4


def test_split_heads_rotates_each_head_as_rotating_after_the_split():
    """split_heads applies RoPE before moving the heads to dim 1 (a faster memory layout); the result must be
    the same as splitting first and rotating each head's (T, hs) block with the plain tables."""
    cos, sin = model.rope_tables(10, 8)
    x = torch.randn(2, 10, 32)  # C = 4 heads x 8
    plain = model.split_heads(x, 4)                                          # (B, nh, T, hs)
    assert torch.equal(plain[:, 1], x[:, :, 8:16])  # head 1 gets channels 8..15
    assert torch.allclose(model.split_heads(x, 4, (cos, sin)), model.apply_rope(plain, cos, sin), atol=1e-6)


def test_rope_model_has_no_position_parameters_or_buffers_in_checkpoints():
    gpt = small_model()
    assert not hasattr(gpt, "wpe") and all("rope" not in key for key in gpt.state_dict())


# --- 3.3 SwiGLU
@pytest.mark.parametrize("n_embd", [32, 48, 96, 128, 200, 256])
def test_swiglu_parameter_count_matches_gelu_up_to_rounding(n_embd):
    """SwiGLU has 3*C*h weights, GELU 2*C*4C = 8C^2: with h = round(8C/3) they differ by <= 3C/2."""
    cfg = dict(n_embd=n_embd, n_head=4, bias=False)
    gelu = sum(p.numel() for p in model.MLP(small_config(mlp="gelu", **cfg)).parameters())
    swiglu = sum(p.numel() for p in model.MLP(small_config(mlp="swiglu", **cfg)).parameters())
    assert gelu == 8 * n_embd**2
    assert abs(swiglu - gelu) <= 1.5 * n_embd
    if n_embd % 3 == 0:
        assert swiglu == gelu


def test_swiglu_matches_the_formula():
    torch.manual_seed(0)
    mlp = model.MLP(small_config(mlp="swiglu", bias=False))
    x = torch.randn(2, 5, 32)
    h = model.swiglu_hidden(32)
    w_gate, w_up = mlp.c_fc.weight[:h], mlp.c_fc.weight[h:]
    expected = (F.silu(x @ w_gate.T) * (x @ w_up.T)) @ mlp.c_proj.weight.T
    assert torch.allclose(mlp(x), expected, atol=1e-6)


# --- 3.5 sliding window and attention sinks
def naive_mask(T, window, n_sink):
    return torch.tensor([[j <= i and (window == 0 or i - j < window or j < n_sink) for j in range(T)]
                         for i in range(T)])


@pytest.mark.parametrize("T, window, n_sink", [(8, 0, 0), (8, 3, 0), (8, 3, 2), (12, 1, 1), (10, 10, 0), (9, 4, 8)])
def test_attention_mask_matches_naive_loops(T, window, n_sink):
    assert torch.equal(model.attention_mask(T, window, n_sink), naive_mask(T, window, n_sink))


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_window_hides_tokens_outside_it_except_sinks(use_sdpa):
    """One layer, window 4, one sink: the last token's output depends on tokens 0 and 28..31 only."""
    gpt = small_model(n_layer=1, window=4, n_sink=1, use_sdpa=use_sdpa)
    idx = torch.randint(0, 50, (1, 32))
    changed = idx.clone()
    changed[0, 1:28] = (idx[0, 1:28] + 1) % 50       # everything the window and the sink do not cover
    assert torch.allclose(gpt(idx)[0][0, -1], gpt(changed)[0][0, -1], atol=1e-6)
    changed[0, 0] = (idx[0, 0] + 1) % 50              # the sink itself
    assert not torch.allclose(gpt(idx)[0][0, -1], gpt(changed)[0][0, -1], atol=1e-6)


@pytest.mark.parametrize("flags", [{"window": 5, "n_sink": 2}, PART2_FLAGS])  # the default: test_carried_forward.py
def test_causality_future_tokens_do_not_change_the_past(flags):
    gpt = small_model(**flags)
    idx = torch.randint(0, 50, (2, 20))
    changed = idx.clone()
    changed[:, 12:] = (idx[:, 12:] + 1) % 50
    assert torch.allclose(gpt(idx)[0][:, :12], gpt(changed)[0][:, :12], atol=1e-6)


# --- 3.4 KV cache
def decode_with_cache(gpt, tokens, n_prompt):
    """Logits of every position: the prompt in one call, then one token per call."""
    cache = gpt.new_cache()
    logits = [gpt(tokens[:, :n_prompt], cache=cache)[0]]
    for t in range(n_prompt, tokens.size(1)):
        logits.append(gpt(tokens[:, t:t + 1], cache=cache)[0])
    return torch.cat(logits, dim=1), cache


# window 12: exact at any length (see 3.6 below); window 28 + 4 sinks: the 32 tokens fit in n_sink + window
@pytest.mark.parametrize("flags", [{}, {"use_sdpa": False}, {"window": 12}, {"window": 28, "n_sink": 4}, PART2_FLAGS,
                                   {**PART2_FLAGS, "pos_embedding": "sinusoidal"}])
def test_cached_logits_equal_full_recompute(flags):
    gpt = small_model(**flags)
    tokens = torch.randint(0, 50, (2, 32))
    cached, _ = decode_with_cache(gpt, tokens, n_prompt=5)
    assert torch.allclose(cached, gpt(tokens)[0], atol=1e-5)


@pytest.mark.parametrize("flags", [{}, {"window": 12}, {"window": 28, "n_sink": 4}, PART2_FLAGS])
def test_cached_greedy_generation_equals_uncached(flags):
    gpt = small_model(**flags)
    prompt = torch.randint(0, 50, (3, 4))
    fast = gpt.generate(prompt, 28, temperature=0, use_cache=True)
    slow = gpt.generate(prompt, 28, temperature=0, use_cache=False)
    assert torch.equal(fast, slow)


def test_cached_sampling_with_the_same_seed_equals_uncached():
    gpt = small_model()
    prompt = torch.randint(0, 50, (2, 3))
    runs = [gpt.generate(prompt, 25, 1.0, top_k=10, generator=torch.Generator().manual_seed(5), use_cache=c)
            for c in (True, False)]
    assert torch.equal(*runs)


def test_cache_takes_one_token_at_a_time_after_the_prompt():
    gpt = small_model()
    cache = gpt.new_cache()
    gpt(torch.zeros(1, 4, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="one token at a time"):
        gpt(torch.zeros(1, 2, dtype=torch.long), cache=cache)


def test_learned_positions_fall_back_to_recompute_past_block_size():
    gpt = small_model(**PART2_FLAGS)
    out = gpt.generate(torch.zeros(1, 1, dtype=torch.long), 40, temperature=0)  # past block_size 32: no crash
    assert out.shape == (1, 41)
    cache = gpt.new_cache()
    gpt(torch.zeros(1, 32, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="only RoPE"):
        gpt(torch.zeros(1, 1, dtype=torch.long), cache=cache)


# --- 3.6 rolling-buffer KV cache
def test_rolling_cache_equals_full_windowed_attention_over_a_long_stream():
    """Window only (no sinks): the rolling cache is exact however long the stream, because every key is
    rotated by its slot and recent slots are contiguous, so relative offsets are the true ones."""
    gpt = small_model(block_size=64, window=6)
    tokens = torch.randint(0, 50, (2, 64))  # 10x the window
    cached, cache = decode_with_cache(gpt, tokens, n_prompt=3)
    assert torch.allclose(cached, gpt(tokens)[0], atol=1e-5)
    assert all(len(c) == 6 for c in cache)


def test_rolling_cache_with_sinks_equals_full_attention_until_the_first_eviction():
    gpt = small_model(block_size=64, window=6, n_sink=2)
    tokens = torch.randint(0, 50, (1, 20))
    cached, _ = decode_with_cache(gpt, tokens, n_prompt=2)
    full = gpt(tokens)[0]  # the same window/sink mask, absolute positions
    assert torch.allclose(cached[:, :8], full[:, :8], atol=1e-5)  # the stream still fits in n_sink + window
    assert (cached[:, 8:] - full[:, 8:]).abs().max() > 1e-4  # after: the sinks sit at cache positions 0, 1


def test_rolling_cache_positions_are_slots_in_the_cache():
    """StreamingLLM positions, checked with one layer: once tokens are evicted, the newest token's logits
    equal a fresh forward over just [sinks + last window tokens] at positions 0..n_sink+window-1."""
    gpt = small_model(n_layer=1, block_size=64, window=6, n_sink=2)
    tokens = torch.randint(0, 50, (1, 40))
    cached, _ = decode_with_cache(gpt, tokens, n_prompt=1)
    for t in (8, 20, 39):
        kept = torch.cat([tokens[:, :2], tokens[:, t - 5:t + 1]], dim=1)  # 2 sinks + the last 6 tokens
        assert torch.allclose(cached[:, t], gpt(kept)[0][:, -1], atol=1e-5)


@pytest.mark.parametrize("window, n_sink", [(0, 0), (0, 4), (16, 0), (12, 4)])
def test_streaming_10x_the_context_keeps_the_cache_size_constant(window, n_sink):
    gpt = small_model(window=window, n_sink=n_sink)  # block_size 32
    cache = gpt.new_cache()
    slots = (window or 32 - n_sink) + n_sink
    gpt(torch.randint(0, 50, (2, 32)), cache=cache)
    sizes = set()
    for _ in range(10 * 32):
        logits, _ = gpt(torch.randint(0, 50, (2, 1)), cache=cache)
        sizes |= {tuple(t.shape) for c in cache for t in (c.k, c.v)}
    assert torch.isfinite(logits).all()
    assert sizes == {(2, 4, slots, 8)} and cache[0].n_seen == 32 + 320


def test_generating_past_the_context_rolls_the_cache():
    gpt = small_model()
    prompt = torch.randint(0, 50, (1, 40))  # longer than block_size 32: cropped, as without the cache
    out = gpt.generate(prompt, 300, temperature=0)
    assert out.shape == (1, 340) and torch.equal(out[:, :40], prompt)
    first = gpt.generate(prompt[:, -32:], 1, temperature=0, use_cache=False)[:, -1]
    assert torch.equal(out[:, 40], first)  # the first new token only saw the last 32 prompt tokens


# --- config, Part 2 compatibility, scripts
@pytest.mark.parametrize("overrides, words", [
    (dict(norm="batchnorm"), "norm must be one of layernorm, rmsnorm"),
    (dict(mlp="relu"), "mlp must be one of gelu, swiglu"),
    (dict(pos_embedding="alibi"), "pos_embedding must be one of"),
    (dict(n_embd=36, n_head=4), "must be even"),
    (dict(window=-1), "must be >= 0"),
    (dict(window=30, n_sink=4), "must fit in block_size"),
])
def test_bad_config_is_a_one_line_value_error(overrides, words):
    with pytest.raises(ValueError, match=words) as err:
        small_config(**overrides)
    assert "\n" not in str(err.value)


def test_bad_model_flags_are_one_line_errors():
    assert_one_line_error(run_script("part3_modern/train.py", "--norm", "batchnorm"), "norm")
    assert_one_line_error(run_script("part3_modern/train.py", "--window", "100"), "block_size")


def test_part2_flags_give_part2s_model():
    """Same weights, same logits as Part 2's own code: the benchmark's baseline really is Part 2."""
    part2 = load_part("part2_tiny_llm", "model")
    torch.manual_seed(0)
    theirs = part2.GPT(part2.GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_embd=32)).eval()
    ours = model.GPT(small_config(**PART2_FLAGS)).eval()
    ours.load_state_dict(theirs.state_dict())
    idx = torch.randint(0, 50, (2, 32))
    assert torch.allclose(ours(idx)[0], theirs(idx)[0], atol=1e-6)


def test_sample_script_uses_the_cache_and_can_turn_it_off(tmp_path):
    gpt = model.GPT(model.GPTConfig(n_layer=1, n_embd=32, block_size=16))
    train.save_checkpoint(str(tmp_path / "best.pt"), gpt, gpt.config, step=1, val_loss=5.0)
    args = ["--checkpoint", str(tmp_path / "best.pt"), "--prompt", "ROMEO:", "--temperature", "0",
            "--max_new_tokens", "10"]
    assert sample.main(args) == sample.main([*args, "--no_cache"])  # within block_size: the same text
    long = sample.main([*args[:-1], "100"])[0]  # far past block_size 16
    assert long.startswith("ROMEO:") and len(long.encode()) >= 100


def test_lr_schedule_warms_up_then_decays_to_the_floor():
    cfg = train.TrainConfig(lr=1e-3, warmup_steps=10, min_lr_ratio=0.1, max_steps=110)
    lrs = [train.lr_at(s, cfg) for s in range(110)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert train.lr_at(110, cfg) == pytest.approx(1e-4)


def test_streaming_benchmark_losses_agree_with_a_naive_loop():
    """bench.py's (a) recomputed and (b) rolling-cache losses: with one layer both equal a token-by-token loop
    over the last `context` tokens (one layer: a token's output depends only on the tokens its window sees)."""
    bench = load_part("part3_modern", "bench")
    gpt = small_model(n_layer=1, block_size=8)
    tokens = torch.randint(0, 50, (30,))
    naive = torch.stack([F.cross_entropy(gpt(tokens[None, max(0, t - 7):t + 1])[0][0, -1], tokens[t + 1])
                         for t in range(29)])
    assert torch.allclose(bench.losses_recomputed(gpt, tokens, context=8), naive, atol=1e-5)
    streamed, shapes = bench.losses_streamed(small_model(n_layer=1, block_size=8, window=8), tokens)
    assert torch.allclose(streamed, naive, atol=1e-5) and shapes == {(1, 4, 8, 8)}
