"""6.1 Synthetic instructions that a small model can learn and a program can grade; 6.3 their order.

    python part6_sft/tasks.py                                # 2 train and 2 test examples of every family
    python part6_sft/tasks.py --family add compare --show 5  # a closer look at a few families
    python part6_sft/tasks.py --jsonl out/part6/train.jsonl  # the train split as instruction JSONL

Each task family writes (prompt, response) pairs from a template, e.g.
    reverse_words:  "Write these words backwards: ship calm owl"  ->  "owl calm ship"
    add:            "What is 3 + 5?"                              ->  "8"
and `grade` checks an answer by exact match, so the score of a model is a number, not an opinion.

What makes the test split a test (a model must generalize, not recall):
  - words, names, colors and objects: each list is sorted and every 5th item (index 4, 9, 14, ...) is a
    TEST item, the rest TRAIN. A test prompt uses only test items, a train prompt only train items, so no
    test word is ever seen in fine-tuning. The model still knows these words from pretraining: copying,
    reversing or counting them is the skill being tested. The train side also draws on 3000 corpus words
    and 250 corpus names (train_words.json, below): a skill, not a list, is what should be learned.
  - numbers: a held-out number token could never be learned (fine-tuning is the only place the model
    sees "37" as an answer), so every number appears in train and only COMBINATIONS are held out: a
    pair or list of numbers is TEST when crc32 of its sorted values ("3,7") is divisible by 5 (about 1 in
    5). Sorting first keeps both orders ("3 + 7", "7 + 3") and every ordering of a list on the same side,
    and the rule is the same in every number family: {3, 7} is a test pair for add, subtract and compare.
  - facts (capitals): a fact cannot be held out (nothing in the prompt lets the model work it out), so
    the test split asks the same facts with held-out PHRASINGS: templates that never appear in train.
    The capital score measures "does the model understand the question in new words", not knowledge.

Families with few possible items repeat items inside a split when asked for more than exist (sampling
with replacement). Distinct prompts, train / test: add 252 / 48 (84 / 16 ordered digit pairs, 3 templates),
subtract 141 / 24, capital 100 / 50 (25 countries, 4 / 2 templates). A test split of 100 per family then
holds each add prompt about twice: fine for a score (each item counts the same on average), and the honest
size of such a family. repeat_word has 37,056 / 924 (3,088 / 77 words, N 2-5, 3 templates); every
other family has tens of thousands or more. Every test prompt is absent from the train split.

Lengths: the model's context is 64 tokens for prompt + response + 4 chat tokens. With a 2048-token BPE
learned on 300k characters of Gutenberg, the longest of 2000 examples per family is 48 tokens and the
worst case (the 5 longest words in the longest reverse template) 55: copy and reverse_words take 2-5 words,
not 6, because their answer repeats the list, and words have at most 7 letters.

6.3 `order_examples` puts examples in a shuffled or an easy -> hard (curriculum) order, for train.py to
measure whether the order matters with the same examples and the same seed.
"""
import argparse
import json
import lzma
import random
import re
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cli import str_to_bool

SPLITS = ("train", "test")
ORDERS = ("shuffle", "curriculum")
DEFAULT_LEVEL = 2  # 6.3 a family this file does not know (user JSONL) counts as medium in the curriculum


# ----------------------------------------------------------------------------------------------------
# 6.1 The data every family draws from
@dataclass(frozen=True)
class Example:
    family: str
    prompt: str
    response: str


