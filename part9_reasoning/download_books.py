"""Optional: rebuild part B of the training corpus (data/gutenberg_train_b.txt.xz) from Project Gutenberg.

    python part6_sft/download_books.py              # ~250 books, ~100 MB of text; resumes where it stopped

The repository ships part A of the Gutenberg training split and the validation split; part B (the books
after part A, ~100 M characters) is too big to keep in git. data/gutenberg_fiction_manifest.tsv lists every
book by its Gutenberg ebook number, so this tool downloads part B's books one by one from a Project
Gutenberg mirror (Gutenberg's terms ask that many books come from a mirror, not www.gutenberg.org),
cleans each one with the steps data/SOURCES.md describes ("Cleaning and selection", steps 1-4), and writes
them in manifest order with the corpus's separator. Nothing in training downloads anything: train.py only
reads the file this writes. Needs internet access; run it once, before the GPU milestone.

Each raw download is kept in --cache (default data/cache/gutenberg_raw/, ignored by git), so an
interrupted run picks up where it stopped and a rerun downloads nothing. Every cleaned book is compared
with the manifest's sha256_16. The corpus was built from an older copy of the books (rcdm-uga/Gutenberg_Text,
see data/SOURCES.md); Gutenberg revises its files now and then, so a few books may come out slightly
different today: each such book is reported, and the file is still written (the model trains just the
same on it) unless you pass --strict. If you have the full corpus file, prepare_data.py --rest rebuilds
part B exactly instead.
"""
import argparse
import csv
import lzma
import os
import re
import sys
import time
import urllib.error
import urllib.request

from prepare_data import DATA, PART_A_CHARS, SEPARATOR, book_hash, part_a_size

MIRROR = "https://gutenberg.pglaf.org"  # Gutenberg asks for many books to come from a mirror, not the main site
MAIN_SITE = "https://www.gutenberg.org/cache/epub/{n}/pg{n}.txt"  # the last resort, one request per book
USER_AGENT = "llm-from-scratch-course/1.0 (download_books.py; one book every few seconds)"

# --- cleaning: data/SOURCES.md, "Cleaning and selection", steps 1-4
START = re.compile(r"^\*{3}\s*START OF (?:THIS|THE) PROJECT GUTENBERG E-?BOOK.*$"  # the header ends here
                   r"|^\*END\*THE SMALL PRINT!.*$", re.IGNORECASE | re.MULTILINE)  # older files' header end
END = re.compile(r"^\*{3}\s*END OF .*PROJECT GUTENBERG|^End of (?:the )?Project Gutenberg",
                 re.IGNORECASE | re.MULTILINE)  # the footer (and the license after it) starts here
NOTE = re.compile(r"\[?(?:produced by|prepared by|e-?text prepared|e-?text produced|this e-?(?:text|book) (?:was|is)"
                  r"|transcribed (?:from|by)|scanned (?:and proofed )?by|updated editions will replace"
                  r"|an? (?:earlier|previous|older) (?:e-?text|e-?book|edition|version)|\[?e-?(?:text|book) #)"
                  r"|.*(?:project gutenberg|gutenberg\.(?:org|net)|html version)",  # "Note: ... an HTML version"
                  re.IGNORECASE | re.DOTALL)  # production notes: who typed the e-text, which edition it replaces
NOTE_MAX_CHARS = 500  # only short paragraphs count as notes: a chapter that starts "Prepared by..." stays
NOTE_PARAGRAPHS = 12  # how many paragraphs at each end are looked at
PARAGRAPH = re.compile(r"[^\n]+(?:\n[^\n]+)*")  # lines with no blank line between them
ILLUSTRATION = re.compile(r"\[Illustration(?::[^\]]*)?\]")  # captions may run over several lines
ITALIC = re.compile(r"_((?:[^_\n]|\n(?!\n))+)_")  # _word_ -> word, within one paragraph
TYPOGRAPHY = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
                            "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u201f": '"',
                            "\u2014": "--", "\u2013": "-", "\u2010": "-", "\u2011": "-", "\u2012": "-",
                            "\u2026": "...", "\u00a0": " ", "\u00ad": ""})


