"""Part 3 exercises (part3_modern/exercises.py): put your own solution there and run this file."""
import math

import pytest
import torch
from partloader import load_part

ex, model = load_part("part3_modern", "exercises", "model")


def config(**overrides):
    base = dict(vocab_size=40, block_size=24, n_layer=2, n_head=4, n_embd=32)
    return model.GPTConfig(**{**base, **overrides})


def mha_gpt(**overrides):
    torch.manual_seed(0)
    return model.GPT(config(**overrides)).eval()


# --- 3.A grouped-query attention
@pytest.mark.parametrize("pos_embedding", ["rope", "learned"])
def test_gqa_with_every_head_is_the_original_model(pos_embedding):
    mha = mha_gpt(pos_embedding=pos_embedding)
    idx = torch.randint(0, 40, (2, 20), generator=torch.Generator().manual_seed(0))
    gqa = ex.gqa_gpt(4, mha=mha).eval()  # n_kv_head = n_head: nothing is shared, nothing averaged
    assert torch.allclose(gqa(idx)[0], mha(idx)[0], atol=1e-5)


def test_gqa_matches_a_loop_over_query_heads():
    """Query head h attends with key/value head h // 2 (4 query heads, 2 kv heads), RoPE on both."""
    torch.manual_seed(0)
    cfg = config()
    attn = ex.GQASelfAttention(cfg, n_kv_head=2).eval()
    x = torch.randn(1, 6, 32)
    q, k, v = attn.c_attn(x)[0].split([32, 16, 16], dim=-1)          # (T, 32), (T, 16), (T, 16)
    cos, sin = model.rope_tables(6, 8)
    heads = []
    for h in range(4):
        g = h // 2
        qh = model.apply_rope(q[:, 8 * h:8 * h + 8], cos, sin)
        kh = model.apply_rope(k[:, 8 * g:8 * g + 8], cos, sin)
        scores = qh @ kh.T / math.sqrt(8) + torch.full((6, 6), float("-inf")).triu(1)
        heads.append(scores.softmax(-1) @ v[:, 8 * g:8 * g + 8])
    expected = attn.c_proj(torch.cat(heads, dim=-1))
    assert torch.allclose(attn(x)[0], expected, atol=1e-5)


def test_gqa_kv_heads_are_the_mean_of_their_group():
    mha = mha_gpt()
    gqa = ex.gqa_gpt(1, mha=mha)  # multi-query: one key/value head, the mean of all four
    w_mha, w_gqa = mha.blocks[0].attn.c_attn.weight, gqa.blocks[0].attn.c_attn.weight
    k_heads = [w_mha[32 + 8 * h:32 + 8 * h + 8] for h in range(4)]
    assert torch.allclose(w_gqa[32:40], sum(k_heads) / 4, atol=1e-6)
    assert torch.equal(w_gqa[:32], w_mha[:32])  # the queries are kept


@pytest.mark.parametrize("n_kv_head", [1, 2])
def test_gqa_cache_is_smaller_and_cached_equals_recomputed(n_kv_head):
    torch.manual_seed(0)
    gqa = ex.gqa_gpt(n_kv_head, config()).eval()
    idx = torch.randint(0, 40, (2, 5), generator=torch.Generator().manual_seed(1))
    cache = gqa.new_cache()
    logits = [gqa(idx, cache=cache)[0][:, -1]]
    full = idx
    for _ in range(8):  # greedy decoding, one token at a time through the cache
        full = torch.cat([full, logits[-1].argmax(-1, keepdim=True)], dim=1)
        logits.append(gqa(full[:, -1:], cache=cache)[0][:, -1])
    recomputed = gqa(full)[0][:, 4:]  # the whole text again, no cache
    assert torch.allclose(torch.stack(logits, dim=1), recomputed, atol=1e-5)
    assert cache[0].k.shape == (2, n_kv_head, 13, 8)  # n_kv_head heads kept, not n_head
    assert torch.equal(gqa.generate(idx, 8, temperature=0), gqa.generate(idx, 8, temperature=0, use_cache=False))


def test_gqa_saves_key_and_value_weights():
    mha, cfg = mha_gpt(), config()
    saved = mha.num_params() - ex.gqa_gpt(1, mha=mha).num_params()
    assert saved == cfg.n_layer * 2 * (32 - 8) * (32 + 1)  # k and v: 24 fewer output rows of 32 weights + bias


# --- 3.B RoPE scaling
def angles(cos, sin):
    return torch.atan2(sin, cos)  # angle of each channel, wrapped to (-pi, pi]


def test_linear_scaling_reads_position_p_as_p_over_scale():
    cos, sin = model.rope_tables(32, 16)
    cos2, sin2 = ex.scaled_rope_tables(64, 16, 2.0, "linear")
    assert torch.allclose(cos2[0::2], cos, atol=1e-5) and torch.allclose(sin2[0::2], sin, atol=1e-5)


def test_ntk_keeps_the_fastest_pair_and_slows_the_slowest_by_scale():
    hs, scale = 16, 4.0
    cos, sin = model.rope_tables(32, hs)
    cos4, sin4 = ex.scaled_rope_tables(128, hs, scale, "ntk")
    fast, slow = 0, hs // 2 - 1  # pair 0 turns by 1 radian per token; the last pair the slowest
    p = torch.arange(128)
    assert torch.allclose(cos4[:, fast], torch.cos(p.float()), atol=1e-4)                  # unchanged
    assert torch.allclose(angles(cos4, sin4)[0::4, slow], angles(cos, sin)[:, slow], atol=1e-4)  # 4p -> p
    middle = angles(cos4, sin4)[1, 1:slow] / angles(cos, sin)[1, 1:slow]  # other pairs: slowed by 1 to 4
    assert torch.all((middle < 1) & (middle > 1 / scale))


def test_extended_model_runs_past_the_training_context_and_is_unchanged_within_it():
    gpt = mha_gpt(block_size=16)
    idx = torch.randint(0, 40, (1, 16), generator=torch.Generator().manual_seed(0))
    plain = ex.extend_context(gpt, 32, "none")
    assert torch.allclose(plain(idx)[0], gpt(idx)[0], atol=1e-5)  # same weights, same positions
    longer = torch.randint(0, 40, (1, 32), generator=torch.Generator().manual_seed(1))
    for kind in ("ntk", "linear"):
        assert ex.extend_context(gpt, 32, kind)(longer)[0].shape == (1, 32, 40)