# Common English nouns and adjectives, lowercase, 3-7 letters (a longer word is 3-5 BPE tokens). None is a word
# of a template, a color or an object below: a test word hiding in a template would leak into train prompts.
WORDS = sorted(set("""
anchor animal ant apple arm army arrow autumn axe baby bacon badge baker bank barn basket bath beach bean
bear beard bed bee beef bird blade blanket blood bone bottle brain branch bread brick bride bridge
brother bucket bull butter cabin cake camel camp candle canoe captain card castle cattle cave chain chalk
cheek cheese cherry chest chicken child chimney church circle cliff cloud coast coffee coin collar corn
cottage cousin crab cradle crown curtain daisy dancer desert diamond dinner doctor donkey door dragon dream
duck dust eagle earth egg elbow engine face farm farmer feather fence field finger fire fish flame flour
flower fog foot forest fox frog fruit garden gate ghost giant girl glass glove goat grape grass guest
hammer harbor hawk heart hill hive honey horn horse hotel hunter island jelly jewel judge kettle king
kitchen knee knife ladder lake lemon letter library lion lip lizard lock map marble market meadow meat
melon milk mill mirror monkey moon morning mother mouse mouth mud nail needle nest net night nose
nurse oak ocean onion orchard owl palace parrot path peach pearl pencil pepper piano pig pillow pipe planet
plate poet pond potato prince puppy queen rabbit rain river road robin rock roof rope rose saddle sailor
salt sand school sea seed shadow sheep shelf shell ship shirt shore sister skirt sky smoke snake snow
soldier soup spider spoon star station stone storm stove straw stream sugar summer sun swan sword
table tail teacher thread throne thumb tiger tomato tongue tooth towel tower town train tree trumpet tulip
turtle valley village violin wagon wall water wave whale wheat wheel window wing winter wolf wood wool yard
angry bitter bold brave bright broad busy calm cheap clean clever cold cool cruel dark deep dirty dry dull
eager early easy empty fair famous fast fierce fine flat foolish fresh full gentle glad grand happy hard
heavy high hollow honest hot huge humble hungry kind lazy little lonely long loud low lucky merry mild
modern narrow neat noble old pale patient plain polite poor proud pure quick quiet rapid rare rich rough
round royal rude sad safe sharp short shy silent simple slow smooth soft solid sour steep strange strict
strong sweet swift tall tender thick thin tidy tiny tired ugly warm weak wet wide wild wise young
""".split()))
NAMES = sorted("""Adam Alice Amy Anna Ben Bob Carl Clara Dan David Ella Emma Eva Fred George Hannah Harry Helen
Jack Jane Jim John Kate Laura Leo Lucy Mary Max Mia Nina Oscar Paul Peter Rita Sara Sophie Tom Victor Walter
Zoe""".split())  # no name ends in "s": "Tom's car" reads right for every one
COLORS = sorted("black blue brown gold gray green pink purple red silver white yellow".split())
OBJECTS = sorted("""bag ball bike boat book bowl box cap car chair clock coat cup desk drum fan hat jar kite
lamp mug pen ring shoe sock""".split())  # colors and objects start with a consonant: "a red car", never "a orange"
CAPITALS = {
    "Argentina": "Buenos Aires", "Austria": "Vienna", "Belgium": "Brussels", "Canada": "Ottawa",
    "China": "Beijing", "Cuba": "Havana", "Denmark": "Copenhagen", "Egypt": "Cairo", "England": "London",
    "Finland": "Helsinki", "France": "Paris", "Germany": "Berlin", "Greece": "Athens", "Hungary": "Budapest",
    "Ireland": "Dublin", "Italy": "Rome", "Japan": "Tokyo", "Kenya": "Nairobi", "Norway": "Oslo",
    "Peru": "Lima", "Poland": "Warsaw", "Portugal": "Lisbon", "Russia": "Moscow", "Spain": "Madrid",
    "Sweden": "Stockholm",
}


def split_every_fifth(items):
    """A fixed, documented split of a sorted list: index 4, 9, 14, ... is TEST, the rest TRAIN.
    ["a", "b", "c", "d", "e", "f"] -> {"train": ["a", "b", "c", "d", "f"], "test": ["e"]}"""
    items = sorted(items)
    return {"train": [w for i, w in enumerate(items) if i % 5 != 4],
            "test": [w for i, w in enumerate(items) if i % 5 == 4]}


SPLIT_WORDS = split_every_fifth(WORDS)
SPLIT_NAMES = split_every_fifth(NAMES)
SPLIT_COLORS = split_every_fifth(COLORS)
SPLIT_OBJECTS = split_every_fifth(OBJECTS)


