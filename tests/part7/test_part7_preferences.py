"""7.1 part7_reward/preferences.py: every rejected response is graded wrong and differs from the gold, each kind
makes the mistake it names (checked against the prompt and the gold, not against the generator's code), the
kinds are balanced, no held-out word crosses the split, model errors, the pairs JSONL and the command line.
Run: python -m pytest -q tests/part7/test_part7_preferences.py
"""
import functools
import json
import re
from collections import Counter

import pytest
from partloader import load_part, one_line_exit

preferences, tasks = load_part("part7_reward", "preferences", "tasks")
Example, Pair, KINDS = tasks.Example, preferences.Pair, preferences.KINDS
SEEDS = range(4)


@functools.cache
def pairs(split, seed, per_family=60):
    """60 a family: 10 of each kind, 1020 pairs a split and seed, generated once for the whole file."""
    return tuple(preferences.make_pairs(split, per_family, seed))


def all_pairs():
    return [p for split in tasks.SPLITS for seed in SEEDS for p in pairs(split, seed)]


def of_kind(kind):
    return [p for p in all_pairs() if p.kind == kind]


def gold(pair):
    return Example(pair.family, pair.prompt, pair.chosen)


def tokens(text):
    return re.findall(r"[A-Za-z]+|\d+", text)


# ----------------------------------------------------------------------------------------------------
# The rule every pair obeys: chosen is right, rejected is wrong
@pytest.mark.parametrize("family", list(tasks.FAMILIES))
def test_every_rejected_is_graded_wrong_and_differs_from_the_gold(family):
    mine = [p for p in all_pairs() if p.family == family]
    assert len(mine) == 2 * len(SEEDS) * 60
    for p in mine:
        assert p.rejected.strip() and p.rejected.strip() != p.chosen.strip(), p
        assert not tasks.grade(gold(p), p.rejected), p
    one_character = all(len(p.chosen) == 1 for p in mine)  # count_words, subtract: nothing to truncate
    assert {p.kind for p in mine} == set(KINDS) - ({"truncated"} if one_character else set())


def test_one_pair_per_example_and_chosen_is_the_gold():
    for split in tasks.SPLITS:
        examples = tasks.make_examples(split, 60, 1)
        assert [(p.family, p.prompt, p.chosen) for p in pairs(split, 1)] == [
            (e.family, e.prompt, e.response) for e in examples]


@pytest.mark.parametrize("family, answer", [
    ("add", lambda p: str(sum(map(int, re.findall(r"\d+", p))))),
    ("max_number", lambda p: str(max(map(int, re.findall(r"\d+", p))))),
    ("parity", lambda p: ["even", "odd"][len((p.split("\n")[0] if "\n" in p else p.split("? ")[-1]).split()) % 2]),
])
def test_chosen_is_right_by_an_independent_check(family, answer):
    mine = [p for p in pairs("test", 0) if p.family == family]
    assert mine and all(p.chosen == answer(p.prompt) and tasks.grade(gold(p), p.chosen) for p in mine)


def test_a_rejected_text_that_is_right_after_all_is_never_used(monkeypatch):
    """The one rule is enforced in one place, whatever a kind's function returns: here off_topic gives the gold
    (with spaces, still right), so every pair falls to the next kind."""
    monkeypatch.setitem(preferences.MAKERS, "off_topic", lambda rng, example, split: f" {example.response}\n")
    made = preferences.make_pairs("train", 10, 0, kinds=("off_topic", "filler"))
    assert len(made) == 170 and {p.kind for p in made} == {"filler"}
    assert preferences.make_pairs("train", 10, 0, kinds="off_topic") == []


# ----------------------------------------------------------------------------------------------------
# Each kind makes the mistake it names
WORD_LISTS = tuple({*s["train"], *s["test"]}  # each list with tasks.py's corpus pool (train_words.json)
                   for s in (tasks.SPLIT_WORDS, tasks.SPLIT_NAMES, tasks.SPLIT_COLORS, tasks.SPLIT_OBJECTS))


def same_list(a, b):
    return any(a in items and b in items for items in WORD_LISTS)


