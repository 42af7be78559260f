"""6.1 / 6.3 part6_sft/tasks.py: every family's answers are checked by an independent parser of its prompt, the
held-out words, number combinations and phrasings never reach the train split, ordering, and user JSONL."""
import functools
import json
import re
from collections import Counter

import pytest
from partloader import load_part, one_line_exit

tasks = load_part("part6_sft", "tasks")
Example = tasks.Example


@functools.cache
def examples(split, per_family, seed=0):
    """Realistic sizes (2000 train vs 100 test per family), generated once for the whole file."""
    return tuple(tasks.make_examples(split, per_family, seed))


def split(name):
    """The file's train (2000 per family) or test split (100 per family)."""
    return examples(name, {"train": 2000, "test": 100}[name])


def by_family(items, family):
    return [e for e in items if e.family == family]


# ----------------------------------------------------------------------------------------------------
# Independent answers: parse the prompt with a regex, compute the answer without tasks.py's code
def word_list(prompt):
    """The listed words: the first line when the prompt has two, else what follows the last '?' or ':'."""
    return prompt.split("\n")[0].split() if "\n" in prompt else re.split(r"[?:] ", prompt)[-1].split()


def ints(prompt):
    return [int(x) for x in re.findall(r"\d+", prompt)]


def contains_answer(prompt):
    query = next(g for g in re.search(r"Is the word (\w+) there|Is (\w+) in this|contain (\w+)\?", prompt).groups()
                 if g)
    return "yes" if query in word_list(prompt) else "no"


def context_answer(prompt):
    facts = re.findall(r"([A-Z][a-z]+) (?:has|owns|found) a (\w+) (\w+)", prompt)
    assert len(facts) == 2, prompt
    if m := re.search(r"What color is (\w+)'s (\w+)\?", prompt):
        return next(color for name, color, thing in facts if (name, thing) == m.groups())
    thing, color = re.search(r"Whose (\w+) is (\w+)\?", prompt).groups()
    return next(name for name, c, t in facts if (t, c) == (thing, color))


def subtract_answer(prompt):
    if m := re.search(r"Take (\d+) from (\d+)", prompt):
        return str(int(m[2]) - int(m[1]))
    a, b = re.search(r"(\d+) (?:-|minus) (\d+)", prompt).groups()
    return str(int(a) - int(b))


CAPITALS_BY_HAND = {"France": "Paris", "Japan": "Tokyo", "Egypt": "Cairo", "Argentina": "Buenos Aires",
                    "Italy": "Rome", "Norway": "Oslo"}


def capital_answer(prompt):
    country = next((c for c in CAPITALS_BY_HAND if c in prompt), None)
    return CAPITALS_BY_HAND[country] if country else None  # None: a country this test does not know by hand


CHECKS = {
    "copy": lambda p: " ".join(word_list(p)),
    "first_word": lambda p: word_list(p)[0],
    "last_word": lambda p: word_list(p)[-1],
    "count_words": lambda p: str(len(word_list(p))),
    "word_at": lambda p: word_list(p)[ints(p)[0] - 1],
    "repeat_word": lambda p: " ".join([re.search(r"(\w+) (\d) times", p)[1]] * int(re.search(r"(\d) times", p)[1])),
    "contains": contains_answer,
    "reverse_words": lambda p: " ".join(word_list(p)[::-1]),
    "parity": lambda p: ["even", "odd"][len(word_list(p)) % 2],
    "context_qa": context_answer,
    "compare": lambda p: str(max(ints(p)) if "larger" in p else min(ints(p))),
    "max_number": lambda p: str(max(ints(p))),
    "min_number": lambda p: str(min(ints(p))),
    "sort_digits": lambda p: " ".join(str(d) for d in sorted(ints(p))),
    "add": lambda p: str(sum(ints(p))),
    "subtract": subtract_answer,
    "capital": capital_answer,
}
WORD_FAMILIES = ["copy", "first_word", "last_word", "count_words", "word_at", "repeat_word", "contains",
                 "reverse_words", "parity"]
NUMBER_FAMILIES = ["compare", "max_number", "min_number", "sort_digits", "add", "subtract"]


def test_the_worked_examples_of_the_parsers():
    """The checkers themselves, on hand-written prompts."""
    assert CHECKS["word_at"]("What is word 2 of: cat dog owl") == "dog"
    assert CHECKS["repeat_word"]("Repeat the word owl 3 times.") == "owl owl owl"
    assert CHECKS["contains"]("cat dog\nIs the word owl there?") == "no"
    assert CHECKS["context_qa"]("Ann has a red car. Bo has a blue hat. Whose hat is blue?") == "Bo"
    assert CHECKS["subtract"]("Take 3 from 9.") == "6"


