"""9.3 Tool use: the safe evaluator refuses hostile calls without running them, computes exactly what Python's
integers compute, converts units by hand-checked factors; the runtime injects results, stops rows as documented,
and respects max_new_tokens and block_size (a scripted fake model, then a real tiny GPT)."""
import operator
import random
import subprocess
import sys
import time
from fractions import Fraction

import pytest
import torch
from partloader import load_part

tools, bpe, rf, chat_format, reason_tasks, model_mod = load_part(
    "part9_reasoning", "tools", "bpe", "reasoning_format", "chat_format", "reason_tasks", "model")


def balanced_sum(levels):
    """((1+1)+(1+1))...: 2**levels ones in a shallow tree (many nodes, little depth)."""
    return "1" if levels == 0 else f"({balanced_sum(levels - 1)}+{balanced_sum(levels - 1)})"


# ----------------------------------------------------------------------------------------------------
# Hostile input: (text, a word the refusal must name). Arithmetic-level: refused by safe_eval, by run_call
# inside calc(...), and by run_call as it is.
HOSTILE_EXPRESSIONS = [
    ("__import__('os').system('true')", "Call"),
    ("import os", "parse"),
    ("__import__", "'__import__'"),
    ("(1).__class__.__bases__", "Attribute"),
    ("(1).__class__.__bases__[0].__subclasses__()", "Call"),
    ("__builtins__", "'__builtins__'"),
    ("eval", "'eval'"),
    ("exec('1')", "Call"),
    ("open('x')", "Call"),
    ("getattr(1, 'real')", "Call"),
    ("lambda: 1", "Lambda"),
    ("[x for x in (1, 2)]", "ListComp"),
    ("sum(x for x in (1, 2))", "Call"),
    ("f'{1}'", "JoinedStr"),
    ("'1'", "str"),
    ("b'1'", "bytes"),
    ("(1, 2)[0]", "Subscript"),
    ("(x := 1)", "NamedExpr"),
    ("[*(1, 2)]", "List"),
    ("{1: 2}", "Dict"),
    ("1 < 2", "Compare"),
    ("1 and 2", "BoolOp"),
    ("1 if 1 else 2", "IfExp"),
    ("not 1", "Not"),
    ("~1", "Invert"),
    ("1 ^ 2", "BitXor"),
    ("1 << 100000", "LShift"),       # a huge number from one cheap-looking operator
    ("True", "bool"),
    ("None", "NoneType"),
    ("...", "ellipsis"),
    ("1j", "complex"),
    ("0x10", "decimal"),
    ("1e5", "decimal"),
    ("1_000", "decimal"),
    ("9**9**9", "exponent"),          # 9 ** 387420489: minutes and gigabytes if computed
    ("10**100000", "exponent"),
    ("2**10000", "exponent"),
    ("99**99", "digits"),             # passes the estimate, refused by its exact size (198 digits)
    ("(10**50)**3", "digits"),        # refused by the estimate: (51 - 1) * 3 > 100
    ("*".join(["9999999999"] * 12), "digits"),  # a multiplication chain: 120 digits
    ("1" * 150, "digits"),
    ("2**0.5", "whole"),
    ("1/0", "zero"),
    ("1//(2-2)", "zero"),
    ("5%0", "zero"),
    ("0**-1", "zero"),
    ("(" * 200 + "1" + ")" * 200, "long"),
    ("(" * 10000 + "1" + ")" * 10000, "long"),
    ("1+" * 5000 + "1", "long"),
    ("-" * 150 + "1", "deep"),
    (balanced_sum(5), "nodes"),
    ("１+１", "ASCII"),                # fullwidth digits
    ("ｅｖａｌ(1)", "ASCII"),           # fullwidth letters: NFKC makes this the name eval
    ("2²", "ASCII"),                  # a superscript
    ("1\u00a0+1", "ASCII"),           # a non-breaking space
    ("1+1\u200f", "ASCII"),           # a right-to-left mark
    ("\u202e1+1", "ASCII"),           # a right-to-left override
    ("1;2", "parse"),
    ("1\n2", "control"),
    ("1\x00", "control"),
]

