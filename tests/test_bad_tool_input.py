"""Bad input to the tools (sample.py, bpe.py, the plot and report writers) ends in one line naming the fix.

Each class of bad input is one test, parametrized over every part whose script has the flag (found by
partloader.parts_defining), so parts 5, 6, ... inherit the checks without editing this file. In-process
calls: a subprocess per case would cost seconds of torch start-up. Training's own flags: tests/partN/.
"""
import functools
import json

import pytest
import torch
from partloader import ROOT, load_part, one_line_exit, parts_defining


module_of = load_part  # one copy of each module per part (partloader keeps them)


def parts_with(name, module):
    return [pytest.param(part, id=part) for part, _ in parts_defining(name, [module])]


one_line_error = one_line_exit


# ----------------------------------------------------------------------------------------------------
# sample.py: flags
SAMPLE_PARTS = parts_with("parse_args", "sample")
NOT_UTF8 = b"\xff".decode("utf-8", "surrogateescape")  # what Python puts in sys.argv for --prompt $'\xff'


@pytest.mark.parametrize("part", SAMPLE_PARTS)
@pytest.mark.parametrize("args, words", [pytest.param(*case, id=" ".join(case[0])) for case in [
    (["--temperature", "nan"], ["--temperature"]),  # nan < 0 is False: a plain range check lets it through
    (["--temperature", "inf"], ["--temperature"]),
    (["--temperature", "-1"], ["--temperature"]),
    (["--temperature", "1e-40"], ["--temperature", "1e-06"]),  # logits / 1e-40 overflow to inf, softmax -> nan
    (["--top_k", "0"], ["--top_k"]),
    (["--top_p", "0"], ["--top_p"]),
    (["--top_p", "1.5"], ["--top_p"]),
    (["--max_new_tokens", "1000000000000"], ["--max_new_tokens", "100000"]),  # would look hung, then run out of memory
    (["--max_new_tokens", "0"], ["--max_new_tokens"]),
    (["--num_samples", "1000000000"], ["--num_samples", "100"]),
    (["--num_samples", "0"], ["--num_samples"]),
    (["--seed", str(2**64)], ["--seed"]),  # torch.Generator.manual_seed overflows past 64 bits
    (["--prompt", ""], ["--prompt"]),
    (["--prompt", NOT_UTF8], ["--prompt", "UTF-8"]),
]])
def test_bad_sampling_flags_are_one_line_errors(part, args, words, capsys):
    with pytest.raises(SystemExit) as err:
        module_of(part, "sample").parse_args(args)
    message = one_line_error(err, capsys)
    assert all(word in message for word in words), message


@pytest.mark.parametrize("part", SAMPLE_PARTS)
def test_sampling_flags_at_their_limits_are_accepted(part):
    args = module_of(part, "sample").parse_args(["--temperature", "1e-6", "--max_new_tokens", "100000",
                                                  "--num_samples", "100", "--seed", str(2**64 - 1), "--prompt", "é"])
    assert args.max_new_tokens == 100000 and args.num_samples == 100


# ----------------------------------------------------------------------------------------------------
# sample.py: checkpoints
TINY = dict(block_size=16, n_layer=1, n_head=2, n_embd=32)


@functools.cache
def bpe_tokenizer_dict():
    """A 260-token BPE as a Part 4 checkpoint stores it ({"kind": "bpe", ...}), learned from a short text."""
    bpe = module_of("part4_scaling", "bpe")
    tok = bpe.Tokenizer()
    tok.train("the cat sat on the mat; the cat ate the rat. " * 20, 260)
    return {"kind": "bpe", **tok.to_dict()}


def write_checkpoint(part, path, vocab_size=256, tokenizer=None):
    """A tiny checkpoint written by the part's own checkpoint.py, optionally carrying a tokenizer."""
    torch.manual_seed(0)
    model, checkpoint = module_of(part, "model"), module_of(part, "checkpoint")
    gpt = model.GPT(model.GPTConfig(vocab_size=vocab_size, **TINY))
    checkpoint.save_checkpoint(str(path), gpt, gpt.config, 1, 1.0, {"tokenizer": tokenizer} if tokenizer else None)
    return str(path)


def sample_main(part, *args):
    return module_of(part, "sample").main([*args, "--max_new_tokens", "3", "--device", "cpu"])


@pytest.mark.parametrize("part", SAMPLE_PARTS)
def test_missing_or_garbage_checkpoint(part, tmp_path):
    with pytest.raises(SystemExit, match="not found; train first"):
        sample_main(part, "--checkpoint", str(tmp_path / "missing.pt"))
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="cannot read checkpoint") as err:
        sample_main(part, "--checkpoint", str(tmp_path / "garbage.pt"))
    assert "\n" not in str(err.value.code)


@pytest.mark.parametrize("part", SAMPLE_PARTS)
def test_a_prompt_longer_than_the_context_is_cropped_with_a_note(part, tmp_path, capsys):
    path = write_checkpoint(part, tmp_path / "bytes.pt")
    prompt = "x" * 40  # block_size is 16
    texts = sample_main(part, "--checkpoint", path, "--prompt", prompt, "--num_samples", "2")
    assert len(texts) == 2 and all(t.startswith(prompt) for t in texts)
    assert "the prompt is 40 tokens; the model sees only the last 16" in capsys.readouterr().out


