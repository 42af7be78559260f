"""Part 4 exercises (part4_scaling/exercises.py): put your own solution there and run this file."""
import math

import pytest
import regex
import torch
from partloader import ROOT, load_part

ex, model, train, bpe = load_part("part4_scaling", "exercises", "model", "train", "bpe")


# --- 4.A inverse square root
@pytest.mark.parametrize("warmup", [1, 10, 100])
def test_inverse_sqrt_is_the_papers_formula(warmup):
    cfg = train.TrainConfig(lr=3e-3, warmup_steps=warmup, max_steps=50)
    for step in range(0, 2000, 7):
        s = step + 1  # the paper counts steps from 1
        noam = min(s ** -0.5, s * warmup ** -1.5)  # Vaswani et al. 2017, eq. (3), without d_model^-0.5
        assert ex.lr_inverse_sqrt(step, cfg) == pytest.approx(3e-3 * math.sqrt(warmup) * noam, rel=1e-9)


def test_inverse_sqrt_by_hand():
    cfg = train.TrainConfig(lr=1e-3, warmup_steps=10)
    assert ex.lr_inverse_sqrt(9, cfg) == pytest.approx(1e-3)      # the peak, where warmup ends
    assert ex.lr_inverse_sqrt(39, cfg) == pytest.approx(5e-4)     # 4x the warmup: half the peak
    assert ex.lr_inverse_sqrt(999, cfg) == pytest.approx(1e-4)    # 100x: a tenth


def test_schedule_plot_is_written(tmp_path):
    out = tmp_path / "schedules.png"
    ex.plot_with_inverse_sqrt(out, train.TrainConfig(max_steps=200, warmup_steps=20))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# --- 4.B a pre-tokenizer of your own
def test_bytes_per_token_by_hand():
    tok = bpe.Tokenizer()
    assert ex.bytes_per_token(tok, "héllo") == 1.0  # untrained: one token per byte (é is two bytes)
    tok.train("aaaa", 256 + 1 + len(tok.special_tokens))  # one merge: "aa"
    assert ex.bytes_per_token(tok, "aaaa") == 2.0  # [aa, aa]
    assert ex.bytes_per_token(tok, "aaaaa") == 5 / 3  # [aa, aa, a]


@pytest.mark.parametrize("text", ["one line", "two\nlines\n", "\n\nblank lines\n\n", "crlf\r\nend", ""])
def test_lines_pattern_cuts_only_after_line_breaks(text):
    chunks = regex.findall(ex.LINES_PATTERN, text)
    assert "".join(chunks) == text  # nothing lost or repeated
    assert all("\n" not in c[:-1] for c in chunks)  # a line break only ever ends a chunk
    assert len(chunks) == len(text.splitlines())


def test_lines_tokenizer_learns_tokens_across_words_and_gpt4_never_does():
    text = (ROOT / "data" / "shakespeare_100k.txt").read_text(encoding="utf-8")[:20_000]
    crossing = regex.compile(rb"\w \w")  # a letter, a space, a letter: two words in one token
    for pattern, expected in ((ex.LINES_PATTERN, True), (bpe.PATTERNS["gpt4"], False)):
        tok = bpe.Tokenizer(pattern)
        tok.train(text, 400)
        assert any(crossing.search(t) for t in tok.vocab.values()) == expected


def test_more_merges_never_cost_bytes_per_token():
    """Encoding applies merges by rank, so the merges of a larger vocabulary only ever shorten the ids of
    a smaller one (training is greedy: the smaller vocabulary's merges are its first ones)."""
    text = (ROOT / "data" / "shakespeare_100k.txt").read_text(encoding="utf-8")
    texts = {"train": text[:20_000], "unseen": text[-5_000:]}
    small, large = (ex.compare_pretokenizers(texts["train"], texts, v, ("gpt2", "lines")) for v in (300, 400))
    for pattern in small:
        for name in texts:
            assert large[pattern][name] >= small[pattern][name] > 1.0


# --- 4.C training memory
def test_adamw_memory_matches_the_tensors_training_allocates():
    torch.manual_seed(0)
    gpt = model.GPT(model.GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
    optimizer = train.make_optimizer(gpt, train.TrainConfig())
    x = torch.randint(0, 64, (2, 16))
    gpt(x, x)[1].backward()
    optimizer.step()
    stored = {}  # data_ptr -> bytes: a tied matrix (wte = lm_head) is one tensor however often it appears
    for p in gpt.parameters():
        stored[p.data_ptr()] = p.numel() * p.element_size()
        stored[p.grad.data_ptr()] = p.grad.numel() * p.grad.element_size()
    for state in optimizer.state.values():
        for name, t in state.items():
            if name != "step":  # a one-number step counter per tensor, not per weight
                stored[t.data_ptr()] = t.numel() * t.element_size()
    assert ex.adamw_training_bytes(gpt)["total"] == sum(stored.values())
