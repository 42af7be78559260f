"""Unit tests of code that is carried forward from part to part, run on EVERY part that defines it.

A part starts as a copy of the previous one, so top_p_filter, get_batch, ... exist in several parts. Each
test here is parametrized by parts_defining(name): a fix made in one copy and not the others fails here,
and a new part (5, 6, ...) is tested without editing this file. A function that moves to another file
(model.py -> sampling.py) is still found. Expected values are worked out by hand in the comments.
"""
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from partloader import load_part, part_params, parts_defining
from torch.utils.flop_counter import FlopCounterMode

INF = float("-inf")


module_of = load_part  # one copy of each module per part (partloader keeps them)
params = part_params


def get(part, mod, name):
    return getattr(module_of(part, mod), name)


# ----------------------------------------------------------------------------------------------------
# 2.5 Sampling filters
@pytest.mark.parametrize("part, mod", params("top_k_filter"))
def test_top_k_keeps_the_k_largest_logits_of_each_row(part, mod):
    top_k_filter = get(part, mod, "top_k_filter")
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.5],
                           [4.0, 0.0, 1.0, 2.0]])
    expected = torch.tensor([[INF, 3.0, 2.0, INF],   # row 1: 3 and 2 are the two largest
                             [4.0, INF, INF, 2.0]])  # row 2: 4 and 2
    assert torch.equal(top_k_filter(logits, 2), expected)
    assert torch.equal(top_k_filter(logits, 10), logits)  # k larger than the vocabulary keeps everything


# Probabilities 0.5, 0.3, 0.15, 0.05, stored out of order so that the filter must sort and scatter back.
PROBS = torch.tensor([0.15, 0.5, 0.05, 0.3])


@pytest.mark.parametrize("part, mod", params("top_p_filter"))
@pytest.mark.parametrize("p, kept", [
    (0.01, [1]),           # the most likely token always stays
    (0.45, [1]),           # 0.5 >= 0.45 already
    (0.6, [1, 3]),         # 0.5 < 0.6, 0.5 + 0.3 = 0.8 >= 0.6
    (0.85, [1, 3, 0]),     # 0.8 < 0.85, + 0.15 = 0.95
    (1.0, [1, 3, 0, 2]),   # everything
])
def test_top_p_keeps_the_smallest_set_with_enough_probability(part, mod, p, kept):
    logits = PROBS.log()[None]
    out = get(part, mod, "top_p_filter")(logits, p)
    expected = torch.full_like(logits, INF)
    expected[0, kept] = logits[0, kept]  # kept logits are unchanged (softmax renormalises them later)
    assert torch.equal(out, expected)


@pytest.mark.parametrize("part, mod", params("sample_next_token"))
def test_sample_next_token_draws_from_the_filtered_tempered_distribution(part, mod):
    sample_next_token = get(part, mod, "sample_next_token")
    logits = PROBS.log().expand(4000, 4)  # 4000 independent draws in one call
    gen = torch.Generator().manual_seed(0)

    def freq(**kw):
        ids = sample_next_token(logits, generator=gen, **kw)
        assert ids.shape == (4000, 1)
        return torch.bincount(ids[:, 0], minlength=4).float() / 4000

    # Tolerance 0.035: at least 4 standard deviations of a frequency from 4000 draws (sqrt(.25/4000) = 0.008).
    assert torch.allclose(freq(), PROBS, atol=0.035)
    # top-k 2 keeps 0.5 and 0.3: renormalised 0.625 and 0.375
    assert torch.allclose(freq(top_k=2), torch.tensor([0.0, 0.625, 0.0, 0.375]), atol=0.035)
    # top-p 0.6 keeps the same two tokens
    assert torch.allclose(freq(top_p=0.6), torch.tensor([0.0, 0.625, 0.0, 0.375]), atol=0.035)
    # temperature 0.5 squares the probabilities: .0225, .25, .0025, .09 over their sum .365
    assert torch.allclose(freq(temperature=0.5), torch.tensor([0.0616, 0.6849, 0.0068, 0.2466]), atol=0.035)
    # temperature 0 is greedy: always the most likely token
    assert torch.equal(sample_next_token(logits, temperature=0), torch.ones(4000, 1, dtype=torch.long))


