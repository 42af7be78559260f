"""Part 4 data: text files -> tokens, tokenized once and cached as a uint16 memmap.

A 100 MB corpus takes a while to tokenize, so each file is encoded once and the token ids are written to
data/cache/ (ignored by git); later runs map that file into memory in a blink (np.memmap reads lazily).
"""
import hashlib
import os

import numpy as np

import bpe
from bpe import Tokenizer
from tokenizer import ByteTokenizer


def read_text(path, max_chars=0):
    """Read a .txt or .txt.xz file; max_chars > 0 keeps only the start. Exits with a one-line message."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: data file {path} not found; run from the repo root or pass --data PATH")
    text = bpe.read_text(path, max_chars if max_chars > 0 else None)
    if not text:
        raise SystemExit(f"error: data file {path} is empty; pass --data with a text file")
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


def _file_id(path):
    with open(path, "rb") as f:
        return hashlib.sha1(f.read()).hexdigest()[:10]


def encode_to_cache(path, tokenizer, tok_id, cache_dir, max_chars=0):
    """Token ids of one file as a read-only np.memmap, encoding and caching it on first use."""
    os.makedirs(cache_dir, exist_ok=True)
    cache = os.path.join(cache_dir, f"{os.path.basename(path)}-{max_chars}-{tok_id}.u16")
    if not os.path.isfile(cache):
        text = read_text(path, max_chars)
        print(f"tokenizing {path} ({len(text) / 1e6:.1f} M characters), cached in {cache} ...")
        if isinstance(tokenizer, ByteTokenizer):
            ids = np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)
        else:  # books end with <|endoftext|>, which becomes the single special token
            ids = tokenizer.encode_array(text, allowed_special="all", workers=os.cpu_count() or 1)
        ids = np.asarray(ids, dtype=np.uint16)  # subtle: uint16 holds ids < 65536, enough for our vocabularies
        with open(cache + ".tmp", "wb") as f:
            ids.tofile(f)
        os.replace(cache + ".tmp", cache)
    return np.memmap(cache, dtype=np.uint16, mode="r")


def load_tokens(paths, tokenizer, tok_id, cache_dir, max_chars=0):
    """Several files -> one array of token ids (each cached separately)."""
    arrays = [encode_to_cache(p, tokenizer, tok_id, cache_dir, max_chars) for p in paths]
    return arrays[0] if len(arrays) == 1 else np.concatenate(arrays)


def tokenizer_to_dict(tok):
    """What a checkpoint stores so sample.py can decode without the cache folder."""
    return {"kind": "bytes"} if isinstance(tok, ByteTokenizer) else {"kind": "bpe", **tok.to_dict()}


def tokenizer_from_dict(d):
    return ByteTokenizer() if d["kind"] == "bytes" else Tokenizer.from_dict(d)
