"""Part 9 exercises (part9_reasoning/exercises.py): put your own solution there and run this file.

Each function is checked against an independent computation: the verified vote against hand-made samples
and a brute-force count whose step checker is written here (Python's own column arithmetic, no compliance.py),
compare_votes against a scripted model whose accuracies are counted by hand; the isqrt tool against math.isqrt
and r^2 <= n < (r + 1)^2, hostile calls refused fast with nothing executed, the registry as it was after the
block; the MLA latent against a search over every width, GPTConfig with model.kv_cache_numbers_per_token, and
the numbers the KV caches of a real MLA and MHA model hold.
Run: python -m pytest -q tests/part9/test_part9_exercises.py
"""
import math
import random
import time
from collections import Counter
from fractions import Fraction
from types import SimpleNamespace

import pytest
import torch
from partloader import exits_with_one_line, load_part

ex, tools, model, fmt, tasks, rt, rtrain, checkpoint, data = load_part(
    "part9_reasoning", "exercises", "tools", "model", "reasoning_format", "tasks", "reason_tasks", "reason_train",
    "checkpoint", "data")

THINK, THINK_END = fmt.THINK, fmt.THINK_END


# ----------------------------------------------------------------------------------------------------
# 9.A verifier-guided voting
def add_problem(a, b):
    """An add problem as reason_tasks writes it; only the gold FINAL answer of its response is ever read."""
    return tasks.Example("add", f"What is {a} + {b}?", f"{THINK}{THINK_END} {a + b}")


def cot(steps, final=None):
    """An answer's text as the model writes it: the scratchpad, then the final (None: no final answer)."""
    text = f"{THINK}{' '.join(steps)}{THINK_END}"
    return text if final is None else f"{text} {final}"


GOLD = ["7+8+0=15", "4+3+1=8"]               # 47 + 38 = 85
DROPPED_CARRY = ["7+8+0=15", "4+3+0=7"]      # the carry dropped: the steps say 75


def test_verified_vote_by_hand():
    problem = add_problem(47, 38)
    texts = [cot(DROPPED_CARRY, "75")] * 3 + [cot(GOLD, "85")] * 2
    assert ex.majority_vote([ex.final_or_none(t) for t in texts]) == "75"   # the slip has the majority
    assert ex.verified_vote(problem, texts) == "85"                         # only the gold traces vote
    assert ex.verified_vote(problem, texts[::-1]) == "85"


def test_only_complete_and_faithful_traces_vote():
    problem = add_problem(47, 38)
    not_verified = [cot(["7+8+0=15"], "85"),               # right final, a step missing
                    cot(GOLD + ["0+0+1=1"], "85"),         # right final, a step too many
                    cot(GOLD, "58"),                       # every step right, the final misread: not faithful
                    cot(["7+8+0=14", "4+3+1=8"], "84"),    # faithful to a wrong step
                    cot(["7+8=15", "4+3+1=8"], "85"),      # a step that does not read as x+y+c=s
                    "85"]                                  # no scratchpad at all
    for text in not_verified:  # one gold sample among them decides, however many they are
        assert ex.verified_vote(problem, [text] * 4 + [cot(GOLD, "85")]) == "85"
        assert ex.verified_vote(problem, [cot(GOLD, "85")] + [text] * 4) == "85"
    assert ex.verified_vote(problem, [not_verified[3]] * 2 + [not_verified[2]]) == "84"   # none passes: majority


def test_with_no_verified_sample_the_plain_majority_decides():
    problem = add_problem(999, 1)  # 1000: 9+1+0=10 9+0+1=10 9+0+1=10
    texts = [cot(["9+1+0=10"], "1000"), cot(["9+1+0=10", "9+0+0=9", "9+0+0=9"], "990"),
             cot(["9+1+0=10", "9+0+0=9", "9+0+0=9"], "990"), cot(["9+1+0=10"])]
    assert ex.verified_vote(problem, texts) == "990"
    assert ex.verified_vote(problem, texts[:1] + texts[3:]) == "1000"  # the no-final sample has no vote
    assert ex.verified_vote(problem, [cot(["9+1+0=10"])] * 3) is None
    assert ex.verified_vote(problem, []) is None
    gold = ["9+1+0=10", "9+0+1=10", "9+0+1=10"]
    assert ex.verified_vote(problem, texts + [cot(gold, "1000")]) == "1000"


