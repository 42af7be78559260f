"""Part 4's decoding fast path (decode.py): a preallocated KV cache and batched generation of prompts of
different lengths. The reference is the slow, obviously right way: each prompt alone, the whole text rerun
for every new token (GPT.generate(use_cache=False))."""
import pytest
import torch
from partloader import load_part

model4, decode = load_part("part4_scaling", "model", "decode")

PROMPTS = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [7, 8], [9], [3, 3, 3, 3]]


def make_model(**overrides):
    cfg = dict(vocab_size=64, block_size=48, n_layer=2, n_head=4, n_embd=32, **overrides)
    torch.manual_seed(0)
    model = model4.GPT(model4.GPTConfig(**cfg)).eval()
    with torch.no_grad():  # GPT-2's small init gives near-uniform logits that repeat the input token; larger
        for p in model.parameters():  # weights make the greedy choice vary, so a masking error shows up
            if p.dim() == 2:
                p.normal_(0, 0.3)
    return model


def recomputed(model, prompt, n):
    return model.generate(torch.tensor([prompt]), n, temperature=0, use_cache=False)[0, len(prompt):].tolist()


@pytest.mark.parametrize("overrides", [{}, {"window": 6, "n_sink": 2}, {"use_sdpa": False}])
def test_batched_cached_greedy_equals_recomputation_prompt_by_prompt(overrides):
    model = make_model(**overrides)
    out = decode.generate_batch(model, PROMPTS, 30)
    assert out == [recomputed(model, p, 30) for p in PROMPTS]


def test_each_row_stops_at_its_own_stop_token():
    model = make_model()
    refs = [recomputed(model, p, 25) for p in PROMPTS]
    stop = refs[1][4]  # a token row 1 reaches after 5 steps; other rows reach it at other steps, or never
    out = decode.generate_batch(model, PROMPTS, 25, stop_ids=[stop])
    for ref, got in zip(refs, out):
        expected = ref[:ref.index(stop) + 1] if stop in ref else ref
        assert got == expected
    assert out[1] == refs[1][:5] and out[1][-1] == stop


def test_sampling_is_reproducible_with_a_seeded_generator():
    model = make_model()

    def sample(seed, **kw):
        gen = torch.Generator().manual_seed(seed)
        return decode.generate_batch(model, PROMPTS, 20, temperature=1.0, generator=gen, **kw)

    assert sample(1) == sample(1)
    assert sample(1) != sample(2)
    assert sample(3, top_k=1) == decode.generate_batch(model, PROMPTS, 20)  # top-1 sampling is greedy


def test_buffers_are_written_in_place_never_reallocated():
    model = make_model()
    cache = decode.DecodeCache(model, len(PROMPTS), 20)
    logits, lengths = decode.prefill(model, cache, PROMPTS)
    pointers = [(layer.k.data_ptr(), layer.v.data_ptr()) for layer in cache.layers]
    T = max(len(p) for p in PROMPTS)
    for step in range(5):
        token = logits.argmax(-1, keepdim=True)
        logits = decode.decode_step(model, cache, token, (lengths + step)[:, None], n_slots=T + step + 1)
    assert [(layer.k.data_ptr(), layer.v.data_ptr()) for layer in cache.layers] == pointers
    assert cache.layers[0].k.shape == (len(PROMPTS), 4, 20, 8)  # (B, nh, max_len, hs)


def test_reading_every_slot_as_the_cuda_graph_does_gives_the_same_tokens():
    """cuda_graph_step records decode_step with n_slots = max_len (fixed shapes); CPU checks that path."""
    model = make_model(window=6, n_sink=2)
    cache = decode.DecodeCache(model, len(PROMPTS), 30)
    logits, lengths = decode.prefill(model, cache, PROMPTS)
    tokens = []
    for step in range(15):
        tokens.append(logits.argmax(-1, keepdim=True))
        logits = decode.decode_step(model, cache, tokens[-1], (lengths + step)[:, None], n_slots=cache.max_len)
    assert torch.cat(tokens, 1).tolist() == decode.generate_batch(model, PROMPTS, 15)


@pytest.mark.parametrize("prompts, n, overrides, message", [
    ([[1, 2]], 5, {"generate_batch": {"cuda_graph": True}}, "needs the model on a CUDA device"),
    ([[1, 2], []], 5, {}, "at least one token"),
    ([], 5, {}, "at least one token"),
    ([[1, 2]], 0, {}, "max_new_tokens must be >= 1"),
    ([[1, 99]], 5, {}, "token ids must be in 0..63"),
    ([[1] * 40], 9, {}, "exceed block_size 48; shorten"),
    ([[1, 2]], 5, {"pos_embedding": "learned"}, "needs a RoPE model"),
])
def test_bad_arguments_give_one_line_errors(prompts, n, overrides, message):
    kwargs = overrides.get("generate_batch", {})  # the other overrides are the model's
    model = make_model(**{k: v for k, v in overrides.items() if k != "generate_batch"})
    with pytest.raises(ValueError, match=message) as err:
        decode.generate_batch(model, prompts, n, **kwargs)
    assert "\n" not in str(err.value)
