"""Part 2 units: tokenizer, batching, loss, sampling math, checkpoints."""
import math

import pytest
import torch
import torch.nn.functional as F
from partloader import load_part

model, tokenizer, train = load_part("part2_tiny_llm", "model", "tokenizer", "train")


def test_loss_is_mean_negative_log_likelihood_of_next_token():
    torch.manual_seed(0)
    gpt = model.GPT(model.GPTConfig(vocab_size=20, block_size=6, n_layer=1, n_head=2, n_embd=16))
    x, y = torch.randint(0, 20, (2, 3, 6))
    logits, loss = gpt(x, y)
    log_probs = F.log_softmax(logits, dim=-1)
    manual = -sum(log_probs[b, t, y[b, t]] for b in range(3) for t in range(6)) / 18
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)


def test_split_keeps_the_last_fraction_for_validation():
    train_data, val_data = train.split_data(list(range(1000)), 0.1, block_size=8)
    assert len(val_data) == 100 and val_data[0].item() == 900


def test_filtered_probabilities_renormalise():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    kept = F.softmax(model.top_p_filter(probs.log(), 0.7), dim=-1)
    assert torch.allclose(kept, torch.tensor([[0.0, 0.5 / 0.8, 0.0, 0.3 / 0.8]]))


def test_prompt_longer_than_context_is_cropped():
    torch.manual_seed(0)
    gpt = model.GPT(model.GPTConfig(vocab_size=20, block_size=8, n_layer=1, n_head=2, n_embd=16)).eval()
    long_prompt = torch.randint(0, 20, (1, 30))
    out = gpt.generate(long_prompt, 5, temperature=0)
    assert out.shape == (1, 35) and torch.equal(out[:, :30], long_prompt)
    cropped = gpt.generate(long_prompt[:, -8:], 5, temperature=0)
    assert torch.equal(out[:, 30:], cropped[:, 8:])  # only the last block_size tokens mattered


# --- checkpoints
def small_model():
    cfg = model.GPTConfig(vocab_size=256, block_size=8, n_layer=1, n_head=2, n_embd=16)
    return model.GPT(cfg), cfg


def test_word_overlap():
    assert train.word_overlap("the cat sat", "the cat ran") == pytest.approx(2 / 3)
    assert train.word_overlap("", "anything") == 0


def test_initial_loss_is_about_ln_256():
    torch.manual_seed(0)
    gpt, _ = small_model()
    x, y = torch.randint(0, 256, (2, 4, 8))
    assert abs(gpt(x, y)[1].item() - math.log(256)) < 0.1