# Call-level: refused by run_call (and by safe_eval, which allows no call at all)
HOSTILE_CALLS = [
    ("eval('1')", "unknown tool"),
    ("exec('1')", "unknown tool"),
    ("open('x')", "unknown tool"),
    ("getattr(calc, 'x')", "unknown tool"),
    ("__import__('os')", "unknown tool"),
    ("calculate(1)", "unknown tool"),
    ("саlс(1)", "ASCII"),              # Cyrillic а and с: reads as calc
    ("ｃａｌｃ(1)", "ASCII"),
    ("calc.__globals__", "not a tool call"),
    ("calc(1).real", "not a tool call"),
    ("calc(1) + calc(2)", "not a tool call"),
    ("[calc(1)]", "not a tool call"),
    ("calc(1)(2)", "tool(arguments)"),
    ("calc.__call__(1)", "tool(arguments)"),
    ("calc()", "takes 1"),
    ("calc(1, 2)", "takes 1"),
    ("convert(1, km)", "takes 3"),
    ("convert(1, km, m, s)", "takes 3"),
    ("calc(x=1)", "keyword"),
    ("calc(**{'x': 1})", "keyword"),
    ("calc(*[1])", "Starred"),
    ("calc(km)", "'km'"),              # a unit name where a number belongs
    ("calc(1 + km)", "'km'"),
    ("convert(km, m, 1)", "'km'"),
    ("convert(1, parsec, m)", "unknown unit"),
    ("convert(1, km, kg)", "cannot convert"),
    ("convert(1, h, l)", "cannot convert"),
    ("convert(1, 'km', 'm')", "unit name"),
    ("convert(1, km.real, m)", "unit name"),
    ("convert(1, __import__, m)", "unknown unit"),
    ("calc(convert(1, km, m))", "Call"),  # no nested tools
    ("calc(1);calc(2)", "parse"),
    ("calc(1)\ncalc(2)", "control"),
    ("calc(" + "1+" * 300 + "1)", "long"),
    ("", "parse"),
]


def refusal(call, text):
    """call(text) must refuse, and fast: the ToolError's text (safe_eval) or the "error: ..." result (run_call)."""
    start = time.perf_counter()
    try:
        out = call(text)
    except tools.ToolError as e:
        out = f"ToolError: {e}"
    assert time.perf_counter() - start < 0.5, "took too long: the work was done before the check"
    assert out.startswith(("ToolError: ", "error: ")), f"accepted: {out}"
    return out


def short_id(value):
    return repr(value)[:40] if isinstance(value, str) else None


@pytest.mark.parametrize("text, word", HOSTILE_EXPRESSIONS, ids=short_id)
def test_hostile_expressions_are_refused_fast(text, word):
    assert word in refusal(tools.safe_eval, text)
    wrapped = refusal(tools.run_call, f"calc({text})")
    assert wrapped.startswith("error: ") and word in wrapped, wrapped
    refusal(tools.run_call, text)


@pytest.mark.parametrize("text, word", HOSTILE_CALLS, ids=short_id)
def test_hostile_calls_are_refused_fast(text, word):
    result = refusal(tools.run_call, text)
    assert result.startswith("error: ") and word in result, result
    assert refusal(tools.safe_eval, text).startswith("ToolError: ")


# Sentinels: each string, if executed, creates the file {path}. Short ids keep tmp_path (and the call) short.
SENTINELS = [
    "__import__('os').system('touch {path}')",
    "open('{path}','w')",
    "__import__('pathlib').Path('{path}').touch()",
    "(lambda: open('{path}','w'))()",
    "[open('{path}','w') for _ in (1,)]",
]