# ----------------------------------------------------------------------------------------------------
# 6.1 More training words. Fine-tuned on the 309 training words above, a small model learns those 309 words
# (which one is first, how to spell it out), not the skill: measured 0% exact on copying held-out words,
# whatever the steps. Thousands of corpus words make memorizing no cheaper than copying: the same run (H200,
# the CPU preset's model) went from 0% to 54% on copy and from 36.8% to 61.9% overall with this pool and
# --freeze_embeddings (part6_sft/README.md). The pool is made once from the corpus (build_word_pool) and
# shipped as train_words.json, so reading tasks.py reads no corpus. Test items never join it.
POOL_FILE = Path(__file__).with_name("train_words.json")
POOL_SOURCE, POOL_CHARS = "data/gutenberg_train_a.txt.xz", 3_000_000


# Every word of the prompt templates (lowercased; "s" of "Tom's"): the pool leaves them out, so a listed word
# is never also a word of the question ("Say the first word: first say"). Tested complete against the prompts.
TEMPLATE_WORDS = frozenset("""
add again and are backwards biggest capital city color comes contain copy count digits does even first found
from has how in increasing is larger largest last list lowest many me minus name number odd of or order owns
pick plus position put repeat reverse s say smaller smallest sort take tell the there these this times what
which whose word words write a""".split())


def build_word_pool(text, n_words=3000, n_names=250):
    """{"words": the n_words most frequent lowercase 3-7 letter words of text, "names": the n_names most
    frequent capitalized words that follow a lowercase word (names and places, not sentence starts) and
    are never written lowercase}, minus every test item (word, name, color, object) and template word."""
    lower = Counter(re.findall(r"(?<![A-Za-z'])[a-z]{3,7}(?![A-Za-z'])", text))
    capital = Counter(re.findall(r"(?<=[a-z,;] )[A-Z][a-z]{2,6}(?![A-Za-z'])", text))
    banned = {w.lower() for split in (SPLIT_WORDS, SPLIT_NAMES, SPLIT_COLORS, SPLIT_OBJECTS) for w in split["test"]}
    banned |= TEMPLATE_WORDS
    words = [w for w, _ in lower.most_common() if w not in banned][:n_words]
    names = [w for w, _ in capital.most_common() if w.lower() not in lower and w.lower() not in banned
             and not w.endswith("s")][:n_names]  # no name ends in "s": "Tom's car" reads right
    return {"words": sorted(words), "names": sorted(names)}


def load_word_pool(path=POOL_FILE):
    """(words, names) of the shipped pool; a missing file is an error that says how to make it."""
    try:
        pool = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} is missing: python part6_sft/tasks.py --build_pool") from None
    return pool["words"], pool["names"]


def write_word_pool(source=None, path=POOL_FILE):
    """Remake the pool file from the corpus (what --build_pool runs; the shipped file came from it)."""
    source = source or Path(__file__).resolve().parent.parent / POOL_SOURCE
    with lzma.open(source, "rt", encoding="utf-8") as f:
        pool = build_word_pool(f.read(POOL_CHARS))
    Path(path).write_text(json.dumps(pool, indent=0) + "\n")
    print(f"wrote {len(pool['words'])} words and {len(pool['names'])} names to {path}")


# (--build_pool makes the file: only that command may start without it)
POOL_WORDS, POOL_NAMES = load_word_pool() if POOL_FILE.exists() or __name__ != "__main__" else ([], [])
SPLIT_WORDS["train"] = sorted(set(SPLIT_WORDS["train"]) | set(POOL_WORDS))
SPLIT_NAMES["train"] = sorted(set(SPLIT_NAMES["train"]) | set(POOL_NAMES))


def is_test_combination(numbers) -> bool:
    """6.1 Held-out number combinations: TEST when crc32 of the sorted values is divisible by 5 (~1 in 5).
    crc32, not hash(): Python's str hash changes from run to run. (7, 3) and (3, 7) share one key "3,7": TEST."""
    key = ",".join(str(n) for n in sorted(numbers))
    return zlib.crc32(key.encode()) % 5 == 0


def draw_combination(rng, split, draw):
    """Call draw(rng) until its numbers fall on `split`'s side of the held-out rule (~1.25 tries for train,
    ~5 for test)."""
    while True:
        numbers = draw(rng)
        if is_test_combination(numbers) == (split == "test"):
            return numbers