@pytest.mark.parametrize("part", SAMPLE_PARTS)
def test_a_bpe_checkpoint_is_decoded_with_its_tokenizer_or_refused(part, tmp_path):
    """Part 4 checkpoints carry a BPE tokenizer. A part that reads bytes only must say where to go,
    not print garbage (ids >= 256 as bytes) or crash in bytes()."""
    tok = bpe_tokenizer_dict()
    path = write_checkpoint(part, tmp_path / "bpe.pt", vocab_size=260, tokenizer=tok)
    if "tokenizer_from_dict" in vars(module_of(part, "sample")):  # this part reads the stored tokenizer
        assert sample_main(part, "--checkpoint", path, "--prompt", "the cat")[0].startswith("the cat")
        bad = write_checkpoint(part, tmp_path / "bad.pt", vocab_size=260, tokenizer={**tok, "format": "nonsense"})
        with pytest.raises(SystemExit, match="holds a tokenizer this part cannot read.*retrain"):
            sample_main(part, "--checkpoint", bad)
    else:
        with pytest.raises(SystemExit, match=r"'bpe' tokens and this part reads bytes; sample it with "
                                             r"python part4_scaling/sample\.py$"):
            sample_main(part, "--checkpoint", path)


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the message on a machine without a GPU")
@pytest.mark.parametrize("part", SAMPLE_PARTS)
def test_device_cuda_without_a_gpu_is_one_line(part, tmp_path, capsys):
    path = write_checkpoint(part, tmp_path / "bytes.pt")
    with pytest.raises(SystemExit) as err:
        module_of(part, "sample").main(["--checkpoint", path, "--device", "cuda"])
    one_line_error(err, capsys)


# ----------------------------------------------------------------------------------------------------
# bpe.py's command line (train a tokenizer from a file)
BPE_PARTS = parts_with("read_training_text", "bpe")


@pytest.fixture
def texts(tmp_path):
    (tmp_path / "ok.txt").write_text("the cat sat on the mat " * 50, encoding="utf-8")
    (tmp_path / "latin1.txt").write_bytes("café crème".encode("latin-1"))  # \xe9 alone is not UTF-8
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "broken.txt.xz").write_bytes(b"not xz data")
    return tmp_path


@pytest.mark.parametrize("part", BPE_PARTS)
@pytest.mark.parametrize("file, extra, words", [
    ("missing.txt", [], ["no such file"]),
    ("latin1.txt", [], ["UTF-8"]),
    ("broken.txt.xz", [], ["UTF-8", ".txt.xz"]),
    ("empty.txt", [], ["empty"]),
    ("ok.txt", ["--vocab_size", "100"], ["--vocab_size", "257"]),  # 256 bytes + <|endoftext|>
    ("ok.txt", ["--vocab_size", "100000"], ["--vocab_size", "65536"]),
    ("ok.txt", ["--max_chars", "0"], ["--max_chars"]),
])
def test_bad_bpe_command_lines_are_one_line_errors(part, file, extra, words, texts, capsys):
    with pytest.raises(SystemExit) as err:
        module_of(part, "bpe").main(["--train", str(texts / file), *extra, "--out", str(texts / "tok.json")])
    message = one_line_error(err, capsys)
    assert all(word in message for word in words), message
    assert not (texts / "tok.json").exists()


@pytest.mark.parametrize("part", BPE_PARTS)
def test_bpe_writes_out_tok_json_not_into_the_current_folder(part, texts, monkeypatch, capsys):
    monkeypatch.chdir(texts)
    tok = module_of(part, "bpe").main(["--train", "ok.txt", "--vocab_size", "300"])
    assert sorted(p.name for p in texts.iterdir() if p.suffix == ".json") == []  # nothing beside the input
    assert module_of(part, "bpe").Tokenizer.load(texts / "out" / "tok.json").merges == tok.merges
    assert "ran out of pairs" in capsys.readouterr().out or tok.vocab_size == 300


# ----------------------------------------------------------------------------------------------------
# Output files: a missing folder is created (out/ does not exist on a fresh clone), and defaults stay in out/
@pytest.mark.parametrize("part", parts_with("plot_runs", "plot_runs"))
def test_plot_runs_writes_into_a_missing_folder_and_defaults_to_out(part, tmp_path, monkeypatch):
    log = tmp_path / "run" / "metrics.jsonl"
    log.parent.mkdir()
    log.write_text("\n".join(json.dumps({"step": s, "loss": 3.0 - s / 10, "lr": 1e-3}) for s in range(3)))
    out = tmp_path / "new" / "folder" / "runs.png"
    module_of(part, "plot_runs").main([str(log), "--out", str(out)])
    assert out.stat().st_size > 1000
    monkeypatch.chdir(tmp_path)
    module_of(part, "plot_runs").main([str(log)])
    assert (tmp_path / "out" / "runs.png").is_file() and not (tmp_path / "runs.png").exists()


def test_check_env_json_goes_into_a_missing_folder(tmp_path):
    path = tmp_path / "new" / "env.json"
    module_of("part0_setup", "check_env").write_json(path, {"device": "cpu"})
    assert json.loads(path.read_text()) == {"device": "cpu"}


def test_diff_parts_html_goes_into_a_missing_folder(tmp_path, capsys):
    out = tmp_path / "new" / "diff.html"
    assert module_of("part0_setup", "diff_parts").main(["2", "3", "sample.py", "--html", str(out)]) == 0
    assert "<table" in out.read_text()


@pytest.mark.parametrize("part", parts_with("parse_args", "bench"))
def test_bench_results_stay_out_of_the_tracked_results_folder_unless_asked(part, monkeypatch):
    """A benchmark run must not overwrite the published figures in partN/results by accident."""
    bench = module_of(part, "bench")
    monkeypatch.chdir(ROOT)  # the bench checks that data/ is there
    for argv in ([], ["--quick"]):
        assert bench.parse_args(argv).results.startswith("out/")  # out/ is in .gitignore
    assert bench.parse_args(["--results", f"{part}/results"]).command.endswith(f"--results {part}/results")