@pytest.mark.parametrize("template", SENTINELS, ids=[f"s{i}" for i in range(len(SENTINELS))])
@pytest.mark.parametrize("wrap", ["{}", "calc({})", "convert({}, km, m)", "convert(1, {}, m)"])
def test_hostile_code_is_never_executed(tmp_path, template, wrap):
    path = tmp_path / "x"
    text = wrap.format(template.format(path=path))
    assert len(text) <= tools.MAX_CALL_CHARS  # so it is the whitelist that refuses it, not the length limit
    assert tools.run_call(text).startswith("error: ")
    with pytest.raises(tools.ToolError):
        tools.safe_eval(text)
    assert not path.exists()


@pytest.mark.parametrize("template", SENTINELS, ids=[f"s{i}" for i in range(len(SENTINELS))])
def test_the_sentinels_would_fire_if_executed(tmp_path, template):
    """The control: each sentinel, given to Python's own eval in a separate process, does create its file.
    So the file's absence above means the text was not executed, not that the sentinel was broken."""
    path = tmp_path / "x"
    code = f"eval({template.format(path=path)!r})"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, timeout=30)
    assert path.exists()


def test_parser_failures_past_the_length_limit_are_tool_errors(monkeypatch):
    """With the length limit lifted, the parser itself fails on deep input (SyntaxError, MemoryError,
    RecursionError in CPython 3.11): still a ToolError, never a crash."""
    monkeypatch.setattr(tools, "MAX_CALL_CHARS", 10 ** 7)
    for text in ["(" * 10000 + "1" + ")" * 10000, "-" * 100000 + "1", "1+" * 100000 + "1"]:
        with pytest.raises(tools.ToolError):
            tools.safe_eval(text)
        assert tools.run_call(f"calc({text})").startswith("error: ")


def test_the_deadline_is_checked_while_walking(monkeypatch):
    monkeypatch.setattr(tools, "MAX_SECONDS", -1.0)  # already past: the first node must refuse
    with pytest.raises(tools.ToolError, match="longer"):
        tools.safe_eval("1+1")
    assert tools.run_call("calc(1+1)").startswith("error: ")


def test_run_call_never_raises_even_on_an_unforeseen_failure(monkeypatch):
    def broken(value):
        raise RuntimeError("bug")
    monkeypatch.setitem(tools.TOOLS, "calc", tools.Tool(broken, ("number",)))
    assert tools.run_call("calc(1)") == "error: the call failed (RuntimeError)"
    assert tools.run_call(None).startswith("error: ")


# ----------------------------------------------------------------------------------------------------
# Correctness against independent arithmetic
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul, "//": operator.floordiv, "%": operator.mod,
       "**": operator.pow}


def random_expression(rng, depth):
    """(text, value) of a random integer expression, fully parenthesized, computed with Python ints.
    value None: it divides by zero somewhere."""
    if depth == 0:
        n = rng.randint(-9999, 9999)
        return (f"({n})" if n < 0 else str(n)), n
    (lt, lv), (rt, rv) = random_expression(rng, depth - 1), random_expression(rng, depth - 1)
    op = rng.choice(list(OPS))
    if op == "**":  # a small exponent, so the value stays well inside MAX_DIGITS
        rv = rng.randint(0, 3)
        rt = str(rv)
    if lv is None or rv is None:
        return f"({lt}{op}{rt})", None
    if op in ("//", "%") and rv == 0:
        return f"({lt}{op}{rt})", None
    return f"({lt}{op}{rt})", OPS[op](lv, rv)


def test_random_integer_expressions_match_python_ints():
    rng = random.Random(0)
    checked = zero = 0
    for _ in range(400):
        text, value = random_expression(rng, rng.randint(1, 3))
        if value is None:
            with pytest.raises(tools.ToolError, match="zero"):
                tools.safe_eval(text)
            zero += 1
            continue
        if len(str(abs(value))) > tools.MAX_DIGITS:
            continue
        assert tools.safe_eval(text) == value, text
        assert tools.run_call(f"calc({text})") == str(value), text
        checked += 1
    assert checked > 300


