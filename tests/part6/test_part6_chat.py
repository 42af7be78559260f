"""chat.py (part6_sft/chat.py): one answer with --prompt, the REPL, sampling, and one-line errors for a
checkpoint that is missing or was never fine-tuned.

The fine-tuned checkpoint is a tiny model trained for a moment on two requests ("the cat" -> "sat on the mat",
"a dog" -> "ran to the park"), saved the way train.py saves best.pt (save_checkpoint with the tokenizer), so
the right answers are known by heart; other expected answers come from the in-memory model.
Run: python -m pytest -q tests/part6/test_part6_chat.py
"""
import pytest
import tiny_chat
from partloader import load_part, one_line_exit

PART = "part6_sft"
chat, evaluate, chat_format, checkpoint, model_lib = load_part(PART, "chat", "evaluate", "chat_format",
                                                               "checkpoint", "model")

BLOCK = 32


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """(path, in-memory model, tokenizer) of a fine-tuned checkpoint."""
    path = tmp_path_factory.mktemp("chat") / "best.pt"
    tok = tiny_chat.tiny_tokenizer(PART)
    pairs = [("the cat", "sat on the mat"), ("a dog", "ran to the park")]
    return str(path), tiny_chat.save_tiny(PART, path, tok, pairs, BLOCK), tok


def greedy(gpt, tok, prompt, max_new_tokens=64):
    """What chat.py must print: the greedy answer, at most as long as the context leaves room for."""
    room = BLOCK - len(chat_format.encode_prompt(tok, prompt))
    return evaluate.generate_answers(gpt, tok, [prompt], max_new_tokens=min(room, max_new_tokens))[0]


def run_chat(path, *flags):
    return chat.main(["--checkpoint", path, "--device", "cpu", *flags])


def test_prompt_prints_the_answer_it_learned(tuned, capsys):
    path, gpt, tok = tuned
    assert run_chat(path, "--prompt", "the cat") == "sat on the mat"
    assert capsys.readouterr().out == "sat on the mat\n"
    assert run_chat(path, "--prompt", "a dog") == "ran to the park"
    cut = run_chat(path, "--prompt", "the cat", "--max_new_tokens", "2")
    assert cut == greedy(gpt, tok, "the cat", 2) and "sat on the mat".startswith(cut) and cut != "sat on the mat"


def test_sampling_is_seeded_and_top_k_1_is_greedy(tuned):
    path, _, _ = tuned
    flags = ["--prompt", "a dog", "--temperature", "3", "--seed", "3"]
    assert run_chat(path, *flags) == run_chat(path, *flags)
    assert run_chat(path, "--prompt", "a dog", "--temperature", "3", "--top_k", "1") == "ran to the park"


def feed(monkeypatch, lines):
    """Make input() return these lines, then raise what the last item is if it is an exception."""
    it = iter(lines)

    def fake_input(prompt=""):
        item = next(it)
        if isinstance(item, BaseException):
            raise item
        return item
    monkeypatch.setattr("builtins.input", fake_input)
    return it


def test_repl_answers_each_line_until_an_empty_one(tuned, monkeypatch, capsys):
    path, _, _ = tuned
    rest = feed(monkeypatch, ["the cat", "a dog", "", "never read"])
    run_chat(path)
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("model> ")] == ["model> sat on the mat", "model> ran to the park"]
    assert out[-1] == "bye"
    assert list(rest) == ["never read"]


@pytest.mark.parametrize("stop", [EOFError(), KeyboardInterrupt()])
def test_repl_ends_on_ctrl_d_and_ctrl_c_with_one_line(tuned, monkeypatch, capsys, stop):
    path, _, _ = tuned
    feed(monkeypatch, ["the cat", stop])
    run_chat(path)
    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == "bye" and "Traceback" not in captured.err


def test_a_request_too_long_is_one_line(tuned, monkeypatch, capsys):
    path, _, _ = tuned
    long = "the cat sat on the mat " * 10
    with pytest.raises(SystemExit) as e:
        run_chat(path, "--prompt", long)
    assert "too long" in one_line_exit(e, capsys)
    feed(monkeypatch, [long, "the cat", ""])  # in the REPL: the error, then the next request is answered
    run_chat(path)
    out = capsys.readouterr().out.splitlines()
    assert any(line.startswith("error: the request is too long") for line in out)
    assert sum(line.startswith("model> ") for line in out) == 1


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        run_chat(str(tmp_path / "none.pt"), "--prompt", "hi")
    line = one_line_exit(e, capsys)
    assert line.startswith("error:") and "not found" in line


@pytest.mark.parametrize("tok", [tiny_chat.tiny_tokenizer(PART, with_chat_tokens=False), None], ids=["bpe", "bytes"])
def test_a_checkpoint_that_is_not_fine_tuned_is_one_line(tok, tmp_path, capsys):
    """A base model from Part 4/5 (BPE without chat tokens), or one without a stored tokenizer (bytes)."""
    path = tmp_path / "base.pt"
    if tok is None:  # a byte-level model: 256 ids, no tokenizer in the checkpoint
        cfg = model_lib.GPTConfig(vocab_size=256, block_size=BLOCK, n_layer=1, n_head=2, n_embd=16)
        checkpoint.save_checkpoint(str(path), model_lib.GPT(cfg), cfg, step=0, val_loss=1.0)
    else:
        tiny_chat.save_tiny(PART, path, tok, block_size=BLOCK)
    with pytest.raises(SystemExit) as e:
        run_chat(str(path), "--prompt", "hi")
    line = one_line_exit(e, capsys)
    assert line.startswith("error:") and "not fine-tuned" in line and "train.py" in line


@pytest.mark.parametrize("flags, words", [(["--temperature", "-1"], "--temperature"),
                                          (["--temperature", "nan"], "--temperature"),
                                          (["--top_k", "0"], "--top_k"),
                                          (["--max_new_tokens", "0"], "--max_new_tokens"),
                                          (["--prompt", " "], "--prompt")])
def test_bad_flags_are_one_line(flags, words, capsys):
    with pytest.raises(SystemExit) as e:
        chat.parse_args(flags)
    assert words in one_line_exit(e, capsys)


def test_help_explains_the_tool(capsys):
    with pytest.raises(SystemExit) as e:
        chat.parse_args(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for words in ("REPL", "empty line", "<|end|>", "--prompt", "--temperature", "greedy", "--checkpoint"):
        assert words in text, words
