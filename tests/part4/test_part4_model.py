"""Part 4's model: Part 3's architecture with RoPE applied before the head transpose (GPU path) and a FLOP
count for MFU. The reordering must not change what the model computes."""
import pytest
import torch
from partloader import load_part

model4 = load_part("part4_scaling", "model")
model3 = load_part("part3_modern", "model")


def pair(**overrides):
    cfg = dict(vocab_size=64, block_size=32, n_layer=2, n_head=4, n_embd=32, **overrides)
    torch.manual_seed(0)
    a = model3.GPT(model3.GPTConfig(**cfg)).eval()
    b = model4.GPT(model4.GPTConfig(**cfg)).eval()
    b.load_state_dict(a.state_dict())
    return a, b


@pytest.mark.parametrize("overrides", [{}, {"window": 8, "n_sink": 2}, {"use_sdpa": False}])
def test_same_logits_as_part3(overrides):
    a, b = pair(**overrides)
    idx = torch.randint(0, 64, (3, 32))
    assert torch.allclose(a(idx)[0], b(idx)[0], atol=1e-5)


def test_cached_decoding_equals_full_recomputation():
    _, b = pair()
    prompt = torch.randint(0, 64, (2, 5))
    cached = b.generate(prompt, 20, temperature=0, use_cache=True)
    full = b.generate(prompt, 20, temperature=0, use_cache=False)
    assert torch.equal(cached, full)
    cache = b.new_cache()
    step_logits = [b(cached[:, :5], cache=cache)[0][:, -1]]
    for t in range(5, 24):
        step_logits.append(b(cached[:, t:t + 1], cache=cache)[0][:, -1])
    full_logits = b(cached[:, :24])[0][:, 4:24]
    assert torch.allclose(torch.stack(step_logits, 1), full_logits, atol=1e-4)


def test_flops_per_token_counts_six_per_parameter_plus_attention():
    _, b = pair()
    n = sum(p.numel() for p in b.parameters())
    assert b.flops_per_token() == 6 * n + 12 * 2 * 32 * 32