def test_at_least_12_families_of_three_levels_each_with_a_checker():
    assert len(tasks.FAMILIES) >= 12
    assert {f.level for f in tasks.FAMILIES.values()} == {1, 2, 3}
    assert set(CHECKS) == set(tasks.FAMILIES), "a new family needs an independent check here"


@pytest.mark.parametrize("family", list(tasks.FAMILIES))
def test_answers_are_right_by_an_independent_check(family):
    checked = 0
    for e in by_family(split("train"), family)[:300] + by_family(split("test"), family):
        expected = CHECKS[family](e.prompt)
        if expected is not None:
            assert e.response == expected, e
            checked += 1
    assert checked >= 20


def test_capitals_answer_one_capital_per_country_and_ask_every_country():
    answers = {}
    for e in by_family(split("train"), "capital") + by_family(split("test"), "capital"):
        country = next(c for c in tasks.CAPITALS if c in e.prompt)
        answers.setdefault(country, set()).add(e.response)
    assert all(len(a) == 1 for a in answers.values())
    assert len(answers) == len(tasks.CAPITALS) == 25


@pytest.mark.parametrize("family", list(tasks.FAMILIES))
def test_every_family_grades_its_own_answer_right_and_a_wrong_one_wrong(family):
    for e in by_family(split("train"), family)[:20] + by_family(split("test"), family)[:20]:
        assert tasks.grade(e, e.response) and tasks.grade(e, f"  {e.response}\n")
        assert not tasks.grade(e, e.response + " x")
        assert not tasks.grade(e, "")
    e = Example(family, "What is 2 + 2?", "4")
    assert not tasks.grade(e, "44") and not tasks.grade(e, "four")


# ----------------------------------------------------------------------------------------------------
# What the test split holds out
def test_the_word_split_is_every_fifth_of_the_sorted_list():
    assert tasks.split_every_fifth(list("kjihgfedcba")) == {"train": list("abcdfghik"), "test": ["e", "j"]}
    for items, split in [(tasks.WORDS, tasks.SPLIT_WORDS), (tasks.NAMES, tasks.SPLIT_NAMES),
                         (tasks.COLORS, tasks.SPLIT_COLORS), (tasks.OBJECTS, tasks.SPLIT_OBJECTS)]:
        assert len(set(items)) == len(items), "a word listed twice"
        every_fifth = tasks.split_every_fifth(items)
        assert split["test"] == every_fifth["test"] and len(split["test"]) == len(items) // 5
        assert set(every_fifth["train"]) <= set(split["train"])  # train: the rest of the list (and the pool)
    assert 300 <= len(tasks.WORDS) <= 400
    assert all(w.isalpha() and w.islower() and 3 <= len(w) <= 7 for w in tasks.WORDS)


def test_the_word_pool_joins_train_only_and_holds_no_test_item():
    words, names = tasks.load_word_pool()
    assert len(words) == 3000 and len(names) == 250
    assert all(w.isalpha() and w.islower() and 3 <= len(w) <= 7 for w in words)
    assert all(n[0].isupper() and n[1:].islower() and not n.endswith("s") for n in names)
    held_out = {w.lower() for s in (tasks.SPLIT_WORDS, tasks.SPLIT_NAMES, tasks.SPLIT_COLORS, tasks.SPLIT_OBJECTS)
                for w in s["test"]}
    assert not held_out & {w.lower() for w in words + names}
    assert set(words) <= set(tasks.SPLIT_WORDS["train"]) and set(names) <= set(tasks.SPLIT_NAMES["train"])
    assert len(tasks.SPLIT_WORDS["train"]) > 3000  # the pool is most of the training words


def test_template_words_are_every_word_of_the_questions_and_none_joins_the_pool():
    items = {w for s in (tasks.SPLIT_WORDS, tasks.SPLIT_NAMES, tasks.SPLIT_COLORS, tasks.SPLIT_OBJECTS)
             for split in ("train", "test") for w in s[split]}
    places = {w for pair in tasks.CAPITALS.items() for w in " ".join(pair).split()}
    for e in split("train") + split("test"):
        others = set(re.findall(r"[A-Za-z]+", e.prompt)) - items - places
        assert {w.lower() for w in others} <= tasks.TEMPLATE_WORDS, (others, e.prompt)
    words, names = tasks.load_word_pool()
    assert not tasks.TEMPLATE_WORDS & {w.lower() for w in words + names}


