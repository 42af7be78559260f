"""bench_bpe.py writes its report under out/ unless --out says otherwise: a run never rewrites the published
results/bpe_bench.md. The benchmarks themselves are replaced by stubs (the real run takes minutes)."""
import types

import pytest
from partloader import ROOT, load_part, parts_defining

BENCH_PARTS = [part for part, _ in parts_defining("bench_streaming", ["bench_bpe"])]


def stub_benchmarks(bench, monkeypatch):
    monkeypatch.setattr(bench, "bench_training", lambda text, cfg: "| training |")
    tokenizers = {512: types.SimpleNamespace(vocab_size=512)}
    monkeypatch.setattr(bench, "bench_compression", lambda text, valid, vocabs: ("| compression |", True, tokenizers))
    monkeypatch.setattr(bench, "bench_encoding", lambda tok, corpora, workers: "| encoding |")
    monkeypatch.setattr(bench, "free_core_check", lambda: 2.0)
    monkeypatch.setattr(bench, "bench_streaming", lambda tok, txt, xz, max_chars, folder: "| streaming |")
    monkeypatch.setattr(bench, "read_text", lambda path, max_chars=None: "a short text")


@pytest.mark.parametrize("part", BENCH_PARTS)
def test_the_default_report_goes_under_out_not_results(part, tmp_path, monkeypatch):
    bench = load_part(part, "bench_bpe")
    stub_benchmarks(bench, monkeypatch)
    published = ROOT / part / "results" / "bpe_bench.md"
    before = published.read_bytes() if published.exists() else None
    monkeypatch.chdir(tmp_path)  # the README runs it from the repo root; out/ is relative to where you stand
    try:
        bench.main([])
    finally:
        after = published.read_bytes() if published.exists() else None
        if after != before and before is not None:
            published.write_bytes(before)  # put the published figures back before failing
    assert after == before, f"a run without --out rewrote {published}"
    report = (tmp_path / "out" / "part4_bench" / "bpe_bench.md").read_text(encoding="utf-8")
    assert "| streaming |" in report and "--out" not in report.split("\n")[2]  # its command has no --out

    chosen = tmp_path / "new" / "folder" / "bench.md"  # --out: there, its folders created
    bench.main(["--out", str(chosen)])
    assert f"--out {chosen}" in chosen.read_text(encoding="utf-8")
