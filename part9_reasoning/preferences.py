"""7.1 Preference pairs: (prompt, chosen, rejected) built from Part 6's task families.

    python part7_reward/preferences.py --split test --show 4             # 4 held-out pairs of every kind
    python part7_reward/preferences.py --jsonl out/part7/pairs.jsonl     # the pairs as JSONL

A reward model learns from comparisons, not labels: "this answer is better than that one". Part 6's tasks
give the better answer for free (the gold response, always `chosen`) and a program that says what is
wrong (tasks.grade), so the worse answer can be written by hand, one KIND of mistake at a time:
    wrong_answer         the right type, the wrong value:       "What is 3 + 5?"  ->  "9"  (not "8")
    ignores_instruction  does something else with the prompt:   echoes it, or lists its items verbatim
    truncated            the gold cut short:                    "owl calm"  (not "owl calm ship")
    repetitive           the gold, then a word of it again:     "Paris Paris Paris Paris"
    off_topic            a sentence unrelated to the prompt:    "The weather is nice today."
    filler               the gold padded with a phrase:         "Sure! Here you go: Paris"
Every rejected text differs from the gold and is graded wrong (one rule, `is_rejectable`). A filler answer
holds the right value, but the course wants concise answers: padding is a mistake here. The test split's
pairs use only its held-out words, names, colors and objects, like tasks.py's test split.
`model_error_pairs` turns a model's own wrong answers into pairs: the mistakes it really makes.
"""
import argparse
import json
import os
import random
import re
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from tasks import (CAPITALS, SPLIT_COLORS, SPLIT_NAMES, SPLIT_OBJECTS, SPLIT_WORDS, SPLITS, check_choice, grade,
                   make_examples, read_lines)

KINDS = ("wrong_answer", "ignores_instruction", "truncated", "repetitive", "off_topic", "filler")
MODEL_ERROR = "model_error"  # 7.1 a rejected answer the model wrote itself
UNLABELLED = "unlabelled"    # the kind of a user's pair that does not say
SWAPS = {"yes": "no", "no": "yes", "even": "odd", "odd": "even"}
PICK_FAMILIES = ("compare", "max_number", "min_number")  # the answer is one of the prompt's numbers
WORD_SPLITS = (SPLIT_WORDS, SPLIT_NAMES, SPLIT_COLORS, SPLIT_OBJECTS)
# The same sentences in both splits; none holds a held-out word, name, color or object of tasks.py.
OFF_TOPIC = ("The weather is nice today.", "I like to go for a walk after lunch.", "My favourite season is spring.",
             "Cats sleep for most of the day.", "Music can make people feel better.",
             "Let us talk about something else.", "Every language has its own grammar.", "Some people prefer tea.")
# subtle: the length-bias check (another file) pads answers with fillers held out from these ("I hope this
# helps!", "Let me think about this carefully."), so that a reward model that merely memorized these phrases
# as "bad" is told apart from one that prefers short answers. Never add a held-out filler here.
TRAIN_FILLERS = ("Well, let me see.", "Sure! Here you go:", "That is a great question.", "Here is the answer:",
                 "Okay, got it.", "Of course!", "Good question!", "The answer is as follows:")


@dataclass(frozen=True)
class Pair:
    prompt: str
    chosen: str     # the better response: here always the gold
    rejected: str   # the worse one
    kind: str       # which mistake the rejected response makes (KINDS, MODEL_ERROR or UNLABELLED)
    family: str = ""


# ----------------------------------------------------------------------------------------------------
# 7.1 One function per kind of mistake: (rng, example, split) -> the rejected text, or None where it does not apply
def prompt_tokens(prompt):
    return re.findall(r"[A-Za-z]+|\d+", prompt)


def word_pool(word, split):
    """The split's half of the list the word comes from: a wrong name is another name, a wrong color a color."""
    lists = next((s for s in WORD_SPLITS if word in s["train"] + s["test"]), SPLIT_WORDS)
    return lists[split]


def wrong_number(rng, example, gold):
    """A pick family ("which is larger") half the time answers with another number of the prompt; else the
    gold +- 1 or 2, never negative (no family of tasks.py has a negative answer)."""
    others = [n for n in prompt_tokens(example.prompt) if n.isdigit() and n != gold]
    if example.family in PICK_FAMILIES and others and rng.random() < 0.5:
        return rng.choice(others)
    offset = rng.choice((-2, -1, 1, 2))
    return str(int(gold) + offset if int(gold) + offset >= 0 else int(gold) - offset)