def test_the_shipped_pool_is_what_build_word_pool_makes_from_the_corpus(tmp_path, capsys):
    tasks.write_word_pool(path=tmp_path / "pool.json")
    assert json.loads((tmp_path / "pool.json").read_text()) == json.loads(tasks.POOL_FILE.read_text())


def test_build_word_pool_by_hand():
    text = "the cat saw the dog. the cat ran to Zorba and Zoe; met Pim by the zzzzzzzzz sea"
    pool = tasks.build_word_pool(text, n_words=3, n_names=5)
    assert pool["words"] == ["cat", "dog", "saw"]  # most frequent first, then sorted; "the" is a template word,
    # "to" too short
    assert pool["names"] == ["Pim", "Zorba"]  # Zoe is a test name; "the" before "cat" is no capital


HELD_OUT = {*tasks.SPLIT_WORDS["test"], *tasks.SPLIT_NAMES["test"], *tasks.SPLIT_COLORS["test"],
            *tasks.SPLIT_OBJECTS["test"]}
TRAIN_WORDS = {*tasks.SPLIT_WORDS["train"], *tasks.SPLIT_NAMES["train"], *tasks.SPLIT_COLORS["train"],
               *tasks.SPLIT_OBJECTS["train"]}


def test_no_held_out_word_appears_in_any_train_prompt():
    """Words are compared case-sensitively: names are capitalized, the word lists lowercase."""
    seen = set()
    for e in split("train"):
        seen.update(re.findall(r"[A-Za-z]+", e.prompt))
    assert not seen & HELD_OUT, sorted(seen & HELD_OUT)[:10]


def test_test_prompts_of_word_families_use_only_held_out_words():
    for family in WORD_FAMILIES:
        for e in by_family(split("test"), family):
            words = set(re.findall(r"[A-Za-z]+", e.prompt))
            assert not words & TRAIN_WORDS, e
            assert words & HELD_OUT, e
    for e in by_family(split("test"), "context_qa"):
        assert set(re.findall(r"[A-Za-z]+", e.prompt)) & HELD_OUT >= {e.response}


def test_no_test_prompt_is_a_train_prompt():
    overlap = {e.prompt for e in split("test")} & {e.prompt for e in split("train")}
    assert not overlap, sorted(overlap)[:5]


def test_number_combinations_of_the_test_split_never_appear_in_train():
    """A combination is the sorted numbers of a prompt, compared across all number families: the held-out
    pair {3, 7} must be absent from train's add, subtract and compare alike, in either order."""
    assert tasks.is_test_combination((3, 7)) and tasks.is_test_combination((7, 3))  # the docstring's example
    assert not tasks.is_test_combination((4, 9))
    def combos(items):
        return {tuple(sorted(ints(e.prompt))) for e in items if e.family in NUMBER_FAMILIES}
    assert not combos(split("train")) & combos(split("test"))
    assert len(combos(split("test"))) > 300  # the test split is not a handful of items


def test_every_number_is_seen_in_train():
    """Only combinations are held out: a number token missing from fine-tuning could not be learned."""
    numbers = {n for e in by_family(split("train"), "compare") for n in ints(e.prompt)}
    assert numbers == set(range(100))
    digits = {n for family in ("add", "subtract", "sort_digits") for e in by_family(split("train"), family)
              for n in ints(e.prompt)}
    assert digits == set(range(10))


def test_capital_test_phrasings_never_appear_in_train():
    def templates(items):
        return {re.sub("|".join(tasks.CAPITALS), "X", e.prompt) for e in by_family(items, "capital")}
    assert len(templates(split("train"))) == 4 and len(templates(split("test"))) == 2
    assert not templates(split("train")) & templates(split("test"))


@pytest.mark.parametrize("family, n_train, n_test", [("add", 252, 48), ("subtract", 141, 24), ("capital", 100, 50)])
def test_small_families_have_the_distinct_items_the_docstring_says(family, n_train, n_test):
    assert len({e.prompt for e in tasks.make_examples("train", 4000, 0, family)}) == n_train
    assert len({e.prompt for e in tasks.make_examples("test", 3000, 0, family)}) == n_test
    assert f"{family} {n_train} / {n_test}" in tasks.__doc__