def true_columns(a, b):
    """(x, y, carry, sum) of each column of a + b, right to left, by integer arithmetic."""
    columns, carry = [], 0
    for i in range(max(len(str(a)), len(str(b)))):
        x, y = a // 10 ** i % 10, b // 10 ** i % 10
        columns.append((x, y, carry, x + y + carry))
        carry = (x + y + carry) // 10
    return columns


def parse_step(step):
    left, equals, total = step.partition("=")
    parts = left.split("+") + [total]
    if not equals or len(parts) != 4 or not all(p.isascii() and p.isdigit() for p in parts):
        return None
    return tuple(int(p) for p in parts)


def passes(a, b, steps, final):
    """The brute force's own verifier: every column written, each right, nothing else, and the sum as final."""
    return [parse_step(s) for s in steps] == true_columns(a, b) and final == str(a + b)


def random_sample(rng, a, b):
    """(steps, final) of one sampled answer: the gold trace, or one of the slips a small model makes."""
    steps = [f"{x}+{y}+{c}={s}" for x, y, c, s in true_columns(a, b)]
    finals = [str(a + b), str(a + b + rng.choice([-100, -10, -1, 1, 10])), None]
    kind = rng.choice(["gold", "gold", "carry", "sum", "drop", "extra", "garble", "final"])
    i = rng.randrange(len(steps))
    x, y, c, s = true_columns(a, b)[i]
    if kind == "carry":
        steps[i] = f"{x}+{y}+{1 - c}={x + y + 1 - c}"
    elif kind == "sum":
        steps[i] = f"{x}+{y}+{c}={s + rng.choice([-1, 1]) if s else 1}"
    elif kind == "drop":
        del steps[i]
    elif kind == "extra":
        steps.append("0+0+0=0")
    elif kind == "garble":
        steps[i] = f"{x}+{y}={s}"
    if kind == "gold":
        return steps, rng.choice(finals[:1] * 4 + finals)
    return steps, rng.choice(finals)


def first_most_common(answers):
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def brute_force_vote(a, b, samples):
    verified = [final for steps, final in samples if passes(a, b, steps, final)]
    return first_most_common(verified) if verified else first_most_common([final for _, final in samples])


def test_verified_vote_matches_a_brute_force_count():
    rng = random.Random(0)
    kinds = Counter()
    for _ in range(400):
        a, b = rng.randint(1, 9999), rng.randint(1, 999)
        samples = [random_sample(rng, a, b) for _ in range(rng.randint(1, 7))]
        expected = brute_force_vote(a, b, samples)
        got = ex.verified_vote(add_problem(a, b), [cot(steps, final) for steps, final in samples])
        assert got == expected, (a, b, samples)
        any_passes = any(passes(a, b, s, f) for s, f in samples)
        kinds[any_passes, expected == str(a + b)] += 1
        if any_passes:
            assert got == str(a + b)  # a fully checked trace is a proof: a verified vote is always right
    assert kinds[True, True] > 50 and kinds[False, True] > 10 and kinds[False, False] > 50  # both branches ran


class ScriptedAnswers:
    """Stands in for evaluate.generate_answers: each prompt's samples, in turn; records every call."""

    def __init__(self, script):
        self.script, self.calls, self.given = script, [], Counter()

    def __call__(self, model, tok, prompts, batch_size=64, max_new_tokens=32, temperature=0.0, generator=None):
        self.calls.append(dict(prompts=list(prompts), max_new_tokens=max_new_tokens, temperature=temperature,
                               generator=generator))
        texts = []
        for p in prompts:
            texts.append(self.script[p][self.given[p]])
            self.given[p] += 1
        return texts