def test_wrong_answers_keep_the_type_of_the_gold():
    seen = Counter()
    for p in of_kind("wrong_answer"):
        g, r = p.chosen, p.rejected
        if g in ("yes", "no", "even", "odd"):
            assert {g, r} in ({"yes", "no"}, {"even", "odd"}), p
        elif p.family == "capital":
            assert r in tasks.CAPITALS.values(), p
        elif g.isdigit():
            assert r.isdigit() and (abs(int(r) - int(g)) <= 2 or r in tokens(p.prompt)), p
        elif p.family == "repeat_word":
            assert set(r.split()) == set(g.split()) and abs(len(r.split()) - len(g.split())) == 1, p
        elif len(g.split()) > 1:  # same length: reordered, or one item replaced
            reordered = sorted(r.split()) == sorted(g.split())
            one_replaced = sum(a != b for a, b in zip(r.split(), g.split())) == 1
            assert len(r.split()) == len(g.split()) and (reordered or one_replaced), p
        else:
            assert same_list(g, r), p  # a name for a name, a color for a color, a word for a word
        seen[p.family] += 1
    assert set(seen) == set(tasks.FAMILIES)


def test_pick_families_sometimes_answer_with_another_number_of_the_prompt():
    picks = [p for p in of_kind("wrong_answer") if p.family in ("compare", "max_number", "min_number")]
    from_prompt = [p for p in picks if p.rejected in tokens(p.prompt) and abs(int(p.rejected) - int(p.chosen)) > 2]
    assert 0.2 < len(from_prompt) / len(picks) < 0.8


def is_subsequence(small, big):
    it = iter(big)
    return all(x in it for x in small)


def test_ignoring_the_instruction_echoes_the_prompt_or_its_items():
    echoes = 0
    for p in of_kind("ignores_instruction"):
        if p.rejected == p.prompt.strip():
            echoes += 1
        else:
            assert len(p.rejected.split()) >= 2 and is_subsequence(p.rejected.split(), tokens(p.prompt)), p
    assert 0.3 < echoes / len(of_kind("ignores_instruction")) < 0.9


def test_truncated_is_the_start_of_the_gold():
    for p in of_kind("truncated"):
        assert p.chosen.startswith(p.rejected) and 0 < len(p.rejected) < len(p.chosen), p
        if " " in p.chosen:
            assert p.rejected.split() == p.chosen.split()[:len(p.rejected.split())], p  # whole words


def test_repetitive_is_the_gold_then_one_of_its_words_three_or_more_times():
    for p in of_kind("repetitive"):
        extra = p.rejected[len(p.chosen):].split()
        assert p.rejected.startswith(p.chosen + " ") and len(extra) >= 3, p
        assert len(set(extra)) == 1 and extra[0] in p.chosen.split(), p


def test_off_topic_is_a_fixed_sentence_without_the_answer():
    assert len(preferences.OFF_TOPIC) >= 5
    for p in of_kind("off_topic"):
        assert p.rejected in preferences.OFF_TOPIC, p
        assert not set(p.chosen.split()) & set(tokens(p.rejected)), p


def test_filler_is_the_gold_padded_with_a_training_phrase():
    places = Counter()
    for p in of_kind("filler"):
        phrase = p.rejected.removeprefix(p.chosen + " ") if p.rejected.startswith(p.chosen + " ") else None
        place = "after" if phrase in preferences.TRAIN_FILLERS else "before"
        phrase = phrase if place == "after" else p.rejected.removesuffix(" " + p.chosen)
        assert phrase in preferences.TRAIN_FILLERS, p
        places[place] += 1
    assert min(places["before"], places["after"]) > 0.3 * sum(places.values())


def test_held_out_fillers_are_not_training_fillers():
    """The length-bias check pads with phrases of its own: they must never be taught as "bad" here."""
    assert 6 <= len(preferences.TRAIN_FILLERS) <= 12
    for held_out in ("I hope this helps!", "Let me think about this carefully."):
        assert held_out not in preferences.TRAIN_FILLERS


