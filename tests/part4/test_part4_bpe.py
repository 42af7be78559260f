"""4.1 Byte-level BPE: primitives, naive == incremental training, round trips, special tokens, save/load,
multiprocess encoding."""
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from partloader import ROOT, load_part

bpe = load_part("part4_scaling", "bpe")

SHAKESPEARE = (ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")
SMALL = SHAKESPEARE[:8000]  # a few KB: ~100 merges train in well under a second, naive included
EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def tok():
    t = bpe.Tokenizer()
    t.train(SMALL, 256 + 100 + 1)
    return t


# --- primitives: the docstring examples -------------------------------------------------------------
def test_get_stats_worked_example():
    assert bpe.get_stats([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert bpe.get_stats([7], {(1, 2): 5}) == {(1, 2): 5}  # adds to an existing dict
    assert bpe.get_stats([]) == {}


def test_merge_worked_examples():
    assert bpe.merge([1, 2, 3, 1, 2], (1, 2), 4) == [4, 3, 4]
    assert bpe.merge([5, 5, 5], (5, 5), 9) == [9, 5]   # overlapping: left to right
    assert bpe.merge([5, 5, 5, 5], (5, 5), 9) == [9, 9]
    assert bpe.merge([1], (1, 2), 4) == [1]


def test_best_pair_tie_break():
    assert bpe.best_pair({(5, 1): 3, (2, 9): 3, (0, 0): 1}) == (2, 9)
    assert bpe.best_pair({(5, 1): 4, (2, 9): 3}) == (5, 1)


# --- training ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern", ["gpt4", "gpt2"])
def test_naive_equals_incremental(pattern):
    fast, slow, minbpe = (bpe.Tokenizer(pattern) for _ in range(3))
    fast.train(SMALL, 256 + 100 + 1)
    slow.train_naive(SMALL, 256 + 100 + 1)
    minbpe.train_naive(SMALL[:3000], 256 + 40 + 1, dedup=False)
    assert len(fast.merges) == 100
    assert list(fast.merges.items()) == list(slow.merges.items())  # same merges, same order
    fast.train(SMALL[:3000], 256 + 40 + 1)
    assert list(fast.merges.items()) == list(minbpe.merges.items())


def test_incremental_on_repetitive_text():
    """Overlapping pairs (a == b) and ties everywhere: where lazy bookkeeping goes wrong."""
    text = "aaaa aaa aa a ababab abab baba " * 3 + "zzzzzzzz zzz"
    fast, slow = bpe.Tokenizer(), bpe.Tokenizer()
    fast.train(text, 300)
    slow.train_naive(text, 300)
    assert fast.merges == slow.merges
    assert fast.vocab_size < 300  # subtle: the text runs out of pairs before 300
    assert fast.decode(fast.encode(text)) == text


def test_training_compresses(tok):
    ids = tok.encode(SMALL)
    assert len(SMALL.encode()) / len(ids) > 1.7  # 100 merges on 8 KB: ~1.8 bytes/token
    assert tok.vocab_size == 256 + 100 + 1
    assert tok.special_tokens == {EOT: 356}


@pytest.mark.parametrize("bad", [0, 100, 256, 256.5, "4096"])
def test_bad_vocab_size_raises(bad):
    with pytest.raises(ValueError, match="vocab_size must be an int >= 256 \\+ 1 special token"):
        bpe.Tokenizer().train("hello world", bad)
    bpe.Tokenizer().train("hello world", 257)  # the smallest legal size: no merges, just the specials


# --- round trips ------------------------------------------------------------------------------------
@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_roundtrip_any_text(tok, text):
    assert tok.decode(tok.encode(text)) == text
    assert tok.decode(tok.encode(text, allowed_special="all")) == text


def test_roundtrip_unicode_examples(tok):
    examples = ["", " ", "\n\n\n", "héllo wörld", "日本語のテキスト", "emoji 👩‍👩‍👧 and 🤗!", "a\r\nb\tc  d",
                "x" * 3000, "1234567890 3.14159", "don't WON'T"]
    for text in examples:
        assert tok.decode(tok.encode(text)) == text


def test_decode_random_ids_never_raises(tok):
    rng = random.Random(0)
    for _ in range(500):
        ids = [rng.randrange(tok.vocab_size) for _ in range(rng.randrange(1, 20))]
        assert isinstance(tok.decode(ids), str)  # half a UTF-8 character decodes to U+FFFD
    with pytest.raises(ValueError, match="unknown token id"):
        tok.decode([tok.vocab_size])


# --- special tokens ---------------------------------------------------------------------------------
def test_special_tokens_atomic_when_allowed(tok):
    text = f"hello{EOT}world {EOT}"
    ids = tok.encode(text, allowed_special="all")
    eot = tok.special_tokens[EOT]
    assert ids.count(eot) == 2
    assert tok.decode(ids) == text
    assert tok.encode(EOT, allowed_special={EOT}) == [eot]
    # by default it is ordinary text: several byte-level tokens, never the control id
    plain = tok.encode(text)
    assert eot not in plain and tok.decode(plain) == text
    with pytest.raises(ValueError, match="special token"):
        tok.encode(text, allowed_special="none_raise")
    with pytest.raises(ValueError, match="allowed_special"):
        tok.encode(text, allowed_special={"<|nope|>"})


def test_register_more_special_tokens_later():
    t = bpe.Tokenizer()
    t.train(SMALL, 300)
    t.register_special_tokens(["<|im_start|>", "<|im_end|>"])
    t.register_special_tokens({"<|tool|>": 400})
    assert t.special_tokens == {EOT: 299, "<|im_start|>": 300, "<|im_end|>": 301, "<|tool|>": 400}
    assert t.vocab_size == 401
    text = "<|im_start|>user\nhi<|im_end|><|tool|>"
    ids = t.encode(text, allowed_special="all")
    assert ids[0] == 300 and ids[-2:] == [301, 400]
    assert t.decode(ids) == text
    with pytest.raises(ValueError, match="already taken"):
        t.register_special_tokens({"<|x|>": 300})


def test_special_tokens_not_learned_by_training():
    text = (SMALL[:2000] + EOT) * 5
    t = bpe.Tokenizer()
    t.train(text, 400)
    assert all(b"<|" not in t.vocab[i] for i in t.merges.values())


# --- save / load ------------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern", ["gpt4", "gpt2"])
def test_save_load_roundtrip(tmp_path, pattern):
    t = bpe.Tokenizer(pattern)
    t.train(SMALL, 356)
    t.register_special_tokens(["<|im_start|>"])
    path = tmp_path / "tok.json"
    t.save(path)
    u = bpe.Tokenizer.load(path)
    assert u.merges == t.merges and u.special_tokens == t.special_tokens and u.pattern == t.pattern
    text = SHAKESPEARE[10000:14000] + "<|im_start|>" + EOT
    assert u.encode(text, allowed_special="all") == t.encode(text, allowed_special="all")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert any(line.strip().startswith("[") for line in lines)  # one merge per line: readable


def test_load_rejects_bad_files(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="format"):
        bpe.Tokenizer.load(path)


# --- big inputs -------------------------------------------------------------------------------------
def test_split_batches_joins_back():
    for text in [SHAKESPEARE[:20000], "a\n\nb\n\n\nc\nd " * 500, "no newlines at all " * 100, ""]:
        pieces = bpe.split_batches(text, 300)
        assert "".join(pieces) == text


@pytest.mark.parametrize("pattern", ["gpt4", "gpt2"])
def test_multiprocess_encoding_equals_single_process(tmp_path, pattern):
    t = bpe.Tokenizer(pattern)
    t.train(SMALL, 356)
    text = SHAKESPEARE[:60000] + f"\n{EOT}\n\n" + "spaces   \n\n\nand  lines\n \nX\n" * 50
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    whole = t.encode(text, allowed_special="all")
    one = t.encode_file(path, allowed_special="all", workers=1, batch_chars=4000)
    two = t.encode_file(path, allowed_special="all", workers=2, batch_chars=4000)
    assert one.tolist() == whole and two.tolist() == whole
    batch = [SHAKESPEARE[i:i + 3000] for i in range(0, 30000, 3000)]
    assert t.encode_batch(batch, workers=2) == t.encode_batch(batch, workers=1)


# --- CLI --------------------------------------------------------------------------------------------
def test_cli(tmp_path, capsys):
    src = tmp_path / "small.txt"
    src.write_text(SMALL, encoding="utf-8")
    out = tmp_path / "tok.json"
    bpe.main(["--train", str(src), "--vocab_size", "300", "--out", str(out)])
    assert bpe.Tokenizer.load(out).vocab_size == 300
    with pytest.raises(SystemExit):
        bpe.main(["--train", str(tmp_path / "missing.txt")])
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bpe.main(["--train", str(src), "--vocab_size", "256"])
    assert "vocab_size must be" in capsys.readouterr().err


def test_module_is_self_contained():
    assert Path(bpe.__file__).parent.name == "part4_scaling"
