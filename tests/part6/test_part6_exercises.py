"""Part 6 exercises (part6_sft/exercises.py): put your own solution there and run this file.

Each function is checked against an independent computation: packing against chat_format.pad_batch run on
each example alone and against the defining property of first-fit; the packed attention mask against
attention run on each example alone; the weighted loss against sft_loss.sft_loss, F.cross_entropy on labels
written out from the full conversations, and a case worked by hand; the wrong-answer kinds on hand-made
answers.
Run: python -m pytest -q tests/part6/test_part6_exercises.py
"""
import math
import random
from collections import namedtuple

import pytest
import torch
import torch.nn.functional as F
from partloader import load_part, one_line_exit

ex, chat, sft_loss, model_lib, bpe = load_part("part6_sft", "exercises", "chat_format", "sft_loss", "model", "bpe")

X = -100  # an ignored label
Example = namedtuple("Example", "family prompt response")  # stands in for tasks.Example


def random_pairs(n, seed, vocab=50):
    """n (prompt_ids, response_ids) pairs: prompts of 3-12 ids, responses of 1-8."""
    rng = random.Random(seed)
    return [([rng.randrange(vocab) for _ in range(rng.randint(3, 12))],
             [rng.randrange(vocab) for _ in range(rng.randint(1, 8))]) for _ in range(n)]


# ----------------------------------------------------------------------------------------------------
# 6.A packing instead of padding
def test_first_fit_by_hand():
    assert ex.first_fit([5, 4, 3, 2], 7) == [[0, 3], [1, 2]]  # 4 not beside 5; 3 beside 4; 2 fills bin 0
    assert ex.first_fit([7, 1, 7], 7) == [[0], [1], [2]]        # a full bin takes nothing more
    assert ex.first_fit([2, 2, 2, 2], 4) == [[0, 1], [2, 3]]
    with pytest.raises(ValueError):
        ex.first_fit([3, 9], 8)


@pytest.mark.parametrize("seed", range(4))
def test_first_fit_has_the_first_fit_property(seed):
    """Every item is in exactly one bin, no bin overflows, bins keep the items' order, and when item i was
    placed, every earlier bin had less room left than i needs (its room then = capacity - the items before i)."""
    rng = random.Random(seed)
    capacity = 20
    lengths = [rng.randint(1, capacity) for _ in range(60)]
    bins = ex.first_fit(lengths, capacity)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= capacity for b in bins)
    assert all(b == sorted(b) for b in bins)
    assert [b[0] for b in bins] == sorted(b[0] for b in bins)  # a bin is opened by its first item
    where = {i: k for k, b in enumerate(bins) for i in b}
    for i, n in enumerate(lengths):
        for k in range(where[i]):
            room_then = capacity - sum(lengths[j] for j in bins[k] if j < i)
            assert room_then < n


def test_pack_examples_by_hand():
    """Prompts [1, 2, 3] and [7, 8, 9], responses [4, 5] and [6]: x/y are full[:-1] / full[1:] with the prompt
    labels hidden, laid side by side; with block_size 7 the second example fits beside the first."""
    pairs = [([1, 2, 3], [4, 5]), ([7, 8, 9], [6])]
    x, y, segments = ex.pack_examples(pairs, block_size=7, pad_id=0)
    assert x.tolist() == [[1, 2, 3, 4, 7, 8, 9]]
    assert y.tolist() == [[X, X, 4, 5, X, X, 6]]   # 5 -> 7 would cross into the next prompt: it is not a label
    assert segments.tolist() == [[0, 0, 0, 0, 1, 1, 1]]
    x, y, segments = ex.pack_examples(pairs, block_size=5, pad_id=0)  # 4 + 3 > 5: two rows, one padded
    assert x.tolist() == [[1, 2, 3, 4], [7, 8, 9, 0]]
    assert y.tolist() == [[X, X, 4, 5], [X, X, 6, X]]
    assert segments.tolist() == [[0, 0, 0, 0], [1, 1, 1, -1]]
    assert ex.padding_fraction(segments) == 1 / 8


