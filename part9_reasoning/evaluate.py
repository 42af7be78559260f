"""6.4 Evaluation against gold: answer every held-out prompt greedily, then score the answers per task family.

    python part6_sft/evaluate.py --checkpoint out/part6/best.pt                  # the per-family table
    python part6_sft/evaluate.py --split train --per_family 20                   # the training distribution
    python part6_sft/evaluate.py --bench                                         # + items/s batched vs one at a time

Three scores, from strict to lenient, each an average over a family's items:
  - exact:      the answer equals the gold response (after .strip()): the program's verdict, what the
                milestone counts (tasks.grade);
  - normalized: equal after normalize(): lowercase, no punctuation, no articles a/an/the (SQuAD's rule).
                "The Paris." matches "paris"; beware, "-3" matches "3" too: the minus sign is punctuation;
  - F1:         SQuAD's token F1, partial credit for the words the answer shares with the gold.
The "mean" row is a macro average: every family counts once, however many items it has.

Answers are greedy (temperature 0: reproducible) and batched with the KV cache (decode.generate_batch):
prompts of different lengths share a batch, and each row stops on its own at <|end|>. Prompts are sorted by
length first, so a batch holds prompts of similar lengths (less padding to compute).

Try:  python -m pytest -q tests/part6/test_part6_evaluate.py
"""
import argparse
import re
import string
import time
from collections import Counter
from pathlib import Path

import torch

from chat_format import chat_token_ids, encode_prompt
from checkpoint import load_checkpoint
from decode import generate_batch
from runtime import pick_device
from sample import checkpoint_tokenizer

PART = Path(__file__).resolve().parent.name  # "part6_sft": where train.py lives, for the error messages
METRICS = ("exact", "normalized", "f1")
ARTICLES = re.compile(r"\b(a|an|the)\b")
PUNCTUATION = str.maketrans("", "", string.punctuation)


# ----------------------------------------------------------------------------------------------------
# 6.4 Metrics: one prediction against one gold answer
def normalize(text):
    """SQuAD's normalization: lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace.
    "The  Cat, sat!" -> "cat sat". (Punctuation goes before articles: "the-cat" -> "thecat" keeps its "the".)"""
    text = text.lower().translate(PUNCTUATION)
    return " ".join(ARTICLES.sub(" ", text).split())


def exact_match(pred, gold):
    """1.0 if the answer is the gold response, ignoring only leading and trailing whitespace."""
    return float(pred.strip() == gold.strip())


def normalized_match(pred, gold):
    return float(normalize(pred) == normalize(gold))


def token_f1(pred, gold):
    """SQuAD's F1 over the bag of normalized words: precision = shared / len(pred), recall = shared / len(gold).
    A word counts as shared as often as it is in both (Counter &). Both empty: 1.0 (nothing to say, nothing
    said); one empty: 0.0."""
    p, g = normalize(pred).split(), normalize(gold).split()
    if not p or not g:
        return float(p == g)
    shared = sum((Counter(p) & Counter(g)).values())
    if shared == 0:
        return 0.0
    precision, recall = shared / len(p), shared / len(g)
    return 2 * precision * recall / (precision + recall)


# ----------------------------------------------------------------------------------------------------
# 6.4 Greedy answers, batched with the KV cache
def answer_text(tok, new_ids, end_id):
    """The generated ids as the answer's text: the closing <|end|> dropped, whitespace stripped.
    Without <|end|> (the answer ran into max_new_tokens) the text is kept as it is, cut off."""
    if new_ids and new_ids[-1] == end_id:
        new_ids = new_ids[:-1]
    return tok.decode(new_ids).strip()


