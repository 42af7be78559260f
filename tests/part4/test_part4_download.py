"""part4_scaling/download_books.py, fully offline: the fetch function is replaced by fake Gutenberg files.

The real download (gutenberg.org) was never run here: this machine has no network to it. What is checked:
each cleaning step of data/SOURCES.md against hand-written text, the file part B becomes (order, separator,
xz, no partial file after a failure), the cache (a rerun fetches nothing), hash mismatches and --strict, and
a network failure as one line.
"""
import csv
import hashlib
import lzma
import urllib.error

import pytest
from partloader import ROOT, load_part

dl = load_part("part4_scaling", "download_books")
SEP = "<|endoftext|>\n"

# A Gutenberg file as it is served today: byte-order mark, CRLF, header up to the START marker, a production
# note, an illustration over two lines, _italics_, curly quotes, dashes, an ellipsis, nbsp, a soft hyphen,
# trailing spaces, five blank lines in a row, a production note at the end, the footer and the license.
FAKE = ("\ufeffThe Project Gutenberg eBook of A Test, by Nobody\r\n\r\nTitle: A Test\r\n\r\n"
        "*** START OF THE PROJECT GUTENBERG EBOOK A TEST ***\r\n\r\n\r\n"
        "Produced by Jane Roe and the Online Distributed\r\nProofreading Team.\r\n\r\n\r\n"
        "A TEST   \r\n\r\n[Illustration: The house,\r\nseen from the road]\r\n\r\n"
        "\u201cIt\u2019s _very_ odd,\u201d she said\u2014and paused\u2026   \r\n"
        "Pages 10\u201312, a\u00a0long\u00adish _walk\r\nhome_.\r\n\r\n\r\n\r\n\r\n\r\nTHE END\r\n\r\n"
        "Transcribed from the 1899 edition by John Doe.\r\n\r\n"
        "*** END OF THE PROJECT GUTENBERG EBOOK A TEST ***\r\n\r\nSection 1. General Terms of Use\r\n")
EXPECTED = ("A TEST\n\n\n"  # the illustration's text is gone, its blank lines stay: two, after the reduction
            "\"It's very odd,\" she said--and paused...\n"
            "Pages 10-12, a longish walk\nhome.\n\n\nTHE END\n")


def test_a_fake_gutenberg_file_is_cleaned_as_sources_md_says():
    assert dl.clean_book(dl.decode(FAKE.encode("utf-8"))) == EXPECTED


MIDDLE = "p\n\n" * 12 + "A Project Gutenberg mention, 13 paragraphs in, stays.\n\n" + "p\n\n" * 12 + "p\n"


@pytest.mark.parametrize("raw, expected", [
    pytest.param("a\r\nb\rc", "a\nb\nc\n", id="line endings"),
    pytest.param("licence\n*** START OF THIS PROJECT GUTENBERG EBOOK X ***\nbook\n", "book\n", id="START marker"),
    pytest.param("licence\n*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\nbook\n", "book\n",
                 id="old SMALL PRINT header"),
    pytest.param("book\n*** END OF THE PROJECT GUTENBERG EBOOK X ***\nlicence\n", "book\n", id="END marker"),
    pytest.param("book\nEnd of the Project Gutenberg EBook of X\nlicence\n", "book\n", id="old End of line"),
    pytest.param("Produced by A.\n\nE-text prepared by B.\n\nbook\n\nAn earlier edition was #12.\n", "book\n",
                 id="production notes"),
    pytest.param("Note: Project Gutenberg also has an HTML version of this\n      file.\n\n" + MIDDLE, MIDDLE,
                 id="notes naming Gutenberg, at the ends only"),
    pytest.param("Produced by the ship's cook, he said.\n" * 20, "Produced by the ship's cook, he said.\n" * 20,
                 id="a long paragraph is not a note"),
    pytest.param("a [Illustration] b [Illustration: a cat\non a mat] c", "a  b  c\n", id="illustrations"),
    pytest.param("_one_ and _two\nlines_ but _not\n\nacross paragraphs", "one and two\nlines but _not\n\n"
                 "across paragraphs\n", id="italics"),
    pytest.param("\u2018a\u2019 \u201cb\u201d \u2014 \u2013 \u2010 \u2026 x\u00a0y so\u00adft",
                 "'a' \"b\" -- - - ... x y soft\n", id="typography"),
    pytest.param("a  \t\nb ", "a\nb\n", id="trailing spaces"),
    pytest.param("a\n\n\n\n\n\nb\n\n\nc", "a\n\n\nb\n\n\nc\n", id="at most two blank lines"),
])
def test_each_cleaning_step(raw, expected):
    assert dl.clean_book(dl.decode(raw.encode("utf-8"))) == expected