def pick_words(rng, split, low=2, high=6):
    """low..high distinct words of the split (distinct, so "the first word" or "is X in it" is unambiguous)."""
    return rng.sample(SPLIT_WORDS[split], rng.randint(low, high))


def fill(rng, templates, **values):
    """One template, chosen at random, filled in."""
    return rng.choice(templates).format(**values)


# ----------------------------------------------------------------------------------------------------
# 6.1 Word families: the answer is built from words the test split never shows in fine-tuning
def make_copy(rng, split):
    words = pick_words(rng, split, 2, 5)  # 5, not 6: the answer repeats the list, twice the tokens
    templates = ["Repeat these words: {w}", "Copy this list: {w}", "{w}\nWrite these words again."]
    return fill(rng, templates, w=" ".join(words)), " ".join(words)


def make_first_word(rng, split):
    words = pick_words(rng, split)
    templates = ["What is the first word? {w}", "Say the first word: {w}", "{w}\nWhich word comes first?"]
    return fill(rng, templates, w=" ".join(words)), words[0]


def make_last_word(rng, split):
    words = pick_words(rng, split)
    templates = ["What is the last word? {w}", "Say the last word: {w}", "{w}\nWhich word comes last?"]
    return fill(rng, templates, w=" ".join(words)), words[-1]


def make_count_words(rng, split):
    words = pick_words(rng, split)
    templates = ["How many words? {w}", "Count the words: {w}", "{w}\nHow many words are there?"]
    return fill(rng, templates, w=" ".join(words)), str(len(words))


def make_word_at(rng, split):
    words = pick_words(rng, split, 3, 6)
    k = rng.randint(1, len(words))
    templates = ["What is word {k} of: {w}", "Say word number {k}: {w}", "{w}\nWhich word is in position {k}?"]
    return fill(rng, templates, w=" ".join(words), k=k), words[k - 1]


def make_repeat_word(rng, split):
    word, n = rng.choice(SPLIT_WORDS[split]), rng.randint(2, 5)
    templates = ["Say {x} {n} times.", "Repeat the word {x} {n} times.", "Write {x} {n} times."]
    return fill(rng, templates, x=word, n=n), " ".join([word] * n)


def make_contains(rng, split):
    """Half the questions ask about a word in the list (yes), half about another word of the split (no)."""
    words = pick_words(rng, split)
    if rng.random() < 0.5:
        query, answer = rng.choice(words), "yes"
    else:
        query, answer = rng.choice([w for w in SPLIT_WORDS[split] if w not in words]), "no"
    templates = ["Is {x} in this list? {w}", "Does the list contain {x}? {w}", "{w}\nIs the word {x} there?"]
    return fill(rng, templates, w=" ".join(words), x=query), answer


def make_reverse_words(rng, split):
    words = pick_words(rng, split, 2, 5)
    templates = ["Reverse the order of these words: {w}", "Write these words backwards: {w}",
                 "{w}\nSay the words in reverse order."]
    return fill(rng, templates, w=" ".join(words)), " ".join(reversed(words))


def make_parity(rng, split):
    words = pick_words(rng, split)
    templates = ["Is the number of words even or odd? {w}", "Even or odd word count? {w}",
                 "{w}\nIs the count of words even or odd?"]
    return fill(rng, templates, w=" ".join(words)), "even" if len(words) % 2 == 0 else "odd"


def make_context_qa(rng, split):
    """Two people, two things, one question: the answer must be looked up in the context, not guessed."""
    (a, b), (ca, cb), (oa, ob) = (rng.sample(s[split], 2) for s in (SPLIT_NAMES, SPLIT_COLORS, SPLIT_OBJECTS))
    context = fill(rng, ["{a} has a {ca} {oa}. {b} has a {cb} {ob}.",
                         "{a} owns a {ca} {oa} and {b} owns a {cb} {ob}.",
                         "{a} found a {ca} {oa}; {b} found a {cb} {ob}."], a=a, b=b, ca=ca, cb=cb, oa=oa, ob=ob)
    name, color, thing = rng.choice([(a, ca, oa), (b, cb, ob)])
    if rng.random() < 0.5:
        return f"{context} What color is {name}'s {thing}?", color
    return f"{context} Whose {thing} is {color}?", name