@pytest.mark.parametrize("part, mod", params("sample_next_token"))
def test_sampling_is_repeatable_with_a_seeded_generator(part, mod):
    sample_next_token = get(part, mod, "sample_next_token")
    logits = torch.randn(50, 10, generator=torch.Generator().manual_seed(1))
    draws = [sample_next_token(logits, 0.8, 5, 0.9, torch.Generator().manual_seed(7)) for _ in range(2)]
    assert torch.equal(draws[0], draws[1])


# ----------------------------------------------------------------------------------------------------
# 2.2 Batches
def tokens_for(get_batch, values):
    """Parts 2-3 keep token ids in a torch tensor, Part 4 in a uint16 numpy memmap: give each its own kind."""
    as_tensor = torch.tensor(values)
    try:
        get_batch(as_tensor, 2, 1, torch.Generator().manual_seed(0))
        return as_tensor
    except (TypeError, AttributeError, IndexError):
        return np.array(values, dtype=np.uint16)


@pytest.mark.parametrize("part, mod", params("get_batch"))
def test_batches_are_windows_and_the_same_windows_shifted_by_one(part, mod):
    get_batch = get(part, mod, "get_batch")
    data = tokens_for(get_batch, list(range(100, 112)))  # 12 tokens whose value is 100 + position
    x, y = get_batch(data, 4, 300, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (300, 4) and x.dtype == y.dtype == torch.long  # long: embedding indices
    assert torch.equal(x - x[:, :1], torch.arange(4).expand(300, 4))  # consecutive tokens of the text
    assert torch.equal(y, x + 1)  # y[t] is the token after x[t]
    starts = set((x[:, 0] - 100).tolist())
    assert starts == set(range(8))  # windows 0..3 up to 7..10 whose target 8..11 ends at the last token


@pytest.mark.parametrize("part, mod", params("get_batch"))
def test_batches_depend_only_on_the_generator(part, mod):
    get_batch = get(part, mod, "get_batch")
    data = tokens_for(get_batch, list(range(1000)))
    a, b, c = (get_batch(data, 8, 4, torch.Generator().manual_seed(s))[0] for s in (1, 1, 2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("part, mod", params("get_batch", taking="world_size"))
def test_processes_split_the_batch_that_one_process_would_draw(part, mod):
    get_batch = get(part, mod, "get_batch")
    data = tokens_for(get_batch, list(range(1000)))
    whole = get_batch(data, 8, 6, torch.Generator().manual_seed(3))[0]  # 1 process, batch 6
    slices = [get_batch(data, 8, 2, torch.Generator().manual_seed(3), rank, 3)[0] for rank in range(3)]
    assert torch.equal(torch.cat(slices), whole)


# ----------------------------------------------------------------------------------------------------
# Checkpoints: atomic write, weights_only read, one-line errors
def tiny_model(mod):
    torch.manual_seed(0)
    return mod.GPT(mod.GPTConfig(block_size=8, n_layer=1, n_head=2, n_embd=16)).eval()


@pytest.mark.parametrize("part, mod", params("save_checkpoint"))
def test_checkpoint_round_trip_leaves_no_temp_file(part, mod, tmp_path):
    train = module_of(part, mod)
    model = tiny_model(train)
    path = str(tmp_path / "best.pt")
    train.save_checkpoint(path, model, model.config, 7, 1.25)
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]  # the .tmp file was renamed, not left behind
    loaded, ckpt = train.load_checkpoint(path)
    assert (ckpt["step"], ckpt["val_loss"]) == (7, 1.25)
    idx = torch.randint(0, 256, (2, 8), generator=torch.Generator().manual_seed(0))
    assert torch.equal(loaded.eval()(idx)[0], model(idx)[0])


@pytest.mark.parametrize("part, mod", params("load_checkpoint"))
@pytest.mark.parametrize("content", [b"not a checkpoint", b""])
def test_an_unreadable_checkpoint_is_a_one_line_error(part, mod, content, tmp_path):
    path = tmp_path / "bad.pt"
    path.write_bytes(content)
    with pytest.raises(SystemExit) as e:
        module_of(part, mod).load_checkpoint(str(path))
    message = str(e.value)
    assert message.startswith("error:") and "\n" not in message and str(path) in message


@pytest.mark.parametrize("part, mod", params("save_checkpoint"))
def test_a_missing_foreign_or_misfitting_checkpoint_is_a_one_line_error(part, mod, tmp_path):
    train = module_of(part, mod)
    model = tiny_model(train)
    foreign, misfit = str(tmp_path / "other.pt"), str(tmp_path / "misfit.pt")
    torch.save({"arch": "part9_mla", "model": {}}, foreign)
    train.save_checkpoint(misfit, model, model.config, 1, 1.0)
    ckpt = torch.load(misfit, weights_only=True)
    ckpt["model_config"]["n_embd"] = 32  # a config that does not fit the stored weights
    torch.save(ckpt, misfit)
    for path, words in ((str(tmp_path / "missing.pt"), "not found"), (foreign, "part9_mla"), (misfit, "does not fit")):
        with pytest.raises(SystemExit) as e:
            train.load_checkpoint(path)
        message = str(e.value)
        assert message.startswith("error:") and "\n" not in message and words in message


# ----------------------------------------------------------------------------------------------------
# 2.1 Byte-level tokenizer
@pytest.mark.parametrize("part, mod", params("ByteTokenizer"))
def test_byte_tokenizer(part, mod):
    tok = get(part, mod, "ByteTokenizer")()
    assert tok.vocab_size == 256
    assert tok.encode("héllo") == [104, 195, 169, 108, 108, 111]  # é is 0xC3 0xA9 in UTF-8
    for text in ["", "a\nb\tc", "naïve café 日本語 🤖"]:
        assert tok.decode(tok.encode(text)) == text
    assert tok.decode([104, 0xC3]) == "h\ufffd"  # half a character becomes U+FFFD instead of an exception


@pytest.mark.parametrize("part, mod", params("ByteTokenizer"))
@settings(max_examples=100, deadline=None)
@given(text=st.text(), raw=st.binary())
def test_byte_tokenizer_round_trips_any_text_and_decodes_any_bytes(part, mod, text, raw):
    tok = get(part, mod, "ByteTokenizer")()
    ids = tok.encode(text)
    assert tok.decode(ids) == text and all(0 <= i < 256 for i in ids)
    assert isinstance(tok.decode(list(raw)), str)


# ----------------------------------------------------------------------------------------------------
# 1.2/1.3 Attention
def naive_attention(q, k, v):
    """out[t] = sum over s <= t of softmax_s(q[t].k[s] / sqrt(hs)) v[s], one query at a time."""
    T, hs = q.shape
    out = torch.zeros_like(v)
    for t in range(T):
        scores = [float(q[t] @ k[s]) / math.sqrt(hs) for s in range(t + 1)]
        top = max(scores)
        weights = [math.exp(s - top) for s in scores]
        out[t] = sum(w * v[s] for s, w in enumerate(weights)) / sum(weights)
    return out


def qkv(T=6, hs=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(2, T, hs, generator=g, dtype=torch.float64) for _ in range(3)]


@pytest.mark.parametrize("part, mod", params("causal_attention"))
def test_causal_attention_equals_the_loop_over_queries(part, mod):
    q, k, v = qkv()
    out = get(part, mod, "causal_attention")(q, k, v)
    for b in range(2):
        assert torch.allclose(out[b], naive_attention(q[b], k[b], v[b]), atol=1e-10)


@pytest.mark.parametrize("part, mod", params("causal_attention"))
def test_causal_attention_never_looks_ahead(part, mod):
    causal_attention = get(part, mod, "causal_attention")
    q, k, v = qkv()
    out = causal_attention(q, k, v)
    for t in range(6):  # change every token after t: outputs up to t must not move
        q2, k2, v2 = (x.clone() for x in (q, k, v))
        for x in (q2, k2, v2):
            x[:, t + 1:] = torch.randn_like(x[:, t + 1:])
        assert torch.equal(causal_attention(q2, k2, v2)[:, :t + 1], out[:, :t + 1])


@pytest.mark.parametrize("part, mod", params("causal_attention", taking="mask"))  # parts with a KV cache
def test_new_queries_after_cached_keys_see_the_whole_past(part, mod):
    causal_attention = get(part, mod, "causal_attention")
    q, k, v = qkv()
    full = causal_attention(q, k, v)
    assert torch.allclose(causal_attention(q[:, -2:], k, v), full[:, -2:], atol=1e-12)  # the last 2 queries


def attention_configs(part, mod):
    fields = get(part, mod, "GPTConfig").__dataclass_fields__
    configs = [{}]
    if "window" in fields:  # 3.5: the sdpa path gets an explicit mask instead of is_causal
        configs += [{"window": 3}, {"window": 3, "n_sink": 1}]
    return configs


@pytest.mark.parametrize("part, mod", [p for p in params("CausalSelfAttention")
                                       if "use_sdpa" in get(*p.values, "GPTConfig").__dataclass_fields__])
def test_fused_attention_equals_the_manual_path(part, mod):
    m = module_of(part, mod)
    for extra in attention_configs(part, mod):
        attns = []
        for use_sdpa in (True, False):
            cfg = m.GPTConfig(block_size=8, n_layer=1, n_head=2, n_embd=16, use_sdpa=use_sdpa, **extra)
            torch.manual_seed(0)  # same weights in both
            attns.append(m.CausalSelfAttention(cfg).eval())
        x = torch.randn(2, 8, 16, generator=torch.Generator().manual_seed(1))
        fused, manual = (a(x) for a in attns)
        assert torch.allclose(fused, manual, atol=1e-5), f"{extra}: max diff {(fused - manual).abs().max():.2e}"


@pytest.mark.parametrize("part, mod", params("GPT"))
@pytest.mark.parametrize("use_sdpa", [True, False])
def test_the_model_never_looks_ahead(part, mod, use_sdpa):
    """Whatever a chapter adds to GPT, the logits at t must not depend on the tokens after t."""
    m = module_of(part, mod)
    torch.manual_seed(0)
    gpt = m.GPT(m.GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=16, use_sdpa=use_sdpa)).eval()
    idx = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(1))
    changed = idx.clone()
    changed[:, 10:] = (idx[:, 10:] + 1) % 50
    assert torch.allclose(gpt(idx)[0][:, :10], gpt(changed)[0][:, :10], atol=1e-6)
    assert not torch.allclose(gpt(idx)[0][:, 10:], gpt(changed)[0][:, 10:], atol=1e-6)  # the change did reach the model


