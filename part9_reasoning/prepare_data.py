"""Make the medium corpus that Part 4 ships: whole Project Gutenberg books, xz-compressed.

    python part6_sft/prepare_data.py --source ../shared/data            # writes data/gutenberg_train_a.txt.xz
    python part6_sft/prepare_data.py --source ../shared/data --rest     # also data/gutenberg_train_b.txt.xz

The full training split (198 MB of text, 54 MB compressed) is too big to keep in the repository, so the
repo tracks part A (the first books, ~95 MB of text) and the validation split; part B (the remaining
books) can be rebuilt from the full file with --rest and passed to train.py as a second --data file.
Books are separated by a line holding only <|endoftext|>, as in the source files.

Checks, each a one-line error: the source file's sha256 is the one data/SOURCES.md lists (a different
file would silently change every result), and every book written matches its row of
data/gutenberg_fiction_manifest.tsv (same book, same text). Part A already in data/ is kept as it is.
"""
import argparse
import csv
import hashlib
import lzma
import os
import re
import sys

SEPARATOR = "<|endoftext|>\n"
PART_A_CHARS = 95e6  # part A, tracked in git: the books that fit in 95 M characters
SOURCE = "gutenberg_fiction_train.txt.xz"
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data")


def expected_sha256(sources_md):
    """The source file's sha256 from the table in data/SOURCES.md."""
    try:
        with open(sources_md, encoding="utf-8") as f:
            found = re.search(rf"`{re.escape(SOURCE)}` \|[^\n]*?`([0-9a-f]{{64}})`", f.read())
    except OSError:
        found = None
    if not found:
        sys.exit(f"error: no sha256 for {SOURCE} in {sources_md}; pass --sha256 HASH (or --sha256 skip)")
    return found.group(1)


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_books(path):
    try:
        with lzma.open(path, "rt", encoding="utf-8") as f:
            text = f.read()
    except (lzma.LZMAError, EOFError, UnicodeDecodeError) as e:
        sys.exit(f"error: cannot read {path} as xz-compressed UTF-8 text ({type(e).__name__}); download it again")
    return [b for b in text.split(SEPARATOR) if b.strip()]


def book_hash(book):
    """The manifest's sha256_16: the book's text without the blank lines around it, ending in one newline."""
    return hashlib.sha256((book.strip("\n") + "\n").encode("utf-8")).hexdigest()[:16]


def check_against_manifest(books, manifest):
    """Every book is the one the manifest lists at its position, with the same text."""
    if not os.path.isfile(manifest):
        sys.exit(f"error: manifest {manifest} not found; pass --manifest PATH")
    with open(manifest, encoding="utf-8", newline="") as f:
        rows = [r for r in csv.DictReader(f, delimiter="\t") if r["split"] == "train"]
    if len(rows) != len(books):
        sys.exit(f"error: the source holds {len(books)} books but {manifest} lists {len(rows)}; "
                 "use the file data/SOURCES.md describes")
    for i, (book, row) in enumerate(zip(books, rows)):
        if book_hash(book) != row["sha256_16"]:
            sys.exit(f"error: book {i} ({row['title']!r}, ebook {row['gutenberg_ebook_no']}) differs from "
                     f"{manifest}; use the file data/SOURCES.md describes")


def part_a_size(lengths, part_a_chars=PART_A_CHARS):
    """How many books go into part A: books in order while their lengths (in the corpus file) add up to at
    most part_a_chars. download_books.py cuts the manifest with the same rule."""
    total = 0
    for i, length in enumerate(lengths):
        if total + length > part_a_chars:
            return i
        total += length
    return len(lengths)


def write_xz(path, books):
    tmp = path + ".tmp"
    with lzma.open(tmp, "wt", encoding="utf-8", preset=6) as f:
        f.write(SEPARATOR.join(books) + SEPARATOR)
    os.replace(tmp, path)  # never leave half a file behind
    print(f"wrote {path}: {len(books)} books, {sum(map(len, books)) / 1e6:.1f} M characters")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="../shared/data", help=f"folder with {SOURCE} (default: %(default)s)")
    p.add_argument("--out", default=DATA, help="(default: the repository's data folder)")
    p.add_argument("--part_a_chars", type=float, default=PART_A_CHARS,
                   help="characters in part A (default: %(default)s)")
    p.add_argument("--rest", action="store_true", help="also write part B, the remaining books")
    p.add_argument("--manifest", default=os.path.join(DATA, "gutenberg_fiction_manifest.tsv"),
                   help="the list of books every written book is checked against (default: data's)")
    p.add_argument("--sha256", default="", help="the source file's sha256 (default: from data/SOURCES.md; "
                                                "'skip' checks nothing)")
    args = p.parse_args(argv)
    src = os.path.join(args.source, SOURCE)
    if not os.path.isfile(src):
        sys.exit(f"error: {src} not found; pass --source with the folder holding {SOURCE} (data/SOURCES.md "
                 "says what it is and where it comes from)")
    if not os.path.isdir(args.out):
        sys.exit(f"error: --out {args.out} is not a folder; pass the repository's data folder")
    expected = args.sha256 or expected_sha256(os.path.join(DATA, "SOURCES.md"))
    if expected != "skip" and file_sha256(src) != expected.lower():  # checked before minutes of work
        sys.exit(f"error: {src} has sha256 {file_sha256(src)[:16]}..., not the {expected[:16]}... that "
                 "data/SOURCES.md lists; download the file again")
    books = read_books(src)
    check_against_manifest(books, args.manifest)
    cut = part_a_size([len(book) for book in books], args.part_a_chars)
    part_a = os.path.join(args.out, "gutenberg_train_a.txt.xz")
    if os.path.isfile(part_a):  # tracked by git: rewriting it (another xz version) would only show a diff
        print(f"kept {part_a} (already there)")
    else:
        write_xz(part_a, books[:cut])
    if args.rest:
        write_xz(os.path.join(args.out, "gutenberg_train_b.txt.xz"), books[cut:])


if __name__ == "__main__":
    main()