def test_latin1_files_are_read():
    assert dl.decode("caf\u00e9".encode("latin-1")) == "caf\u00e9"


# --- a small fake manifest, downloaded with a fake fetch
BODIES = {11: "Part A's only book.", 22: "Second book.\n\nIt has _two_ paragraphs.", 33: "Third \u2014 book.",
          44: "Fourth book."}
CLEAN = {11: "Part A's only book.\n", 22: "Second book.\n\nIt has two paragraphs.\n", 33: "Third -- book.\n",
         44: "Fourth book.\n"}


def gutenberg_file(n):
    return (f"header\r\n*** START OF THE PROJECT GUTENBERG EBOOK {n} ***\r\n\r\n" + BODIES[n].replace("\n", "\r\n")
            + f"\r\n\r\n*** END OF THE PROJECT GUTENBERG EBOOK {n} ***\r\nlicence\r\n").encode("utf-8")


def write_manifest(path, wrong=()):
    with open(path, "w", newline="", encoding="utf-8") as f:
        rows = csv.writer(f, delimiter="\t")
        rows.writerow(["split", "index", "gutenberg_ebook_no", "title", "author", "chars", "sha256_16"])
        for i, (n, text) in enumerate(CLEAN.items()):
            digest = hashlib.sha256(("x" if n in wrong else text).encode()).hexdigest()[:16]
            rows.writerow(["train", i, n, f"Book {n}", "Anon", len(text), digest])
        rows.writerow(["valid", 0, 99, "Valid book", "Anon", 5, "0" * 16])


@pytest.fixture
def run(tmp_path, monkeypatch):
    """main() on a fake manifest whose part A is book 11 (part_a_chars 25 = its 20 characters + 1 + some)."""
    fetched = []

    def fake_fetch(url, timeout):
        fetched.append(url)
        return gutenberg_file(int(url.rsplit("/", 2)[-2]))
    monkeypatch.setattr(dl, "fetch", fake_fetch)
    monkeypatch.setattr(dl.time, "sleep", lambda s: None)

    def main(*flags, wrong=()):
        write_manifest(tmp_path / "manifest.tsv", wrong)
        dl.main(["--manifest", str(tmp_path / "manifest.tsv"), "--out", str(tmp_path / "b.txt.xz"),
                 "--cache", str(tmp_path / "cache"), "--part_a_chars", "25", "--delay", "0", *flags])
    main.fetched, main.out, main.cache = fetched, tmp_path / "b.txt.xz", tmp_path / "cache"
    return main


def test_part_b_is_written_in_manifest_order_with_the_corpus_separator(run, capsys):
    run()
    text = lzma.open(run.out, "rt", encoding="utf-8").read()
    assert text == "".join("\n" + CLEAN[n] + "\n" + SEP for n in (22, 33, 44))  # what prepare_data.py --rest writes
    assert [url.rsplit("/", 1)[-1] for url in run.fetched] == ["22-0.txt", "33-0.txt", "44-0.txt"]  # not book 11
    assert "3 of 3 books match" in capsys.readouterr().out


def test_a_rerun_fetches_nothing(run, capsys):
    run()
    first = run.out.read_bytes()
    run.fetched.clear()
    run.out.write_bytes(b"made by prepare_data.py --rest")
    run()  # an existing part B is kept
    assert run.out.read_bytes() == b"made by prepare_data.py --rest" and "--force" in capsys.readouterr().out
    run("--force")
    assert run.fetched == [] and run.out.read_bytes() == first
    assert sorted(p.name for p in run.cache.iterdir()) == ["pg22.txt", "pg33.txt", "pg44.txt"]


def test_a_book_that_differs_is_reported_and_strict_writes_nothing(run, capsys):
    run(wrong=(33,))
    out = capsys.readouterr().out
    assert "2 of 3 books match" in out and "ebook 33): differs" in out and run.out.exists()
    run.out.unlink()
    with pytest.raises(SystemExit) as err:
        run("--strict", wrong=(33,))
    assert "error" in err.value.code and "\n" not in err.value.code
    assert not run.out.exists()