def decode(raw):
    """Gutenberg's UTF-8 files (with or without a byte-order mark); the oldest ones are Latin-1."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.replace("\r\n", "\n").replace("\r", "\n")


def strip_header_footer(text):
    """Everything after the last header marker and before the footer marker (the license is in both)."""
    starts = list(START.finditer(text))
    end = END.search(text, starts[-1].end() if starts else 0)
    return text[starts[-1].end() if starts else 0:end.start() if end else len(text)]


def drop_production_notes(text):
    """Short "Produced by ..." paragraphs among the first and last NOTE_PARAGRAPHS paragraphs."""
    paragraphs = list(PARAGRAPH.finditer(text))
    ends = paragraphs[:NOTE_PARAGRAPHS] + paragraphs[-NOTE_PARAGRAPHS:]
    notes = {p.span() for p in ends if len(p.group()) <= NOTE_MAX_CHARS and NOTE.match(p.group().lstrip())}
    for start, end in sorted(notes, reverse=True):  # from the back, so earlier spans stay valid
        text = text[:start] + text[end:]
    return text


def clean_book(text):
    """A downloaded book as the corpus holds it: no Gutenberg header, footer or notes; plain typography."""
    text = strip_header_footer(text)
    text = ILLUSTRATION.sub("", text)
    text = ITALIC.sub(r"\1", text)
    text = text.translate(TYPOGRAPHY)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = drop_production_notes(text)
    text = re.sub(r"\n{4,}", "\n\n\n", text)  # at most two blank lines in a row
    return text.strip("\n") + "\n"


# --- which books: part B is what prepare_data.py writes after part A
def read_manifest(path):
    try:
        with open(path, encoding="utf-8", newline="") as f:
            rows = [r for r in csv.DictReader(f, delimiter="\t") if r.get("split") == "train"]
        for r in rows:
            r["gutenberg_ebook_no"], r["chars"] = int(r["gutenberg_ebook_no"]), int(r["chars"])
    except OSError:
        sys.exit(f"error: manifest {path} not found; pass --manifest data/gutenberg_fiction_manifest.tsv")
    except (KeyError, TypeError, ValueError):
        sys.exit(f"error: {path} is not the book manifest (columns split, gutenberg_ebook_no, chars, sha256_16); "
                 "pass --manifest data/gutenberg_fiction_manifest.tsv")
    if not rows:
        sys.exit(f"error: {path} lists no training books; pass --manifest data/gutenberg_fiction_manifest.tsv")
    return rows


def part_b_rows(rows, part_a_chars):
    """The books after part A, cut by prepare_data.py's rule; a book's length in the corpus file is its
    manifest chars + 1 (the blank line after the separator)."""
    return rows[part_a_size([row["chars"] + 1 for row in rows], part_a_chars):]


# --- downloading, one book at a time, each raw file cached
def fetch(url, timeout):
    """The bytes at url (replaced by a fake in the tests: they never touch the network)."""
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def book_urls(n, mirror):
    """Where book n's plain text may be: a mirror's folders (5352 lives in 5/3/5/5352/, books 1-9 in 0/N/) hold
    the UTF-8 file (-0), the ASCII one or the Latin-1 one (-8); the main site's generated file comes last."""
    folder = "/".join(str(n)[:-1]) or "0"
    files = [f"{mirror.rstrip('/')}/{folder}/{n}/{n}{suffix}.txt" for suffix in ("-0", "", "-8")]
    return files + [MAIN_SITE.format(n=n)]


def download(n, args):
    """Book n's raw file: each URL in turn (a 404 moves on at once), the whole list tried args.retries times.
    A file without Gutenberg's START marker (an error page served with 200 OK) counts as not found."""
    reason = "not found"
    for attempt in range(args.retries):
        if attempt:
            time.sleep(args.delay * 2 ** attempt)  # back off: the server or the line may be busy
        for url in book_urls(n, args.mirror):
            try:
                raw = fetch(url, args.timeout)
            except urllib.error.HTTPError as e:
                reason = f"HTTP {e.code} from {url}"
                continue
            except (urllib.error.URLError, OSError) as e:  # no network, DNS, timeout, connection reset
                reason = str(getattr(e, "reason", e)) or type(e).__name__
                continue
            if START.search(decode(raw)):
                return raw
            reason = f"{url} is not a Gutenberg text (no START marker)"
    raise ConnectionError(reason)


