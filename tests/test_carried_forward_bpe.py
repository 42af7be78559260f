"""4.1 Byte-level BPE: primitives, naive == incremental training, round trips, special tokens, save/load,
multiprocess encoding, streaming encoding (same ids as the whole text, bounded memory, the data cache).

bpe.py is carried unchanged into every part after Part 4, so every test here runs on each part that defines
bpe.Tokenizer (the module-scoped `part` fixture below; a test id names the part, e.g. [part4_scaling/bpe.py])."""
import lzma
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from partloader import ROOT, load_part, parts_defining


SHAKESPEARE = (ROOT / "data" / "tinyshakespeare.txt").read_text(encoding="utf-8")
SMALL = SHAKESPEARE[:8000]  # a few KB: ~100 merges train in well under a second, naive included
EOT = "<|endoftext|>"


@pytest.fixture(scope="module", params=[pytest.param(found, id=f"{found[0]}/{found[1]}.py")
                                        for found in parts_defining("Tokenizer")])
def part(request):
    """The folder of a part that defines bpe.Tokenizer: "part4_scaling", later also "part5_...", ..."""
    return request.param[0]


@pytest.fixture(scope="module")
def bpe(part):
    return load_part(part, "bpe")


@pytest.fixture(scope="module")
def tok(bpe):
    t = bpe.Tokenizer()
    t.train(SMALL, 256 + 100 + 1)
    return t


# --- primitives: the docstring examples -------------------------------------------------------------
def test_get_stats_worked_example(bpe):
    assert bpe.get_stats([1, 2, 3, 1, 2]) == {(1, 2): 2, (2, 3): 1, (3, 1): 1}
    assert bpe.get_stats([7], {(1, 2): 5}) == {(1, 2): 5}  # adds to an existing dict
    assert bpe.get_stats([]) == {}


def test_merge_worked_examples(bpe):
    assert bpe.merge([1, 2, 3, 1, 2], (1, 2), 4) == [4, 3, 4]
    assert bpe.merge([5, 5, 5], (5, 5), 9) == [9, 5]   # overlapping: left to right
    assert bpe.merge([5, 5, 5, 5], (5, 5), 9) == [9, 9]
    assert bpe.merge([1], (1, 2), 4) == [1]


def test_best_pair_tie_break(bpe):
    assert bpe.best_pair({(5, 1): 3, (2, 9): 3, (0, 0): 1}) == (2, 9)
    assert bpe.best_pair({(5, 1): 4, (2, 9): 3}) == (5, 1)


# --- training ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern", ["gpt4", "gpt2"])
def test_naive_equals_incremental(bpe, pattern):
    fast, slow, minbpe = (bpe.Tokenizer(pattern) for _ in range(3))
    fast.train(SMALL, 256 + 100 + 1)
    slow.train_naive(SMALL, 256 + 100 + 1)
    minbpe.train_naive(SMALL[:3000], 256 + 40 + 1, dedup=False)
    assert len(fast.merges) == 100
    assert list(fast.merges.items()) == list(slow.merges.items())  # same merges, same order
    fast.train(SMALL[:3000], 256 + 40 + 1)
    assert list(fast.merges.items()) == list(minbpe.merges.items())


def test_incremental_on_repetitive_text(bpe):
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
def test_bad_vocab_size_raises(bpe, bad):
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


def test_register_more_special_tokens_later(bpe):
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


def test_special_tokens_not_learned_by_training(bpe):
    text = (SMALL[:2000] + EOT) * 5
    t = bpe.Tokenizer()
    t.train(text, 400)
    assert all(b"<|" not in t.vocab[i] for i in t.merges.values())


# --- save / load ------------------------------------------------------------------------------------
@pytest.mark.parametrize("pattern", ["gpt4", "gpt2"])
def test_save_load_roundtrip(bpe, tmp_path, pattern):
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


def test_load_rejects_bad_files(bpe, tmp_path):
    path = tmp_path / "bad.json"
    path.write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="format"):
        bpe.Tokenizer.load(path)


# --- big inputs -------------------------------------------------------------------------------------
def test_split_batches_joins_back(bpe):
    for text in [SHAKESPEARE[:20000], "a\n\nb\n\n\nc\nd " * 500, "no newlines at all " * 100, ""]:
        pieces = bpe.split_batches(text, 300)
        assert "".join(pieces) == text


