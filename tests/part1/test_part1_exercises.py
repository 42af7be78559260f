"""Part 1 exercises (part1_transformer/exercises.py): put your own solution there and run this file."""
import math

import pytest
import torch
from partloader import load_part

ex, model = load_part("part1_transformer", "exercises", "model")


# --- 1.A count the parameters by hand
@pytest.mark.parametrize("overrides", [
    {},
    {"pos_embedding": "sinusoidal"},
    {"bias": False},
    {"vocab_size": 7, "block_size": 5, "n_layer": 3, "n_head": 2, "n_embd": 6, "bias": False},
])
def test_hand_count_equals_the_built_model(overrides):
    cfg = model.GPTConfig(**{"vocab_size": 50, "block_size": 16, "n_layer": 2, "n_head": 4, "n_embd": 32,
                             **overrides})
    assert ex.count_params(cfg) == model.GPT(cfg).num_params()


# --- 1.B remove the causal mask and catch the leak
def test_full_attention_is_softmax_over_every_key():
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 5, 4)  # (T=5, hs=4), batch of 2
    out = ex.full_attention(q, k, v)
    for b in range(2):
        for i in range(5):  # a loop over queries: weights over ALL 5 keys, the later ones too
            scores = torch.tensor([q[b, i] @ k[b, j] / math.sqrt(4) for j in range(5)])
            expected = sum(w * v[b, j] for j, w in enumerate(scores.softmax(0)))
            assert torch.allclose(out[b, i], expected, atol=1e-6)


def small_gpt(**overrides):
    torch.manual_seed(0)
    cfg = model.GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=4, n_embd=32, **overrides)
    return model.GPT(cfg).eval()


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_a_causal_gpt_does_not_leak(use_sdpa):
    idx = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    assert ex.future_leak(small_gpt(use_sdpa=use_sdpa), idx, t=7) < 1e-6


def test_the_leak_check_catches_full_attention(monkeypatch):
    monkeypatch.setattr(model, "causal_attention", ex.full_attention)  # what editing model.py would do
    idx = torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1))
    assert ex.future_leak(small_gpt(use_sdpa=False), idx, t=7) > 1e-4


# --- 1.C sinusoidal positions: an offset is a rotation
@pytest.mark.parametrize("k", [0, 1, 5, 17])
def test_shift_matrix_moves_every_position_by_k(k):
    dim = 16
    pe = model.sinusoidal_positions(64, dim)
    M = ex.sinusoidal_shift(k, dim)
    assert torch.allclose(pe[:64 - k] @ M, pe[k:], atol=1e-4)  # the same M for every start position


def test_shift_matrix_is_a_rotation():
    M = ex.sinusoidal_shift(3, 8)
    assert torch.allclose(M @ M.T, torch.eye(8), atol=1e-6)  # lengths are kept: |PE[p]| is the same for all p
