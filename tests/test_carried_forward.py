"""Unit tests of code that is carried forward from part to part, run on EVERY part that defines it.

A part starts as a copy of the previous one, so top_p_filter, get_batch, ... exist in several parts. Each
test here is parametrized by parts_defining(name): a fix made in one copy and not the others fails here,
and a new part (5, 6, ...) is tested without editing this file. A function that moves to another file
(model.py -> sampling.py) is still found. Expected values are worked out by hand in the comments.
"""
import functools
import inspect
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from partloader import load_part, parts_defining

INF = float("-inf")


@functools.cache
def module_of(part, module):
    return load_part(part, module)


def get(part, mod, name):
    return getattr(module_of(part, mod), name)


def params(name, taking=None):
    """pytest parameters: one per part that defines `name`, shown as e.g. part3_modern/model.py.
    taking: only the parts where the function takes this argument (a feature a later chapter adds)."""
    found = parts_defining(name)
    if taking:
        found = [(part, mod) for part, mod in found if taking in inspect.signature(get(part, mod, name)).parameters]
    return [pytest.param(part, mod, id=f"{part}/{mod}.py") for part, mod in found]


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