# ----------------------------------------------------------------------------------------------------
# Part 3's modern blocks, carried unchanged from Part 3 on: norms, RoPE, SwiGLU, window + sinks, KV cache
PART2_FLAGS = dict(norm="layernorm", pos_embedding="learned", mlp="gelu")  # Part 3's options for Part 2's model


def config_params(*fields):
    """One parameter per part whose GPTConfig has all these fields (the options a chapter added)."""
    return [p for p in params("GPTConfig") if set(fields) <= set(get(*p.values, "GPTConfig").__dataclass_fields__)]


def small_model(m, seed=0, **overrides):
    torch.manual_seed(seed)
    return m.GPT(m.GPTConfig(**{**dict(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_embd=32), **overrides}))\
        .eval()


# --- 3.1 RMSNorm
@pytest.mark.parametrize("part, mod", params("RMSNorm"))
def test_rmsnorm_matches_the_formula(part, mod):
    torch.manual_seed(0)
    norm = get(part, mod, "RMSNorm")(16)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(4, 7, 16, dtype=torch.float64) * 3 + 1
    x[0] *= 1e-3  # vectors so small that eps matters: mean(x^2) ~ 1e-5, as large as eps
    expected = torch.empty_like(x)
    for i, j in torch.cartesian_prod(torch.arange(4), torch.arange(7)).tolist():  # one vector at a time
        v = x[i, j]
        rms = math.sqrt(sum(a * a for a in v.tolist()) / 16 + 1e-5)
        expected[i, j] = v / rms * norm.weight.double()
    assert torch.allclose(norm(x.float()).double(), expected, atol=1e-5)


