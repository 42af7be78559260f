"""Part 6 exercises: one function per exercise, each a worked solution (README.md, "Exercises").

    6.A packing instead of padding: whole examples side by side      first_fit, pack_examples, padding_fraction,
        in rows of block_size tokens (builds on 6.1 and 6.2)         packed_attention_mask, measure_packing,
                                                                     measure_packed_context
    6.B loss on the prompt tokens too, with a weight (6.2)           prompt_labels, prompt_weighted_loss,
                                                                     measure_prompt_loss, text_nll
    6.C what the wrong answers are: copied from the prompt,          classify_wrong, recall_vocabulary,
        recalled from training, or neither (6.4)                     family_confusion, word_sources

Replace a solution with your own and run the same test:

    python -m pytest tests/part6/test_part6_exercises.py

The tests check each function against an independent computation (chat_format.pad_batch row by row,
sft_loss.sft_loss, F.cross_entropy on labels built by hand, attention run on each example alone, hand-made
answers), so they pass for any correct answer. The figures in README.md need a fine-tuned model and its
tokenizer:

    python part6_sft/exercises.py --checkpoint out/part6/best.pt                 # ~20 s on a laptop CPU
    python part6_sft/exercises.py --base out/part6/base/best.pt   # 6.B also scores the prompts with the base
"""
import argparse
import random

import torch

from chat_format import IGNORE_INDEX, chat_token_ids, encode_prompt, encode_response, pad_batch, shift_and_mask
from checkpoint import load_checkpoint
from evaluate import generate_answers, load_chat_model, normalize
from sft_loss import token_logprobs
from tasks import SPLIT_WORDS, grade, make_examples
from train import answer_budget, parse_configs


# ----------------------------------------------------------------------------------------------------
# Exercise 6.A (builds on 6.1 and 6.2): packing instead of padding
def first_fit(lengths, capacity):
    """Bins of indices: each length, in order, goes into the first bin (oldest first) that still has room,
    else into a new bin. [5, 4, 3, 2], capacity 7 -> [[0, 3], [1, 2]]: 4 does not fit beside 5, 3 does
    beside 4, and 2 fills the first bin. (In order: sorting longest first packs a little tighter, but then
    the long examples share rows and steps, and a curriculum's order is lost.)"""
    bins, room, open_bins = [], [], []
    smallest = min(lengths, default=0)
    for i, n in enumerate(lengths):
        if n > capacity:
            raise ValueError(f"an item of length {n} cannot fit in a bin of {capacity}")
        b = next((b for b in open_bins if room[b] >= n), None)
        if b is None:
            b = len(bins)
            bins.append([])
            room.append(capacity)
            open_bins.append(b)
        bins[b].append(i)
        room[b] -= n
        if room[b] < smallest:  # subtle: only for speed; a bin no item can enter stops being searched
            open_bins.remove(b)
    return bins


def pack_examples(pairs, block_size, pad_id):
    """Task: pairs (prompt_ids, response_ids) -> x, y, segments, LongTensors (rows, T), T <= block_size.
    Each example is shifted and masked exactly as in pad_batch (x = full[:-1], prompt labels -100), and the
    examples are laid side by side in rows, first-fit in order; the rest of a row is padding (x = pad_id,
    y = -100). segments[r, t] = the index of the example at that position, -1 on padding.
    No label crosses a boundary: an example's x ends before its closing <|end|> (its last label), and the
    next example's first label is a prompt token, -100. So every response label appears exactly once."""
    rows = [shift_and_mask(p, r) for p, r in pairs]
    lengths = [len(xs) for xs, _ in rows]
    if not rows:
        raise ValueError("pack_examples needs at least one (prompt_ids, response_ids) pair")
    if max(lengths) > block_size:
        raise ValueError(f"the longest example has {max(lengths)} tokens (prompt + response - 1) but block_size "
                         f"is {block_size}: drop or shorten the long examples, or use a larger block_size")
    bins = first_fit(lengths, block_size)
    T = max(sum(lengths[i] for i in b) for b in bins)
    x = torch.full((len(bins), T), pad_id, dtype=torch.long)
    y = torch.full((len(bins), T), IGNORE_INDEX, dtype=torch.long)
    segments = torch.full((len(bins), T), -1, dtype=torch.long)
    for r, b in enumerate(bins):
        t = 0
        for i in b:
            xs, ys = rows[i]
            x[r, t:t + len(xs)] = torch.tensor(xs)
            y[r, t:t + len(ys)] = torch.tensor(ys)
            segments[r, t:t + len(xs)] = i
            t += len(xs)
    return x, y, segments


