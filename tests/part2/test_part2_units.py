"""Part 2 units: tokenizer, batching, loss, sampling math, checkpoints."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from partloader import load_part

model, tokenizer, train = load_part("part2_tiny_llm", "model", "tokenizer", "train")


# --- 2.1 byte-level tokenizer
@pytest.mark.parametrize("text", ["hello", "héllo wörld", "emoji 🤖🎭!", "日本語", "", "a\nb\tc\r\n"])
def test_byte_tokenizer_round_trips(text):
    tok = tokenizer.ByteTokenizer()
    ids = tok.encode(text)
    assert all(0 <= i < 256 for i in ids)
    assert len(ids) == len(text.encode("utf-8"))
    assert tok.decode(ids) == text


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_any_string_round_trips(text):
    tok = tokenizer.ByteTokenizer()
    assert tok.decode(tok.encode(text)) == text


@settings(max_examples=200, deadline=None)
@given(st.binary())
def test_decoding_any_bytes_never_crashes(raw):
    assert isinstance(tokenizer.ByteTokenizer().decode(list(raw)), str)


# --- 2.2 batching and 2.3 the shifted loss
def test_targets_are_inputs_shifted_by_one():
    data = torch.arange(100)
    x, y = train.get_batch(data, block_size=8, batch_size=5, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (5, 8)
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(y[:, -1], x[:, -1] + 1)  # data is 0..99, so the next token is always +1


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


# --- 2.5 sampling math
def test_top_k_keeps_exactly_k():
    logits = torch.randn(4, 50)
    kept = model.top_k_filter(logits, 7)
    assert (kept > float("-inf")).sum(-1).tolist() == [7] * 4
    assert torch.equal(kept.max(-1).values, logits.max(-1).values)
    assert torch.all(kept.topk(7).values == logits.topk(7).values)


@pytest.mark.parametrize("p, n_kept", [(0.5, 1), (0.7, 2), (0.8, 2), (0.81, 3), (0.96, 4), (1.0, 4)])
def test_top_p_keeps_the_smallest_set_reaching_p(p, n_kept):
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])  # sorted: 0.5, 0.3, 0.15, 0.05
    kept = model.top_p_filter(probs.log(), p)
    assert (kept > float("-inf")).sum().item() == n_kept
    expected_order = [1, 3, 2, 0][:n_kept]
    assert set(torch.nonzero(kept[0] > float("-inf")).flatten().tolist()) == set(expected_order)


def test_filtered_probabilities_renormalise():
    probs = torch.tensor([[0.05, 0.5, 0.15, 0.3]])
    kept = F.softmax(model.top_p_filter(probs.log(), 0.7), dim=-1)
    assert torch.allclose(kept, torch.tensor([[0.0, 0.5 / 0.8, 0.0, 0.3 / 0.8]]))


def test_temperature_to_zero_is_argmax():
    logits = torch.randn(8, 30)
    greedy = model.sample_next_token(logits, temperature=0)
    assert torch.equal(greedy.flatten(), logits.argmax(-1))
    cold = model.sample_next_token(logits, temperature=1e-4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(cold, greedy)


def test_sampling_is_seeded():
    logits = torch.randn(2, 30)
    a = model.sample_next_token(logits, 1.0, generator=torch.Generator().manual_seed(3))
    b = model.sample_next_token(logits, 1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


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


def test_checkpoint_round_trip_is_atomic(tmp_path):
    gpt, cfg = small_model()
    path = str(tmp_path / "best.pt")
    train.save_checkpoint(path, gpt, cfg, step=7, val_loss=1.5)
    assert not (tmp_path / "best.pt.tmp").exists()
    loaded, ckpt = train.load_checkpoint(path)
    assert ckpt["step"] == 7
    for a, b in zip(gpt.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)


def test_unreadable_checkpoint_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="cannot read checkpoint"):
        train.load_checkpoint(str(bad))
    with pytest.raises(SystemExit, match="not found"):
        train.load_checkpoint(str(tmp_path / "missing.pt"))


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    gpt, cfg = small_model()
    path = str(tmp_path / "other.pt")
    torch.save({"arch": "part9_mla", "model": gpt.state_dict()}, path)
    with pytest.raises(SystemExit, match="part9_mla"):
        train.load_checkpoint(path)
    train.save_checkpoint(path, gpt, cfg, 1, 1.0)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_config"]["n_embd"] = 32  # a config that does not match the stored weights
    torch.save(ckpt, path)
    with pytest.raises(SystemExit, match="does not fit"):
        train.load_checkpoint(path)


def test_word_overlap():
    assert train.word_overlap("the cat sat", "the cat ran") == pytest.approx(2 / 3)
    assert train.word_overlap("", "anything") == 0


def test_initial_loss_is_about_ln_256():
    torch.manual_seed(0)
    gpt, _ = small_model()
    x, y = torch.randint(0, 256, (2, 4, 8))
    assert abs(gpt(x, y)[1].item() - math.log(256)) < 0.1