def test_compare_votes_counted_by_hand(monkeypatch):
    problems = [add_problem(47, 38), add_problem(12, 34), add_problem(999, 1)]
    script = {
        problems[0].prompt: [cot(DROPPED_CARRY, "75"), cot(DROPPED_CARRY, "75"), cot(GOLD, "85")],
        problems[1].prompt: [cot(["2+4+0=6", "1+3+0=4"], "46")] * 2 + [cot(["2+4+0=5", "1+3+0=4"], "45")],
        problems[2].prompt: [cot(["9+1+0=10"], "1000"), cot(["9+1+0=10", "9+0+0=9", "9+0+0=9"], "990"),
                             cot(["9+1+0=10", "9+0+0=9", "9+0+0=9"], "990")],
    }
    fake = ScriptedAnswers(script)
    monkeypatch.setattr(ex, "generate_answers", fake)
    tok = rtrain.reasoning_tokenizer()
    stand_in = SimpleNamespace(config=SimpleNamespace(block_size=96))
    generator = torch.Generator().manual_seed(3)
    got = ex.compare_votes(stand_in, tok, problems, 3, 0.7, generator)
    #                     first sample right   majority right      verified right
    # 47 + 38             no (75)              no (75 x 2)         yes (the one gold trace)
    # 12 + 34             yes                  yes                 yes (two gold traces)
    # 999 + 1             yes (final only)     no (990 x 2)        no (none passes: majority, 990)
    expected = {"single": 2 / 3, "majority": 1 / 3, "verified": 2 / 3, "any": 1.0,
                "passed": (1 / 3 + 2 / 3 + 0) / 3, "none_passed": 1 / 3}
    assert got == pytest.approx(expected)
    (call,) = fake.calls  # one batch of every sample
    assert call["prompts"] == [p.prompt for p in problems for _ in range(3)]
    assert call["temperature"] == 0.7 and call["generator"] is generator
    longest = max(len(ex.encode_prompt(tok, p.prompt)) for p in problems)
    assert call["max_new_tokens"] == 96 - longest


def test_compare_votes_refuses_no_samples():
    with pytest.raises(ValueError):
        ex.compare_votes(None, None, [add_problem(1, 2)], 0, 0.5, None)
    with pytest.raises(ValueError):
        ex.compare_votes(None, None, [], 3, 0.5, None)


@pytest.fixture(scope="module")
def tiny_cot_model():
    """A random GPT with the reasoning tokenizer: room for an add prompt and a short answer."""
    tok = rtrain.reasoning_tokenizer()
    torch.manual_seed(0)
    gpt = rtrain.new_model(tok, n_layer=1, n_embd=32, n_head=2, block_size=48).eval()
    return gpt, tok


def test_compare_votes_with_a_real_tiny_model(tiny_cot_model):
    gpt, tok = tiny_cot_model
    problems = rt.make_examples(["add"], "cot", "test", 3, 0)
    got = ex.compare_votes(gpt, tok, problems, 2, 1.0, torch.Generator().manual_seed(0))
    assert set(got) == {"single", "majority", "verified", "any", "passed", "none_passed"}
    assert all(0 <= v <= 1 for v in got.values())
    assert got["any"] >= max(got["single"], got["majority"], got["verified"])
    assert got == ex.compare_votes(gpt, tok, problems, 2, 1.0, torch.Generator().manual_seed(0))  # same seed