@pytest.mark.parametrize("part, mod", params("RMSNorm"))
def test_rmsnorm_differs_from_layernorm_only_by_the_mean(part, mod):
    m = module_of(part, mod)
    x = torch.randn(3, 5, 16, generator=torch.Generator().manual_seed(0))
    centred = x - x.mean(-1, keepdim=True)
    layer = m.LayerNorm(16, bias=False)
    assert torch.allclose(m.RMSNorm(16)(centred), layer(centred), atol=1e-5)  # zero-mean input: the same
    assert not torch.allclose(m.RMSNorm(16)(x + 2), layer(x + 2), atol=1e-2)


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


@pytest.mark.parametrize("part, mod", params("apply_rope"))
def test_rope_matches_explicit_pair_rotations(part, mod):
    m = module_of(part, mod)
    cos, sin = m.rope_tables(20, 8)
    x = torch.randn(20, 8, generator=torch.Generator().manual_seed(0))
    rotated = m.apply_rope(x, cos, sin)
    for pos in (0, 1, 7, 19):
        assert torch.allclose(rotated[pos], rotate_by_hand(x[pos], pos), atol=1e-5)


@pytest.mark.parametrize("part, mod", params("apply_rope"))
def test_rope_at_position_zero_is_the_identity_and_keeps_lengths(part, mod):
    m = module_of(part, mod)
    cos, sin = m.rope_tables(50, 16)
    x = torch.randn(2, 3, 50, 16, generator=torch.Generator().manual_seed(0))
    rotated = m.apply_rope(x, cos, sin)
    assert torch.equal(rotated[:, :, 0], x[:, :, 0])
    assert torch.allclose(rotated.norm(dim=-1), x.norm(dim=-1), atol=1e-4)  # a rotation changes no lengths