def padding_fraction(segments):
    """The share of the positions that hold no example (computed, then thrown away)."""
    return (segments < 0).float().mean().item()


def packed_attention_mask(segments):
    """(B, 1, T, T) bool for causal_attention / SDPA: query t may see key j when j <= t and both belong to
    the same example (block-diagonal). Padding (segment -1) sees padding, so no query row is all False
    (an all -inf softmax row would be nan). With RoPE this makes a packed row compute exactly what each
    example computes alone: attention depends on q·k, and RoPE's q·k depends only on the distance j - t.
    With learned or sinusoidal positions the positions would also have to restart at 0 in every example."""
    T = segments.size(1)
    same = segments[:, :, None] == segments[:, None, :]                     # (B, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=segments.device).tril()
    return (same & causal).unsqueeze(1)                                     # (B, 1, T, T): every head


def padded_share(lengths, batches):
    """Padding when each batch (a list of indices) is padded to its longest example."""
    real = sum(lengths[i] for b in batches for i in b)
    total = sum(len(b) * max(lengths[i] for i in b) for b in batches)
    return 1 - real / total


def measure_packing(pairs, block_size, batch_size=32, seed=0):
    """6.A (measure): padding and compute of four ways to lay out the same examples.
    Returns rows (layout, rows of x, padding share, positions computed per example)."""
    lengths = [len(p) + len(r) - 1 for p, r in pairs]
    n = len(lengths)
    order = list(range(n))
    random.Random(seed).shuffle(order)
    by_length = sorted(range(n), key=lambda i: lengths[i])

    def batches(indices):
        return [indices[i:i + batch_size] for i in range(0, n, batch_size)]

    layouts = {
        "all padded to the longest (build_sft_set)": [list(range(n))],
        f"random batches of {batch_size}, each cut to its longest (get_sft_batch)": batches(order),
        f"batches of {batch_size} similar lengths (sorted)": batches(by_length),
    }
    results = []
    for name, layout in layouts.items():
        share = padded_share(lengths, layout)
        results.append((name, n, share, sum(lengths) / (1 - share) / n))
    _, _, segments = pack_examples([pairs[i] for i in order], block_size, 0)
    name = f"packed into rows of {block_size} (first-fit, shuffled)"
    results.append((name, len(segments), padding_fraction(segments), segments.numel() / n))
    return results


@torch.no_grad()
def response_nll(model, x, y, batch_size=64):
    """-log p of every label (B, T), 0 where the label is -100, computed batch_size rows at a time."""
    return torch.cat([-token_logprobs(model(x[i:i + batch_size])[0], y[i:i + batch_size])
                      for i in range(0, len(x), batch_size)])


def measure_packed_context(model, pairs, pad_id, seed=0):
    """6.A (measure): what packing WITHOUT the mask does to a model fine-tuned on examples alone. -log p per
    response token, each example alone (pad_batch) and packed into rows of block_size under the plain causal
    mask, where an example sees the earlier examples of its row. Returns {"first": (alone, packed) for the
    examples that begin a row (nothing before them: the same context), "later": (alone, packed) for the
    others, "later share": the share of the examples that are not first in their row}."""
    model.eval()
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    pairs = [pairs[i] for i in order]
    x, y = pad_batch(pairs, pad_id)
    alone = response_nll(model, x, y).sum(1)                                # (N,) summed over each example
    counts = (y != IGNORE_INDEX).sum(1)                                     # (N,) its response tokens
    x, y, segments = pack_examples(pairs, model.config.block_size, pad_id)
    nll, counted = response_nll(model, x, y), y != IGNORE_INDEX
    packed = torch.zeros(len(pairs)).index_add_(0, segments[counted], nll[counted])
    later = torch.zeros(len(pairs), dtype=torch.bool)
    later[segments[(segments >= 0) & (segments != segments[:, :1])]] = True  # not the row's first example

    def per_token(nll_sums, chosen):
        return (nll_sums[chosen].sum() / counts[chosen].sum()).item()

    return {"first": (per_token(alone, ~later), per_token(packed, ~later)),
            "later": (per_token(alone, later), per_token(packed, later)),
            "later share": later.float().mean().item()}