def test_prompts_and_answers_are_short():
    """The model's context is 64 tokens (~3-4 characters a token): prompt + answer + 4 chat tokens must fit."""
    assert max(len(e.prompt) for e in split("train")) <= 100
    assert max(len(e.response) for e in split("train")) <= 45
    assert max(len(e.prompt) + len(e.response) for e in split("train")) <= 110


# ----------------------------------------------------------------------------------------------------
# make_examples: determinism and bad input
def test_same_seed_same_data_other_seed_other_data():
    assert tasks.make_examples("train", 30, 7) == tasks.make_examples("train", 30, 7)
    assert tasks.make_examples("train", 30, 7) != tasks.make_examples("train", 30, 8)
    assert tasks.make_examples("train", 30, 7) != tasks.make_examples("test", 30, 7)


def test_a_family_gives_the_same_data_alone_or_with_the_others():
    everything = tasks.make_examples("train", 25, 3)
    assert tasks.make_examples("train", 25, 3, ["add"]) == by_family(everything, "add")
    assert tasks.make_examples("train", 25, 3, "add") == by_family(everything, "add")
    assert [e.family for e in everything] == [f for f in tasks.FAMILIES for _ in range(25)]


def test_make_examples_does_not_touch_the_global_random_state():
    import random
    random.seed(0)
    first = tasks.make_examples("train", 5, 1)
    random.seed(99)
    assert tasks.make_examples("train", 5, 1) == first


@pytest.mark.parametrize("kwargs, words", [
    ({"split": "valid"}, ["split", "train, test", "'valid'"]),
    ({"families": ["add", "mul"]}, ["family", "copy", "capital", "'mul'"]),
    ({"per_family": -1}, ["per_family", ">= 0"]),
    ({"per_family": 2.5}, ["per_family"]),
])
def test_bad_arguments_name_the_choices(kwargs, words):
    args = {"split": "train", "per_family": 2, "seed": 0, **kwargs}
    with pytest.raises(ValueError) as err:
        tasks.make_examples(**args)
    assert all(w in str(err.value) for w in words), err.value


# ----------------------------------------------------------------------------------------------------
# 6.3 Ordering
def test_shuffle_is_a_seeded_permutation():
    items = tasks.make_examples("train", 10, 0)
    shuffled = tasks.order_examples(items, "shuffle", 1)
    assert Counter(shuffled) == Counter(items) and shuffled != items
    assert shuffled == tasks.order_examples(items, "shuffle", 1)
    assert shuffled != tasks.order_examples(items, "shuffle", 2)
    assert [e.family for e in items] == [f for f in tasks.FAMILIES for _ in range(10)]  # the input is not changed


def test_curriculum_goes_from_easy_to_hard():
    items = tasks.make_examples("train", 20, 0)
    ordered = tasks.order_examples(items, "curriculum", 0)
    assert Counter(ordered) == Counter(items)
    keys = [(tasks.FAMILIES[e.family].level, len(e.response), len(e.prompt)) for e in ordered]
    assert keys == sorted(keys)
    assert keys[0][0] == 1 and keys[-1][0] == 3


def test_curriculum_by_hand():
    """Level first (capital is level 1, add level 3, a user family counts as 2), then answer length, then prompt."""
    hard = Example("add", "What is 1 + 1?", "2")
    long_answer = Example("capital", "Name the capital of Argentina.", "Buenos Aires")
    short_answer = Example("capital", "Name the capital of Rome's country, Italy, please.", "Rome")
    user = Example("jsonl", "Say hi.", "hi there, how are you")
    shortest_prompt = Example("capital", "Capital of Italy?", "Rome")
    items = [hard, user, long_answer, short_answer, shortest_prompt]
    assert tasks.order_examples(items, "curriculum", 5) == [shortest_prompt, short_answer, long_answer, user, hard]


def test_curriculum_ties_are_in_seeded_random_order():
    a, b = Example("add", "What is 1 + 2?", "3"), Example("add", "What is 2 + 1?", "3")
    firsts = {tasks.order_examples([a, b], "curriculum", seed)[0] for seed in range(20)}
    assert firsts == {a, b}
    assert tasks.order_examples([a, b], "curriculum", 3) == tasks.order_examples([a, b], "curriculum", 3)


def test_an_unknown_order_is_an_error():
    with pytest.raises(ValueError, match="shuffle, curriculum"):
        tasks.order_examples([], "random", 0)