@pytest.mark.parametrize("text, expected", [
    ("2+3*4", 14), ("7-2-1", 4), ("2**3**2", 512), ("-3**2", -9), ("(-3)**3", -27), ("-7//2", -4),
    ("-7%3", 2), ("7%-3", -2), ("2**-2", Fraction(1, 4)), ("+5", 5), ("--5", 5), ("0**0", 1),
    ("((((1))))", 1), ("1/3*3", 1), ("0.1+0.2", Fraction(3, 10)), ("1.5*2", 3), ("5.", 5), (".5", Fraction(1, 2)),
    ("7.5//2", 3), ("2**300", 2 ** 300),
])
def test_precedence_associativity_and_exact_decimals(text, expected):
    assert tools.safe_eval(text) == expected


@pytest.mark.parametrize("text, shown", [
    ("1/3", "0.333333"), ("2/3", "0.666667"), ("1/4", "0.25"), ("10/4", "2.5"), ("6/3", "2"), ("-7/2", "-3.5"),
    ("0.1+0.2", "0.3"), ("1/3000000", "0"), ("-1/3000000", "0"), ("1/7", "0.142857"), ("-2/3", "-0.666667"),
    ("1000000/3", "333333.333333"), ("48213*9921", str(48213 * 9921)), ("0-5", "-5"),
])
def test_results_are_written_as_integers_or_rounded_decimals(text, shown):
    assert tools.run_call(f"calc({text})") == shown
    assert tools.format_number(tools.safe_eval(text)) == shown


def test_the_power_estimate_is_not_too_strict():
    """Powers whose result fits are computed even when a naive digits(base) * exponent estimate would refuse."""
    assert tools.run_call("calc(2**300)") == str(2 ** 300)  # 91 digits; 1 digit * 300 = 300 > 100
    assert tools.run_call("calc(10**99)") == str(10 ** 99)  # 100 digits exactly: the limit is inclusive
    assert tools.run_call("calc(10**100)").startswith("error: ")  # 101 digits


@pytest.mark.parametrize("call, expected", [
    ("convert(37, km, m)", "37000"), ("convert(2, h, s)", "7200"), ("convert(90, min, h)", "1.5"),
    ("convert(1500, mg, g)", "1.5"), ("convert(250, ml, l)", "0.25"), ("convert(3, cm, mm)", "30"),
    ("convert(1, mm, km)", "0.000001"), ("convert(2.5, kg, g)", "2500"), ("convert(1, m, m)", "1"),
    ("convert(7, l, ml)", "7000"), ("convert(45, s, min)", "0.75"), ("convert(2*3, h, min)", "360"),
    ("convert(-2, km, cm)", "-200000"), ("convert(1, kg, mg)", "1000000"), ("convert(5, m, cm)", "500"),
])
def test_conversions_by_hand_worked_values(call, expected):
    assert tools.run_call(call) == expected


def test_convert_as_a_python_function():
    assert tools.convert(37, "km", "m") == "37000"
    with pytest.raises(tools.ToolError, match="cannot convert"):
        tools.convert(1, "km", "kg")
    with pytest.raises(tools.ToolError, match="unknown unit"):
        tools.convert(1, "mile", "km")


def test_parse_call_returns_the_checked_arguments():
    assert tools.parse_call("convert(2*3, h, s)") == ("convert", (6, "h", "s"))
    assert tools.parse_call("calc(6*7)") == ("calc", (42,))
    assert tools.parse_call(" calc(1) ") == ("calc", (1,))


def test_the_calls_of_the_reasoning_tasks_give_their_answers():
    """reason_tasks writes each tool-style problem with its call and computes the answer itself (a * b in
    Python, h * 3600): the tool must agree on every one."""
    for family in ("add", "mul", "hours"):
        for ex in reason_tasks.make_examples([family], "tool", "train", 50, seed=1):
            call = ex.response.split(rf.CALL)[1].split(rf.CALL_END)[0]
            assert tools.run_call(call) == reason_tasks.final_answer(ex), ex