@pytest.mark.parametrize("part, mod", params("apply_rope"))
@settings(max_examples=50, deadline=None)
@given(m=st.integers(0, 60), n=st.integers(0, 60), shift=st.integers(1, 60))
def test_rope_score_depends_only_on_the_relative_offset(part, mod, m, n, shift):
    """q at position m, k at position n: moving both by the same shift leaves q.k unchanged."""
    code = module_of(part, mod)
    cos, sin = code.rope_tables(128, 16)
    q, k = torch.randn(2, 16, generator=torch.Generator().manual_seed(m * 1000 + n))

    def score(pq, pk):
        return code.apply_rope(q, cos[pq], sin[pq]) @ code.apply_rope(k, cos[pk], sin[pk])

    assert score(m + shift, n + shift).item() == pytest.approx(score(m, n).item(), abs=1e-4)


@pytest.mark.parametrize("part, mod", params("apply_rope"))
def test_rope_score_does_change_with_the_offset(part, mod):
    m = module_of(part, mod)
    cos, sin = m.rope_tables(64, 16)
    q = k = torch.ones(16)
    scores = [(m.apply_rope(q, cos[10], sin[10]) @ m.apply_rope(k, cos[10 - d], sin[10 - d])).item()
              for d in range(4)]
    assert scores[0] == pytest.approx(16.0) and len({round(s, 4) for s in scores}) == 4


@pytest.mark.parametrize("part, mod", params("split_heads", taking="rope"))
def test_split_heads_rotates_each_head_as_rotating_after_the_split(part, mod):
    """split_heads applies RoPE before moving the heads to dim 1 (a faster memory layout); the result must be
    the same as splitting first and rotating each head's (T, hs) block with the plain tables."""
    m = module_of(part, mod)
    cos, sin = m.rope_tables(10, 8)
    x = torch.randn(2, 10, 32, generator=torch.Generator().manual_seed(0))  # C = 4 heads x 8
    plain = m.split_heads(x, 4)                                          # (B, nh, T, hs)
    assert torch.equal(plain[:, 1], x[:, :, 8:16])  # head 1 gets channels 8..15
    assert torch.allclose(m.split_heads(x, 4, (cos, sin)), m.apply_rope(plain, cos, sin), atol=1e-6)


@pytest.mark.parametrize("part, mod", params("rope_tables"))
def test_rope_model_has_no_position_parameters_or_buffers_in_checkpoints(part, mod):
    gpt = small_model(module_of(part, mod))
    assert not hasattr(gpt, "wpe") and all("rope" not in key for key in gpt.state_dict())


# --- 3.3 SwiGLU
@pytest.mark.parametrize("part, mod", params("swiglu_hidden"))
@pytest.mark.parametrize("n_embd", [32, 48, 96, 128, 200, 256])
def test_swiglu_parameter_count_matches_gelu_up_to_rounding(part, mod, n_embd):
    """SwiGLU has 3*C*h weights, GELU 2*C*4C = 8C^2: with h = round(8C/3) they differ by <= 3C/2."""
    m = module_of(part, mod)
    cfg = dict(block_size=32, n_embd=n_embd, n_head=4, bias=False)
    gelu = sum(p.numel() for p in m.MLP(m.GPTConfig(mlp="gelu", **cfg)).parameters())
    swiglu = sum(p.numel() for p in m.MLP(m.GPTConfig(mlp="swiglu", **cfg)).parameters())
    assert gelu == 8 * n_embd**2
    assert abs(swiglu - gelu) <= 1.5 * n_embd
    if n_embd % 3 == 0:
        assert swiglu == gelu


