"""9.3 Tool use: a calculator and a unit converter the model can call, and the runtime that runs its calls.

The model writes a call, the runtime runs it and writes the result back into the answer, the model goes on:

    <|user|>What is 48213 * 9921?<|end|><|assistant|>                 (the prompt)
     <|call|>calc(48213*9921)<|/call|>                                (the model writes, stops at <|/call|>)
    <|result|>478321173<|/result|>                                    (the runtime runs the call, appends this)
     478321173<|end|>                                                 (the model again, from the whole text)

generate_with_tools generates until a row writes <|/call|> (a stop token, like <|end|>), runs that row's call
(run_call), appends <|result|> + the result's text + <|/result|>, and gives the row back to the model with its
whole text so far as the new prompt. Only the runtime writes the <|result|> id (reasoning_format.py), so a
result in an answer is always one the tool really computed.

The call is text a model wrote: treat it as hostile. It is never given to eval or exec (a sampled
"__import__('os').system(...)" would run). Instead Python's parser turns it into a tree (ast.parse, which builds
the tree and runs nothing), and a walker evaluates only a WHITELIST of node kinds: numbers, + - * / // % **,
unary + and -, and a call tool(arguments) whose name is in TOOLS. Anything else (a name, an attribute, a string,
a lambda, a comparison, ...) is refused with a ToolError naming it. Refusing what we do not know is safe by
construction; a blacklist ("no import, no __") would have to foresee every trick.

Allowed does not mean cheap: 9**9**9 is three numbers and two operators, and its value alone is 150 MB (a
billion bits), minutes to compute. So every cost has a limit, checked BEFORE the work it bounds (the constants
below): the length and characters of the text before parsing, the size of the tree before walking it, the digits
of every number the walker holds, the size of a power before computing it, and a deadline checked at every node.

Numbers are exact. The walker computes with fractions.Fraction, so 0.1 + 0.2 is 3/10 (not 0.30000000000000004)
and 1/3*3 is 1. A result is written as an integer when it is whole, otherwise as a decimal rounded to DECIMALS
places: calc(1/3) -> 0.333333, calc(10/4) -> 2.5 (format_number).

A failing call is not an exception in the runtime: run_call returns "error: <reason>" and that text is the
result the model sees, exactly like a tool's answer. A model (or a person) can read it and try again.

    run_call("calc(48213*9921)")          -> "478321173"
    run_call("convert(37, km, m)")        -> "37000"
    run_call("calc(__import__('os'))")    -> "error: Call is not allowed"

Try:  python -m pytest -q tests/part9/test_part9_tools.py
"""
import ast
import operator
import re
import time
from dataclasses import dataclass, field
from fractions import Fraction

import torch

from chat_format import chat_token_ids
from decode import generate_batch
from reasoning_format import reasoning_token_ids

# ----------------------------------------------------------------------------------------------------
# 9.3 Limits: each is checked before the work it bounds
MAX_CALL_CHARS = 200  # a call is one short line; longer text is a runaway generation, and parsing costs grow with it
MAX_NODES = 64        # tree nodes (operators included): about 20 numbers. Bounds the walk before it starts
MAX_DEPTH = 32        # tree depth: the walker recurses once per level, so "- - - ... 1" must stop here, not in Python
MAX_DIGITS = 100      # digits of any number the walker holds (numerator and denominator): one + - * / // % on two
#                       such numbers is a product of 100-digit integers at most, microseconds
MAX_EXPONENT = 1000   # |b| in a ** b: bounds the work of a power whose result turns out small (2 ** 300: 91 digits)
MAX_SECONDS = 0.1     # wall-clock deadline of one call, checked at every node: the last line if a limit above misses
DECIMALS = 6          # a result that is not whole is printed rounded to this many places

DECIMAL_LITERAL = re.compile(r"[0-9]+\.?[0-9]*|\.[0-9]+")  # 12, 1.5, 5., .5: no 0x10, 1e5, 1_000 or 1j


class ToolError(ValueError):
    """A call that is refused (not allowed, over a limit) or fails (division by zero, unknown unit)."""