# ----------------------------------------------------------------------------------------------------
# 6.1 User data in JSONL
def test_load_jsonl_reads_the_common_format(tmp_path):
    path = tmp_path / "data.jsonl"
    rows = [{"instruction": "Translate to French.", "input": "cat", "output": "chat"},
            {"instruction": "Say hi.", "output": "hi", "family": "greet"},
            {"instruction": "Say bye.", "input": "", "output": "bye", "extra": 1}]
    path.write_text("\ufeff" + json.dumps(rows[0]) + "\n\n  \n" + "\n".join(json.dumps(r) for r in rows[1:]) + "\n",
                    encoding="utf-8")
    assert tasks.load_jsonl(path) == [Example("jsonl", "Translate to French.\ncat", "chat"),
                                      Example("greet", "Say hi.", "hi"), Example("jsonl", "Say bye.", "bye")]
    assert tasks.load_jsonl(str(path)) == tasks.load_jsonl(path)


GOOD = '{"instruction": "Say hi.", "output": "hi"}'


@pytest.mark.parametrize("lines, words", [
    ([GOOD, "{not json"], ["line 2", "not valid JSON", "one JSON object per line"]),
    ([GOOD, GOOD, '["a", "b"]'], ["line 3", "expected a JSON object", "list"]),
    (['{"instruction": "Say hi."}'], ["line 1", '"output"']),
    ([GOOD, '{"output": "hi"}'], ["line 2", '"instruction"']),
    (['{"instruction": "Say hi.", "input": 3, "output": "hi"}'], ["line 1", '"input"', "string", "int"]),
    (['{"instruction": "Say hi.", "output": null}'], ["line 1", '"output"', "string"]),
    (['{"instruction": "Say hi.", "output": "hi", "family": ["a"]}'], ["line 1", '"family"', "string"]),
    ([GOOD, "", '{"instruction": "Say hi.", "output": "  "}'], ["line 3", '"output"', "empty"]),
])
def test_bad_jsonl_lines_are_named(tmp_path, lines, words):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as err:
        tasks.load_jsonl(path)
    message = str(err.value)
    assert message.startswith(f"{path} line ") and "\n" not in message
    assert all(w in message for w in words), message


def test_a_file_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "latin1.jsonl"
    latin1 = '{"instruction": "café", "output": "x"}\n'.encode("latin-1")
    path.write_bytes((GOOD + "\n" + GOOD + "\n").encode() + latin1)
    with pytest.raises(ValueError, match=r"line 3: not UTF-8"):
        tasks.load_jsonl(path)


@pytest.mark.parametrize("content, words", [(None, ["no such file"]), ("", ["empty"]), ("\n \n", ["empty"])])
def test_a_missing_or_empty_file_is_one_clear_error(tmp_path, content, words):
    path = tmp_path / "data.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError) as err:
        tasks.load_jsonl(path)
    assert str(path) in str(err.value) and all(w in str(err.value) for w in words), err.value


# ----------------------------------------------------------------------------------------------------
# The command line: a learner's look at the data, and the train split as JSONL
def test_main_prints_examples_of_every_family(capsys):
    tasks.main([])
    out = capsys.readouterr().out
    for family in tasks.FAMILIES:
        assert f"{family}  (level" in out
    assert out.count("  train  ") == out.count("  test   ") == 2 * len(tasks.FAMILIES)


def test_main_writes_jsonl_that_load_jsonl_reads_back(tmp_path, capsys):
    path = tmp_path / "out" / "train.jsonl"
    tasks.main(["--jsonl", str(path), "--per_family", "7", "--seed", "4", "--show", "1"])
    assert tasks.load_jsonl(path) == tasks.make_examples("train", 7, 4)
    assert any(json.loads(line)["input"] for line in path.read_text().splitlines())  # two-line prompts use "input"
    with pytest.raises(SystemExit) as err:  # a second run does not overwrite it...
        tasks.main(["--jsonl", str(path)])
    assert "--overwrite" in one_line_exit(err, capsys)
    tasks.main(["--jsonl", str(path), "--per_family", "2", "--overwrite", "true", "--family", "add"])  # ...unless asked
    assert tasks.load_jsonl(path) == tasks.make_examples("train", 2, 0, ["add"])


@pytest.mark.parametrize("args, words", [(["--family", "mul"], ["--family", "add"]), (["--show", "0"], ["--show"]),
                                         (["--per_family", "0"], ["--per_family"])])
def test_bad_flags_are_one_line_errors(args, words, capsys):
    with pytest.raises(SystemExit) as err:
        tasks.main(args)
    line = one_line_exit(err, capsys)
    assert all(w in line for w in words), line
