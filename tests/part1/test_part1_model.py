"""Part 1: each piece of the Transformer checked against an independent computation."""
import math

import pytest
import torch
import torch.nn.functional as F
from partloader import load_part

model = load_part("part1_transformer", "model")


def small_config(**overrides):
    base = dict(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=32)
    return model.GPTConfig(**{**base, **overrides})


def test_sinusoidal_matches_formula():
    T, d = 10, 8
    pe = model.sinusoidal_positions(T, d)
    for pos in range(T):
        for i in range(d // 2):
            angle = pos / 10000 ** (2 * i / d)
            assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


@pytest.mark.parametrize("pos_embedding", ["learned", "sinusoidal"])
@pytest.mark.parametrize("use_sdpa", [True, False])
def test_causality_future_tokens_do_not_change_the_past(pos_embedding, use_sdpa):
    torch.manual_seed(0)
    gpt = model.GPT(small_config(pos_embedding=pos_embedding, use_sdpa=use_sdpa)).eval()
    idx = torch.randint(0, 50, (2, 12))
    changed = idx.clone()
    changed[:, 7:] = torch.randint(0, 50, (2, 5))  # rewrite the future from position 7 on
    a, b = gpt(idx)[0], gpt(changed)[0]
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-6)
    assert not torch.allclose(a[:, 7:], b[:, 7:])  # the rewritten positions themselves do change


def test_split_and_merge_heads_round_trip():
    x = torch.randn(2, 5, 12)
    heads = model.split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4)
    assert torch.equal(heads[:, 1], x[:, :, 4:8])  # head 1 owns channels 4..7
    assert torch.equal(model.merge_heads(heads), x)


def test_multi_head_equals_separate_single_heads():
    """1.4 = several 1.3 heads side by side, concatenated, then projected."""
    torch.manual_seed(0)
    cfg = small_config(n_embd=12, n_head=3, use_sdpa=False)
    mha = model.CausalSelfAttention(cfg).eval()
    x = torch.randn(2, 6, 12)
    Wq, Wk, Wv = mha.c_attn.weight.split(12, dim=0)
    bq, bk, bv = mha.c_attn.bias.split(12)
    outs = []
    for h in range(3):
        head = model.Head(12, 4)
        s = slice(4 * h, 4 * h + 4)
        with torch.no_grad():
            for layer, W, b in ((head.query, Wq, bq), (head.key, Wk, bk), (head.value, Wv, bv)):
                layer.weight.copy_(W[s])
                layer.bias.copy_(b[s])
        outs.append(head(x))
    expected = mha.c_proj(torch.cat(outs, dim=-1))
    assert mha(x).shape == (2, 6, 12)
    assert torch.allclose(mha(x), expected, atol=1e-6)


def test_layernorm_matches_torch():
    torch.manual_seed(0)
    ln = model.LayerNorm(16)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    x = torch.randn(4, 7, 16) * 3 + 1
    expected = F.layer_norm(x, (16,), ln.weight, ln.bias, eps=1e-5)
    assert torch.allclose(ln(x), expected, atol=1e-5)


def test_initial_loss_is_about_ln_vocab():
    torch.manual_seed(0)
    gpt = model.GPT(small_config(vocab_size=65))
    idx, targets = torch.randint(0, 65, (2, 8, 16))  # subtle: targets == idx would favour tied weights
    _, loss = gpt(idx, targets)
    assert abs(loss.item() - math.log(65)) < 0.1


def test_too_long_input_is_a_clear_error():
    gpt = model.GPT(small_config())
    with pytest.raises(ValueError, match="exceeds block_size"):
        gpt(torch.zeros(1, 17, dtype=torch.long))


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="divisible"):
        small_config(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="pos_embedding"):
        small_config(pos_embedding="rotary")


def test_attention_by_hand_matches_module(capsys):
    by_hand = load_part("part1_transformer", "attention_by_hand")
    a, b = by_hand.main()
    assert torch.allclose(a, b, atol=1e-6)
    assert "softmax" in capsys.readouterr().out