# ----------------------------------------------------------------------------------------------------
# 9.3 From text to a checked tree
def check_text(text: str) -> None:
    """Refuse text before the parser sees it: too long, not ASCII, or with control characters.
    Why ASCII: Python's parser NFKC-normalizes identifiers, so a fullwidth "ｅｖａｌ" IS the name eval, and
    look-alikes ("саlс" in Cyrillic letters), invisible right-to-left marks or non-breaking spaces make a call
    that reads as one thing and parses as another. Plain ASCII digits and operators are all a calculator needs."""
    if not isinstance(text, str):
        raise ToolError(f"a call is text, got {type(text).__name__}")
    if len(text) > MAX_CALL_CHARS:
        raise ToolError(f"the call is too long ({len(text)} characters, at most {MAX_CALL_CHARS})")
    if not text.isascii():
        bad = next(c for c in text if not c.isascii())
        raise ToolError(f"only ASCII characters are allowed, got {bad!r}")
    if not text.isprintable():  # newline, tab, NUL: no place in one line of arithmetic; "1\n2" hides a second line
        raise ToolError("control characters (newline, tab, ...) are not allowed")


def parse_checked(text: str) -> ast.expr:
    """Text -> the body of its expression tree, after check_text, with the tree's size checked.
    The parser's own failures (bad syntax; MemoryError or RecursionError on deeply nested input, possible
    only if MAX_CALL_CHARS is raised) become a ToolError: a refusal, never a crash of the runtime."""
    check_text(text)
    try:
        tree = ast.parse(text.strip(" "), mode="eval")  # one expression: no statements, no "1; 2"
    except (SyntaxError, ValueError, MemoryError, RecursionError) as e:
        raise ToolError(f"cannot parse the call ({type(e).__name__})") from None  # the model has its text already
    check_size(tree)
    return tree.body


def check_size(tree: ast.AST) -> None:
    """At most MAX_NODES nodes and MAX_DEPTH levels. Walked with an explicit stack, not recursion, so even a
    tree far too deep is measured without hitting Python's recursion limit."""
    stack, nodes = [(tree, 1)], 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            raise ToolError(f"the expression has too many nodes (at most {MAX_NODES})")
        if depth > MAX_DEPTH:
            raise ToolError(f"the expression is nested too deep (at most {MAX_DEPTH} levels)")
        stack.extend((child, depth + 1) for child in ast.iter_child_nodes(node))


# ----------------------------------------------------------------------------------------------------
# 9.3 The arithmetic walker: exact fractions, a whitelist of node kinds
def digits(x: Fraction) -> int:
    """Decimal digits of the larger of numerator and denominator: digits(Fraction(-12345, 7)) -> 5."""
    return max(len(str(abs(x.numerator))), len(str(x.denominator)))


def check_digits(x: Fraction) -> Fraction:
    if digits(x) > MAX_DIGITS:
        raise ToolError(f"a number has more than {MAX_DIGITS} digits")
    return x


def check_power(base: Fraction, exponent: Fraction) -> None:
    """Refuse base ** exponent before computing it when it is not exact or certainly too big.
    A d-digit number to the e-th power has more than (d - 1) * e digits: refused when that exceeds
    MAX_DIGITS. What passes costs at most d * e <= MAX_DIGITS + MAX_EXPONENT digits, and the exact size is
    checked after. 10 ** 100000: exponent over the cap; 9 ** 9 ** 9 is 9 ** 387420489: the same."""
    if exponent.denominator != 1:
        raise ToolError("the exponent must be a whole number (2 ** 0.5 is not exact)")
    if abs(exponent) > MAX_EXPONENT:
        raise ToolError(f"the exponent is too big (at most {MAX_EXPONENT})")
    if (digits(base) - 1) * abs(exponent) > MAX_DIGITS:
        raise ToolError(f"the power would have more than {MAX_DIGITS} digits")


def power(base: Fraction, exponent: Fraction) -> Fraction:
    check_power(base, exponent)
    return base ** int(exponent)  # Fraction ** int stays exact; a negative exponent gives 1 / base ** -e