def length_batches(lengths, batch_size):
    """Indices sorted by length, cut into batches: [5, 2, 9, 3], 2 -> [[1, 3], [0, 2]].
    A batch is padded to its longest prompt; sorting puts similar lengths together, so little is padding."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]


def check_room(model, longest_prompt, max_new_tokens):
    """The cache holds block_size tokens and does not roll: the longest prompt and its answer must fit."""
    block_size = model.config.block_size
    if longest_prompt + max_new_tokens > block_size:
        raise ValueError(f"the longest prompt has {longest_prompt} tokens (chat tokens included); with "
                         f"max_new_tokens {max_new_tokens} that is more than the model's block_size {block_size}: "
                         "lower max_new_tokens or shorten the prompts")


@torch.no_grad()
def generate_answers(model, tok, prompts, batch_size=64, max_new_tokens=32, temperature=0.0, generator=None):
    """Greedy answers to prompts (strings), in the order given. Each prompt goes in the chat format
    (encode_prompt: <|user|> prompt <|end|><|assistant|>); each row of a batch stops at its own <|end|>.
    7.1 temperature > 0: sampled answers instead (the model's own mistakes, for preference pairs)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    end_id = chat_token_ids(tok)["end"]
    encoded = [encode_prompt(tok, p) for p in prompts]
    check_room(model, max((len(ids) for ids in encoded), default=0), max_new_tokens)
    answers = [None] * len(prompts)
    was_training = model.training
    model.eval()  # no dropout; and an MoE drops no tokens in eval mode (capacity applies in training only)
    try:
        for batch in length_batches([len(ids) for ids in encoded], batch_size):
            outs = generate_batch(model, [encoded[i] for i in batch], max_new_tokens, stop_ids=[end_id],
                                  temperature=temperature, generator=generator)
            for i, out in zip(batch, outs):
                answers[i] = answer_text(tok, out, end_id)
    finally:
        model.train(was_training)  # subtle: train.py evaluates mid-run; leave the model as it was
    return answers


def items_per_second(model, tok, prompts, batch_size, max_new_tokens):
    """6.4 measured: the same prompts answered in batches of batch_size, then one at a time.
    Returns {"batched": items/s, "single": items/s, "speedup": batched / single, "same_answers": bool}.
    Greedy answers must not depend on the batch: same_answers checks it on real prompts."""
    if not prompts:
        raise ValueError("items_per_second needs at least one prompt to time")
    generate_answers(model, tok, prompts[:1], 1, max_new_tokens)  # warm-up: first-call costs are not speed
    batched, batched_s = timed(generate_answers, model, tok, prompts, batch_size, max_new_tokens)
    single, single_s = timed(generate_answers, model, tok, prompts, 1, max_new_tokens)
    n = len(prompts)
    return {"batched": n / batched_s, "single": n / single_s, "speedup": single_s / batched_s,
            "same_answers": batched == single}


def timed(fn, *args):
    """(fn(*args), seconds). generate_batch ends with .tolist(), which waits for the GPU: the time is real."""
    start = time.perf_counter()
    result = fn(*args)
    return result, time.perf_counter() - start


# ----------------------------------------------------------------------------------------------------
# 6.4 Scores per family, and the table
def score(examples, answers, grade=None):
    """examples: objects with .family, .prompt, .response (tasks.Example); answers: one string each.
    Returns {family: {"n", "exact", "normalized", "f1"}, ..., "mean": {...}}, scores as fractions 0..1.
    grade(example, answer) -> bool, if given, is the exact verdict (tasks.grade); else exact_match.
    "mean" is the macro average: the average of the families' scores, each family counted once, so a
    family with many items cannot hide a family the model fails; its "n" is the total number of items."""
    if len(examples) != len(answers):
        raise ValueError(f"{len(examples)} examples but {len(answers)} answers: one answer per example")
    if not examples:
        raise ValueError("nothing to score: no examples")
    rows = {}
    for ex, ans in zip(examples, answers):
        exact = float(grade(ex, ans)) if grade else exact_match(ans, ex.response)
        rows.setdefault(ex.family, []).append((exact, normalized_match(ans, ex.response), token_f1(ans, ex.response)))
    if "mean" in rows:
        raise ValueError("a task family is named 'mean', the name of the average row; rename the family")
    scores = {family: average(values) for family, values in rows.items()}
    scores["mean"] = {"n": len(examples), **{m: sum(s[m] for s in scores.values()) / len(rows) for m in METRICS}}
    return scores


def average(values):
    """[(exact, normalized, f1), ...] -> {"n": count, "exact": mean, "normalized": mean, "f1": mean}."""
    return {"n": len(values), **{m: sum(column) / len(values) for m, column in zip(METRICS, zip(*values))}}


def format_table(scores):
    """A markdown table, one row per family in the order given, then the mean row; scores in percent:
    | add | 50 | 96.0% | 96.0% | 97.3% |"""
    lines = ["| family | n | exact | normalized | F1 |", "| --- | ---: | ---: | ---: | ---: |"]
    for family in [*(f for f in scores if f != "mean"), "mean"]:
        s = scores[family]
        name = "**mean** (macro)" if family == "mean" else family
        lines.append(f"| {name} | {s['n']} | " + " | ".join(f"{100 * s[m]:.1f}%" for m in METRICS) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# Loading a fine-tuned model (chat.py too)
def load_chat_model(path, device="cpu"):
    """(model, tokenizer) from a fine-tuned checkpoint; a one-line exit for a missing or unusable file, for
    a checkpoint that was never fine-tuned (its tokenizer has no chat tokens), and for a reward model."""
    model, ckpt = load_checkpoint(path, device)
    if "reward_head" in ckpt:  # 7.2 its trunk scores answers; it was not trained to write them any more
        raise SystemExit(f"error: {path} is a reward model, not a chat model: give --checkpoint an SFT model "
                         "(out/part6/best.pt, or the out/part7/sft/best.pt a reward run fine-tuned)")
    tok = checkpoint_tokenizer(ckpt, path)
    try:
        chat_token_ids(tok)
    except ValueError:
        raise SystemExit(f"error: {path} is not fine-tuned (its tokenizer has no chat tokens): "
                         f"run python {PART}/train.py first")
    if tok.vocab_size > model.config.vocab_size:
        raise SystemExit(f"error: {path}: the tokenizer has {tok.vocab_size} ids but the model only "
                         f"{model.config.vocab_size}; use a checkpoint written by python {PART}/train.py")
    return model.eval(), tok


# ----------------------------------------------------------------------------------------------------
# The command line
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=f"out/{PART.split('_')[0]}/grpo/best.pt",
                   help="a fine-tuned checkpoint (default: %(default)s)")
    p.add_argument("--split", default="test", choices=("train", "test"),
                   help="test = held-out words and numbers (default: %(default)s)")
    p.add_argument("--per_family", type=int, default=50, help="items of each task family (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="which items make_examples draws (default: %(default)s)")
    p.add_argument("--batch_size", type=int, default=64, help="prompts answered at once (default: %(default)s)")
    p.add_argument("--max_new_tokens", type=int, default=32,
                   help="longest answer; a longer one is cut and scores as wrong (default: %(default)s)")
    p.add_argument("--bench", action="store_true", help="also measure items/s batched vs one at a time")
    p.add_argument("--bench_items", type=int, default=64,
                   help="prompts the benchmark answers, spread over the families (default: %(default)s)")
    p.add_argument("--device", default="auto", help="(default: %(default)s)")
    args = p.parse_args(argv)
    for name in ("per_family", "batch_size", "max_new_tokens", "bench_items"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    return args


def spread(items, n):
    """n items taken at an even stride, so that a benchmark sees every family: [0..9], 3 -> [0, 3, 6]."""
    return items[::max(1, len(items) // n)][:n]


def main(argv=None):
    args = parse_args(argv)
    model, tok = load_chat_model(args.checkpoint, pick_device(args.device))
    import tasks  # here, not at the top: train.py and chat.py import this file and need no task generator

    examples = tasks.make_examples(args.split, args.per_family, args.seed)
    prompts = [ex.prompt for ex in examples]
    try:
        answers = generate_answers(model, tok, prompts, args.batch_size, args.max_new_tokens)
        speed = items_per_second(model, tok, spread(prompts, args.bench_items), args.batch_size,
                                 args.max_new_tokens) if args.bench else None
    except ValueError as e:  # e.g. a prompt + max_new_tokens longer than the model's block_size
        raise SystemExit(f"error: {e}")
    scores = score(examples, answers, grade=tasks.grade)
    print(f"{args.split} split, {args.per_family} items per family, greedy, checkpoint {args.checkpoint}")
    print(format_table(scores))
    if speed is not None:
        print(f"items/s: batched (batch {args.batch_size}) {speed['batched']:.1f}, one at a time "
              f"{speed['single']:.1f}, speedup {speed['speedup']:.1f}x, same answers: {speed['same_answers']}")
    return scores, speed


if __name__ == "__main__":
    main()
