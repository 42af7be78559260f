"""7.4 Reward-model sanity checks (part7_reward/checks.py), run on fake scorers whose flaws are known by
construction: each check must pass a scorer that depends on the text alone and fail the flawed one. The
expected numbers are counted by hand from small tables of rewards.

Run: python -m pytest -q tests/part7/test_part7_checks.py
"""
from collections import namedtuple

import pytest
import torch
from partloader import load_part

checks = load_part("part7_reward", "checks")


Pair = namedtuple("Pair", "prompt chosen rejected kind family")  # stands in for the preference data's Pair


def table_scorer(table):
    """A text-only scorer: reward = table[response]; it also counts its calls."""
    def score(prompts, responses):
        score.calls += 1
        return torch.tensor([float(table[r]) for r in responses])
    score.calls = 0
    return score


def word_scorer(prompts, responses):
    """Text only, no table: distinct words of the response, minus a little per character."""
    return torch.tensor([len(set(r.split())) - 0.01 * len(r) for r in responses])


def position_scorer(prompts, responses):
    """Flawed: the reward depends on the row's position in its batch."""
    return word_scorer(prompts, responses) - torch.arange(len(responses), dtype=torch.float32)


def padding_scorer(prompts, responses):
    """Flawed like a reward read at T - 1 of a right-padded batch: it changes with the batch's longest row."""
    longest = max(len(r) for r in responses)
    return torch.tensor([len(set(r.split())) + 0.1 * (longest - len(r)) for r in responses])


# chosen answers of different lengths, so batches of different rows pad to different lengths
PAIRS = [Pair(f"q{i}", "good answer" + " more" * i, f"bad {i}", kind, "fam") for i, kind in
         enumerate(["wrong", "wrong", "verbose", "verbose", "verbose", "empty"])]


# ----------------------------------------------------------------------------------------------------
# Scoring and accuracy
def test_pair_rewards_in_any_batch_size():
    table = {p.chosen: i for i, p in enumerate(PAIRS)} | {p.rejected: 10 + i for i, p in enumerate(PAIRS)}
    for batch_size, calls in ((1, 6), (4, 2), (64, 1)):
        score = table_scorer(table)
        rc, rr = checks.pair_rewards(PAIRS, score, batch_size=batch_size)
        assert rc.tolist() == [0, 1, 2, 3, 4, 5] and rr.tolist() == [10, 11, 12, 13, 14, 15]
        assert score.calls == calls


def test_a_scorer_of_the_wrong_shape_is_a_one_line_error():
    with pytest.raises(ValueError, match="one reward per response") as e:
        checks.pair_rewards(PAIRS, lambda p, r: torch.zeros(len(r), 1))
    assert "\n" not in str(e.value)


def test_accuracy_by_kind_against_hand_counts():
    # wrong: 1 of 2 right; verbose: 2 of 3 (one tie counts as wrong); empty: 1 of 1 -> overall 4 of 6
    rc = torch.tensor([1.0, 0.0, 2.0, 2.0, 5.0, 1.0])
    rr = torch.tensor([0.0, 3.0, 1.0, 2.0, 4.0, -1.0])
    got = checks.accuracy_by_kind(PAIRS, rc, rr)
    assert got == pytest.approx({"overall": 4 / 6, "wrong": 1 / 2, "verbose": 2 / 3, "empty": 1.0})
    assert list(got)[0] == "overall"


# ----------------------------------------------------------------------------------------------------
# swap_invariance
def test_a_text_only_scorer_is_swap_invariant():
    got = checks.swap_invariance(PAIRS, word_scorer)
    assert got["passed"] and got["max_diff"] <= 1e-6
    assert got["swapped_accuracy_sum"] == pytest.approx(1.0)


@pytest.mark.parametrize("flawed", [position_scorer, padding_scorer], ids=["position", "padding"])
def test_a_batch_dependent_scorer_fails_swap_invariance(flawed):
    got = checks.swap_invariance(PAIRS, flawed)
    assert not got["passed"] and got["max_diff"] > 0.1


def test_swapped_accuracy_sum_reveals_a_side_bias():
    # the position scorer prefers whichever side is scored first: it "wins" both ways (or loses both)
    assert checks.swap_invariance(PAIRS, position_scorer)["swapped_accuracy_sum"] != pytest.approx(1.0)
    # ties lower the sum: a constant scorer is invariant, but scores 0 both ways
    got = checks.swap_invariance(PAIRS, lambda p, r: torch.zeros(len(r)))
    assert got["passed"] and got["swapped_accuracy_sum"] == 0.0


# ----------------------------------------------------------------------------------------------------
# length_bias
PROMPTS = [f"q{i}" for i in range(4)]
GOLDS = ["cats sleep a lot", "two", "blue sky", ""]