# ----------------------------------------------------------------------------------------------------
# The runtime with a scripted fake model
@pytest.fixture(scope="module")
def tok():
    t = bpe.Tokenizer()
    rf.add_reasoning_tokens(t)
    return t


def tiny_gpt(tok, block_size=128):
    torch.manual_seed(0)
    return model_mod.GPT(model_mod.GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=1,
                                             n_head=2, n_embd=32))


class ScriptedModel:
    """Stands in for decode.generate_batch: each prompt's question picks a script, and the number of results
    already in the prompt picks the turn: script[question][k] is what the "model" writes after k results
    (a prompt already holding part of that turn, cut by a round's n, gets the rest of it).
    Cut as generate_batch cuts: after the first stop id, or at max_new_tokens. Records every batch."""

    def __init__(self, tok, script):
        self.tok, self.script, self.batches = tok, script, []
        self.result_id = rf.reasoning_token_ids(tok)["result"]
        self.turn_starts = (chat_format.chat_token_ids(tok)["assistant"], rf.reasoning_token_ids(tok)["result_end"])

    def __call__(self, model, prompts, max_new_tokens, stop_ids=(), temperature=0.0, generator=None):
        assert max(map(len, prompts)) + max_new_tokens <= model.config.block_size  # decode's cache would refuse
        self.batches.append({"prompts": [list(p) for p in prompts], "n": max_new_tokens, "stops": list(stop_ids)})
        return [self.continue_one(p, max_new_tokens, set(stop_ids)) for p in prompts]

    def continue_one(self, prompt, n, stops):
        question = self.tok.decode(prompt).split(chat_format.USER)[1].split(chat_format.END)[0]
        text = self.script[question][prompt.count(self.result_id)]
        written = len(prompt) - 1 - max(i for i, t in enumerate(prompt) if t in self.turn_starts)
        ids = self.tok.encode(text, allowed_special="all")[written:written + n]
        assert ids, "the runtime asked for more than the script holds (generate_batch always gives a token)"
        for i, t in enumerate(ids):
            if t in stops:
                return ids[:i + 1]
        return ids


def run_script(monkeypatch, tok, script, questions, max_new_tokens=100, block_size=128, **kw):
    fake = ScriptedModel(tok, script)
    monkeypatch.setattr(tools, "generate_batch", fake)
    prompts = [chat_format.encode_prompt(tok, q) for q in questions]
    runs = tools.generate_with_tools(tiny_gpt(tok, block_size), tok, prompts, max_new_tokens, **kw)
    return runs, fake, prompts


def test_one_call_gets_the_tools_result_and_the_answer_continues(monkeypatch, tok):
    script = {"What is 6 * 7?": ["<|call|>calc(6*7)<|/call|>", " 42<|end|>"]}
    (run,), fake, (prompt,) = run_script(monkeypatch, tok, script, ["What is 6 * 7?"])
    assert run.calls == [("calc(6*7)", tools.run_call("calc(6*7)"))] and run.calls[0][1] == "42"
    assert tok.decode(run.ids) == "<|call|>calc(6*7)<|/call|><|result|>42<|/result|> 42<|end|>"
    ids = rf.reasoning_token_ids(tok)
    # the tags are the special ids (one each), not the bytes of "<|result|>", and the result is 42's bytes
    i = run.ids.index(ids["result"])
    assert run.ids.count(ids["result"]) == 1 and run.ids[i + 1:i + 4] == [*b"42", ids["result_end"]]
    # round 2 was given the whole text so far: prompt + the call + the injected result
    assert [b["prompts"] for b in fake.batches] == [[prompt], [prompt + run.ids[:i + 4]]]
    assert fake.batches[0]["stops"] == [ids["call_end"], chat_format.chat_token_ids(tok)["end"]]


