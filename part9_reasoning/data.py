"""Part 4 data: text files -> tokens, tokenized once and cached as a uint16 memmap.

A 100 MB corpus takes a while to tokenize, so each file is encoded once and the token ids are written to
data/cache/ (ignored by git); later runs map that file into memory in a blink (np.memmap reads lazily).
Encoding streams the file (bpe.Tokenizer.encode_stream), so the text never has to fit in memory.
"""
import hashlib
import lzma
import os

import numpy as np

import bpe
from bpe import Tokenizer
from tokenizer import ByteTokenizer


NOT_FOUND = "error: data file {} not found; run from the repo root or pass --data PATH"
EMPTY = "error: data file {} is empty; pass --data with a text file"
NOT_TEXT = "error: cannot read {} as UTF-8 text ({}); pass a .txt or .txt.xz file"
REBUILD = ("error: data file {} not found; it is not in the repository (too big): download it with "
           "`python part6_sft/download_books.py` (needs internet) or rebuild it exactly with "
           "`python part6_sft/prepare_data.py --source FOLDER_WITH_THE_FULL_XZ --rest` (see data/README.md)")


def check_inputs(paths, cache_dir):
    """Every data file exists and cache_dir can be made: checked before the minutes of tokenizer
    training and tokenizing, not after them."""
    for path in paths:
        if not os.path.isfile(path):
            raise SystemExit((REBUILD if "gutenberg_train_b" in os.path.basename(path) else NOT_FOUND).format(path))
    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError as e:  # a file of that name, no permission, a read-only disk
        raise SystemExit(f"error: cannot create --cache_dir {cache_dir} ({e.strerror}); pass another --cache_dir")


def read_text(path, max_chars=0):
    """Read a .txt or .txt.xz file; max_chars > 0 keeps only the start. Exits with a one-line message."""
    if not os.path.isfile(path):
        raise SystemExit(NOT_FOUND.format(path))
    try:
        text = bpe.read_text(path, max_chars if max_chars > 0 else None)
    except (UnicodeDecodeError, lzma.LZMAError, EOFError) as e:
        raise SystemExit(NOT_TEXT.format(path, type(e).__name__)) from None
    if not text:
        raise SystemExit(EMPTY.format(path))
    return text


def load_tokenizer(kind, vocab_size, train_files, cache_dir, train_chars):
    """4.1 'bytes' (Part 2's 256-token tokenizer) or 'bpe': trained on the first train_chars characters
    of the training data the first time, then loaded from cache_dir."""
    if kind == "bytes":
        return ByteTokenizer(), "bytes"
    if kind != "bpe":
        raise SystemExit(f"error: --tokenizer must be 'bpe' or 'bytes', got {kind!r}")
    os.makedirs(cache_dir, exist_ok=True)
    path = os.path.join(cache_dir, f"bpe{vocab_size}-{os.path.basename(train_files[0])}-{train_chars}.json")
    if os.path.isfile(path):
        return Tokenizer.load(path), _file_id(path)
    text = read_text(train_files[0], train_chars)
    print(f"training a {vocab_size}-token BPE on {len(text):,} characters of {train_files[0]} ...")
    tok = Tokenizer()
    tok.train(text, vocab_size)
    tok.save(path + ".tmp")
    os.replace(path + ".tmp", path)
    return tok, _file_id(path)


def stored_tokenizer(d, cache_dir):
    """4.4 --resume: the checkpoint's own tokenizer, never the cache's (a different cache_dir or a retrained
    BPE would feed the model other ids). Its id is the hash of its saved file, as in load_tokenizer, so the
    token ids cached when the run started are reused."""
    tok = tokenizer_from_dict(d)
    if d["kind"] == "bytes":
        return tok, "bytes"
    os.makedirs(cache_dir, exist_ok=True)
    tmp = os.path.join(cache_dir, f"resume-{os.getpid()}.json.tmp")
    tok.save(tmp)
    tok_id = _file_id(tmp)
    os.remove(tmp)
    return tok, tok_id


def _file_id(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()[:10]


def encode_to_cache(path, tokenizer, tok_id, cache_dir, max_chars=0):
    """Token ids of one file as a read-only np.memmap, encoding and caching it on first use.
    4.1 The file is streamed: its ids are written block by block, so a corpus larger than memory works."""
    os.makedirs(cache_dir, exist_ok=True)
    cache = os.path.join(cache_dir, f"{os.path.basename(path)}-{max_chars}-{tok_id}.u16")
    if not os.path.isfile(cache):
        if not os.path.isfile(path):
            raise SystemExit(NOT_FOUND.format(path))
        if tokenizer.vocab_size > 1 << 16:  # subtle: uint16 would silently wrap bigger ids around
            raise SystemExit(f"error: vocab_size {tokenizer.vocab_size} does not fit the uint16 token cache; "
                             "pass --bpe_vocab_size 65536 or less")
        part = f"first {max_chars:,} characters" if max_chars > 0 else f"{os.path.getsize(path) / 1e6:.1f} MB on disk"
        print(f"tokenizing {path} ({part}), cached in {cache} ...")
        n_tokens = _write_tokens(path, tokenizer, max_chars, cache + ".tmp")
        if n_tokens == 0:
            os.remove(cache + ".tmp")
            raise SystemExit(EMPTY.format(path))
        os.replace(cache + ".tmp", cache)
        print(f"  {n_tokens:,} tokens")
    return np.memmap(cache, dtype=np.uint16, mode="r")


def _write_tokens(path, tokenizer, max_chars, out):
    """Stream the file's first max_chars characters (all if 0) through the tokenizer into `out` (uint16)."""
    blocks = bpe.read_blocks(path, max_chars if max_chars > 0 else None)
    if isinstance(tokenizer, ByteTokenizer):  # one byte, one token: a block may end anywhere
        arrays = (np.frombuffer(block.encode("utf-8"), dtype=np.uint8) for block in blocks)
    else:  # books end with <|endoftext|>, which becomes the single special token
        arrays = tokenizer.encode_stream(blocks, allowed_special="all", workers=os.cpu_count() or 1)
    n_tokens = 0
    try:
        with open(out, "wb") as f:
            for ids in arrays:
                ids.astype(np.uint16).tofile(f)
                n_tokens += len(ids)
    except (UnicodeDecodeError, lzma.LZMAError, EOFError) as e:
        os.remove(out)
        raise SystemExit(NOT_TEXT.format(path, type(e).__name__)) from None
    return n_tokens


def load_tokens(paths, tokenizer, tok_id, cache_dir, max_chars=0):
    """Several files -> one array of token ids (each cached separately)."""
    arrays = [encode_to_cache(p, tokenizer, tok_id, cache_dir, max_chars) for p in paths]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def tokenizer_to_dict(tok):
    """What a checkpoint stores so sample.py can decode without the cache folder."""
    return {"kind": "bytes"} if isinstance(tok, ByteTokenizer) else {"kind": "bpe", **tok.to_dict()}


def tokenizer_from_dict(d):
    return ByteTokenizer() if d["kind"] == "bytes" else Tokenizer.from_dict(d)