# ----------------------------------------------------------------------------------------------------
# 6.1 Number families: every number is seen in train, only the combinations of the test split are new
def make_compare(rng, split):
    a, b = draw_combination(rng, split, lambda r: r.sample(range(100), 2))
    larger = rng.random() < 0.5
    word, answer = ("larger", max(a, b)) if larger else ("smaller", min(a, b))
    templates = ["Which is {word}, {a} or {b}?", "Pick the {word} number: {a} {b}"]
    return fill(rng, templates, word=word, a=a, b=b), str(answer)


def pick_numbers(rng):
    """3-5 distinct numbers 0-99 (distinct: the largest is one number, not a tie)."""
    return rng.sample(range(100), rng.randint(3, 5))


def make_max_number(rng, split):
    numbers = draw_combination(rng, split, pick_numbers)
    templates = ["What is the largest number? {x}", "Which number is biggest: {x}", "{x}\nSay the largest number."]
    return fill(rng, templates, x=" ".join(map(str, numbers))), str(max(numbers))


def make_min_number(rng, split):
    numbers = draw_combination(rng, split, pick_numbers)
    templates = ["What is the smallest number? {x}", "Which number is lowest: {x}", "{x}\nSay the smallest number."]
    return fill(rng, templates, x=" ".join(map(str, numbers))), str(min(numbers))


def make_sort_digits(rng, split):
    digits = draw_combination(rng, split, lambda r: [r.randint(0, 9) for _ in range(r.randint(3, 5))])
    templates = ["Sort these digits: {x}", "Put these digits in order: {x}",
                 "{x}\nWrite the digits in increasing order."]
    return fill(rng, templates, x=" ".join(map(str, digits))), " ".join(map(str, sorted(digits)))


def make_add(rng, split):
    a, b = draw_combination(rng, split, lambda r: (r.randint(0, 9), r.randint(0, 9)))
    templates = ["What is {a} + {b}?", "What is {a} plus {b}?", "Add {a} and {b}."]
    return fill(rng, templates, a=a, b=b), str(a + b)


def make_subtract(rng, split):
    """a - b with 0 <= b <= a <= 9: no negative answers (a "-" token would be one more thing to learn)."""
    a, b = draw_combination(rng, split, lambda r: sorted((r.randint(0, 9), r.randint(0, 9)), reverse=True))
    templates = ["What is {a} - {b}?", "What is {a} minus {b}?", "Take {b} from {a}."]
    return fill(rng, templates, a=a, b=b), str(a - b)


# ----------------------------------------------------------------------------------------------------
# 6.1 A fact table: the facts are the same in both splits, the test phrasings are new
CAPITAL_TEMPLATES = {
    "train": ["What is the capital of {c}?", "Name the capital of {c}.", "{c} has which capital?",
              "The capital of {c} is which city?"],
    "test": ["Which city is the capital of {c}?", "Tell me the capital city of {c}."],
}


def make_capital(rng, split):
    country = rng.choice(sorted(CAPITALS))
    return fill(rng, CAPITAL_TEMPLATES[split], c=country), CAPITALS[country]


# ----------------------------------------------------------------------------------------------------
# 6.1 The families, in a stable order
@dataclass(frozen=True)
class Family:
    level: int                                               # 6.3 difficulty: 1 easy .. 3 hard
    make: Callable[[random.Random, str], tuple[str, str]]    # make(rng, split) -> (prompt, response)
    about: str                                               # one line for a learner


