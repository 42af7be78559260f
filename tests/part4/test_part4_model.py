"""Part 4's model is Part 3's model plus a FLOP count for MFU (flops_per_token): it must compute exactly what
Part 3's model computes. The carried code (cached decoding, flops_per_token, ...) is tested on every part that
has it in tests/test_carried_forward.py."""
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
def test_same_logits_and_loss_as_part3(overrides):
    """Part 4 computes the loss with torch's fused F.cross_entropy (GPU path), Part 3 with the course's."""
    a, b = pair(**overrides)
    idx, targets = torch.randint(0, 64, (2, 3, 32))
    (logits_a, loss_a), (logits_b, loss_b) = a(idx, targets), b(idx, targets)
    assert torch.allclose(logits_a, logits_b, atol=1e-5)
    assert abs(loss_a - loss_b) <= 1e-5