def raw_book(row, args):
    """From the cache if it is there, else downloaded (politely: args.delay seconds first) and cached."""
    n = row["gutenberg_ebook_no"]
    path = os.path.join(args.cache, f"pg{n}.txt")
    if os.path.isfile(path):
        with open(path, "rb") as f:
            return f.read()
    time.sleep(args.delay)
    try:
        raw = download(n, args)
    except ConnectionError as e:
        sys.exit(f"error: could not download book {row['index']} ({row['title']!r}, ebook {n}): {e}; "
                 f"rerun the same command to resume (finished books are kept in {args.cache})")
    with open(path + ".tmp", "wb") as f:  # temp file + rename: a cut-off download never looks finished
        f.write(raw)
    os.replace(path + ".tmp", path)
    return raw


def write_part_b(path, books):
    """The corpus file's layout (what prepare_data.py --rest writes): each book after a blank line, ending
    in one, then the separator line. Written to a temp file and renamed: never half a file."""
    tmp = path + ".tmp"
    try:
        with lzma.open(tmp, "wt", encoding="utf-8", preset=6) as f:
            for book in books:
                f.write("\n" + book + "\n" + SEPARATOR)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def check_inputs(args):
    """Every path is usable before the first download (minutes of downloading, then a bad --out, is lost work)."""
    if not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        sys.exit(f"error: the folder of --out {args.out} does not exist; pass --out data/gutenberg_train_b.txt.xz")
    try:
        os.makedirs(args.cache, exist_ok=True)
    except OSError as e:
        sys.exit(f"error: cannot create --cache {args.cache} ({e.strerror}); pass another --cache")
    if not args.mirror.startswith(("https://", "http://")):
        sys.exit(f"error: --mirror {args.mirror} is not a web address; pass one like {MIRROR}")
    if args.retries < 1 or args.delay < 0 or args.timeout <= 0:
        sys.exit("error: --retries must be >= 1, --delay >= 0 and --timeout > 0")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--manifest", default=os.path.join(DATA, "gutenberg_fiction_manifest.tsv"),
                   help="the list of books: ebook numbers and sha256_16 (default: data's)")
    p.add_argument("--out", default=os.path.join(DATA, "gutenberg_train_b.txt.xz"),
                   help="the file to write (default: data/gutenberg_train_b.txt.xz, where train.py looks)")
    p.add_argument("--cache", default=os.path.join(DATA, "cache", "gutenberg_raw"),
                   help="folder for the raw downloads; rerunning reuses them (default: data/cache/gutenberg_raw)")
    p.add_argument("--part_a_chars", type=float, default=PART_A_CHARS,
                   help="part A's size, as prepare_data.py cuts it (default: %(default)s)")
    p.add_argument("--mirror", default=MIRROR,
                   help="a Project Gutenberg mirror, as gutenberg.org lists them (default: %(default)s)")
    p.add_argument("--delay", type=float, default=2.0,
                   help="seconds to wait before each download, to be polite to the server (default: %(default)s)")
    p.add_argument("--retries", type=int, default=3, help="tries per book before giving up (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds per request (default: %(default)s)")
    p.add_argument("--force", action="store_true", help="rewrite --out if it is already there")
    p.add_argument("--strict", action="store_true",
                   help="write nothing unless every book matches the manifest's sha256_16")
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if os.path.isfile(args.out) and not args.force:  # maybe the exact file prepare_data.py --rest wrote
        print(f"kept {args.out} (already there); pass --force to download and write it again")
        return
    check_inputs(args)
    rows = part_b_rows(read_manifest(args.manifest), args.part_a_chars)
    if not rows:
        sys.exit(f"error: no books after part A in {args.manifest}; lower --part_a_chars")
    books, mismatched = [], []
    for k, row in enumerate(rows):
        book = clean_book(decode(raw_book(row, args)))
        books.append(book)
        status = "ok"
        if book_hash(book) != row["sha256_16"]:
            mismatched.append(row)
            status = f"differs from the manifest: {len(book):,} characters, it lists {row['chars']:,}"
        print(f"[{k + 1}/{len(rows)}] book {row['index']} ({row['title']!r}, ebook {row['gutenberg_ebook_no']}): "
              f"{status}", flush=True)
    print(f"{len(rows) - len(mismatched)} of {len(rows)} books match the manifest's sha256_16")
    if mismatched and args.strict:
        sys.exit(f"error: {len(mismatched)} books differ from {args.manifest} (listed above); nothing written. "
                 "Drop --strict to train on today's text, or rebuild with prepare_data.py --rest")
    write_part_b(args.out, books)
    print(f"wrote {args.out}: {len(books)} books, {sum(map(len, books)) / 1e6:.1f} M characters")


if __name__ == "__main__":
    main()
