"""Part 2 exercises (part2_tiny_llm/exercises.py): put your own solution there and run this file."""
import math

import pytest
import torch
import torch.nn.functional as F
from partloader import load_part

ex, model = load_part("part2_tiny_llm", "exercises", "model")


def tiny_gpt(vocab_size=20, block_size=8):
    torch.manual_seed(0)
    cfg = model.GPTConfig(vocab_size=vocab_size, block_size=block_size, n_layer=1, n_head=2, n_embd=16)
    return model.GPT(cfg)


# --- 2.A min-p sampling
@pytest.mark.parametrize("min_p, kept", [(0.05, [0, 1, 2, 3]), (0.2, [0, 1, 2]), (0.5, [0, 1]), (0.61, [0]),
                                         (1.0, [0])])
def test_min_p_on_a_hand_worked_example(min_p, kept):
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])  # threshold = min_p * 0.5
    out = ex.min_p_filter(probs.log(), min_p)
    assert torch.nonzero(out[0] > float("-inf")).flatten().tolist() == kept
    assert torch.allclose(out[0, kept], probs.log()[0, kept])  # kept logits are untouched


def test_min_p_matches_a_loop_over_tokens():
    logits = torch.randn(5, 40, generator=torch.Generator().manual_seed(0)) * 3
    out = ex.min_p_filter(logits, 0.1)
    for row in range(5):
        p = [math.exp(v) for v in logits[row].tolist()]
        top = max(p)
        for tok in range(40):
            assert (out[row, tok] > float("-inf")) == (p[tok] >= 0.1 * top)


def test_min_p_plugs_into_sampling():
    out = ex.min_p_filter(torch.tensor([[2.0, 1.9, -3.0, -4.0]]), 0.5)
    draws = torch.multinomial(F.softmax(out, -1), 2000, replacement=True, generator=torch.Generator().manual_seed(0))
    assert set(draws.flatten().tolist()) == {0, 1}  # the two unlikely tokens are never drawn


# --- 2.B the whole validation split
def test_full_val_loss_equals_a_loop_over_every_token():
    gpt = tiny_gpt()
    data = torch.randint(0, 20, (45,), generator=torch.Generator().manual_seed(0))  # 44 targets: 5 windows + 4
    with torch.no_grad():
        nll = []
        for s in range(0, 44, 8):  # one window at a time, every target token exactly once
            x, y = data[s:min(s + 8, 44)], data[s + 1:min(s + 9, 45)]
            log_probs = F.log_softmax(gpt(x[None])[0][0], dim=-1)
            nll += [-log_probs[t, y[t]].item() for t in range(len(y))]
    assert len(nll) == 44
    for batch_size in (1, 3, 32):
        assert ex.full_val_loss(gpt, data, block_size=8, batch_size=batch_size) == pytest.approx(
            sum(nll) / 44, rel=1e-5)


def test_full_val_loss_has_no_noise_and_random_batches_do():
    gpt = tiny_gpt()
    val = torch.randint(0, 20, (400,), generator=torch.Generator().manual_seed(0))
    sampled_spread, full_spread = ex.val_loss_noise(gpt, val, block_size=8, batch_size=4, eval_iters=2)
    assert full_spread == 0.0
    assert sampled_spread > 0.0


# --- 2.C the bigram baseline
def test_bigram_loss_on_a_hand_worked_example():
    # train 0 1 0 1: n(0,1) = 2, n(1,0) = 1. With alpha 1, V 2: P(1|0) = 3/4, P(1|1) = (0+1)/(1+2) = 1/3
    loss = ex.bigram_loss([0, 1, 0, 1], [0, 1, 1], vocab_size=2)
    assert loss == pytest.approx(-(math.log(3 / 4) + math.log(1 / 3)) / 2)


def test_bigram_loss_matches_a_dictionary_count():
    g = torch.Generator().manual_seed(0)
    train_ids = torch.randint(0, 6, (300,), generator=g).tolist()
    val_ids = torch.randint(0, 6, (50,), generator=g).tolist()
    pairs, firsts = {}, {}
    for a, b in zip(train_ids, train_ids[1:]):
        pairs[a, b] = pairs.get((a, b), 0) + 1
        firsts[a] = firsts.get(a, 0) + 1
    nll = [-math.log((pairs.get((a, b), 0) + 0.5) / (firsts.get(a, 0) + 0.5 * 6)) for a, b in zip(val_ids, val_ids[1:])]
    assert ex.bigram_loss(train_ids, val_ids, 6, alpha=0.5) == pytest.approx(sum(nll) / len(nll), rel=1e-5)