def test_rows_of_a_batch_stop_at_different_rounds(monkeypatch, tok):
    script = {
        "no call": [" 5<|end|>"],
        "one call": ["<|call|>calc(48213*9921)<|/call|>", " 478321173<|end|>"],
        "two calls": ["<|think|>km first<|/think|><|call|>convert(3, km, m)<|/call|>",
                      " then<|call|>calc(3000/8)<|/call|>", " 375<|end|>"],
    }
    runs, fake, prompts = run_script(monkeypatch, tok, script, list(script))
    texts = [tok.decode(r.ids) for r in runs]
    assert texts == [
        " 5<|end|>",
        f"<|call|>calc(48213*9921)<|/call|><|result|>{48213 * 9921}<|/result|> 478321173<|end|>",
        "<|think|>km first<|/think|><|call|>convert(3, km, m)<|/call|><|result|>3000<|/result|>"
        " then<|call|>calc(3000/8)<|/call|><|result|>375<|/result|> 375<|end|>",
    ]
    assert [len(r.calls) for r in runs] == [0, 1, 2]
    assert runs[2].calls == [("convert(3, km, m)", "3000"), ("calc(3000/8)", "375")]
    # the rows still going are resubmitted together: 3 rows, then 2 in one batch, then 1
    assert [len(b["prompts"]) for b in fake.batches] == [3, 2, 1]
    assert fake.batches[1]["prompts"][0][:len(prompts[1])] == prompts[1]


def test_max_calls_stops_a_row_that_keeps_calling(monkeypatch, tok):
    call_end = rf.reasoning_token_ids(tok)["call_end"]
    script = {"loop": ["<|call|>calc(1)<|/call|>"] * 10}
    (run,), fake, _ = run_script(monkeypatch, tok, script, ["loop"], max_calls=2)
    assert run.calls == [("calc(1)", "1")] * 2
    assert tok.decode(run.ids) == "<|call|>calc(1)<|/call|><|result|>1<|/result|>" * 2 + "<|call|>calc(1)<|/call|>"
    assert run.ids[-1] == call_end and len(fake.batches) == 3  # the third call gets no result: the row stops
    (run,), _, _ = run_script(monkeypatch, tok, script, ["loop"], max_calls=0)
    assert run.calls == [] and tok.decode(run.ids) == "<|call|>calc(1)<|/call|>"


def test_without_tools_nothing_is_injected(monkeypatch, tok):
    answer = "<|call|>calc(6*7)<|/call|><|result|>41<|/result|> 41<|end|>"  # the model's own (wrong) result
    script = {"What is 6 * 7?": [answer, "never used"]}
    (run,), fake, _ = run_script(monkeypatch, tok, script, ["What is 6 * 7?"], use_tools=False)
    assert tok.decode(run.ids) == answer and run.calls == []
    assert len(fake.batches) == 1 and fake.batches[0]["stops"] == [chat_format.chat_token_ids(tok)["end"]]


def test_a_hostile_or_malformed_call_from_the_model_gets_an_error_result(monkeypatch, tok, tmp_path):
    path = tmp_path / "x"
    script = {"evil": [f"<|call|>__import__('os').system('touch {path}')<|/call|>", " sorry<|end|>"],
              "junk": ["<|call|>hello world<|/call|>", " ?<|end|>"],
              "unopened": [" 42<|/call|>", " ?<|end|>"]}
    runs, _, _ = run_script(monkeypatch, tok, script, list(script), max_new_tokens=250, block_size=300)
    for run in runs:
        (call, result), = run.calls
        assert result.startswith("error: ") and result == tools.run_call(call)
        assert f"<|result|>{result}<|/result|> " in tok.decode(run.ids) and run.ids[-1] == tok.special_tokens["<|end|>"]
    assert runs[2].calls[0][0] == " 42"  # a <|/call|> with no <|call|>: the text since the answer began
    assert not path.exists()