@pytest.mark.parametrize("part, mod", params("swiglu_hidden"))
def test_swiglu_matches_the_formula(part, mod):
    m = module_of(part, mod)
    torch.manual_seed(0)
    mlp = m.MLP(m.GPTConfig(n_embd=32, n_head=4, mlp="swiglu", bias=False))
    x = torch.randn(2, 5, 32)
    h = m.swiglu_hidden(32)
    w_gate, w_up = mlp.c_fc.weight[:h], mlp.c_fc.weight[h:]
    expected = (torch.nn.functional.silu(x @ w_gate.T) * (x @ w_up.T)) @ mlp.c_proj.weight.T
    assert torch.allclose(mlp(x), expected, atol=1e-6)


# --- 3.5 sliding window and attention sinks
def naive_mask(T, window, n_sink):
    return torch.tensor([[j <= i and (window == 0 or i - j < window or j < n_sink) for j in range(T)]
                         for i in range(T)])


@pytest.mark.parametrize("part, mod", params("attention_mask"))
@pytest.mark.parametrize("T, window, n_sink", [(8, 0, 0), (8, 3, 0), (8, 3, 2), (12, 1, 1), (10, 10, 0), (9, 4, 8)])
def test_attention_mask_matches_naive_loops(part, mod, T, window, n_sink):
    assert torch.equal(get(part, mod, "attention_mask")(T, window, n_sink), naive_mask(T, window, n_sink))


@pytest.mark.parametrize("part, mod", config_params("window", "n_sink"))
@pytest.mark.parametrize("use_sdpa", [True, False])
def test_window_hides_tokens_outside_it_except_sinks(part, mod, use_sdpa):
    """One layer, window 4, one sink: the last token's output depends on tokens 0 and 28..31 only."""
    gpt = small_model(module_of(part, mod), n_layer=1, window=4, n_sink=1, use_sdpa=use_sdpa)
    idx = torch.randint(0, 50, (1, 32), generator=torch.Generator().manual_seed(1))
    changed = idx.clone()
    changed[0, 1:28] = (idx[0, 1:28] + 1) % 50       # everything the window and the sink do not cover
    assert torch.allclose(gpt(idx)[0][0, -1], gpt(changed)[0][0, -1], atol=1e-6)
    changed[0, 0] = (idx[0, 0] + 1) % 50              # the sink itself
    assert not torch.allclose(gpt(idx)[0][0, -1], gpt(changed)[0][0, -1], atol=1e-6)


@pytest.mark.parametrize("part, mod", config_params("window", "n_sink", *PART2_FLAGS))
@pytest.mark.parametrize("flags", [{"window": 5, "n_sink": 2}, PART2_FLAGS])  # the default: never_looks_ahead
def test_causality_future_tokens_do_not_change_the_past(part, mod, flags):
    gpt = small_model(module_of(part, mod), **flags)
    idx = torch.randint(0, 50, (2, 20), generator=torch.Generator().manual_seed(1))
    changed = idx.clone()
    changed[:, 12:] = (idx[:, 12:] + 1) % 50
    assert torch.allclose(gpt(idx)[0][:, :12], gpt(changed)[0][:, :12], atol=1e-6)


@pytest.mark.parametrize("part, mod", config_params(*PART2_FLAGS))
@pytest.mark.parametrize("overrides, words", [
    (dict(norm="batchnorm"), "norm must be one of layernorm, rmsnorm"),
    (dict(mlp="relu"), "mlp must be one of gelu, swiglu"),
    (dict(pos_embedding="alibi"), "pos_embedding must be one of"),
    (dict(n_embd=36, n_head=4), "must be even"),
    (dict(window=-1), "must be >= 0"),
    (dict(window=30, n_sink=4), "must fit in block_size"),
])
def test_bad_config_is_a_one_line_value_error(part, mod, overrides, words):
    with pytest.raises(ValueError, match=words) as err:
        get(part, mod, "GPTConfig")(**{**dict(block_size=32, n_head=4, n_embd=32), **overrides})
    assert "\n" not in str(err.value)


# --- 3.4 KV cache (kv_cache.py, filled by the model's attention)
def kv_params():
    """The parts with a KV cache, as (part, "model"): the cache is tested through the model that fills it."""
    return [pytest.param(part, "model", id=f"{part}/{mod}.py") for part, mod in parts_defining("KVCache")]


