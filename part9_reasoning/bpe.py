"""4.1 A byte-level BPE tokenizer, trained from scratch.

Part 2 fed the model one byte (or character) per token. Byte Pair Encoding keeps the 256 bytes as the
base vocabulary and learns merges: "the most frequent adjacent pair (a, b) becomes a new token". After
k merges the vocabulary has 256 + k tokens and common words are one token each, so the same context
window sees ~3-4x more text. What is notable here:
  - pre-tokenization with a regex (GPT-4's cl100k pattern by default, GPT-2's available): text is cut
    into chunks (words, numbers, punctuation, whitespace) and merges never cross a chunk boundary;
  - training is incremental: identical chunks are counted once, pair counts are kept up to date by
    deltas touching only the chunks that contain the merged pair, and a heap finds the best pair.
    `train_naive` recounts every pair after every merge (the minbpe way) and learns the SAME merges;
  - special tokens (<|endoftext|>, later chat/tool tokens) are single ids, only when you allow them;
  - encoding caches chunk -> ids and can spread a big file over several processes (`encode_file`);
  - streaming (`encode_stream`, `read_blocks`): a corpus larger than memory is encoded block by block,
    cut only where the pre-tokenizer cuts anyway, so the ids are exactly those of the whole text;
  - save/load is a human-readable JSON file: pattern, special tokens, merges in order.

Try:  python part6_sft/bpe.py --train data/tinyshakespeare.txt --vocab_size 4096   # -> out/tok.json
"""
import argparse
import heapq
import itertools
import json
import lzma
import multiprocessing
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import regex

# 4.1 Pre-tokenization patterns. The GPT-4 (cl100k) one caps numbers at 3 digits, keeps "\n" runs
# apart from spaces, and matches contractions case-insensitively.
GPT2_SPLIT_PATTERN = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)
PATTERNS = {"gpt4": GPT4_SPLIT_PATTERN, "gpt2": GPT2_SPLIT_PATTERN}
ENDOFTEXT = "<|endoftext|>"
FORMAT = "llm-from-scratch-bpe/1"
BLOCK_CHARS = 1 << 16  # streaming: characters per block; ~2 MB of working memory, and as fast as 1M
_NOT_MERGED = 1 << 62  # rank of a pair that has no merge: above every real id


# ----------------------------------------------------------------------------------------------------
# 4.1 The two primitives of BPE
def get_stats(ids, counts=None):
    """Count adjacent pairs, adding to `counts` if given.
    [1, 2, 3, 1, 2] -> {(1, 2): 2, (2, 3): 1, (3, 1): 1}"""
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids, pair, idx):
    """Replace every occurrence of `pair`, left to right, by the new token `idx`.
    merge([1, 2, 3, 1, 2], (1, 2), 4) -> [4, 3, 4]
    subtle: occurrences overlap when a == b; left to right wins: merge([5, 5, 5], (5, 5), 9) -> [9, 5]"""
    out, i, n = [], 0, len(ids)
    while i < n:
        if i < n - 1 and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(idx)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def render(token: bytes) -> str:
    """A token as readable text: b'the' -> 'the', an incomplete UTF-8 byte -> '\\ufffd'."""
    return token.decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------------------------------
# 4.1 Training helpers: the same best-pair rule for both trainers
def best_pair(stats):
    """Most frequent pair; ties go to the lowest (a, b), so runs are deterministic.
    {(5, 1): 3, (2, 9): 3, (0, 0): 1} -> (2, 9)"""
    return min(stats, key=lambda p: (-stats[p], p))


def weighted_stats(words, counts):
    """Pair counts over distinct chunks, each weighted by how often the chunk occurs."""
    stats = defaultdict(int)
    for word, c in zip(words, counts):
        for pair in zip(word, word[1:]):
            stats[pair] += c
    return stats