BINARY = {  # 9.3 the only binary operators; Fraction follows Python's rules (// floors, % takes the divisor's sign)
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: lambda a, b: Fraction(a // b), ast.Mod: operator.mod, ast.Pow: power,
}
UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


def number_literal(node: ast.Constant, text: str) -> Fraction:
    """A plain decimal number, read exactly from the text as written ("0.1" -> 1/10, not the float nearest).
    Refused: strings, bytes, True, None, and Python's other spellings of numbers (0x10, 1e5, 1_000, 1j)."""
    if type(node.value) not in (int, float):  # type(), not isinstance: True is an int to isinstance
        raise ToolError(f"a {type(node.value).__name__} constant is not allowed, only numbers")
    written = ast.get_source_segment(text, node)
    if not DECIMAL_LITERAL.fullmatch(written):
        raise ToolError(f"only plain decimal numbers are allowed, got {written!r}")
    return check_digits(Fraction(written))


def evaluate(node: ast.AST, text: str, deadline: float) -> Fraction:
    """The value of an arithmetic tree, or a ToolError naming the first node that is not allowed.
    text: the source (numbers are read from it); deadline: time.monotonic() past which the call is refused."""
    if time.monotonic() > deadline:
        raise ToolError(f"the call took longer than {MAX_SECONDS} s")
    if isinstance(node, ast.Constant):
        return number_literal(node, text)
    if isinstance(node, ast.UnaryOp) and type(node.op) in UNARY:
        return UNARY[type(node.op)](evaluate(node.operand, text, deadline))
    if isinstance(node, ast.BinOp) and type(node.op) in BINARY:
        left, right = evaluate(node.left, text, deadline), evaluate(node.right, text, deadline)
        try:
            return check_digits(BINARY[type(node.op)](left, right))
        except ZeroDivisionError:  # x / 0, x // 0, x % 0, 0 ** -1
            raise ToolError("division by zero") from None
    raise ToolError(f"{describe(node)} is not allowed")  # short: the model reads it, and it costs tokens


def describe(node: ast.AST) -> str:
    """What a refused node is, for the error: "the name 'eval'", "the operator BitXor", "Attribute"."""
    if isinstance(node, ast.Name):
        return f"the name {node.id!r}"
    if isinstance(node, (ast.BinOp, ast.UnaryOp)):
        return f"the operator {type(node.op).__name__}"
    return type(node).__name__


def safe_eval(expression: str) -> Fraction:
    """9.3 The calculator: an arithmetic expression (text) -> its exact value as a Fraction, or a ToolError.
    safe_eval("48213*9921") -> Fraction(478321173, 1); safe_eval("1/3") -> Fraction(1, 3).
    Nothing in the text is ever executed: it is parsed, checked against the limits, and walked."""
    body = parse_checked(expression)
    return evaluate(body, expression.strip(" "), time.monotonic() + MAX_SECONDS)


def format_number(x: Fraction) -> str:
    """A value as the tool writes it: whole -> an integer ("42", "-7"); otherwise a decimal rounded (half to even)
    to DECIMALS places, trailing zeros dropped: 1/4 -> "0.25", 2/3 -> "0.666667", 1/3000000 -> "0"."""
    scaled = round(Fraction(x) * 10 ** DECIMALS)  # an int: the value in millionths
    whole, part = divmod(abs(scaled), 10 ** DECIMALS)
    sign = "-" if scaled < 0 else ""
    if part == 0:
        return f"{sign}{whole}"
    return f"{sign}{whole}." + f"{part:0{DECIMALS}d}".rstrip("0")


# ----------------------------------------------------------------------------------------------------
# 9.3 The tools
UNITS = {  # 9.3 unit -> (dimension, size in the dimension's smallest unit): integers, so conversions are exact
    "km": ("length", 1_000_000), "m": ("length", 1000), "cm": ("length", 10), "mm": ("length", 1),
    "kg": ("mass", 1_000_000), "g": ("mass", 1000), "mg": ("mass", 1),
    "h": ("time", 3600), "min": ("time", 60), "s": ("time", 1),
    "l": ("volume", 1000), "ml": ("volume", 1),
}


def calc(value: Fraction) -> str:
    """calc(EXPR): the walker has already computed EXPR (parse_call); the tool only writes it down."""
    return format_number(value)


def unit_size(unit: str) -> tuple:
    if unit not in UNITS:
        raise ToolError(f"unknown unit {unit!r}")
    return UNITS[unit]


def convert(value, from_unit: str, to_unit: str) -> str:
    """value in from_unit -> the same quantity in to_unit, as text: convert(37, "km", "m") -> "37000".
    Both units must measure the same thing: km -> kg is a ToolError."""
    (dim_from, size_from), (dim_to, size_to) = unit_size(from_unit), unit_size(to_unit)
    if dim_from != dim_to:
        raise ToolError(f"cannot convert {from_unit} ({dim_from}) to {to_unit} ({dim_to})")
    value = check_digits(Fraction(value))
    return format_number(check_digits(value * size_from / size_to))


@dataclass(frozen=True)
class Tool:
    fn: callable  # takes the checked arguments, returns the result's text
    params: tuple  # the kind of each positional argument: "number" (an arithmetic expression) or "unit" (a name)


TOOLS = {  # 9.3 the registry: the only names a call may use
    "calc": Tool(calc, ("number",)),
    "convert": Tool(convert, ("number", "unit", "unit")),
}


# ----------------------------------------------------------------------------------------------------
# 9.3 Calls: text -> (tool, checked arguments) -> result text
def parse_call(text: str) -> tuple:
    """A call's text -> (name, args), the arguments checked and evaluated: parse_call("convert(2*3, h, s)")
    -> ("convert", (Fraction(6), "h", "s")). The same whitelist as safe_eval: the whole text must be ONE call
    tool(arg, ...), the tool a name in TOOLS, positional arguments only, each of the kind the tool declares.
    A unit name is allowed only where a tool declares a "unit"; everywhere else a name is refused."""
    body = parse_checked(text)
    if not isinstance(body, ast.Call):
        raise ToolError(f"not a tool call: expected {' or '.join(f'{name}(...)' for name in TOOLS)}")
    if not isinstance(body.func, ast.Name):
        raise ToolError(f"a call must be tool(arguments), got {describe(body.func)} as the tool")
    if body.func.id not in TOOLS:
        raise ToolError(f"unknown tool {body.func.id!r} (tools: {', '.join(TOOLS)})")
    if body.keywords:
        raise ToolError("keyword arguments are not allowed")
    params = TOOLS[body.func.id].params
    if len(body.args) != len(params):
        raise ToolError(f"{body.func.id} takes {len(params)} argument(s), got {len(body.args)}")
    deadline = time.monotonic() + MAX_SECONDS
    args = tuple(argument(node, kind, text.strip(" "), deadline) for node, kind in zip(body.args, params))
    return body.func.id, args


def argument(node: ast.AST, kind: str, text: str, deadline: float):
    """One argument: "number" -> the arithmetic walker's value; "unit" -> a bare name from UNITS."""
    if kind == "number":
        return evaluate(node, text, deadline)
    if not isinstance(node, ast.Name):
        raise ToolError(f"a unit must be a unit name such as km, got {describe(node)}")
    unit_size(node.id)
    return node.id


def run_call(text: str) -> str:
    """9.3 Run one call; return the result's text, or "error: <reason>". Never raises: whatever the model
    wrote, the runtime gets a result to show it (a refusal is an answer too)."""
    try:
        name, args = parse_call(text)
        return TOOLS[name].fn(*args)
    except ToolError as e:
        return f"error: {e}"
    except Exception as e:  # a case no limit foresaw: still an error result, never a crashed runtime
        return f"error: the call failed ({type(e).__name__})"


# ----------------------------------------------------------------------------------------------------
# 9.3 The runtime: generate, stop at <|/call|>, run the call, inject the result, continue
@dataclass
class ToolRun:
    """What generate_with_tools returns for one prompt."""
    ids: list = field(default_factory=list)    # new ids, the model's and the injected results; <|end|> last if done
    calls: list = field(default_factory=list)  # (call_text, result_text) of each call whose result was injected


def call_text(tok, ids: list, call_id: int, result_end_id: int) -> str:
    """The call that ids[-1] (a <|/call|>) closes: the text after the last <|call|>. A <|/call|> with no
    <|call|> since the last result gets the text since that result, which does not parse: an error result."""
    start = len(ids) - 1
    while start > 0 and ids[start - 1] not in (call_id, result_end_id):
        start -= 1
    return tok.decode(ids[start:-1])


def answer_call(run: ToolRun, tok, special: dict, room: int, max_calls: int) -> None:
    """Run the call that closes run.ids and append [<|result|>] + result + [<|/result|>], if the row has calls
    left (max_calls) and the result fits in its room. Otherwise append nothing: the row still ends at
    <|/call|>, and goes_on stops it there, unfinished (a model that keeps calling is stuck in a loop)."""
    if len(run.calls) >= max_calls:
        return
    text = call_text(tok, run.ids, special["call"], special["result_end"])
    result = run_call(text)  # any text: a number, or "error: ..." for a hostile or malformed call
    injected = [special["result"], *tok.encode(result), special["result_end"]]
    if len(injected) <= room:
        run.ids += injected
        run.calls.append((text, result))


def goes_on(run: ToolRun, limit: int, stop_here: tuple) -> bool:
    """A row continues unless it ended on a stop_here id (<|end|>, or a <|/call|> that got no result)
    or used up its limit of new tokens."""
    return run.ids[-1] not in stop_here and len(run.ids) < limit


@torch.no_grad()
def generate_with_tools(model, tok, prompts, max_new_tokens, temperature=0.0, generator=None, use_tools=True,
                        max_calls=4) -> list:
    """9.3 Answer a batch of prompts (token-id lists, already chat-formatted), running the model's tool calls.
    Returns one ToolRun per prompt: .ids (model ids and injected results), .calls [(call_text, result_text)].

    Each round continues every unfinished row in one batch (decode.generate_batch), each from its whole text so
    far, stopping at <|end|> or <|/call|>; a row that stopped on <|/call|> gets its result (answer_call) and goes
    to the next round. A row stops at <|end|>, at a call beyond max_calls (it ends at that <|/call|>, no result),
    or when it has max_new_tokens new tokens (model and results together) or fills block_size.
    use_tools=False: <|/call|> is not a stop and nothing is injected: the model must write any result itself."""
    special, end = reasoning_token_ids(tok), chat_token_ids(tok)["end"]
    stops = [special["call_end"], end] if use_tools else [end]
    limits = new_token_limits(model, prompts, max_new_tokens)
    runs = [ToolRun() for _ in prompts]
    active = list(range(len(prompts)))
    was_training = model.training
    model.eval()
    try:
        while active:
            texts = [prompts[b] + runs[b].ids for b in active]
            rooms = [limits[b] - len(runs[b].ids) for b in active]
            # one n for the batch: the biggest room, within what the longest row leaves of block_size
            n = min(max(rooms), model.config.block_size - max(map(len, texts)))
            outs = generate_batch(model, texts, n, stop_ids=stops, temperature=temperature, generator=generator)
            for b, out, room in zip(active, outs, rooms):
                runs[b].ids += out[:room]  # a row with less room than n is cut to its own
                if use_tools and runs[b].ids[-1] == special["call_end"]:
                    answer_call(runs[b], tok, special, limits[b] - len(runs[b].ids), max_calls)
            active = [b for b in active if goes_on(runs[b], limits[b], tuple(stops))]
    finally:
        model.train(was_training)  # leave the model as it was (a training loop may evaluate mid-run)
    return runs


def new_token_limits(model, prompts, max_new_tokens) -> list:
    """New tokens each row may get: max_new_tokens, capped so prompt + answer fit in block_size (decode's cache
    does not roll). A prompt that leaves no room is an error, not an empty answer."""
    block = model.config.block_size
    limits = [min(max_new_tokens, block - len(p)) for p in prompts]
    if not prompts or min(limits) < 1:
        raise ValueError(f"every prompt needs room for a new token: max_new_tokens must be >= 1 and each prompt "
                         f"shorter than block_size {block} (longest: {max(map(len, prompts), default=0)})")
    return limits