@pytest.mark.parametrize("block_size", [20, 32, 64])
def test_packed_rows_hold_each_example_exactly_as_pad_batch_makes_it(block_size):
    pairs = random_pairs(40, block_size)
    x, y, segments = ex.pack_examples(pairs, block_size, pad_id=99)
    assert x.size(1) <= block_size
    for i, pair in enumerate(pairs):
        want_x, want_y = chat.pad_batch([pair], pad_id=99)
        rows, cols = (segments == i).nonzero(as_tuple=True)
        assert rows.unique().numel() == 1 and (cols.diff() == 1).all()  # one row, side by side
        assert x[rows, cols].tolist() == want_x[0].tolist()
        assert y[rows, cols].tolist() == want_y[0].tolist()
    padding = segments < 0
    assert (x[padding] == 99).all() and (y[padding] == X).all()
    # every response label exactly once: as many counted labels as all the examples' responses hold
    assert int((y != X).sum()) == sum(len(r) for _, r in pairs)
    real = sum(len(p) + len(r) - 1 for p, r in pairs)
    assert ex.padding_fraction(segments) == pytest.approx(1 - real / segments.numel())


def test_pack_examples_bad_input_is_one_line():
    with pytest.raises(ValueError, match="block_size is 6") as e:
        ex.pack_examples([([1, 2, 3, 4], [5, 6, 7, 8])], block_size=6, pad_id=0)
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="at least one"):
        ex.pack_examples([], block_size=6, pad_id=0)


def test_packed_attention_mask_by_hand():
    mask = ex.packed_attention_mask(torch.tensor([[0, 0, 1, 1, -1]]))
    assert mask.shape == (1, 1, 5, 5)
    assert mask[0, 0].int().tolist() == [[1, 0, 0, 0, 0],
                                         [1, 1, 0, 0, 0],
                                         [0, 0, 1, 0, 0],
                                         [0, 0, 1, 1, 0],
                                         [0, 0, 0, 0, 1]]


def test_with_the_mask_and_rope_a_packed_row_computes_what_each_example_computes_alone():
    """q, k rotated by their positions in the packed row (RoPE), attention with the block-diagonal mask: each
    example's output equals attention over that example alone at positions 0, 1, ... With the plain causal
    mask the later examples see the earlier ones and their outputs change."""
    torch.manual_seed(0)
    pairs = random_pairs(6, 1)
    _, _, segments = ex.pack_examples(pairs, 24, pad_id=0)
    B, T, nh, hs = segments.size(0), segments.size(1), 2, 8
    q, k, v = (torch.randn(B, nh, T, hs, dtype=torch.float64) for _ in range(3))
    cos, sin = (t.double() for t in model_lib.rope_tables(T, hs))

    def attend(q, k, v, mask=None):
        n = q.size(-2)
        rotated_q, rotated_k = model_lib.apply_rope(q, cos[:n], sin[:n]), model_lib.apply_rope(k, cos[:n], sin[:n])
        return model_lib.causal_attention(rotated_q, rotated_k, v, mask=mask)

    packed = attend(q, k, v, ex.packed_attention_mask(segments))
    causal_only = attend(q, k, v)
    changed = 0
    for i in range(len(pairs)):
        r, cols = (segments == i).nonzero(as_tuple=True)
        r, start, end = int(r[0]), int(cols[0]), int(cols[-1]) + 1
        alone = attend(q[r:r + 1, :, start:end], k[r:r + 1, :, start:end], v[r:r + 1, :, start:end])
        assert torch.allclose(packed[r, :, start:end], alone[0], atol=1e-5)  # rope_tables are float32 angles
        if start > 0:  # not the first of its row: without the mask it sees the examples before it
            changed += not torch.allclose(causal_only[r, :, start:end], alone[0], atol=1e-2)
    assert changed > 0


def test_measure_packing_by_hand():
    """Lengths (prompt + response - 1) 4, 3, 6, 3: padded to the longest, 24 positions hold 16 tokens."""
    pairs = [([1, 2, 3], [4, 5]), ([1, 2, 3], [4]), ([1, 2, 3], [4, 5, 6, 7]), ([1, 2], [3, 4])]
    rows = {name.split(" (")[0]: rest for name, *rest in ex.measure_packing(pairs, block_size=8, batch_size=2)}
    assert rows["all padded to the longest"] == [4, pytest.approx(1 - 16 / 24), pytest.approx(6.0)]
    assert rows["batches of 2 similar lengths"] == [4, pytest.approx(1 - 16 / 18), pytest.approx(4.5)]  # [3, 3], [4, 6]
    n_rows, share, per_example = rows["packed into rows of 8"]
    assert n_rows >= 2 and share == pytest.approx(1 - 16 / (4 * per_example))  # 16 tokens need 2 rows of 8


