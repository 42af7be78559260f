"""Make the medium corpus that Part 4 ships: whole Project Gutenberg books, xz-compressed.

    python part4_scaling/prepare_data.py --source ../shared/data            # writes data/gutenberg_train_a.txt.xz
    python part4_scaling/prepare_data.py --source ../shared/data --rest     # also data/gutenberg_train_b.txt.xz

The full training split (198 MB of text, 54 MB compressed) is too big to keep in the repository, so the
repo tracks part A (the first books, ~95 MB of text) and the validation split; part B (the remaining
books) can be rebuilt from the full file with --rest and passed to train.py as a second --data file.
Books are separated by a line holding only <|endoftext|>, as in the source files.
"""
import argparse
import lzma
import os
import sys

SEPARATOR = "<|endoftext|>\n"


def read_books(path):
    with lzma.open(path, "rt", encoding="utf-8") as f:
        text = f.read()
    return [b for b in text.split(SEPARATOR) if b.strip()]


def write_xz(path, books):
    tmp = path + ".tmp"
    with lzma.open(tmp, "wt", encoding="utf-8", preset=6) as f:
        f.write(SEPARATOR.join(books) + SEPARATOR)
    os.replace(tmp, path)  # never leave half a file behind
    print(f"wrote {path}: {len(books)} books, {sum(map(len, books)) / 1e6:.1f} M characters")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--source", default="../shared/data", help="folder with gutenberg_fiction_*.txt.xz")
    p.add_argument("--out", default="data", help="(default: %(default)s)")
    p.add_argument("--part_a_chars", type=float, default=95e6, help="characters in part A (default: %(default)s)")
    p.add_argument("--rest", action="store_true", help="also write part B, the remaining books")
    args = p.parse_args(argv)
    src = os.path.join(args.source, "gutenberg_fiction_train.txt.xz")
    if not os.path.isfile(src):
        sys.exit(f"error: {src} not found; pass --source with the folder holding the Gutenberg files")
    books = read_books(src)
    total, cut = 0, len(books)
    for i, book in enumerate(books):
        if total + len(book) > args.part_a_chars:
            cut = i
            break
        total += len(book)
    write_xz(os.path.join(args.out, "gutenberg_train_a.txt.xz"), books[:cut])
    if args.rest:
        write_xz(os.path.join(args.out, "gutenberg_train_b.txt.xz"), books[cut:])


if __name__ == "__main__":
    main()