FAMILIES = {
    "copy": Family(1, make_copy, "copy 2-5 words"),
    "first_word": Family(1, make_first_word, "the first of 2-6 words"),
    "last_word": Family(1, make_last_word, "the last of 2-6 words"),
    "count_words": Family(2, make_count_words, "how many words (2-6), as a digit"),
    "word_at": Family(2, make_word_at, "the word at position k of 3-6 words"),
    "repeat_word": Family(2, make_repeat_word, "a word 2-5 times"),
    "contains": Family(2, make_contains, "is a word in the list: yes/no"),
    "reverse_words": Family(3, make_reverse_words, "2-5 words in reverse order"),
    "parity": Family(3, make_parity, "is the number of words even or odd"),
    "context_qa": Family(3, make_context_qa, "a color or an owner, read from a two-sentence context"),
    "compare": Family(2, make_compare, "the larger or smaller of two numbers 0-99"),
    "max_number": Family(2, make_max_number, "the largest of 3-5 numbers 0-99"),
    "min_number": Family(2, make_min_number, "the smallest of 3-5 numbers 0-99"),
    "sort_digits": Family(3, make_sort_digits, "3-5 digits in increasing order"),
    "add": Family(3, make_add, "a + b, digits 0-9 (few items: repeats)"),
    "subtract": Family(3, make_subtract, "a - b >= 0, digits 0-9 (few items: repeats)"),
    "capital": Family(1, make_capital, "the capital of one of 25 countries; test: held-out phrasings"),
}


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(choices)}; got {value!r}")


def chosen_families(families):
    """None -> every family; a name or a list of names -> those, each checked."""
    names = list(FAMILIES) if families is None else [families] if isinstance(families, str) else list(families)
    for name in names:
        check_choice("family", name, list(FAMILIES))
    return names


def make_examples(split: str, per_family: int, seed: int, families=None) -> list[Example]:
    """per_family examples of each family (in FAMILIES order), the same for the same seed.

    Each family has its own generator, seeded by a string: its data does not change when another family is
    added or left out (random.Random hashes a str seed with sha512, the same in every run)."""
    check_choice("split", split, SPLITS)
    if not isinstance(per_family, int) or isinstance(per_family, bool) or per_family < 0:
        raise ValueError(f"per_family must be an int >= 0, got {per_family!r}")
    examples = []
    for name in chosen_families(families):
        rng = random.Random(f"{seed}/{split}/{name}")
        examples += [Example(name, *FAMILIES[name].make(rng, split)) for _ in range(per_family)]
    return examples


def grade(example: Example, prediction: str) -> bool:
    """6.1 The program's verdict: exact match after stripping spaces and newlines at both ends."""
    return prediction.strip() == example.response.strip()


# ----------------------------------------------------------------------------------------------------
# 6.3 Ordering: shuffled versus easy -> hard
def difficulty(example: Example):
    """Curriculum key: family level, then answer length, then prompt length (characters, so the order does
    not depend on the tokenizer)."""
    family = FAMILIES.get(example.family)
    level = family.level if family else DEFAULT_LEVEL
    return level, len(example.response), len(example.prompt)


def order_examples(examples, order: str, seed: int) -> list[Example]:
    """6.3 "shuffle": a seeded permutation. "curriculum": easy -> hard by `difficulty`; ties keep the seeded
    shuffled order (sorted() is stable), so equal examples are not grouped by family or by generation order."""
    check_choice("order", order, ORDERS)
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    return shuffled if order == "shuffle" else sorted(shuffled, key=difficulty)


# ----------------------------------------------------------------------------------------------------
# 6.1 User data: the common instruction JSONL format
JSONL_HELP = 'one JSON object per line: {"instruction": "...", "input": "...", "output": "..."}'


def load_jsonl(path) -> list[Example]:
    """Examples from a JSONL file (blank lines skipped); any problem -> ValueError naming the line and the fix.
    prompt = instruction, plus "\\n" + input when input is not empty; family defaults to "jsonl"."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file; pass a JSONL file with {JSONL_HELP}")
    lines = read_lines(path)
    examples = [example_from_line(path, n, line) for n, line in enumerate(lines, 1) if line.strip()]
    if not examples:
        raise ValueError(f"{path}: no examples (the file is empty); write {JSONL_HELP}")
    return examples


def read_lines(path):
    """The file's lines as text; bytes that are not UTF-8 -> the line they are on."""
    raw = path.read_bytes().removeprefix(b"\xef\xbb\xbf")  # subtle: a BOM (Windows editors) is not an error
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        n = raw[:e.start].count(b"\n") + 1
        raise ValueError(f"{path} line {n}: not UTF-8 text; save the file as UTF-8")