def tiny_chat_model(block_size=48, seed=0):
    tok = bpe.Tokenizer()
    tok.train("the cat sat on the mat. a dog ran to the park and the cat ran after it. " * 4, vocab_size=280)
    chat.add_chat_tokens(tok)
    torch.manual_seed(seed)
    cfg = model_lib.GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=1, n_head=2, n_embd=16)
    return model_lib.GPT(cfg).eval(), tok


def test_measure_packed_context_first_examples_match_alone():
    """The first example of a row has nothing before it: the same loss as alone (a check of the bookkeeping)."""
    gpt, tok = tiny_chat_model()
    pairs = [(chat.encode_prompt(tok, f"the cat {'sat ' * (i % 4)}"), chat.encode_response(tok, "on the mat"))
             for i in range(12)]
    result = ex.measure_packed_context(gpt, pairs, pad_id=tok.special_tokens[chat.END])
    assert result["first"][0] == pytest.approx(result["first"][1], rel=1e-5)
    assert 0 < result["later share"] < 1
    assert result["later"][0] != pytest.approx(result["later"][1], rel=1e-5)  # a random model is distracted too


# ----------------------------------------------------------------------------------------------------
# 6.B loss on the prompt tokens too
def test_prompt_labels_by_hand():
    x = torch.tensor([[1, 2, 3, 4, 5], [6, 7, 8, 0, 0]])  # prompts of 4 and 2 tokens; row 1 padded with 0
    assert ex.prompt_labels(x, [4, 2]).tolist() == [[2, 3, 4, X, X], [7, X, X, X, X]]


def batch(pairs, vocab=50, seed=0):
    torch.manual_seed(seed)
    x, y = chat.pad_batch(pairs, pad_id=0)
    logits = torch.randn(*x.shape, vocab, dtype=torch.float64) * 2
    return logits, x, y, [len(p) for p, _ in pairs]


def test_weight_zero_is_the_sft_loss():
    logits, x, y, prompt_lens = batch(random_pairs(8, 3))
    got = ex.prompt_weighted_loss(logits, x, y, prompt_lens, 0.0)
    assert got.item() == pytest.approx(sft_loss.sft_loss(logits, y).item(), rel=1e-6)


def test_weight_one_is_the_language_model_loss_on_the_whole_conversation():
    """Labels written out from the full conversations: full[1:], padding ignored, nothing masked."""
    pairs = random_pairs(8, 4)
    logits, x, y, prompt_lens = batch(pairs)
    labels = torch.full_like(y, X)
    for b, (p, r) in enumerate(pairs):
        full = p + r
        labels[b, :len(full) - 1] = torch.tensor(full[1:])
    want = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=X)
    assert ex.prompt_weighted_loss(logits, x, y, prompt_lens, 1.0).item() == pytest.approx(want.item(), rel=1e-6)


def test_mixed_weight_by_hand():
    """One row, prompt [0, 1, 0] and response [1, 1]: labels 1, 0 (prompt) and 1, 1 (response). Vocabulary of
    2; the logits are 0 at the prompt positions (p = 1/2: -log p = ln 2 each) and favour the label by 2 at the
    response positions (p = sigmoid(2): -log p = ln(1 + e^-2) each). With w = 0.5:
    (2 ln(1 + e^-2) + 0.5 * 2 ln 2) / (2 + 0.5 * 2)."""
    pairs = [([0, 1, 0], [1, 1])]
    x, y = chat.pad_batch(pairs, pad_id=0)
    assert y.tolist() == [[X, X, 1, 1]]
    logits = torch.tensor([[[0.0, 0.0], [0.0, 0.0], [0.0, 2.0], [0.0, 2.0]]])
    want = (2 * math.log(1 + math.exp(-2)) + 0.5 * 2 * math.log(2)) / (2 + 0.5 * 2)
    assert ex.prompt_weighted_loss(logits, x, y, [3], 0.5).item() == pytest.approx(want, rel=1e-6)