@pytest.mark.parametrize("pattern", ["gpt4", "gpt2"])
def test_multiprocess_encoding_equals_single_process(bpe, tmp_path, pattern):
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
def test_cli(bpe, tmp_path, capsys):
    src = tmp_path / "small.txt"
    src.write_text(SMALL, encoding="utf-8")
    out = tmp_path / "tok.json"
    bpe.main(["--train", str(src), "--vocab_size", "300", "--out", str(out)])
    assert bpe.Tokenizer.load(out).vocab_size == 300  # bad input to the CLI: tests/test_bad_tool_input.py


def test_module_is_self_contained(bpe, part):
    assert Path(bpe.__file__).parent.name == part


# --- 4.1 streaming: a corpus larger than memory, the same ids as the whole text ---------------------
WS_SPECIAL = "<|a b|>"  # a special token with a space in it: the one kind a safe cut could fall inside
FRAGMENTS = ["a", "b", "Z", "é", "日", "🤗", "e\u0301", "1", "234", ".", "!?", ".\n", "'s", "'ll", "don't", " ", "  ",
             "\t", "\n", "\n\n", "\r", "\r\n", " \n", EOT, "<|", "|>", WS_SPECIAL]
TRICKY = {
    "in a word": "hello world, wonderful words of wonder",
    "in whitespace runs": "a  b\n\n\nc \n d\t\te   \n  \n\nf    ",
    "in a special token": f"one{EOT}two\n{EOT}\nthree {EOT} four{WS_SPECIAL}five {WS_SPECIAL} x",
    "in a multi-byte character": "héllo 日本語 🤗👩‍👩‍👧 cafe\u0301 naïve\n日本\n🤗",
    "CRLF": "line one\r\nline two.\r\n\r\nX\r\n \r\nend\r\n",
    "punctuation before a line break": "Stop.\nGo!\n\nWhy?\r\n ok.\n \nyes. \n",
    "no safe cut at all": "日本語" * 200,
}


@pytest.fixture(scope="module", params=["gpt4", "gpt2"])
def stream_toks(request, bpe):
    """Trained on the tricky fragments, so "\\r\\n", "\\n\\n", "  " (and for gpt4 ".\\n") are merges: a wrong cut
    changes the ids.
    Two copies: with special tokens, and without (then nothing keeps a few characters back)."""
    rng = random.Random(0)
    t = bpe.Tokenizer(request.param, special_tokens=[EOT, WS_SPECIAL])
    t.train("".join(rng.choice(FRAGMENTS) for _ in range(3000)), 400)
    plain = bpe.Tokenizer.from_dict({**t.to_dict(), "special_tokens": {}})
    return {"specials": t, "plain": plain}


def streamed(tok, pieces, allowed_special, block_chars):
    return [i for ids in tok.encode_stream(pieces, allowed_special, block_chars=block_chars) for i in ids.tolist()]


@pytest.mark.parametrize("case", sorted(TRICKY))
def test_stream_equals_whole_text(stream_toks, case):
    text = TRICKY[case] * 3
    for tok, allowed in [(stream_toks["specials"], "none"), (stream_toks["specials"], "all"),
                         (stream_toks["plain"], "none")]:
        whole = tok.encode(text, allowed)
        for pieces in [list(text), text.splitlines(keepends=True), [text[:7], text[7:]]]:
            for block_chars in [1, 3, 64]:  # block_chars=1: a cut at every safe place
                assert streamed(tok, pieces, allowed, block_chars) == whole, (pieces, block_chars)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40), st.lists(st.integers(0, 200), max_size=6),
       st.integers(1, 8), st.sampled_from(["none", "all"]), st.sampled_from(["specials", "plain"]))
def test_stream_equals_whole_text_property(stream_toks, fragments, cuts, block_chars, allowed, kind):
    tok, text = stream_toks[kind], "".join(fragments)
    cuts = sorted(min(c, len(text)) for c in cuts)
    pieces = [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])]
    assert streamed(tok, pieces, allowed, block_chars) == tok.encode(text, allowed)


def test_split_batches_never_cuts_inside_a_special_token(bpe):
    text = f"x{WS_SPECIAL}y {WS_SPECIAL} z" * 20
    pieces = bpe.split_batches(text, 1, [EOT, WS_SPECIAL])
    assert "".join(pieces) == text and len(pieces) > 20
    assert all(p.count("<|") == p.count("|>") for p in pieces)
    assert any(p.count("<|") != p.count("|>") for p in bpe.split_batches(text, 1))  # unguarded: it would


def _write(path, text):
    """A .txt, or a .txt.xz (lzma) file; newline="" keeps "\\r\\n" as written."""
    opener = lzma.open if path.suffix == ".xz" else open
    with opener(path, "wt", encoding="utf-8", newline="") as f:
        f.write(text)