def decode_with_cache(gpt, tokens, n_prompt):
    """Logits of every position: the prompt in one call, then one token per call."""
    cache = gpt.new_cache()
    logits = [gpt(tokens[:, :n_prompt], cache=cache)[0]]
    for t in range(n_prompt, tokens.size(1)):
        logits.append(gpt(tokens[:, t:t + 1], cache=cache)[0])
    return torch.cat(logits, dim=1), cache


def random_tokens(*shape, seed=1):
    return torch.randint(0, 50, shape, generator=torch.Generator().manual_seed(seed))


# window 12: exact at any length (see 3.6 below); window 28 + 4 sinks: the 32 tokens fit in n_sink + window
@pytest.mark.parametrize("part, mod", kv_params())
@pytest.mark.parametrize("flags", [{}, {"use_sdpa": False}, {"window": 12}, {"window": 28, "n_sink": 4}, PART2_FLAGS,
                                   {**PART2_FLAGS, "pos_embedding": "sinusoidal"}])
def test_cached_logits_equal_full_recompute(part, mod, flags):
    gpt = small_model(module_of(part, mod), **flags)
    tokens = random_tokens(2, 32)
    cached, _ = decode_with_cache(gpt, tokens, n_prompt=5)
    assert torch.allclose(cached, gpt(tokens)[0], atol=1e-5)


@pytest.mark.parametrize("part, mod", kv_params())
@pytest.mark.parametrize("flags", [{}, {"window": 12}, {"window": 28, "n_sink": 4}, PART2_FLAGS])
def test_cached_greedy_generation_equals_uncached(part, mod, flags):
    gpt = small_model(module_of(part, mod), **flags)
    prompt = random_tokens(3, 4)
    fast = gpt.generate(prompt, 28, temperature=0, use_cache=True)
    slow = gpt.generate(prompt, 28, temperature=0, use_cache=False)
    assert torch.equal(fast, slow)


@pytest.mark.parametrize("part, mod", kv_params())
def test_cached_sampling_with_the_same_seed_equals_uncached(part, mod):
    gpt = small_model(module_of(part, mod))
    prompt = random_tokens(2, 3)
    runs = [gpt.generate(prompt, 25, 1.0, top_k=10, generator=torch.Generator().manual_seed(5), use_cache=c)
            for c in (True, False)]
    assert torch.equal(*runs)