class _IncrementalCounts:
    """Global pair counts + an index pair -> {chunks containing it} + a max-heap with lazy deletion.

    The heap holds (-count, pair) entries; a changed count pushes a new entry and leaves the old one in
    place. An entry is trusted only if its count still equals the live count (else it is stale: skip)."""

    def __init__(self, words, counts):
        self.words, self.counts = words, counts
        self.stats = weighted_stats(words, counts)
        self.where = defaultdict(set)
        for w, word in enumerate(words):
            for pair in zip(word, word[1:]):
                self.where[pair].add(w)
        self.heap = [(-c, pair) for pair, c in self.stats.items()]
        heapq.heapify(self.heap)

    def pop_best(self):
        """Same rule as best_pair: (-count, a, b) is smallest for the highest count, then lowest pair."""
        while self.heap:
            neg, pair = heapq.heappop(self.heap)
            if self.stats.get(pair, 0) == -neg:
                return pair, -neg
        return None, 0

    def apply(self, pair, idx):
        """Merge `pair` -> `idx` in the chunks that contain it; fix the counts by deltas."""
        delta = defaultdict(int)
        for w in self.where.pop(pair, ()):
            old = self.words[w]
            new = merge(old, pair, idx)
            if len(new) == len(old):
                continue  # subtle: the index is lazy too; this chunk lost `pair` in an earlier merge
            c = self.counts[w]
            for p in zip(old, old[1:]):
                delta[p] -= c
            for p in zip(new, new[1:]):
                delta[p] += c
                self.where[p].add(w)
            self.words[w] = new
        for p, d in delta.items():
            if d:
                self._set(p, self.stats.get(p, 0) + d)

    def _set(self, pair, count):
        if count > 0:
            self.stats[pair] = count
            heapq.heappush(self.heap, (-count, pair))
        else:
            self.stats.pop(pair, None)  # subtle: a zero count must vanish, or naive/incremental differ