def test_max_new_tokens_counts_model_and_result_tokens(monkeypatch, tok):
    call = "<|call|>calc(6*7)<|/call|>"  # 11 ids: 2 tags + 9 bytes
    script = {"q": [call, " the answer is 42<|end|>"], "long": ["x" * 500],
              "early": ["<|call|>calc(1)<|/call|>", "y" * 500]}  # 9 + 3 ids: more room left than q in round 2
    runs, fake, _ = run_script(monkeypatch, tok, script, ["q", "long", "early"], max_new_tokens=20)
    assert len(runs[1].ids) == 20 and runs[1].ids[-1] != tok.special_tokens["<|end|>"]
    # 11 model ids + 4 result ids, then 5 more: cut off, unfinished, though round 2 asked for 8 (early's room)
    assert tok.decode(runs[0].ids) == call + "<|result|>42<|/result|> the "
    assert fake.batches[1]["n"] == 8
    assert tok.decode(runs[2].ids) == "<|call|>calc(1)<|/call|><|result|>1<|/result|>" + "y" * 8
    # a result that does not fit is not injected: the row stops at its <|/call|>
    (run,), _, _ = run_script(monkeypatch, tok, {"q": script["q"]}, ["q"], max_new_tokens=13)
    assert tok.decode(run.ids) == call and run.calls == []


def test_prompt_and_answer_stay_within_block_size(monkeypatch, tok):
    """A long prompt next to a short one: the batch's n is capped by the long one, the short row goes on in
    the next round (the fake asserts prompt + n <= block_size on every batch, as decode's cache would)."""
    short, long_q = "s", "l" * 40
    script = {short: ["a" * 30 + "<|end|>"] * 3, long_q: ["b" * 30 + "<|end|>"] * 3}
    runs, fake, prompts = run_script(monkeypatch, tok, script, [short, long_q], max_new_tokens=50, block_size=56)
    assert tok.decode(runs[0].ids) == "a" * 30 + "<|end|>"
    assert len(prompts[1]) + len(runs[1].ids) == 56 and set(tok.decode(runs[1].ids)) == {"b"}
    assert len(fake.batches) == 2  # round 2: the short row alone, from where it was cut


def test_a_prompt_without_room_is_an_error(tok):
    model = tiny_gpt(tok, block_size=16)
    with pytest.raises(ValueError, match="block_size"):
        tools.generate_with_tools(model, tok, [list(range(16))], 10)
    with pytest.raises(ValueError, match="max_new_tokens"):
        tools.generate_with_tools(model, tok, [[1, 2]], 0)


# ----------------------------------------------------------------------------------------------------
# The runtime with a real (random) tiny GPT
def test_smoke_with_a_real_tiny_gpt(tok):
    model = tiny_gpt(tok, block_size=64)
    prompts = [chat_format.encode_prompt(tok, q) for q in ["What is 2 + 3?", "x" * 45, "hi"]]
    gen = torch.Generator().manual_seed(0)
    for use_tools in (True, False):
        runs = tools.generate_with_tools(model, tok, prompts, 30, temperature=1.0, generator=gen, use_tools=use_tools)
        for p, run in zip(prompts, runs):
            assert 1 <= len(run.ids) <= 30 and len(p) + len(run.ids) <= 64
            assert use_tools or run.calls == []
    assert model.training  # left as it was


def test_real_gpt_that_always_calls_gets_error_results_until_max_calls(tok):
    """A real model pushed (by a hook on its output layer) to write <|/call|> at every step: each empty call
    gets an error result through the real decode path, and the third call stops the row."""
    model = tiny_gpt(tok, block_size=128)
    call_end = rf.reasoning_token_ids(tok)["call_end"]
    model.lm_head.register_forward_hook(lambda m, inp, out: out.index_add(-1, torch.tensor([call_end]),
                                                                          torch.full((*out.shape[:-1], 1), 1e4)))
    prompt = chat_format.encode_prompt(tok, "go")
    (run,) = tools.generate_with_tools(model, tok, [prompt], 100, max_calls=2)
    assert [c for c, _ in run.calls] == ["", ""] and all(r.startswith("error: ") for _, r in run.calls)
    assert run.ids[-1] == call_end and run.ids.count(call_end) == 3