# ~20 KB: the 10-byte unit makes the reader's 8 KB byte chunks end inside a multi-byte character
MULTIBYTE = "a" + "é日🤗 " * 1000 + f"\r\nline\r\n{EOT}\n" + "tail  end\n" * 300


@pytest.mark.parametrize("suffix", [".txt", ".txt.xz"])
def test_read_blocks_equals_read_text(bpe, tmp_path, suffix):
    path = tmp_path / f"corpus{suffix}"
    _write(path, MULTIBYTE)
    for max_chars in [None, 0, 10, 9999]:
        expected = bpe.read_text(path, max_chars)
        assert "\r" not in expected  # text mode reads "\r\n" as "\n", in both
        for block_chars in [1, 7, 5000]:
            if block_chars > 1 or max_chars is not None:  # one character at a time: keep it short
                assert "".join(bpe.read_blocks(path, max_chars, block_chars)) == expected


def test_encode_file_streams_with_max_chars(bpe, tmp_path, tok):
    path = tmp_path / "corpus.txt.xz"
    _write(path, MULTIBYTE)
    for max_chars in [None, 12345]:
        text = bpe.read_text(path, max_chars)
        got = tok.encode_file(path, "all", max_chars=max_chars, batch_chars=1000)
        assert got.tolist() == tok.encode(text, "all")
    assert tok.encode_file(path, max_chars=0).tolist() == []


def test_streaming_memory_stays_bounded(bpe, tmp_path):
    """Encode a 1 MB file while tracemalloc watches: peak Python memory stays under 200 KB. (The whole text
    at once would need far more: 1 MB of text plus a list of ~300k chunk strings.)"""
    rng = random.Random(0)
    words = "the of and to a in that is was he for it with as his on be at by I héllo 日本 naïve don't".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randrange(3, 15))) + rng.choice([".", ",", "", "  "])
             for _ in range(500)]
    unit = "\n".join(lines) + "\n"  # ends "\S\n" and starts with a word: repeats join at a safe cut
    t = bpe.Tokenizer()
    t.train(unit, 300)
    unit_ids = t.encode(unit)  # also warms the chunk cache, so the cache is not what we measure
    repeats = 1_000_000 // len(unit) + 1
    path = tmp_path / "big.txt"
    with open(path, "w", encoding="utf-8") as f:
        for _ in range(repeats):
            f.write(unit)
    tracemalloc.start()
    try:
        n_tokens, id_sum = 0, 0
        for ids in t.encode_stream(bpe.read_blocks(path, block_chars=1024), block_chars=1024):
            n_tokens += len(ids)
            id_sum += int(ids.sum(dtype=np.int64))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert path.stat().st_size > 5 * 200_000
    assert peak < 200_000, f"peak {peak / 1e3:.0f} KB"
    assert (n_tokens, id_sum) == (repeats * len(unit_ids), repeats * sum(unit_ids))


def test_data_cache_streams_an_xz_file(bpe, part, tmp_path, tok):
    """data.py end to end: .txt.xz -> uint16 memmap in the cache folder, the ids of the whole text."""
    data, tokenizer = load_part(part, "data", "tokenizer")
    path, cache = tmp_path / "books.txt.xz", tmp_path / "cache"
    _write(path, MULTIBYTE)
    text = bpe.read_text(path)
    for max_chars in [0, 5000]:
        ids = data.encode_to_cache(str(path), tok, "tok", str(cache), max_chars)
        assert isinstance(ids, np.memmap) and ids.dtype == np.uint16
        assert ids.tolist() == tok.encode(text[:max_chars or None], allowed_special="all")
    path.unlink()  # the second time comes from the cache
    assert data.encode_to_cache(str(path), tok, "tok", str(cache), 5000).tolist() == ids.tolist()
    _write(path, MULTIBYTE)
    as_bytes = data.encode_to_cache(str(path), tokenizer.ByteTokenizer(), "bytes", str(cache))
    assert bytes(as_bytes.astype(np.uint8)) == text.encode("utf-8")
    for bad, message in [("", "is empty"), (b"\xff\xfe", "UTF-8")]:
        bad_path = tmp_path / "bad.txt"
        bad_path.write_bytes(bad.encode() if isinstance(bad, str) else bad)
        with pytest.raises(SystemExit, match=message):
            data.encode_to_cache(str(bad_path), tok, "tok", str(cache))
    big = bpe.Tokenizer()
    big.register_special_tokens({"<|far|>": 70_000})
    with pytest.raises(SystemExit, match="bpe_vocab_size"):
        data.encode_to_cache(str(path), big, "big", str(cache))