# ----------------------------------------------------------------------------------------------------
# 4.1 The tokenizer
class Tokenizer:
    """Byte-level BPE with regex pre-tokenization and special tokens.

    Ids 0..255 are the raw bytes, 256.. the merges in training order, then the special tokens.
    Special tokens in `encode`: by default (allowed_special="none") the text "<|endoftext|>" is encoded
    as ordinary text, so text from a user or a web page can never forge a control token and every
    string round-trips. Pass allowed_special="all" (or a set of names) to get single ids, or
    "none_raise" to fail loudly if one shows up.
    """

    def __init__(self, pattern=GPT4_SPLIT_PATTERN, special_tokens=(ENDOFTEXT,)):
        self.pattern = PATTERNS.get(pattern, pattern)  # "gpt4" / "gpt2" or a regex of your own
        self.compiled = regex.compile(self.pattern)
        self.merges = {}          # (a, b) -> new id; the id is also the merge's rank
        self.special_tokens = {}  # "<|endoftext|>" -> id
        self._build_vocab()
        self.register_special_tokens(special_tokens)

    # --- vocabulary ---------------------------------------------------------------------------------
    def _build_vocab(self):
        self.vocab = {i: bytes([i]) for i in range(256)}
        for (a, b), idx in sorted(self.merges.items(), key=lambda kv: kv[1]):
            self.vocab[idx] = self.vocab[a] + self.vocab[b]
        self._cache = {}  # chunk (str) -> list of ids; stale as soon as the merges change

    @property
    def vocab_size(self):
        """Size of an embedding table that can hold every id (max id + 1)."""
        ids = [255, *self.merges.values(), *self.special_tokens.values()]
        return max(ids) + 1

    def register_special_tokens(self, tokens):
        """Add special tokens: a list (ids follow the current vocabulary) or a dict name -> id."""
        if not isinstance(tokens, dict):
            tokens = {t: None for t in tokens}
        for name, idx in tokens.items():
            if name in self.special_tokens:
                continue
            idx = self.vocab_size if idx is None else idx
            if idx < 256 + len(self.merges) or idx in self.special_tokens.values():
                raise ValueError(f"special token {name!r}: id {idx} is already taken")
            self.special_tokens[name] = idx
        self.inverse_special = {i: s for s, i in self.special_tokens.items()}

    def _renumber_special_tokens(self):
        """After training the specials move to just after the merges, in registration order."""
        names, self.special_tokens = list(self.special_tokens), {}
        self.register_special_tokens(names)

    # --- training -----------------------------------------------------------------------------------
    def _chunk_counts(self, text):
        """Distinct chunks as byte-id lists, with their counts. Special tokens are cut out first.
        "the cat the" (gpt4) -> chunks "the", " cat", " the" -> words [[116,104,101], [32,99,97,116], ...]"""
        counts = Counter()
        for piece in self._split_special(text, set(self.special_tokens)):
            if piece not in self.special_tokens:  # subtle: no merge may learn a fragment of "<|endoftext|>"
                counts.update(self.compiled.findall(piece))
        words = [list(chunk.encode("utf-8")) for chunk in counts]
        return words, list(counts.values())

    def _num_merges(self, vocab_size):
        n_special = len(self.special_tokens)
        if not isinstance(vocab_size, int) or vocab_size < 256 + n_special:
            raise ValueError(
                f"vocab_size must be an int >= 256 + {n_special} special token(s) = {256 + n_special}, "
                f"got {vocab_size!r}")
        return vocab_size - 256 - n_special

    def train(self, text, vocab_size, verbose=False):
        """Learn vocab_size - 256 - len(special_tokens) merges from `text` (incremental counts).
        Special tokens are renumbered to follow the merges, in the order they were registered."""
        num_merges = self._num_merges(vocab_size)
        words, counts = self._chunk_counts(text)
        state = _IncrementalCounts(words, counts)
        merges, tokens = {}, [bytes([i]) for i in range(256)]
        for i in range(num_merges):
            pair, count = state.pop_best()
            if pair is None:
                break  # subtle: a tiny text runs out of pairs; the vocabulary ends up smaller
            merges[pair] = 256 + i
            state.apply(pair, 256 + i)
            self._log(verbose, i, num_merges, pair, count, tokens)
        self._set_merges(merges)

    def train_naive(self, text, vocab_size, verbose=False, dedup=True):
        """The minbpe-style reference: recount all pairs after every merge. Same merges as train().
        dedup=False keeps every chunk occurrence (exactly minbpe); dedup=True counts each distinct
        chunk once, weighted by its count (same result, ~17x fewer pairs on tinyshakespeare)."""
        num_merges = self._num_merges(vocab_size)
        words, counts = self._chunk_counts(text)
        if not dedup:
            words = [list(w) for w, c in zip(words, counts) for _ in range(c)]
            counts = [1] * len(words)
        merges, tokens = {}, [bytes([i]) for i in range(256)]
        for i in range(num_merges):
            stats = weighted_stats(words, counts)
            if not stats:
                break
            pair = best_pair(stats)
            merges[pair] = 256 + i
            words = [merge(w, pair, 256 + i) for w in words]
            self._log(verbose, i, num_merges, pair, stats[pair], tokens)
        self._set_merges(merges)

    def _set_merges(self, merges):
        self.merges = dict(merges)
        self._build_vocab()
        self._renumber_special_tokens()

    @staticmethod
    def _log(verbose, i, num_merges, pair, count, tokens):
        """Grow the bytes of each new token (for printing); print the first 10 and every 5% after."""
        tokens.append(tokens[pair[0]] + tokens[pair[1]])
        if verbose and (i < 10 or (i + 1) % max(1, num_merges // 20) == 0):
            print(f"merge {i + 1}/{num_merges}: {pair} -> {256 + i} {render(tokens[-1])!r} ({count} times)")

    # --- encoding -----------------------------------------------------------------------------------
    def _encode_chunk(self, chunk: str):
        """Apply merges by rank: repeatedly merge the pair with the lowest id present.
        This reproduces training's order, because a merge's id is its position in training."""
        ids = self._cache.get(chunk)
        if ids is not None:
            return ids
        ids, rank = list(chunk.encode("utf-8")), self.merges.get
        while len(ids) >= 2:
            pairs = list(zip(ids, ids[1:]))
            ranks = [rank(p, _NOT_MERGED) for p in pairs]
            best = min(ranks)
            if best == _NOT_MERGED:
                break  # no pair left in this chunk was ever merged
            ids = merge(ids, pairs[ranks.index(best)], best)
        if len(self._cache) < 1_000_000:  # subtle: unbounded on a huge corpus; a million chunks is plenty
            self._cache[chunk] = ids
        return ids

    def encode_ordinary(self, text):
        """Encode ignoring special tokens (they come out as ordinary text)."""
        out = []
        for chunk in self.compiled.findall(text):
            out.extend(self._encode_chunk(chunk))
        return out

    def _allowed(self, allowed_special):
        if allowed_special == "all":
            return set(self.special_tokens)
        if allowed_special in ("none", "none_raise"):
            return set()
        unknown = set(allowed_special) - set(self.special_tokens)
        if isinstance(allowed_special, str) or unknown:
            raise ValueError(f"allowed_special must be 'all', 'none', 'none_raise' or a set of registered "
                             f"special tokens, got {allowed_special!r}")
        return set(allowed_special)

    @staticmethod
    def _split_special(text, specials):
        """Cut text around special tokens: "a<|endoftext|>b" -> ["a", "<|endoftext|>", "b"]."""
        if not specials:
            return [text]
        # subtle: longest first, so "<|im_start|>" cannot be shadowed by a shorter prefix token
        alternation = "|".join(regex.escape(s) for s in sorted(specials, key=len, reverse=True))
        return [p for p in regex.split(f"({alternation})", text) if p]

    def encode(self, text, allowed_special="none"):
        """Text -> list of ids. See the class docstring for allowed_special."""
        allowed = self._allowed(allowed_special)
        if allowed_special == "none_raise":
            found = [s for s in self.special_tokens if s in text]
            if found:
                raise ValueError(f"text contains special token(s) {found}; pass allowed_special")
        out = []
        for piece in self._split_special(text, allowed):
            if piece in allowed:
                out.append(self.special_tokens[piece])
            else:
                out.extend(self.encode_ordinary(piece))
        return out

    def decode(self, ids):
        """Ids -> text. Any sequence of known ids decodes: a token may hold half a UTF-8 character,
        so invalid byte sequences become U+FFFD instead of raising."""
        parts = []
        for i in ids:
            if i in self.vocab:
                parts.append(self.vocab[i])
            elif i in self.inverse_special:
                parts.append(self.inverse_special[i].encode("utf-8"))
            else:
                raise ValueError(f"unknown token id {i} (vocab_size {self.vocab_size})")
        return b"".join(parts).decode("utf-8", errors="replace")

    # --- big inputs: batches over processes, and streams ------------------------------------------
    def encode_batch(self, texts, allowed_special="none", workers=1):
        """Encode many texts; workers > 1 spreads them over a process Pool. Returns a list of lists."""
        if workers <= 1 or len(texts) <= 1:
            return [self.encode(t, allowed_special) for t in texts]
        return [a.tolist() for a in self._encode_batches(iter(texts), allowed_special, workers)]  # back to ints

    def _encode_batches(self, batches, allowed_special, workers):
        """Texts -> their id arrays, in order; over a process Pool if workers > 1, where each worker rebuilds
        the tokenizer once from to_dict(). The pool takes 2 * workers texts at a time: a stream is never
        read far ahead of what is encoded."""
        if workers <= 1:
            yield from (self._encode_to_array(b, allowed_special) for b in batches)
            return
        with multiprocessing.Pool(workers, initializer=_init_worker, initargs=(self.to_dict(),)) as pool:
            while group := list(itertools.islice(batches, 2 * workers)):
                yield from pool.map(_encode_in_worker, [(b, allowed_special) for b in group], chunksize=1)

    def encode_array(self, text, allowed_special="none", workers=1, batch_chars=None):
        """Encode a big text -> numpy array, in batches of ~batch_chars, over `workers` processes.
        The same ids as encode(text): batches are cut only where a chunk boundary is certain."""
        if batch_chars is None:  # ~8 batches per worker for balance, at most 1M characters each
            batch_chars = max(1 << 14, min(1 << 20, len(text) // (8 * workers) + 1))
        batches = split_batches(text, batch_chars, self.special_tokens)
        arrays = list(self._encode_batches(iter(batches), allowed_special, workers))
        return np.concatenate(arrays) if arrays else self._encode_to_array("", allowed_special)

    def _encode_to_array(self, text, allowed_special):
        # subtle: uint16 halves memory (and what workers send back) but only holds ids < 65536
        dtype = np.uint16 if self.vocab_size <= 1 << 16 else np.uint32
        return np.asarray(self.encode(text, allowed_special), dtype=dtype)

    def encode_stream(self, texts, allowed_special="none", workers=1, block_chars=BLOCK_CHARS):
        """4.1 Streaming: encode a text that arrives in pieces (a file's lines or blocks, see read_blocks)
        -> yields numpy arrays of ids; together they are exactly encode("".join(texts)).

        Memory holds ~2 * block_chars characters, however long the stream: pieces collect in a buffer,
        the buffer is cut at safe places (split_batches) and all but its last batch are encoded. The last
        batch may end inside a word or whitespace run the next piece continues, so it waits.
        The safe places are checked for the "gpt2" and "gpt4" patterns (_SAFE_CUT); a pattern of your own
        needs the same check (tests/part4: test_stream_equals_whole_text)."""
        yield from self._encode_batches(self._safe_batches(texts, block_chars), allowed_special, workers)

    def _safe_batches(self, texts, block_chars):
        """Pieces of a stream -> batches of ~block_chars characters, cut only at safe places."""
        # the carry keeps at least this many characters, so _next_cut sees any special token around a cut whole
        keep = max((len(s) for s in self.special_tokens), default=0)
        pending, size, limit = [], 0, 2 * block_chars
        for text in texts:
            pending.append(text)
            size += len(text)
            if size < limit:
                continue
            batches = split_batches("".join(pending), block_chars, self.special_tokens)
            carry = batches.pop()
            while batches and len(carry) < keep:
                carry = batches.pop() + carry
            yield from batches
            pending, size = [carry], len(carry)
            limit = max(2 * block_chars, 2 * size)  # subtle: no safe cut yet? wait for twice as much, not O(n^2)
        tail = "".join(pending)
        if tail:
            yield tail

    def encode_file(self, path, allowed_special="none", workers=1, max_chars=None, batch_chars=BLOCK_CHARS):
        """Encode a .txt or .txt.xz file (its first max_chars characters if given) -> numpy array.
        Streams: only the ids are held in memory, never the whole text."""
        arrays = list(self.encode_stream(read_blocks(path, max_chars, batch_chars), allowed_special, workers,
                                         batch_chars))
        return np.concatenate(arrays) if arrays else self._encode_to_array("", allowed_special)

    # --- save / load --------------------------------------------------------------------------------
    def to_dict(self):
        merges = [[a, b, render(self.vocab[idx])] for (a, b), idx in sorted(self.merges.items(), key=lambda kv: kv[1])]
        return {"format": FORMAT, "pattern": self.pattern, "special_tokens": self.special_tokens, "merges": merges}

    @classmethod
    def from_dict(cls, d):
        if d.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} tokenizer file (format={d.get('format')!r})")
        tok = cls(d["pattern"], special_tokens=())
        merges = {}
        for i, (a, b, *_) in enumerate(d["merges"]):  # the third field is the rendered token, for humans
            if not (0 <= a < 256 + i and 0 <= b < 256 + i):
                raise ValueError(f"merge {i} ({a}, {b}) uses an id that does not exist yet")
            merges[(a, b)] = 256 + i
        tok.merges = merges
        tok._build_vocab()
        tok.register_special_tokens(d["special_tokens"])
        return tok

    def save(self, path):
        """Readable JSON: one merge per line, "[a, b, "rendered token"]", in training order."""
        d = self.to_dict()
        lines = ",\n    ".join(json.dumps(m, ensure_ascii=False) for m in d["merges"])
        head = {k: v for k, v in d.items() if k != "merges"}
        body = json.dumps(head, indent=2, ensure_ascii=False)[:-2]  # drop the closing "\n}"
        Path(path).write_text(f'{body},\n  "merges": [\n    {lines}\n  ]\n}}\n', encoding="utf-8")

    @classmethod
    def load(cls, path):
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


# ----------------------------------------------------------------------------------------------------
# 4.1 Helpers for big files
def _open_text(path):
    """A .txt or .txt.xz (lzma) file, opened as UTF-8 text.
    subtle: text mode turns "\r\n" into "\n", the same for read_text and read_blocks."""
    opener = lzma.open if str(path).endswith(".xz") else open
    return opener(path, "rt", encoding="utf-8")


def read_text(path, max_chars=None):
    """Read .txt or .txt.xz (lzma) as UTF-8; only the first max_chars characters if given."""
    with _open_text(path) as f:
        return f.read(-1 if max_chars is None else max_chars)


def read_blocks(path, max_chars=None, block_chars=BLOCK_CHARS):
    """Yield a .txt or .txt.xz file as blocks of block_chars characters (the first max_chars if given):
    "".join(read_blocks(path, n)) == read_text(path, n). A block may end anywhere, even mid-word; the
    decoder keeps a UTF-8 character that straddles two reads whole."""
    done = 0
    with _open_text(path) as f:
        while max_chars is None or done < max_chars:
            block = f.read(block_chars if max_chars is None else min(block_chars, max_chars - done))
            if not block:
                return
            done += len(block)
            yield block


# Where a text can be cut and encoded in two pieces with exactly the ids of the whole (GPT-2 and GPT-4
# patterns): after a "\n" with non-space on both sides ("end.\n|Next"), or before a space that follows a
# non-space ("word| word"). No chunk of either pattern runs across these places, and no chunk ending before
# one looks past it. Cutting before any other whitespace is not safe: GPT-4 keeps ".\n" as one chunk, and
# GPT-2 splits "\n\nX" into "\n", "\n", "X" but a piece ending in "\n\n" keeps it whole.
_SAFE_CUT = regex.compile(r"(?<=\S\n)(?=\S)|(?<=\S)(?= )")


def split_batches(text, batch_chars=1 << 20, specials=()):
    """Cut text into pieces of about batch_chars, only at a _SAFE_CUT that is not inside one of the
    special tokens. "".join(pieces) == text always."""
    pieces, start = [], 0
    while start < len(text):
        end = _next_cut(text, start + batch_chars, specials) if start + batch_chars < len(text) else len(text)
        pieces.append(text[start:end])
        start = end
    return pieces


def _next_cut(text, pos, specials):
    """The first safe cut at or after pos, or len(text)."""
    for m in _SAFE_CUT.finditer(text, pos):
        cut = m.start()
        # subtle: only a special token with whitespace in it (none of ours) can contain a safe cut
        if not any(s in text[max(0, cut - len(s) + 1):cut + len(s) - 1] for s in specials):
            return cut
    return len(text)


_WORKER_TOKENIZER = None


def _init_worker(state):
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = Tokenizer.from_dict(state)  # rebuilt once per process, not pickled per batch


def _encode_in_worker(args):
    text, allowed_special = args
    return _WORKER_TOKENIZER._encode_to_array(text, allowed_special)


# ----------------------------------------------------------------------------------------------------
# 4.1 CLI
MAX_CLI_VOCAB = 1 << 16  # train.py caches token ids as uint16


def read_training_text(parser, path, max_chars):
    """The text to learn from, or a one-line exit: a file that is empty, not UTF-8 or not a valid .xz."""
    try:
        text = read_text(path, max_chars)
    except (UnicodeDecodeError, lzma.LZMAError, EOFError) as e:
        parser.error(f"cannot read {path} as UTF-8 text ({type(e).__name__}); pass a .txt or .txt.xz file")
    if not text:
        parser.error(f"{path} is empty; pass a file with text in it")
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Train a byte-level BPE tokenizer and save it as readable JSON.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--train", required=True, help="text file to learn from (.txt or .txt.xz)")
    parser.add_argument("--vocab_size", type=int, default=4096, help="256 bytes + merges + special tokens")
    parser.add_argument("--out", default="out/tok.json", help="where to write the tokenizer (folders are created)")
    parser.add_argument("--pattern", choices=sorted(PATTERNS), default="gpt4", help="pre-tokenization regex")
    parser.add_argument("--special", nargs="*", default=[ENDOFTEXT], help="special tokens to register")
    parser.add_argument("--max_chars", type=int, default=None, help="train on the first N characters only")
    parser.add_argument("--verbose", action="store_true", help="print merges as they are learned")
    args = parser.parse_args(argv)

    if not Path(args.train).is_file():
        parser.error(f"no such file: {args.train}")
    if args.max_chars is not None and args.max_chars < 1:
        parser.error(f"--max_chars must be >= 1, got {args.max_chars}")
    if args.vocab_size > MAX_CLI_VOCAB:
        parser.error(f"--vocab_size must be at most {MAX_CLI_VOCAB}, got {args.vocab_size}: "
                     "Part 4 stores token ids as uint16")
    tok = Tokenizer(args.pattern, special_tokens=args.special)
    try:
        tok._num_merges(args.vocab_size)
    except ValueError as e:  # "vocab_size must be ...": name the flag
        parser.error(f"--{e}")
    text = read_training_text(parser, args.train, args.max_chars)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)  # out/ does not exist on a fresh clone
    t0 = time.perf_counter()
    tok.train(text, args.vocab_size, verbose=args.verbose)
    dt = time.perf_counter() - t0
    tok.save(args.out)
    ids = tok.encode(text, allowed_special="all")
    sample = text[:60]
    print(f"trained {len(tok.merges)} merges in {dt:.1f}s -> {args.out} (vocab_size {tok.vocab_size})")
    if tok.vocab_size < args.vocab_size:
        print(f"note: the text ran out of pairs to merge; vocab_size is {tok.vocab_size}, not {args.vocab_size}")
    print(f"{len(text.encode('utf-8')) / max(1, len(ids)):.2f} bytes/token on the training text")
    print("sample:", "|".join(render(tok.vocab[i]).replace("\n", "\\n") for i in tok.encode(sample)))
    return tok


if __name__ == "__main__":
    main()
