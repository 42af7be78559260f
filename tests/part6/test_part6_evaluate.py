"""6.4 Evaluation against gold (part6_sft/evaluate.py): the metrics, per-family scores, the table, and greedy
batched answers.

The metrics are checked on examples worked by hand (in the comments); the batched answers against a naive
greedy loop that reruns the whole text through the model for every token and writes the chat format itself.
Run: python -m pytest -q tests/part6/test_part6_evaluate.py
"""
import sys
from collections import namedtuple

import pytest
import torch
from partloader import load_part, one_line_exit

evaluate, bpe, model_lib = load_part("part6_sft", "evaluate", "bpe", "model")
chat_format = load_part("part6_sft", "chat_format")

Example = namedtuple("Example", "family prompt response")  # stands in for tasks.Example


# ----------------------------------------------------------------------------------------------------
# Metrics
def test_normalize_by_hand():
    assert evaluate.normalize("The  Cat, sat!") == "cat sat"
    assert evaluate.normalize("An apple a day") == "apple day"
    assert evaluate.normalize("theatre Anna") == "theatre anna"  # articles are whole words only
    assert evaluate.normalize("  ") == ""
    assert evaluate.normalize("-3") == "3"  # the documented caveat: the minus sign is punctuation


def test_exact_and_normalized_match():
    assert evaluate.exact_match(" 5\n", "5") == 1.0
    assert evaluate.exact_match("5.", "5") == 0.0
    assert evaluate.exact_match("Paris", "paris") == 0.0
    assert evaluate.normalized_match("The Paris.", "paris") == 1.0
    assert evaluate.normalized_match("-3", "3") == 1.0  # lenient: why exact match is the verdict
    assert evaluate.normalized_match("cat sat", "sat cat") == 0.0  # word order still counts


def test_token_f1_by_hand():
    # "the cat sat" -> [cat, sat]; "a cat sat down" -> [cat, sat, down]; shared 2
    # precision 2/2 = 1, recall 2/3, F1 = 2 * 1 * 2/3 / (1 + 2/3) = (4/3) / (5/3) = 0.8
    assert evaluate.token_f1("the cat sat", "a cat sat down") == pytest.approx(0.8)
    # a repeated word counts only as often as the gold has it: [cat, cat, cat] vs [cat, dog]: shared 1,
    # precision 1/3, recall 1/2, F1 = 2 * 1/6 / (5/6) = 0.4
    assert evaluate.token_f1("cat cat cat", "cat dog") == pytest.approx(0.4)
    assert evaluate.token_f1("sat cat", "cat sat") == 1.0  # a bag: order does not count
    assert evaluate.token_f1("dog", "cat") == 0.0
    assert evaluate.token_f1("", "") == 1.0
    assert evaluate.token_f1("the", "") == 1.0  # "the" normalizes to nothing
    assert evaluate.token_f1("cat", "") == 0.0
    assert evaluate.token_f1("", "cat") == 0.0


# ----------------------------------------------------------------------------------------------------
# Per-family scores and the table
EXAMPLES = [Example("add", "2+3", "5"), Example("add", "1+1", "2"), Example("add", "4+4", "8"),
            Example("capital", "capital of France", "Paris")]
ANSWERS = ["5", " 2 ", "9", "the paris"]


def test_score_is_a_macro_average_over_families():
    scores = evaluate.score(EXAMPLES, ANSWERS)
    # add: 2 of 3 exact; "9" vs "8" shares no word. capital: "the paris" is right only once normalized.
    assert scores["add"] == pytest.approx({"n": 3, "exact": 2 / 3, "normalized": 2 / 3, "f1": 2 / 3})
    assert scores["capital"] == pytest.approx({"n": 1, "exact": 0.0, "normalized": 1.0, "f1": 1.0})
    # macro: (2/3 + 0) / 2 = 1/3 exact, while the micro average over the 4 items would be 2/4
    assert scores["mean"] == pytest.approx({"n": 4, "exact": 1 / 3, "normalized": 5 / 6, "f1": 5 / 6})
    assert list(scores) == ["add", "capital", "mean"]


def test_score_uses_the_given_grade_as_the_exact_verdict():
    scores = evaluate.score(EXAMPLES, ANSWERS, grade=lambda ex, answer: ex.family == "capital")
    assert scores["add"]["exact"] == 0.0 and scores["capital"]["exact"] == 1.0
    assert scores["mean"]["exact"] == 0.5