@pytest.mark.parametrize("part, mod", kv_params())
def test_cache_takes_one_token_at_a_time_after_the_prompt(part, mod):
    gpt = small_model(module_of(part, mod))
    cache = gpt.new_cache()
    gpt(torch.zeros(1, 4, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="one token at a time"):
        gpt(torch.zeros(1, 2, dtype=torch.long), cache=cache)


@pytest.mark.parametrize("part, mod", kv_params())
def test_learned_positions_fall_back_to_recompute_past_block_size(part, mod):
    gpt = small_model(module_of(part, mod), **PART2_FLAGS)
    out = gpt.generate(torch.zeros(1, 1, dtype=torch.long), 40, temperature=0)  # past block_size 32: no crash
    assert out.shape == (1, 41)
    cache = gpt.new_cache()
    gpt(torch.zeros(1, 32, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="only RoPE"):
        gpt(torch.zeros(1, 1, dtype=torch.long), cache=cache)


# --- 3.6 rolling-buffer KV cache
@pytest.mark.parametrize("part, mod", kv_params())
def test_rolling_cache_equals_full_windowed_attention_over_a_long_stream(part, mod):
    """Window only (no sinks): the rolling cache is exact however long the stream, because every key is
    rotated by its slot and recent slots are contiguous, so relative offsets are the true ones."""
    gpt = small_model(module_of(part, mod), block_size=64, window=6)
    tokens = random_tokens(2, 64)  # 10x the window
    cached, cache = decode_with_cache(gpt, tokens, n_prompt=3)
    assert torch.allclose(cached, gpt(tokens)[0], atol=1e-5)
    assert all(len(c) == 6 for c in cache)


@pytest.mark.parametrize("part, mod", kv_params())
def test_rolling_cache_with_sinks_equals_full_attention_until_the_first_eviction(part, mod):
    gpt = small_model(module_of(part, mod), block_size=64, window=6, n_sink=2)
    tokens = random_tokens(1, 20)
    cached, _ = decode_with_cache(gpt, tokens, n_prompt=2)
    full = gpt(tokens)[0]  # the same window/sink mask, absolute positions
    assert torch.allclose(cached[:, :8], full[:, :8], atol=1e-5)  # the stream still fits in n_sink + window
    assert (cached[:, 8:] - full[:, 8:]).abs().max() > 1e-4  # after: the sinks sit at cache positions 0, 1


@pytest.mark.parametrize("part, mod", kv_params())
def test_rolling_cache_positions_are_slots_in_the_cache(part, mod):
    """StreamingLLM positions, checked with one layer: once tokens are evicted, the newest token's logits
    equal a fresh forward over just [sinks + last window tokens] at positions 0..n_sink+window-1."""
    gpt = small_model(module_of(part, mod), n_layer=1, block_size=64, window=6, n_sink=2)
    tokens = random_tokens(1, 40)
    cached, _ = decode_with_cache(gpt, tokens, n_prompt=1)
    for t in (8, 20, 39):
        kept = torch.cat([tokens[:, :2], tokens[:, t - 5:t + 1]], dim=1)  # 2 sinks + the last 6 tokens
        assert torch.allclose(cached[:, t], gpt(kept)[0][:, -1], atol=1e-5)


@pytest.mark.parametrize("part, mod", kv_params())
@pytest.mark.parametrize("window, n_sink", [(0, 0), (0, 4), (8, 0), (6, 4)])
def test_streaming_10x_the_context_keeps_the_cache_size_constant(part, mod, window, n_sink):
    gpt = small_model(module_of(part, mod), n_layer=1, block_size=16, window=window, n_sink=n_sink)
    cache = gpt.new_cache()
    slots = (window or 16 - n_sink) + n_sink
    gpt(random_tokens(2, 16), cache=cache)
    sizes = set()
    for step in range(10 * 16):
        logits, _ = gpt(random_tokens(2, 1, seed=step), cache=cache)
        sizes |= {tuple(t.shape) for c in cache for t in (c.k, c.v)}
    assert torch.isfinite(logits).all()
    assert sizes == {(2, 4, slots, 8)} and cache[0].n_seen == 16 + 160


@pytest.mark.parametrize("part, mod", kv_params())
def test_generating_past_the_context_rolls_the_cache(part, mod):
    gpt = small_model(module_of(part, mod))
    prompt = random_tokens(1, 40)  # longer than block_size 32: cropped, as without the cache
    out = gpt.generate(prompt, 300, temperature=0)
    assert out.shape == (1, 340) and torch.equal(out[:, :40], prompt)
    first = gpt.generate(prompt[:, -32:], 1, temperature=0, use_cache=False)[:, -1]
    assert torch.equal(out[:, 40], first)  # the first new token only saw the last 32 prompt tokens


# ----------------------------------------------------------------------------------------------------
# FLOPs per token (for MFU): a GPT method from Part 4 on
@pytest.mark.parametrize("part, mod", [p for p in params("GPT") if hasattr(get(*p.values, "GPT"), "flops_per_token")])
def test_flops_per_token_agrees_with_torchs_flop_counter(part, mod):
    """FlopCounterMode counts every matmul torch runs in a real forward and backward (2 FLOPs per multiply-add).
    The formula counts 6 per parameter, but norm gains and biases (the 1-d parameters) enter no matmul, so it
    is larger by exactly 6 per 1-d parameter (0.1% of the total for the GPU preset: 57,600 of 48.8M); the
    elementwise work (norms, RoPE, softmax, SwiGLU's gate, embedding lookups) is in neither count. The
    attention term agrees exactly because the manual path computes all T x T scores, masked ones included,
    as the formula assumes. use_sdpa=False: FlopCounterMode has no formula for the CPU fused attention kernel."""
    cfg = dict(vocab_size=64, block_size=32, n_layer=2, n_head=4, n_embd=32, use_sdpa=False)
    torch.manual_seed(0)
    m = module_of(part, mod)
    gpt = m.GPT(m.GPTConfig(**cfg))
    idx, targets = torch.randint(0, 64, (2, 3, 32))  # 3 sequences of block_size tokens
    with FlopCounterMode(display=False) as counter:
        gpt(idx, targets)[1].backward()
    counted_per_token = counter.get_total_flops() / idx.numel()
    outside_matmuls = sum(p.numel() for p in gpt.parameters() if p.dim() == 1)
    assert outside_matmuls > 0
    assert gpt.flops_per_token() - 6 * outside_matmuls == counted_per_token