# ----------------------------------------------------------------------------------------------------
# Exercise 6.B (builds on 6.2): the loss on the prompt tokens too, with a weight
def prompt_labels(x, prompt_lens):
    """The labels pad_batch hid: at a prompt position t < p - 1 the label is the next prompt token, which
    is x[t + 1]; IGNORE_INDEX everywhere else (response, padding). x [[u, h, e, a, r]], p = 4 ->
    [[h, e, a, -100, -100]]."""
    B, T = x.shape
    following = torch.cat([x[:, 1:], x.new_full((B, 1), IGNORE_INDEX)], dim=1)   # x[t + 1]
    p = torch.as_tensor(prompt_lens, device=x.device).view(-1, 1)                 # (B, 1)
    is_prompt = torch.arange(T, device=x.device).view(1, -1) < p - 1              # (B, T)
    return torch.where(is_prompt, following, torch.full_like(x, IGNORE_INDEX))


def prompt_weighted_loss(logits, x, y_masked, prompt_lens, weight):
    """Task: a weighted mean of -log p over the response labels (weight 1 each) and the prompt labels
    (weight `weight` each). weight 0 = sft_loss (answers only); weight 1 = the plain language-model loss on
    the whole conversation (every token after <|user|>, padding excluded). In between, the prompt is a
    regularizer: OpenAI's old fine-tuning API had it as prompt_loss_weight, and Huerta-Enochian and Ko
    (2024) found small weights (0.01-0.5) helped on data with short answers, like ours.
    logits (B, T, V), x and y_masked (B, T) as pad_batch makes them, prompt_lens (B,)."""
    if weight < 0:
        raise ValueError(f"weight must be >= 0 (0 = answers only, 1 = every token), got {weight}")
    y_prompt = prompt_labels(x, prompt_lens)
    response, prompt = token_logprobs(logits, y_masked), token_logprobs(logits, y_prompt)  # 0 where ignored
    n_response, n_prompt = (y_masked != IGNORE_INDEX).sum(), (y_prompt != IGNORE_INDEX).sum()
    total = response.sum() + weight * prompt.sum()
    return -total / (n_response + weight * n_prompt).clamp(min=1e-12)  # nothing counted: 0, not nan


def measure_prompt_loss(model, tok, examples, weights=(0, 0.01, 0.1, 0.5, 1), batch_size=64):
    """6.B (measure): the fine-tuned model's loss on prompt tokens and on response tokens, and the weighted
    loss at each weight with the share of it that falls on the response tokens.
    Returns {"prompt": mean nll, "response": mean nll, "prompt tokens": share, "weights": rows (w, loss, share)}."""
    model.eval()
    pairs = [(encode_prompt(tok, ex.prompt), encode_response(tok, ex.response)) for ex in examples]
    pad = chat_token_ids(tok)["end"]
    x, y = pad_batch(pairs, pad)
    prompt_lens = torch.tensor([len(p) for p, _ in pairs])
    y_prompt = prompt_labels(x, prompt_lens)
    nll_response, nll_prompt = response_nll(model, x, y, batch_size), response_nll(model, x, y_prompt, batch_size)
    n_r, n_p = int((y != IGNORE_INDEX).sum()), int((y_prompt != IGNORE_INDEX).sum())
    rows = []
    for w in weights:  # the same weighted mean as prompt_weighted_loss, from the two sums computed once
        loss = (nll_response.sum() + w * nll_prompt.sum()).item() / (n_r + w * n_p)
        rows.append((w, loss, n_r / (n_r + w * n_p)))
    return {"prompt": nll_prompt.sum().item() / n_p, "response": nll_response.sum().item() / n_r,
            "prompt tokens": n_p / (n_p + n_r), "weights": rows}