def test_score_refuses_mismatched_or_empty_input():
    with pytest.raises(ValueError, match="4 examples but 3 answers"):
        evaluate.score(EXAMPLES, ANSWERS[:3])
    with pytest.raises(ValueError, match="no examples"):
        evaluate.score([], [])
    with pytest.raises(ValueError, match="rename"):
        evaluate.score([Example("mean", "p", "r")], ["r"])


def test_format_table_rows():
    scores = evaluate.score(EXAMPLES, ANSWERS)
    scores = {"mean": scores["mean"], "capital": scores["capital"], "add": scores["add"]}  # mean comes last anyway
    assert evaluate.format_table(scores).splitlines() == [
        "| family | n | exact | normalized | F1 |",
        "| --- | ---: | ---: | ---: | ---: |",
        "| capital | 1 | 0.0% | 100.0% | 100.0% |",
        "| add | 3 | 66.7% | 66.7% | 66.7% |",
        "| **mean** (macro) | 4 | 33.3% | 83.3% | 83.3% |",
    ]


# ----------------------------------------------------------------------------------------------------
# Greedy answers, batched
def test_length_batches_by_hand():
    assert evaluate.length_batches([5, 2, 9, 3], 2) == [[1, 3], [0, 2]]
    assert evaluate.length_batches([4, 4, 1], 5) == [[2, 0, 1]]
    assert evaluate.length_batches([], 3) == []


def test_answer_text_drops_the_end_token_only():
    tok = bpe.Tokenizer()  # no merges: ids are bytes; the chat tokens get 257..259
    chat_format.add_chat_tokens(tok)
    end = chat_format.chat_token_ids(tok)["end"]
    assert evaluate.answer_text(tok, [32, 104, 105, end], end) == "hi"    # " hi" + <|end|>
    assert evaluate.answer_text(tok, [104, 105], end) == "hi"             # cut at max_new_tokens: kept
    assert evaluate.answer_text(tok, [end], end) == ""


END_SCALE, SEED = 2.5, 5  # a random model whose answers end at different steps (checked in the test)
PROMPTS = ["cat", "the dog ran to the park", "a", "sat on the mat and ran", "dog dog", "park"]
MAX_NEW = 12


@pytest.fixture(scope="module")
def tiny():
    """A tiny BPE tokenizer with chat tokens and a random GPT. Its output layer is untied from the embedding
    and the <|end|> row scaled up, so that greedy answers stop at <|end|> after different numbers of tokens
    (a random tied model mostly repeats its input and never ends)."""
    tok = bpe.Tokenizer()
    tok.train("the cat sat on the mat. a dog ran to the park and the cat ran after it. " * 4, vocab_size=300)
    chat_format.add_chat_tokens(tok)
    torch.manual_seed(SEED)
    gpt = model_lib.GPT(model_lib.GPTConfig(vocab_size=tok.vocab_size, block_size=48, n_layer=2, n_head=2,
                                            n_embd=32))
    head = torch.randn(tok.vocab_size, 32)
    head[tok.special_tokens[chat_format.END]] *= END_SCALE
    gpt.lm_head.weight = torch.nn.Parameter(head)
    return gpt.eval(), tok


def naive_greedy(gpt, tok, prompt, max_new_tokens):
    """Independent route: the chat format written out by hand, the whole text rerun for every token.
    Returns (answer text, the number of tokens generated, whether it ended with <|end|>)."""
    user, end, assistant = (tok.special_tokens[t] for t in ("<|user|>", "<|end|>", "<|assistant|>"))
    ids, new = [user, *tok.encode(prompt), end, assistant], []
    with torch.no_grad():
        for _ in range(max_new_tokens):
            next_id = int(gpt(torch.tensor([ids + new]))[0][0, -1].argmax())
            if next_id == end:
                return tok.decode(new).strip(), len(new) + 1, True
            new.append(next_id)
    return tok.decode(new).strip(), len(new), False


def test_batched_answers_equal_one_at_a_time_and_a_naive_loop(tiny):
    gpt, tok = tiny
    naive = [naive_greedy(gpt, tok, p, MAX_NEW) for p in PROMPTS]
    ended = {n for _, n, stopped in naive if stopped}
    assert len(ended) >= 3 and not all(stopped for *_, stopped in naive), \
        f"the fixture should stop at several steps and hit max_new_tokens once: {naive}; change SEED"
    expected = [text for text, *_ in naive]
    assert evaluate.generate_answers(gpt, tok, PROMPTS, batch_size=1, max_new_tokens=MAX_NEW) == expected
    for batch_size in (2, 4, 64):  # different lengths in one batch, in an order that sorting changes
        assert evaluate.generate_answers(gpt, tok, PROMPTS, batch_size, MAX_NEW) == expected