# ----------------------------------------------------------------------------------------------------
# 9.B a third tool
def test_isqrt_by_hand():
    with ex.with_isqrt(tools):
        assert tools.run_call("isqrt(1000000)") == "1000"
        assert tools.run_call("isqrt(99)") == "9" and tools.run_call("isqrt(100)") == "10"
        assert tools.run_call("isqrt(0)") == "0" and tools.run_call("isqrt(1)") == "1"
        assert tools.run_call("isqrt(2*500)") == "31" and tools.run_call("isqrt(8/2)") == "2"  # values, exactly
        assert tools.run_call("isqrt(4.0)") == "2" and tools.run_call("isqrt( 16 )") == "4"
        assert tools.run_call("isqrt(10**30-1)") == "999999999999999"  # float sqrt would say 10**15
        assert tools.run_call("calc(6*7)") == "42" and tools.run_call("convert(2, km, m)") == "2000"
    assert ex.isqrt(Fraction(1000000)) == "1000"
    for bad in (Fraction(5, 2), Fraction(-4)):
        with pytest.raises(tools.ToolError):
            ex.isqrt(bad)


def test_isqrt_matches_math_isqrt_on_random_numbers():
    rng = random.Random(0)
    numbers = [rng.randrange(10 ** rng.randint(1, tools.MAX_DIGITS)) for _ in range(300)]
    roots = [rng.randrange(10 ** rng.randint(1, tools.MAX_DIGITS // 2)) for _ in range(100)]
    numbers += [r * r for r in roots] + [r * r - 1 for r in roots if r] + [10 ** tools.MAX_DIGITS - 1]
    with ex.with_isqrt(tools):
        for n in numbers:
            got = tools.run_call(f"isqrt({n})")
            assert got == str(math.isqrt(n)), n
            r = int(got)
            assert r * r <= n < (r + 1) * (r + 1)  # the definition, without math.isqrt


REFUSED = [  # (call, a word of the error)
    ("isqrt(-4)", ">= 0"),
    ("isqrt(-1/4)", "whole"),
    ("isqrt(2.5)", "whole"),
    ("isqrt(10/4)", "whole"),
    ("isqrt(1, 2)", "argument"),
    ("isqrt()", "argument"),
    ("isqrt(n=4)", "keyword"),
    ("isqrt(x)", "name"),
    ("isqrt('16')", "str"),
    ("isqrt(__import__('os'))", "Call"),
    ("isqrt(isqrt(16))", "Call"),
    ("isqrt(9**9**9)", "exponent"),
    ("isqrt(" + "9" * (tools.MAX_DIGITS + 1) + ")", "digits"),
    ("isqrt(10**100*10)", "digits"),
    ("math.isqrt(16)", "Attribute"),
    ("isqrt(16).real", "not a tool call"),
    ("isqrt(16)\nisqrt(4)", "control"),
]


@pytest.mark.parametrize("call, word", REFUSED, ids=[c[:30] for c, _ in REFUSED])
def test_bad_and_hostile_calls_are_refused_fast_in_one_line(call, word):
    with ex.with_isqrt(tools):
        start = time.perf_counter()
        result = tools.run_call(call)
        assert time.perf_counter() - start < 0.5
    assert result.startswith("error: ") and word in result and "\n" not in result, result


SENTINELS = [  # each string, if executed, creates the file {path}
    "__import__('os').system('touch {path}')",
    "open('{path}','w')",
    "(lambda: open('{path}','w'))()",
    "[open('{path}','w') for _ in (1,)]",
]


@pytest.mark.parametrize("template", SENTINELS, ids=[f"s{i}" for i in range(len(SENTINELS))])
def test_hostile_code_in_the_argument_is_never_executed(tmp_path, template):
    path = tmp_path / "x"
    with ex.with_isqrt(tools):
        result = tools.run_call(f"isqrt({template.format(path=path)})")
    assert result.startswith("error: ") and not path.exists()


def test_the_registry_is_as_before_after_the_block():
    before = tools.TOOLS
    names = list(before)
    assert "isqrt" not in before
    with ex.with_isqrt(tools) as registry:
        assert tools.TOOLS is registry and list(registry) == names + ["isqrt"]
        assert registry["isqrt"].params == ("number",)
        assert "isqrt" in tools.run_call("sqrt(4)")  # the unknown-tool error lists it
    assert tools.TOOLS is before and list(before) == names  # put back, and never changed
    assert tools.run_call("isqrt(4)").startswith("error: unknown tool 'isqrt'")
    with pytest.raises(RuntimeError):
        with ex.with_isqrt(tools):
            raise RuntimeError("a failure inside the block")
    assert tools.TOOLS is before
    with ex.with_isqrt():  # by default the chapter's own tools module
        assert ex.tools.run_call("isqrt(49)") == "7"
    assert "isqrt" not in ex.tools.TOOLS


# ----------------------------------------------------------------------------------------------------
# 9.C a cache budget for MLA
def brute_force_latent(n_embd, rope_dim, fraction, multiple):
    """The largest allowed width by trying every one; None when none fits."""
    fits = [d for d in range(1, 2 * n_embd + 1)
            if d % multiple == 0 and d >= rope_dim and d + rope_dim <= fraction * 2 * n_embd]
    return max(fits, default=None)


def test_largest_latent_by_hand():
    # width 128: MHA keeps 2 * 128 = 256 numbers per token and layer; a quarter is 64; the rope key takes 16
    assert ex.largest_latent(128, 16, 0.25) == 48
    assert ex.largest_latent(128, 16, 0.5) == 112    # 128 - 16
    assert ex.largest_latent(128, 16, 1 / 8) == 16   # 32 - 16: the smallest the model allows (>= rope_dim)
    assert ex.largest_latent(128, 16, 0.3) == 56     # floor(76.8) - 16 = 60, down to a multiple of 8
    assert ex.largest_latent(768, 32, 1 / 8) == 160  # 192 - 32
    assert ex.largest_latent(128, 16, 0.25, multiple=2) == 48 and ex.largest_latent(128, 16, 0.3, multiple=2) == 60
    with pytest.raises(ValueError, match="no latent fits"):
        ex.largest_latent(128, 16, 1 / 16)           # 16 - 16 = 0 left
    with pytest.raises(ValueError, match="no latent fits"):
        ex.largest_latent(128, 32, 0.2)              # floor(51.2) - 32 = 19 -> 16, narrower than the rope key


@pytest.mark.parametrize("multiple", [2, 8, 16])
def test_largest_latent_matches_a_search_over_every_width(multiple):
    rng = random.Random(multiple)
    fractions = [1, 0.5, 0.25, 0.125, 1 / 16, 3 / 8, 0.3, 0.1, 0.05] + [rng.uniform(0.01, 1) for _ in range(6)]
    checked = 0
    for n_embd in (16, 64, 96, 128, 200, 768):
        for rope_dim in (0, 2, 8, 16, 32, 64):
            for fraction in fractions:
                expected = brute_force_latent(n_embd, rope_dim, fraction, multiple)
                if expected is None:
                    with pytest.raises(ValueError):
                        ex.largest_latent(n_embd, rope_dim, fraction, multiple)
                else:
                    assert ex.largest_latent(n_embd, rope_dim, fraction, multiple) == expected, \
                        (n_embd, rope_dim, fraction)
                    checked += 1
    assert checked > 200


@pytest.mark.parametrize("args", [(0, 16, 0.25), (128, -2, 0.25), (128, 16, 0), (128, 16, 1.5),
                                  (128, 16, float("nan")), (128, 16, -0.25), (128, 16, 0.25, 0), (128, 16, 0.25, 3)])
def test_bad_inputs_are_refused(args):
    with pytest.raises(ValueError):
        ex.largest_latent(*args)


@pytest.mark.skipif(not hasattr(model, "kv_cache_numbers_per_token"),
                    reason="model.py has no kv_cache_numbers_per_token (MLA) yet")
@pytest.mark.parametrize("n_embd, n_head, rope_dim, fraction", [
    (128, 4, 16, 0.25), (128, 4, 16, 0.5), (128, 4, 8, 1 / 8), (256, 8, 16, 0.2), (768, 12, 32, 1 / 8),
    (768, 12, 32, 1 / 16), (512, 8, 32, 0.3)])
def test_the_models_own_count_agrees(n_embd, n_head, rope_dim, fraction):
    """GPTConfig accepts the latent, and model.kv_cache_numbers_per_token puts it within the fraction of
    MHA's cache, while the next multiple of 8 would not be."""
    latent = ex.largest_latent(n_embd, rope_dim, fraction)

    def share(kv_latent):
        mla = model.GPTConfig(n_embd=n_embd, n_head=n_head, n_layer=3, attention="mla", kv_latent=kv_latent,
                              rope_dim=rope_dim)
        mha = model.GPTConfig(n_embd=n_embd, n_head=n_head, n_layer=3)
        return model.kv_cache_numbers_per_token(mla) / model.kv_cache_numbers_per_token(mha)

    assert share(latent) <= fraction < share(latent + 8)


@pytest.mark.skipif(not hasattr(model, "LatentAttention"), reason="model.py has no MLA (attention='mla') yet")
def test_what_real_caches_hold():
    """A 2-layer MLA model sized by largest_latent and its MHA twin decode the same tokens: the numbers their
    KV caches hold per token and layer are rope_dim + d_c and 2 * n_embd, within the fraction."""
    n_embd, n_head, rope_dim, fraction = 64, 4, 8, 0.25
    latent = ex.largest_latent(n_embd, rope_dim, fraction)            # 32 - 8 = 24
    assert latent == 24
    held = {}
    for name, flags in (("mla", dict(attention="mla", kv_latent=latent, rope_dim=rope_dim)), ("mha", {})):
        torch.manual_seed(0)
        gpt = model.GPT(model.GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=n_head, n_embd=n_embd,
                                        **flags)).eval()
        cache = gpt.new_cache()
        tokens = torch.randint(0, 32, (3, 10), generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            gpt(tokens[:, :6], cache=cache)
            for t in range(6, 10):
                gpt(tokens[:, t:t + 1], cache=cache)
        held[name] = sum(c.k.numel() + c.v.numel() for c in cache) / (2 * 3 * 10)  # per layer and token
    assert held == {"mla": rope_dim + latent, "mha": 2 * n_embd}
    assert held["mla"] / held["mha"] <= fraction


# ----------------------------------------------------------------------------------------------------
# The figures: main on a tiny checkpoint
@pytest.fixture
def tiny_checkpoint(tmp_path, tiny_cot_model):
    gpt, tok = tiny_cot_model
    path = str(tmp_path / "best.pt")
    checkpoint.save_checkpoint(path, gpt, gpt.config, step=0, val_loss=1.0,
                               extra={"tokenizer": data.tokenizer_to_dict(tok)})
    return path


def test_main_prints_every_figure(tiny_checkpoint, capsys):
    ex.main(["--checkpoint", tiny_checkpoint, "--problems", "2", "--samples", "2"])
    out = capsys.readouterr().out
    for line in ("9.A 2 held-out additions, 2 samples each at temperature 0.5", "majority of 2",
                 "verified vote of 2", "pass@2", "samples whose steps check out",
                 "9.B", "isqrt(1000000)               -> 1000", "isqrt(-4)", "-> error: unknown tool 'isqrt'",
                 "9.C", "  48 (25.0%)", "none fits"):
        assert line in out, line
    assert "isqrt" not in tools.TOOLS


def test_a_missing_checkpoint_is_one_line_naming_the_fix(tmp_path, capsys):
    exits_with_one_line(capsys, lambda: ex.main(["--checkpoint", str(tmp_path / "none.pt")]),
                        "python part9_reasoning/train.py")


@pytest.mark.parametrize("flags, word", [(["--problems", "0"], "--problems"), (["--samples", "-1"], "--samples"),
                                         (["--temperature", "0"], "--temperature"),
                                         (["--temperature", "nan"], "--temperature")])
def test_bad_flags_are_one_line(flags, word, capsys):
    exits_with_one_line(capsys, lambda: ex.parse_args(flags), word)