def text_nll(model, token_lists, batch_size=64):
    """6.B (measure): -log p per token of plain token lists (no chat tokens), every token but the first
    predicted from the ones before: what a base model and a fine-tuned one think of the same user text."""
    T = max(len(ids) for ids in token_lists) - 1
    x = torch.zeros(len(token_lists), T, dtype=torch.long)
    y = torch.full((len(token_lists), T), IGNORE_INDEX, dtype=torch.long)
    for i, ids in enumerate(token_lists):
        x[i, :len(ids) - 1], y[i, :len(ids) - 1] = torch.tensor(ids[:-1]), torch.tensor(ids[1:])
    model.eval()
    return (response_nll(model, x, y, batch_size).sum() / (y != IGNORE_INDEX).sum()).item()


# ----------------------------------------------------------------------------------------------------
# Exercise 6.C (builds on 6.4): what the wrong answers are
KINDS = ("from_prompt", "recalled", "other")


def recall_vocabulary(train_examples):
    """{family: set of the (normalized) words of its training answers}: what fine-tuning taught the model
    to say for that family."""
    vocabulary = {}
    for ex in train_examples:
        vocabulary.setdefault(ex.family, set()).update(normalize(ex.response).split())
    return vocabulary


def classify_wrong(example, answer, vocabulary):
    """A wrong answer's kind, word by word after normalize():
    "from_prompt": every word is in the prompt (the right material, wrongly picked, ordered or counted);
    "recalled":    some word is not in the prompt, and each such word is one of the family's training
                   answers' words (vocabulary): an answer the model learned, not one it read;
    "other":       empty, or a word that neither the prompt nor the training answers have (made up).
    "Copy: owl calm" -> "owl tulip": "recalled" if tulip is a training answer word, else "other"."""
    words = normalize(answer).split()
    prompt = set(normalize(example.prompt).split())
    new = [w for w in words if w not in prompt]
    if not words:
        return "other"
    if not new:
        return "from_prompt"
    return "recalled" if all(w in vocabulary for w in new) else "other"


def family_confusion(examples, answers, train_examples):
    """Task: per family, how many answers are wrong (tasks.grade) and which share of the wrong ones is of
    each kind (classify_wrong, the vocabulary from train_examples of the same family).
    Returns {family: {"n", "wrong", "from_prompt", "recalled", "other"}}, the kinds as shares of "wrong"
    (0.0 when nothing is wrong)."""
    if len(examples) != len(answers):
        raise ValueError(f"{len(examples)} examples but {len(answers)} answers: one answer per example")
    vocabulary = recall_vocabulary(train_examples)
    table = {}
    for ex, answer in zip(examples, answers):
        row = table.setdefault(ex.family, {"n": 0, "wrong": 0, **dict.fromkeys(KINDS, 0)})
        row["n"] += 1
        if not grade(ex, answer):
            row["wrong"] += 1
            row[classify_wrong(ex, answer, vocabulary.get(ex.family, set()))] += 1
    for row in table.values():
        for kind in KINDS:
            row[kind] = row[kind] / row["wrong"] if row["wrong"] else 0.0
    return table


WORD_FAMILIES = ("copy", "first_word", "last_word", "word_at", "repeat_word", "reverse_words")  # answers: words


def word_sources(examples, answers):
    """6.C (measure): the words of the answers in the families whose gold answers are words of the list
    (WORD_FAMILIES), counted by where they come from: {"held-out", "training", "neither"} (held-out: the
    test split's words, tasks.SPLIT_WORDS; neither: made up or cut, e.g. "crad")."""
    held_out, training = set(SPLIT_WORDS["test"]), set(SPLIT_WORDS["train"])
    counts = dict.fromkeys(("held-out", "training", "neither"), 0)
    for ex, answer in zip(examples, answers):
        if ex.family in WORD_FAMILIES:
            for word in answer.split():
                counts["held-out" if word in held_out else "training" if word in training else "neither"] += 1
    return counts