def test_a_length_loving_scorer_fails_and_a_length_penalizing_one_passes():
    loves = checks.length_bias(PROMPTS, GOLDS, lambda p, r: torch.tensor([float(len(x)) for x in r]),
                               checks.TEST_FILLERS)
    assert loves["share_higher"] == 1.0 and not loves["passed"] and loves["mean_change"] > 0
    hates = checks.length_bias(PROMPTS, GOLDS, lambda p, r: torch.tensor([-float(len(x)) for x in r]),
                               checks.TEST_FILLERS)
    assert hates["share_higher"] == 0.0 and hates["passed"] and hates["mean_change"] < 0


def test_length_bias_mean_change_by_hand():
    # one filler "ab": the text grows by "ab" plus a space (3 characters), or is just "ab" for the empty gold
    got = checks.length_bias(PROMPTS, GOLDS, lambda p, r: torch.tensor([float(len(x)) for x in r]), ("ab",))
    assert got["mean_change"] == pytest.approx((3 + 3 + 3 + 2) / 4)


def test_fillers_are_both_prepended_and_appended():
    golds = ["cats sleep a lot", "two", "blue sky", "red"]
    # rewards only a response that starts (ends) with the filler: half of the items go up
    for flag in (str.startswith, str.endswith):
        def score(prompts, responses, flag=flag):
            return torch.tensor([float(flag(x, "ab")) for x in responses])
        assert checks.length_bias(PROMPTS, golds, score, ("ab",))["share_higher"] == 0.5
    seen = []
    checks.length_bias(PROMPTS, golds, lambda p, r: seen.extend(r) or torch.zeros(len(r)), ("ab", "cd"))
    assert seen[4:] == ["ab cats sleep a lot", "two ab", "cd blue sky", "red cd"]


@pytest.mark.parametrize("n, passed", [(10, True), (9, False)])
def test_length_bias_threshold_is_ten_percent(n, passed):
    # loves length on prompt q0 only: 1 of n items goes up
    def score(prompts, responses):
        return torch.tensor([(1.0 if p == "q0" else -1.0) * len(r) for p, r in zip(prompts, responses)])
    got = checks.length_bias([f"q{i}" for i in range(n)], ["some answer"] * n, score, checks.TEST_FILLERS)
    assert got["share_higher"] == pytest.approx(1 / n) and got["passed"] is passed



# ----------------------------------------------------------------------------------------------------
# degenerate_outputs
def test_degenerate_outputs_pass_and_fail():
    # the empty gold "" ties with the empty answer (0) and scores below "the" x 12: 2 of 3 is not 90%
    assert checks.degenerate_outputs(PROMPTS[:3], GOLDS[1:], word_scorer) == {
        "empty_below_gold": 2 / 3, "repeated_below_gold": 2 / 3, "passed": False}
    golds = ["cats sleep a lot", "two words", "blue sky"]
    good = checks.degenerate_outputs(PROMPTS[:3], golds, word_scorer)
    assert good == {"empty_below_gold": 1.0, "repeated_below_gold": 1.0, "passed": True}
    loves_empty = checks.degenerate_outputs(PROMPTS[:3], golds, lambda p, r: torch.tensor([9.0 * (x == "") for x in r]))
    assert loves_empty["empty_below_gold"] == 0.0 and not loves_empty["passed"]


def test_degenerate_outputs_repeat_the_first_word_or_the():
    seen = []
    score = lambda p, r: seen.extend(r) or torch.tensor([float(len(set(x.split())) > 1) for x in r])  # noqa: E731
    got = checks.degenerate_outputs(["a", "b"], ["cats sleep", ""], score)
    assert "cats cats cats cats cats cats cats cats cats cats cats cats" in seen
    assert " ".join(["the"] * 12) in seen and "" in seen
    # prompt a: gold 1 > empty 0 and > repeated 0; prompt b: gold "" scores 0, not above either
    assert got == {"empty_below_gold": 0.5, "repeated_below_gold": 0.5, "passed": False}


# ----------------------------------------------------------------------------------------------------
# Plots
def assert_png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not path.with_name(path.name + ".tmp").exists()


def test_plots_write_png_files(tmp_path):
    g = torch.Generator().manual_seed(0)
    rc, rr = torch.randn(50, generator=g) + 1, torch.randn(50, generator=g)
    checks.plot_rewards(rc, rr, tmp_path / "rewards.png")
    assert_png(tmp_path / "rewards.png")
    checks.plot_margins({"wrong": rc[:20] - rr[:20], "verbose": rc[20:] - rr[20:], "one": torch.tensor([0.5])},
                        tmp_path / "sub" / "margins.png")
    assert_png(tmp_path / "sub" / "margins.png")


def test_a_failed_plot_write_leaves_the_old_file(tmp_path, monkeypatch):
    import matplotlib.figure
    path = tmp_path / "rewards.png"
    path.write_bytes(b"old")

    def half_then_fail(self, fname, **kwargs):
        with open(fname, "wb") as f:
            f.write(b"\x89PNG half")
        raise OSError("disk full")
    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        checks.plot_rewards(torch.ones(3), torch.zeros(3), path)
    assert path.read_bytes() == b"old" and list(tmp_path.iterdir()) == [path]