def test_generate_answers_leaves_the_mode_as_it_was(tiny):
    gpt, tok = tiny
    gpt.train()
    try:
        evaluate.generate_answers(gpt, tok, PROMPTS[:2], max_new_tokens=2)
        assert gpt.training
    finally:
        gpt.eval()
    assert evaluate.generate_answers(gpt, tok, [], max_new_tokens=2) == []


def test_generate_answers_bad_input_is_one_line(tiny):
    gpt, tok = tiny
    with pytest.raises(ValueError, match="block_size"):
        evaluate.generate_answers(gpt, tok, ["cat"], max_new_tokens=100)
    with pytest.raises(ValueError, match="batch_size"):
        evaluate.generate_answers(gpt, tok, ["cat"], batch_size=0)
    with pytest.raises(ValueError, match="add_chat_tokens"):
        evaluate.generate_answers(gpt, bpe.Tokenizer(), ["cat"])


def test_items_per_second_reports_speeds_and_the_same_answers(tiny):
    gpt, tok = tiny
    result = evaluate.items_per_second(gpt, tok, PROMPTS, batch_size=4, max_new_tokens=MAX_NEW)
    assert set(result) == {"batched", "single", "speedup", "same_answers"}
    assert result["same_answers"] is True
    assert result["batched"] > 0 and result["single"] > 0  # no claim on which is faster: machines are noisy
    assert result["speedup"] == pytest.approx(result["batched"] / result["single"])


def test_spread_takes_every_family():
    assert evaluate.spread(list(range(10)), 3) == [0, 3, 6]
    assert evaluate.spread([1, 2], 5) == [1, 2]


# ----------------------------------------------------------------------------------------------------
# The command line
@pytest.mark.parametrize("args, words", [(["--per_family", "0"], "--per_family"), (["--split", "dev"], "--split"),
                                         (["--bench_items", "-1"], "--bench_items")])
def test_bad_flags_are_one_line(args, words, capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.parse_args(args)
    assert words in one_line_exit(e, capsys)


@pytest.fixture
def tiny_checkpoint(tmp_path, monkeypatch):
    """(path, tasks module): a random GPT with a chat tokenizer, saved as train.py saves best.pt, with room
    for the longest task prompt and 32 new tokens. main imports tasks when it runs (by its bare name, as a
    learner's `python part6_sft/evaluate.py` does): the test puts this part's tasks.py under that name."""
    tasks, checkpoint, data = load_part("part6_sft", "tasks", "checkpoint", "data")
    monkeypatch.setitem(sys.modules, "tasks", tasks)
    tok = bpe.Tokenizer()
    tok.train("the cat sat on the mat. a dog ran to the park and the cat ran after it. " * 4, vocab_size=280)
    chat_format.add_chat_tokens(tok)
    torch.manual_seed(0)
    cfg = model_lib.GPTConfig(vocab_size=tok.vocab_size, block_size=160, n_layer=1, n_head=2, n_embd=16)
    path = str(tmp_path / "best.pt")
    checkpoint.save_checkpoint(path, model_lib.GPT(cfg), cfg, step=0, val_loss=1.0,
                               extra={"tokenizer": data.tokenizer_to_dict(tok)})
    return path, tasks


def test_main_prints_a_row_per_family_and_the_bench(tiny_checkpoint, capsys):
    path, tasks = tiny_checkpoint
    scores, speed = evaluate.main(["--checkpoint", path, "--per_family", "2", "--bench", "--bench_items", "6",
                                   "--batch_size", "8", "--device", "cpu"])
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith("| ") and not line.startswith(("| family", "| ---"))]
    assert [row.split(" | ")[0][2:] for row in rows] == [*tasks.FAMILIES, "**mean** (macro)"]
    assert all(row.split(" | ")[1] == "2" for row in rows[:-1])
    assert rows[-1].split(" | ")[1] == str(2 * len(tasks.FAMILIES))
    assert speed["same_answers"] and out[-1].startswith("items/s: batched (batch 8)")
    assert out[-1].endswith("same answers: True")


def test_main_with_no_room_for_the_answer_is_one_line(tiny_checkpoint, capsys):
    path, _ = tiny_checkpoint
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--checkpoint", path, "--per_family", "1", "--max_new_tokens", "200", "--device", "cpu"])
    assert "block_size 160" in one_line_exit(e, capsys)


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        evaluate.main(["--checkpoint", str(tmp_path / "none.pt"), "--device", "cpu"])
    assert "not found" in one_line_exit(e, capsys)