def example_from_line(path, n, line):
    where = f"{path} line {n}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: not valid JSON ({e.msg}); write {JSONL_HELP}")
    if not isinstance(row, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(row).__name__}; write {JSONL_HELP}")
    for field in ("instruction", "output"):
        if field not in row:
            raise ValueError(f'{where}: missing field "{field}"; every line needs "instruction" and "output"')
    for field in ("instruction", "input", "output", "family"):
        if field in row and not isinstance(row[field], str):
            raise ValueError(f'{where}: field "{field}" must be a string, got {type(row[field]).__name__}')
    for field in ("instruction", "output"):
        if not row[field].strip():
            raise ValueError(f'{where}: field "{field}" is empty; give it some text')
    prompt = row["instruction"] + ("\n" + row["input"] if row.get("input") else "")
    return Example(row.get("family", "jsonl"), prompt, row["output"])


def to_jsonl_row(example: Example) -> dict:
    """The inverse of example_from_line: the text after the prompt's first newline becomes "input"."""
    instruction, _, given = example.prompt.partition("\n")
    return {"instruction": instruction, "input": given, "output": example.response, "family": example.family}


def write_jsonl(examples, path):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(to_jsonl_row(e)) + "\n" for e in examples)


# ----------------------------------------------------------------------------------------------------
# A learner's look at the data
def show(families, per_family, seed):
    """Print per_family train and test examples of each family (repr shows the prompt's newline as \\n)."""
    split_examples = {split: make_examples(split, per_family, seed, families) for split in SPLITS}
    for name in families:
        print(f"{name}  (level {FAMILIES[name].level}: {FAMILIES[name].about})")
        for split in SPLITS:
            for e in (e for e in split_examples[split] if e.family == name):
                print(f"  {split:5}  {e.prompt!r:70} -> {e.response!r}")
    print(f"{len(families)} families; held out for test: {len(SPLIT_WORDS['test'])} of {len(WORDS)} words, "
          f"{len(SPLIT_NAMES['test'])} of {len(NAMES)} names, {len(SPLIT_COLORS['test'])} of {len(COLORS)} colors, "
          f"{len(SPLIT_OBJECTS['test'])} of {len(OBJECTS)} objects, ~1 in 5 number combinations, "
          f"{len(CAPITAL_TEMPLATES['test'])} capital phrasings")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--family", nargs="+", default=None, help="only these families (default: all)")
    p.add_argument("--show", type=int, default=2, help="examples per family and split to print, 1-100 (default: 2)")
    p.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    p.add_argument("--jsonl", default=None, help="also write the train split to this JSONL file")
    p.add_argument("--per_family", type=int, default=200, help="train examples per family in --jsonl (default: 200)")
    p.add_argument("--overwrite", type=str_to_bool, default=False, help="replace an existing --jsonl file")
    p.add_argument("--build_pool", action="store_true",
                   help=f"remake {POOL_FILE.name} from the first 3M characters of {POOL_SOURCE} and stop")
    args = p.parse_args(argv)
    if args.build_pool:
        return write_word_pool()
    if not 1 <= args.show <= 100:
        p.error(f"--show must be 1-100, got {args.show}")
    if not 1 <= args.per_family <= 100_000:
        p.error(f"--per_family must be 1-100000, got {args.per_family}")
    if args.jsonl and Path(args.jsonl).exists() and not args.overwrite:
        p.error(f"{args.jsonl} exists; pass --overwrite true to replace it, or another --jsonl path")
    try:
        families = chosen_families(args.family)
    except ValueError as e:
        p.error(f"--{e}")
    show(families, args.show, args.seed)
    if args.jsonl:
        examples = make_examples("train", args.per_family, args.seed, families)
        write_jsonl(examples, args.jsonl)
        print(f"wrote {len(examples)} train examples to {args.jsonl} (read back with tasks.load_jsonl)")


if __name__ == "__main__":
    main()