# ----------------------------------------------------------------------------------------------------
# The figures in README.md, "Exercises": python part6_sft/exercises.py --checkpoint out/part6/best.pt
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="out/part6/best.pt", help="a fine-tuned model (default: %(default)s)")
    p.add_argument("--base", default="", help="6.B: also score the prompts' text with this base model "
                   "(the one fine-tuned; default: skip)")
    p.add_argument("--train_per_family", type=int, default=None,
                   help="the run's training examples per family (default: train.py's, cpu preset)")
    p.add_argument("--per_family", type=int, default=50, help="graded items per family (default: %(default)s)")
    p.add_argument("--seed", type=int, default=None, help="the run's seed (default: train.py's)")
    args = p.parse_args(argv)
    trained = parse_configs([])[0]  # what `python part6_sft/train.py` uses when no flag says otherwise
    if args.train_per_family is None:
        args.train_per_family = trained.train_per_family
    if args.seed is None:
        args.seed = trained.seed
    for name in ("train_per_family", "per_family"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    return args


def print_confusion(title, table):
    print(title)
    print("    family        | exact | wrong: from the prompt | recalled from training | other")
    totals = dict.fromkeys(("n", "wrong", *KINDS), 0)
    for family, row in table.items():
        print(f"    {family:13s} | {1 - row['wrong'] / row['n']:5.0%} | {row['from_prompt']:22.0%} | "
              f"{row['recalled']:22.0%} | {row['other']:5.0%}")
        totals["n"] += row["n"]
        totals["wrong"] += row["wrong"]
        for kind in KINDS:
            totals[kind] += row[kind] * row["wrong"]
    wrong = max(1, totals["wrong"])
    print(f"    {'all':13s} | {1 - totals['wrong'] / totals['n']:5.0%} | {totals['from_prompt'] / wrong:22.0%} | "
          f"{totals['recalled'] / wrong:22.0%} | {totals['other'] / wrong:5.0%}")


def main(argv=None):
    args = parse_args(argv)
    torch.manual_seed(0)
    model, tok = load_chat_model(args.checkpoint)
    pad = chat_token_ids(tok)["end"]
    train = make_examples("train", args.train_per_family, args.seed)
    test = make_examples("test", args.per_family, args.seed)

    def encode(examples):
        return [(encode_prompt(tok, ex.prompt), encode_response(tok, ex.response)) for ex in examples]

    block = model.config.block_size
    print(f"6.A padding of {len(train)} training examples ({args.train_per_family} per family, vocabulary "
          f"{tok.vocab_size}), block_size {block}")
    print(f"    {'layout':62s} |  rows | padding | positions per example")
    for name, rows, share, per_example in measure_packing(encode(train), block):
        print(f"    {name:62s} | {rows:5d} | {share:7.1%} | {per_example:5.1f}")
    context = measure_packed_context(model, encode(test), pad)
    (first_alone, first_packed), (later_alone, later_packed) = context["first"], context["later"]
    print(f"    the fine-tuned model on {len(test)} test examples packed without the mask, -log p per response token:")
    print(f"    first of a row: alone {first_alone:.3f}, packed {first_packed:.3f}; later in a row "
          f"({context['later share']:.0%} of the examples): alone {later_alone:.3f}, packed {later_packed:.3f}")

    prompt_loss = measure_prompt_loss(model, tok, test)
    print(f"6.B the fine-tuned model on {len(test)} test examples: -log p per prompt token "
          f"{prompt_loss['prompt']:.3f}, per response token {prompt_loss['response']:.3f}; "
          f"{prompt_loss['prompt tokens']:.0%} of the labels are prompt tokens")
    print("    prompt weight w | weighted loss | share of the loss's weight on the response")
    for w, loss, share in prompt_loss["weights"]:
        print(f"    {w:15g} | {loss:13.3f} | {share:6.1%}")
    if args.base:
        base, _ = load_checkpoint(args.base)
        for split, examples in (("test", test), ("train", make_examples("train", args.per_family, args.seed))):
            text = [tok.encode(ex.prompt) for ex in examples]
            print(f"    the prompts' text alone ({split} split), -log p per token after the first: base model "
                  f"{text_nll(base, text):.3f}, fine-tuned {text_nll(model, text):.3f}")

    # the first per_family training items of each family are the first of the run's train_per_family (same seed)
    for split, examples in (("test", test), ("train", make_examples("train", args.per_family, args.seed))):
        answers = generate_answers(model, tok, [ex.prompt for ex in examples], 64, answer_budget(model, tok, examples))
        print_confusion(f"6.C wrong answers, {split} split ({args.per_family} per family, greedy): "
                        "shares of the wrong answers", family_confusion(examples, answers, train))
        sources = word_sources(examples, answers)
        print(f"    words of the answers in {', '.join(WORD_FAMILIES)}: " + ", ".join(
            f"{name} {n} ({n / max(1, sum(sources.values())):.0%})" for name, n in sources.items()))


if __name__ == "__main__":
    main()