def wrong_list(rng, items, split):
    """A word repeated -> a different count; else the same items in another order, or one item replaced."""
    if len(set(items)) == 1 and len(items) > 1:
        return " ".join(items[:1] * (len(items) + rng.choice((-1, 1))))
    if len(set(items)) > 1 and rng.random() < 0.5:
        shuffled = list(items)
        while shuffled == items:
            rng.shuffle(shuffled)
        return " ".join(shuffled)
    i = rng.randrange(len(items))
    pool = [str(d) for d in range(10)] if items[i].isdigit() else word_pool(items[i], split)
    return " ".join(items[:i] + [rng.choice([w for w in pool if w not in items])] + items[i + 1:])


def wrong_answer(rng, example, split="train"):
    """A plausible wrong answer of the right type: a model that understood the task but erred."""
    gold = example.response.strip()
    if gold in SWAPS:
        return SWAPS[gold]
    if gold in CAPITALS.values():
        return rng.choice(sorted(set(CAPITALS.values()) - {gold}))
    if gold.isdigit():
        return wrong_number(rng, example, gold)
    if len(gold.split()) > 1:
        return wrong_list(rng, gold.split(), split)
    pool = word_pool(gold, split)
    in_prompt = [w for w in prompt_tokens(example.prompt) if w in pool and w != gold]
    return rng.choice(in_prompt or [w for w in pool if w != gold])


def ignores_instruction(rng, example, split="train"):
    """The prompt echoed back, or its listed words (numbers) verbatim: the input, not the task's answer."""
    tokens = prompt_tokens(example.prompt)
    items = [t for t in tokens if t in SPLIT_WORDS[split]] or [t for t in tokens if t.isdigit()]
    candidates = [example.prompt.strip()] + ([" ".join(items)] if len(items) > 1 else [])
    candidates = [c for c in candidates if c != example.response.strip()]
    return rng.choice(candidates) if candidates else None


def truncated(rng, example, split="train"):
    """The first words of a multi-word gold, or the first letters of a one-word gold; None for one character."""
    gold = example.response.strip()
    words = gold.split()
    if len(words) > 1:
        return " ".join(words[:rng.randint(1, len(words) - 1)])
    return gold[:rng.randint(1, len(gold) - 1)] if len(gold) > 1 else None


def repetitive(rng, example, split="train"):
    """The answer, then one of its words 3-5 more times: a model that does not know when to stop."""
    gold = example.response.strip()
    return " ".join([gold] + [rng.choice(gold.split())] * rng.randint(3, 5))


def off_topic(rng, example, split="train"):
    """A fluent sentence that answers nothing: a reward model must score content, not fluency."""
    return rng.choice(OFF_TOPIC)


def filler(rng, example, split="train"):
    """The right answer with a phrase before or after it: right, but not what was asked for."""
    phrase, gold = rng.choice(TRAIN_FILLERS), example.response.strip()
    return f"{phrase} {gold}" if rng.random() < 0.5 else f"{gold} {phrase}"


MAKERS = {"wrong_answer": wrong_answer, "ignores_instruction": ignores_instruction, "truncated": truncated,
          "repetitive": repetitive, "off_topic": off_topic, "filler": filler}


def is_rejectable(example, text):
    """The one rule every rejected response obeys: not the gold (after .strip()) and graded wrong."""
    return text is not None and text.strip() != example.response.strip() and not grade(example, text)


def rejected_for(rng, example, kind, split="train", tries=5):
    """A rejected text of this kind, a few draws tried; None when the kind does not apply to the example."""
    for _ in range(tries):
        text = MAKERS[kind](rng, example, split)
        if text is None or is_rejectable(example, text):
            return text
    return None


# ----------------------------------------------------------------------------------------------------
# 7.1 Pairs from the task families, and from a model's own answers
def check_kinds(kinds):
    """A kind or a list of kinds, each checked, duplicates dropped."""
    kinds = [kinds] if isinstance(kinds, str) else list(dict.fromkeys(kinds))
    if not kinds:
        raise ValueError(f"kinds is empty; choose from {', '.join(KINDS)}")
    for kind in kinds:
        check_choice("kind", kind, KINDS)
    return kinds


def make_pairs(split: str, per_family: int, seed: int, kinds=KINDS) -> list[Pair]:
    """One pair per example of tasks.make_examples(split, per_family, seed), the same for the same seed.

    Kinds go round-robin within each family: the next example gets the kind used least so far (ties in
    `kinds` order), so a kind that does not apply (truncated, for a one-digit gold) is tried first again
    on the next example instead of losing its turn. An example no kind applies to is left out."""
    kinds = check_kinds(kinds)
    examples, pairs = make_examples(split, per_family, seed), []
    for family in dict.fromkeys(e.family for e in examples):
        rng, used = random.Random(f"{seed}/{split}/{family}/pairs"), Counter()
        for e in (e for e in examples if e.family == family):
            for kind in sorted(kinds, key=lambda k: used[k]):  # sorted() is stable: ties keep kinds order
                rejected = rejected_for(rng, e, kind, split)
                if rejected is not None:
                    used[kind] += 1
                    pairs.append(Pair(e.prompt, e.response, rejected, kind, e.family))
                    break
    return pairs