# ----------------------------------------------------------------------------------------------------
# Balance, splits, seeds
def test_kinds_are_balanced_in_every_family():
    counts = Counter((p.family, p.kind) for p in pairs("train", 0))
    for family in tasks.FAMILIES:
        applicable = [k for k in KINDS if counts[(family, k)]]
        assert [counts[(family, k)] for k in applicable] == [60 // len(applicable)] * len(applicable), family


def test_kinds_are_spread_round_robin_when_the_count_does_not_divide():
    """13 a family: each kind 2 or 3 times in a family whose every gold can be truncated."""
    for family in ("copy", "capital", "reverse_words"):
        counts = Counter(p.kind for p in preferences.make_pairs("train", 13, 5) if p.family == family)
        assert set(counts) == set(KINDS) and max(counts.values()) - min(counts.values()) == 1


def test_a_subset_of_kinds():
    two = preferences.make_pairs("test", 20, 3, kinds=("off_topic", "filler"))
    assert Counter(p.kind for p in two) == {"off_topic": 170, "filler": 170}
    cut = preferences.make_pairs("train", 20, 3, kinds="truncated")  # a one-character gold is left out
    assert {p.kind for p in cut} == {"truncated"}
    assert len(cut) == sum(len(e.response) > 1 for e in tasks.make_examples("train", 20, 3))


@pytest.mark.parametrize("kinds", [("wrong_answer", "sloppy"), ()])
def test_unknown_or_no_kinds_are_errors(kinds):
    with pytest.raises(ValueError, match="off_topic"):
        preferences.make_pairs("train", 2, 0, kinds=kinds)


TRAIN_ITEMS = {*tasks.SPLIT_WORDS["train"], *tasks.SPLIT_NAMES["train"], *tasks.SPLIT_COLORS["train"],
               *tasks.SPLIT_OBJECTS["train"]}
TEST_ITEMS = {*tasks.SPLIT_WORDS["test"], *tasks.SPLIT_NAMES["test"], *tasks.SPLIT_COLORS["test"],
              *tasks.SPLIT_OBJECTS["test"]}


PLACES = {w for pair in tasks.CAPITALS.items() for w in " ".join(pair).split()}  # capitals: facts of both splits


@pytest.mark.parametrize("split, forbidden", [("test", TRAIN_ITEMS), ("train", TEST_ITEMS)])
def test_no_word_crosses_the_split(split, forbidden):
    """Test pairs hold no train word (in the prompt, chosen or rejected); train pairs no held-out word.
    The fixed sentences of off_topic and filler are the same in both splits and may hold common words of
    tasks.py's training pool ("today"): they are taken out first."""
    for seed in SEEDS:
        for p in pairs(split, seed):
            # a truncated answer is a piece of the gold ("earth" -> "ear"), which may spell a pool word
            text = p.prompt + " " + p.chosen + " " + ("" if p.kind == "truncated" else p.rejected)
            for phrase in (*preferences.OFF_TOPIC, *preferences.TRAIN_FILLERS):
                text = text.replace(phrase, " ")
            words = set(re.findall(r"[A-Za-z]+", text)) - {"yes", "no"} - PLACES  # the same in both splits
            assert not words & forbidden, (p, words & forbidden)


def test_same_seed_same_pairs_other_seed_other_pairs():
    assert preferences.make_pairs("train", 12, 7) == preferences.make_pairs("train", 12, 7)
    assert preferences.make_pairs("train", 12, 7) != preferences.make_pairs("train", 12, 8)
    assert preferences.make_pairs("train", 12, 7) != preferences.make_pairs("test", 12, 7)


# ----------------------------------------------------------------------------------------------------
# 7.1 A model's own errors
def test_model_error_pairs_keep_only_wrong_answers():
    add = Example("add", "What is 3 + 5?", "8")
    cap = Example("capital", "What is the capital of Peru?", "Lima")
    examples = [add, add, add, cap, cap, cap]
    answers = ["8", " 8\n", "9", "Lima Lima", "", "Lima"]
    assert preferences.model_error_pairs(examples, answers) == [
        Pair(add.prompt, "8", "9", "model_error", "add"),
        Pair(cap.prompt, "Lima", "Lima Lima", "model_error", "capital")]
    assert preferences.MODEL_ERROR == "model_error"
    with pytest.raises(ValueError, match="one answer per example"):
        preferences.model_error_pairs(examples, answers[:2])


# ----------------------------------------------------------------------------------------------------
# 7.1 Pairs as JSONL
def test_jsonl_round_trip(tmp_path):
    path = tmp_path / "new" / "pairs.jsonl"
    written = list(pairs("test", 0)[:40]) + [Pair("Say hi.\nplease", "hi", "hi hi hi hi", "model_error", "")]
    preferences.write_pairs_jsonl(written, path)
    assert preferences.load_pairs_jsonl(path) == written
    assert [p.name for p in path.parent.iterdir()] == ["pairs.jsonl"]  # no temporary file left behind
    preferences.write_pairs_jsonl(written[:3], str(path))  # a second write replaces the file
    assert preferences.load_pairs_jsonl(str(path)) == written[:3]


def test_jsonl_kind_and_family_are_optional(tmp_path):
    path = tmp_path / "pairs.jsonl"
    rows = [{"prompt": "2+2?", "chosen": "4", "rejected": "5"},
            {"prompt": "Hi", "chosen": "Hello.", "rejected": "Bye.", "kind": "off_topic", "family": "greet", "x": 1}]
    path.write_text("\ufeff" + json.dumps(rows[0]) + "\n\n   \n" + json.dumps(rows[1]) + "\n", encoding="utf-8")
    assert preferences.load_pairs_jsonl(path) == [Pair("2+2?", "4", "5", "unlabelled", ""),
                                                  Pair("Hi", "Hello.", "Bye.", "off_topic", "greet")]


GOOD = '{"prompt": "2+2?", "chosen": "4", "rejected": "5"}'


@pytest.mark.parametrize("lines, words", [
    ([GOOD, "{not json"], ["line 2", "not valid JSON", '"prompt"']),
    ([GOOD, GOOD, '["a", "b"]'], ["line 3", "expected a JSON object", "list"]),
    (['{"prompt": "2+2?", "chosen": "4"}'], ["line 1", 'missing field "rejected"']),
    ([GOOD, "", '{"prompt": "2+2?", "chosen": " ", "rejected": "5"}'], ["line 3", '"chosen"', "empty"]),
    ([GOOD, '{"prompt": 4, "chosen": "4", "rejected": "5"}'], ["line 2", '"prompt"', "string", "int"]),
    (['{"prompt": "2+2?", "chosen": "4", "rejected": "5", "kind": null}'], ["line 1", '"kind"', "string"]),
    ([GOOD, GOOD, GOOD, '{"prompt": "2+2?", "chosen": "4", "rejected": " 4\\n"}'], ["line 4", "same text"]),
])
def test_bad_lines_are_named(tmp_path, lines, words):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as err:
        preferences.load_pairs_jsonl(path)
    message = str(err.value)
    assert message.startswith(f"{path} line ") and "\n" not in message
    assert all(w in message for w in words), message


@pytest.mark.parametrize("content, words", [(None, ["no such file"]), ("", ["empty"]), ("\n \n", ["empty"]),
                                            (b'{"prompt": "caf\xe9"}', ["line 1", "UTF-8"])])
def test_a_missing_empty_or_undecodable_file_is_one_clear_error(tmp_path, content, words):
    path = tmp_path / "pairs.jsonl"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    with pytest.raises(ValueError) as err:
        preferences.load_pairs_jsonl(path)
    assert str(path) in str(err.value) and all(w in str(err.value) for w in words), err.value


# ----------------------------------------------------------------------------------------------------
# The command line
def test_main_shows_every_kind_and_writes_what_make_pairs_makes(tmp_path, capsys):
    path = tmp_path / "out" / "pairs.jsonl"
    preferences.main(["--split", "test", "--per_family", "6", "--seed", "2", "--show", "3", "--jsonl", str(path)])
    out = capsys.readouterr().out
    assert all(f"\n{kind}\n" in "\n" + out for kind in KINDS)
    assert "102 pairs" in out and f"wrote 102 pairs to {path}" in out
    assert preferences.load_pairs_jsonl(path) == preferences.make_pairs("test", 6, 2)


def test_help_explains_the_kinds_and_flags(capsys):
    with pytest.raises(SystemExit) as err:
        preferences.main(["--help"])
    assert err.value.code == 0
    out = capsys.readouterr().out
    assert all(word in out for word in [*KINDS, "--show", "--split", "--per_family", "--seed", "--jsonl"])


@pytest.mark.parametrize("args, words", [(["--show", "-1"], ["--show"]), (["--per_family", "0"], ["--per_family"]),
                                         (["--split", "valid"], ["--split", "train"]), (["--bogus"], ["--bogus"]),
                                         (["--seed", "x"], ["--seed"])])
def test_bad_flags_are_one_line_errors(args, words, capsys):
    with pytest.raises(SystemExit) as err:
        preferences.main(args)
    line = one_line_exit(err, capsys)
    assert all(w in line for w in words), line


def test_an_unwritable_jsonl_path_is_a_one_line_error(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(SystemExit) as err:
        preferences.main(["--per_family", "1", "--show", "0", "--jsonl", str(blocker / "pairs.jsonl")])
    assert "cannot write" in one_line_exit(err, capsys)