def test_books_are_found_in_the_mirrors_folders_then_on_the_main_site():
    assert dl.book_urls(5352, "https://m.org/pg/") == [
        "https://m.org/pg/5/3/5/5352/5352-0.txt", "https://m.org/pg/5/3/5/5352/5352.txt",
        "https://m.org/pg/5/3/5/5352/5352-8.txt", "https://www.gutenberg.org/cache/epub/5352/pg5352.txt"]
    assert dl.book_urls(7, "https://m.org")[0] == "https://m.org/0/7/7-0.txt"


def test_the_next_address_is_tried_after_a_404_or_an_error_page(run, monkeypatch):
    calls = []

    def only_the_ascii_file(url, timeout):
        calls.append(url)
        if url.endswith("-0.txt"):
            raise urllib.error.HTTPError(url, 404, "Not Found", None, None)
        if url.endswith("-8.txt") or "/cache/epub/" in url:
            return b"<html>Too many requests</html>"
        return gutenberg_file(int(url.rsplit("/", 2)[-2]))
    monkeypatch.setattr(dl, "fetch", only_the_ascii_file)
    run()
    assert len(calls) == 6 and calls[1] == f"{dl.MIRROR}/2/22/22.txt"
    monkeypatch.setattr(dl, "fetch", lambda url, timeout: b"<html>Too many requests</html>")
    (run.cache / "pg44.txt").unlink()
    with pytest.raises(SystemExit) as err:
        run("--retries", "1", "--force")
    assert "ebook 44" in err.value.code and "START marker" in err.value.code and "\n" not in err.value.code
    assert not (run.cache / "pg44.txt").exists()  # an error page is never cached as the book


def test_a_network_failure_is_one_line_naming_the_book_and_a_rerun_resumes(run, monkeypatch):
    calls = []

    def offline_after_one_book(url, timeout):
        calls.append(url)
        if "33" in url:
            raise urllib.error.URLError("Temporary failure in name resolution")
        return gutenberg_file(22)
    monkeypatch.setattr(dl, "fetch", offline_after_one_book)
    with pytest.raises(SystemExit) as err:
        run("--retries", "2")
    message = err.value.code
    assert message.startswith("error:") and "\n" not in message
    assert all(word in message for word in ["Book 33", "ebook 33", "name resolution", "rerun"]), message
    assert len(calls) == 1 + 2 * len(dl.book_urls(33, dl.MIRROR))  # book 22 once, then every address twice for book 33
    assert not run.out.exists() and sorted(p.name for p in run.cache.iterdir()) == ["pg22.txt"]


def test_a_failed_write_leaves_no_partial_file(tmp_path):
    out = tmp_path / "b.txt.xz"
    out.write_bytes(b"the previous file")

    def books():
        yield "one\n"
        raise OSError("disk full")
    with pytest.raises(OSError):
        dl.write_part_b(str(out), books())
    assert out.read_bytes() == b"the previous file" and sorted(p.name for p in tmp_path.iterdir()) == ["b.txt.xz"]


def test_part_b_starts_where_prepare_data_cuts_part_a():
    rows = [{"chars": 9}, {"chars": 9}, {"chars": 9}]  # 10 characters each in the corpus file
    assert dl.part_b_rows(rows, 20) == rows[2:]  # 10 + 10 fit in 20
    assert dl.part_b_rows(rows, 19) == rows[1:]
    assert dl.part_b_rows(rows, 30) == []
    # the real manifest: part B starts right after the 235 books that data/gutenberg_train_a.txt.xz holds
    real = dl.part_b_rows(dl.read_manifest(str(ROOT / "data" / "gutenberg_fiction_manifest.tsv")), dl.PART_A_CHARS)
    assert (len(real), real[0]["index"]) == (247, "235")


def test_bad_paths_are_one_line_errors_before_any_download(run, tmp_path, capsys):
    for flags, word in [(["--manifest", str(tmp_path / "nope.tsv")], "--manifest"),
                        (["--out", str(tmp_path / "no" / "b.txt.xz")], "--out"),
                        (["--retries", "0"], "--retries")]:
        with pytest.raises(SystemExit) as err:
            dl.main([*flags, "--cache", str(tmp_path / "cache")])
        assert word in err.value.code and "\n" not in err.value.code
    assert run.fetched == []


def test_help_explains_the_tool(capsys):
    with pytest.raises(SystemExit) as err:
        dl.main(["--help"])
    assert err.value.code == 0 and "gutenberg.org" in capsys.readouterr().out