def model_error_pairs(examples, answers) -> list[Pair]:
    """7.1 Pairs from a model's answers (e.g. the SFT model's greedy or sampled outputs): each answer that is
    graded wrong becomes a rejected response against the gold. A blank answer is skipped: a pair needs text."""
    examples, answers = list(examples), list(answers)
    if len(examples) != len(answers):
        raise ValueError(f"{len(examples)} examples but {len(answers)} answers; give one answer per example")
    return [Pair(e.prompt, e.response, a, MODEL_ERROR, e.family)
            for e, a in zip(examples, answers) if a.strip() and is_rejectable(e, a)]


# ----------------------------------------------------------------------------------------------------
# 7.1 Pairs as JSONL: the common preference format, one object per line
PAIRS_HELP = 'one JSON object per line: {"prompt": "...", "chosen": "...", "rejected": "..."}'


def write_pairs_jsonl(pairs, path):
    """Written to a temporary file, then renamed: an interrupted write never leaves half a file behind."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(asdict(p)) + "\n" for p in pairs)
    os.replace(tmp, path)


def load_pairs_jsonl(path) -> list[Pair]:
    """Pairs from a JSONL file (blank lines skipped); any problem -> ValueError naming the line and the fix."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file; pass a JSONL file with {PAIRS_HELP}")
    pairs = [pair_from_line(path, n, line) for n, line in enumerate(read_lines(path), 1) if line.strip()]
    if not pairs:
        raise ValueError(f"{path}: no pairs (the file is empty); write {PAIRS_HELP}")
    return pairs


def pair_from_line(path, n, line):
    where = f"{path} line {n}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e.msg}); write {PAIRS_HELP}")
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}; write {PAIRS_HELP}")
    for field in ("prompt", "chosen", "rejected", "kind", "family"):
        if field in row and not isinstance(row[field], str):
            raise ValueError(f'{where}: field "{field}" must be a string, got {type(row[field]).__name__}')
    for field in ("prompt", "chosen", "rejected"):
        if field not in row:
            raise ValueError(f'{where}: missing field "{field}"; every line needs "prompt", "chosen" and "rejected"')
        if not row[field].strip():
            raise ValueError(f'{where}: field "{field}" is empty; give it some text')
    if row["chosen"].strip() == row["rejected"].strip():
        raise ValueError(f"{where}: chosen and rejected are the same text; a pair needs a better and a worse answer")
    return Pair(row["prompt"], row["chosen"], row["rejected"], row.get("kind") or UNLABELLED, row.get("family", ""))


# ----------------------------------------------------------------------------------------------------
# A learner's look at the pairs
def show(pairs, n):
    """Print up to n pairs of each kind, taken across the families (repr shows a newline as \\n), then counts."""
    for kind in KINDS:
        print(kind)
        of_kind = [p for p in pairs if p.kind == kind]
        for p in of_kind[::max(1, len(of_kind) // max(n, 1))][:n]:  # an even stride: several families
            print(f"  {p.family:13} {p.prompt!r:55} chosen {p.chosen!r:20} rejected {p.rejected!r}")
    counts = Counter(p.kind for p in pairs)
    print(f"{len(pairs)} pairs: " + ", ".join(f"{k} {counts[k]}" for k in KINDS))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split", default="train", choices=SPLITS, help="test = held-out words (default: %(default)s)")
    p.add_argument("--per_family", type=int, default=12, help="pairs of each task family (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="which examples and mistakes are drawn (default: %(default)s)")
    p.add_argument("--show", type=int, default=2, help="pairs of each kind to print, 0-100 (default: %(default)s)")
    p.add_argument("--jsonl", default=None, help="also write the pairs to this JSONL file (replaced if it exists)")
    args = p.parse_args(argv)
    if not 0 <= args.show <= 100:
        p.error(f"--show must be 0-100, got {args.show}")
    if not 1 <= args.per_family <= 100_000:
        p.error(f"--per_family must be 1-100000, got {args.per_family}")
    pairs = make_pairs(args.split, args.per_family, args.seed)
    show(pairs, args.show)
    if args.jsonl:
        try:
            write_pairs_jsonl(pairs, args.jsonl)
        except OSError as e:
            raise SystemExit(f"error: cannot write {args.jsonl}: {e.strerror or e}")
        print(f"wrote {len(pairs)} pairs to {args.jsonl} (read back with preferences.load_pairs_jsonl)")
    return pairs


if __name__ == "__main__":
    main()