def test_prompt_positions_get_gradient_only_with_a_weight():
    logits, x, y, prompt_lens = batch(random_pairs(4, 5))
    prompt = ex.prompt_labels(x, prompt_lens) != X
    for w, expect_grad in ((0.0, False), (0.1, True)):
        leaf = logits.clone().requires_grad_()
        ex.prompt_weighted_loss(leaf, x, y, prompt_lens, w).backward()
        assert bool(leaf.grad[prompt].abs().sum() > 0) == expect_grad
        assert leaf.grad[y != X].abs().sum() > 0


def test_negative_weight_is_one_line():
    logits, x, y, prompt_lens = batch(random_pairs(2, 6))
    with pytest.raises(ValueError, match=">= 0") as e:
        ex.prompt_weighted_loss(logits, x, y, prompt_lens, -0.5)
    assert "\n" not in str(e.value)


def test_measure_prompt_loss_agrees_with_the_weighted_loss():
    gpt, tok = tiny_chat_model()
    examples = [Example("f", f"the cat {'ran ' * i}", "the mat" if i % 2 else "a dog") for i in range(6)]
    result = ex.measure_prompt_loss(gpt, tok, examples, weights=(0, 0.3, 1))
    pairs = [(chat.encode_prompt(tok, e.prompt), chat.encode_response(tok, e.response)) for e in examples]
    x, y = chat.pad_batch(pairs, tok.special_tokens[chat.END])
    with torch.no_grad():
        logits = gpt(x)[0]
    for w, loss, _ in result["weights"]:
        want = ex.prompt_weighted_loss(logits, x, y, [len(p) for p, _ in pairs], w).item()
        assert loss == pytest.approx(want, rel=1e-5)
    assert result["weights"][0][1] == pytest.approx(result["response"], rel=1e-6)
    n_response = sum(len(r) for _, r in pairs)
    n_prompt = sum(len(p) - 1 for p, _ in pairs)
    assert result["prompt tokens"] == pytest.approx(n_prompt / (n_prompt + n_response))
    assert [share for *_, share in result["weights"]] == pytest.approx(
        [n_response / (n_response + w * n_prompt) for w in (0, 0.3, 1)])


def test_text_nll_by_hand():
    """A model that gives every token the same logits predicts each token with p = 1 / V."""
    gpt, tok = tiny_chat_model()
    with torch.no_grad():
        for p in gpt.parameters():
            p.zero_()
    assert ex.text_nll(gpt, [[1, 2, 3], [4, 5]]) == pytest.approx(math.log(tok.vocab_size), rel=1e-6)


# ----------------------------------------------------------------------------------------------------
# 6.C what the wrong answers are
TRAIN = [Example("copy", "Repeat these words: owl tulip", "owl tulip"),
         Example("copy", "Copy this list: bread ship calm", "bread ship calm"),
         Example("add", "What is 3 + 5?", "8")]


def test_recall_vocabulary_by_hand():
    assert ex.recall_vocabulary(TRAIN) == {"copy": {"owl", "tulip", "bread", "ship", "calm"}, "add": {"8"}}


@pytest.mark.parametrize("answer, kind", [
    ("river stone", "from_prompt"),     # the prompt's words in the wrong order
    ("stone", "from_prompt"),           # one of them left out
    ("The stone.", "from_prompt"),      # normalize(): case, punctuation and articles do not matter
    ("river owl", "recalled"),          # owl is not in the prompt, but a training answer's word
    ("bread ship", "recalled"),
    ("river gloop", "other"),           # gloop: neither in the prompt nor ever an answer
    ("rive", "other"),                  # a word cut short
    ("", "other"),                      # nothing at all
])
def test_classify_wrong_by_hand(answer, kind):
    example = Example("copy", "Repeat these words: stone river", "stone river")
    vocabulary = ex.recall_vocabulary(TRAIN)["copy"]
    assert ex.classify_wrong(example, answer, vocabulary) == kind


def test_words_in_the_prompt_count_as_read_even_when_they_were_training_answers_too():
    """owl and tulip are training answers, but here the prompt holds them: the model may have read them."""
    example = Example("copy", "Copy this list: tulip owl fox", "tulip owl fox")
    assert ex.classify_wrong(example, "owl tulip", ex.recall_vocabulary(TRAIN)["copy"]) == "from_prompt"
    assert ex.classify_wrong(Example("add", "What is 8 + 0?", "8"), "0", {"8", "0"}) == "from_prompt"


def test_family_confusion_by_hand():
    test = [Example("copy", "Repeat these words: stone river", "stone river"),   # right
            Example("copy", "Repeat these words: lake fox", "lake fox"),         # recalled: owl
            Example("copy", "Copy this list: pond moon", "pond moon"),           # from the prompt
            Example("copy", "Copy this list: fern", "fern"),                     # recalled: bread, ship
            Example("add", "What is 2 + 2?", "4"),                               # right
            Example("add", "What is 1 + 6?", "7"),                               # recalled: 8, a train answer
            Example("add", "What is 0 + 4?", "4")]                               # other: 44 was never an answer
    answers = ["stone river", "lake owl", "moon pond", "bread ship", " 4 ", "8", "44"]
    table = ex.family_confusion(test, answers, TRAIN)
    assert table["copy"] == {"n": 4, "wrong": 3, "from_prompt": pytest.approx(1 / 3),
                             "recalled": pytest.approx(2 / 3), "other": 0.0}
    assert table["add"] == {"n": 3, "wrong": 2, "from_prompt": 0.0, "recalled": 0.5, "other": 0.5}
    assert ex.family_confusion(test[:1], answers[:1], TRAIN)["copy"] == {
        "n": 1, "wrong": 0, "from_prompt": 0.0, "recalled": 0.0, "other": 0.0}  # nothing wrong: no nan
    with pytest.raises(ValueError, match="one answer per example"):
        ex.family_confusion(test, answers[:2], TRAIN)


def test_word_sources_by_hand():
    tasks = load_part("part6_sft", "tasks")
    held_out, training = tasks.SPLIT_WORDS["test"][0], tasks.SPLIT_WORDS["train"][0]
    examples = [Example("copy", "", ""), Example("first_word", "", ""), Example("add", "", "")]
    answers = [f"{training} {training} gloop", held_out, f"{held_out} {training}"]  # add is no word family
    assert ex.word_sources(examples, answers) == {"held-out": 1, "training": 2, "neither": 1}


# ----------------------------------------------------------------------------------------------------
# The figures: main on a tiny checkpoint
@pytest.fixture
def tiny_checkpoint(tmp_path):
    """A random GPT with a chat tokenizer, saved as train.py saves best.pt (block_size 160: room for every task
    prompt and its answer, in the bytes of this tiny tokenizer)."""
    checkpoint, data = load_part("part6_sft", "checkpoint", "data")
    gpt, tok = tiny_chat_model(block_size=160)
    path = str(tmp_path / "best.pt")
    checkpoint.save_checkpoint(path, gpt, gpt.config, step=0, val_loss=1.0,
                               extra={"tokenizer": data.tokenizer_to_dict(tok)})
    return path


def test_main_prints_every_figure(tiny_checkpoint, capsys):
    ex.main(["--checkpoint", tiny_checkpoint, "--base", tiny_checkpoint, "--train_per_family", "3",
             "--per_family", "1"])
    out = capsys.readouterr().out
    for line in ("6.A padding of 51 training examples", "packed into rows of 160", "6.B the fine-tuned model",
                 "the prompts' text alone (test split)", "6.C wrong answers, test split",
                 "6.C wrong answers, train split", "words of the answers in copy"):
        assert line in out


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        ex.main(["--checkpoint", str(tmp_path / "none.pt")])
    assert "not found" in one_line_exit(e, capsys)


@pytest.mark.parametrize("flag", ["--per_family", "--train_per_family"])
def test_bad_flags_are_one_line(flag, capsys):
    with pytest.raises(SystemExit) as e:
        ex.parse_args([flag, "0"])
    assert flag in one_line_exit(e, capsys)

