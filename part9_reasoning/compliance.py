"""9.4 Evaluating reasoning compliance: is the answer right, and did the model do what its format asks?

Accuracy (reason_tasks.grade_final) says whether the final answer is right. It does not say WHY a wrong answer
is wrong, nor whether a right one was reached the way the model was taught. "Compliance" is everything else a
program can check in an answer: that it has the shape of its style, and that the work it shows is sound.

    What is 4729 + 3856?
    <|think|>9+6+0=15 2+5+1=8 7+8+0=15 4+3+1=8<|/think|> 8585

Every answer, in every style:
  - format     the tags of its style, complete and in order, and a final answer after them (format_ok).
               A model that forgets <|/think|> or writes no final answer fails here, whatever it knows.
  - extracted  the final answer is a number at all (extract_answer). Tells a cut-off or rambling answer
               (nothing to grade) from a wrong number (graded, and wrong).
  - accuracy   the final answer is the right number: the measure the others explain.

Scratchpad answers (cot), the process behind the answer (check_steps for add, check_sum_steps for sum):
  - step_valid      the share of the written steps that are right. add: each x+y+c=s takes its column's two
                    digits, the carry of the step before, and adds them correctly. sum: each t+n=s takes the
                    total the step before wrote and a number of the problem not used yet, and adds them
                    correctly. Process checking, as in Lightman et al. 2023, "Let's Verify Step by Step": it
                    finds WHICH step went wrong.
  - steps_complete  one right step per column (add) or per number after the first (sum), none missing or extra.
  - faithful        the final answer is what the model's OWN steps say, right or wrong.
                    Why apart from accuracy: a trace is only an explanation if the answer comes from it.
                    A model can reach the right answer with a wrong trace (it computed it some other way, or
                    errors cancelled: the trace then hides how it really answered), or write a right trace and
                    misread it (the answer does not use the work). Faithfulness asks "does the answer follow
                    from what it wrote?" (Lanham et al. 2023, "Measuring Faithfulness in Chain-of-Thought
                    Reasoning"); only then does reading the trace tell us how the model got its answer.

Tool answers (tool_checks), about the last call, the one the final answer rests on:
  - call_ok    the runtime runs the call (tools.run_call gives a result, not "error: ...").
  - args_ok    the call asks the problem's question: calc(A*B) for "What is A * B?", not a neighbour.
  - copied_ok  the final answer copies the call's result. A model that has the right result in front of it
               and still writes another number has not learned to use its tool.

compliance_report averages these over a test set (rates 0..1; None where a measure does not apply to the
style), compliance_table puts several models side by side.

Try:  python -m pytest -q tests/part9/test_part9_compliance.py
"""
import re

from reason_tasks import STYLES, answer_from_steps, grade_final
from reasoning_format import CALL, CALL_END, REASONING_TOKENS, RESULT, RESULT_END, THINK, THINK_END, split_answer
from tools import run_call

TAG = re.compile("|".join(re.escape(t) for t in REASONING_TOKENS))  # any of the six tags
CALL_SHAPE = re.compile(r"[A-Za-z_]\w*\(.*\)")  # name(arguments); what the arguments hold is the runtime's business
NUMBER = re.compile(r"-?[0-9]+")                # a final answer we can grade: digits, maybe a minus sign
STEP = re.compile(r"([0-9]+)\+([0-9]+)\+([0-9]+)=([0-9]+)")  # x+y+c=s, read loosely: validity is checked after
SUM_STEP = re.compile(r"([0-9]+)\+([0-9]+)=([0-9]+)")  # t+n=s, a running total plus one number
CALL_TEXT = re.compile(re.escape(CALL) + "(.*?)" + re.escape(CALL_END), re.DOTALL)
RESULT_TEXT = re.compile(re.escape(RESULT) + "(.*?)" + re.escape(RESULT_END), re.DOTALL)
TOOL_GROUP = [CALL, CALL_END, RESULT, RESULT_END]  # 9.3 one call and the result the runtime wrote for it
PROMPTS = {  # 9.4 each family's prompt (reason_tasks.make_*), to read the problem's numbers back
    "add": re.compile(r"What is ([0-9]+) \+ ([0-9]+)\?"),
    "sum": re.compile(r"What is ((?:[0-9]+ \+ )+[0-9]+)\?"),  # one group: the whole list, split on " + "
    "mul": re.compile(r"What is ([0-9]+) \* ([0-9]+)\?"),
    "hours": re.compile(r"How many seconds are in ([0-9]+) hours\?"),
}
# 9.4 every measure of a report, in table order, with its column heading
MEASURES = {"accuracy": "accuracy", "format": "format", "extracted": "extracted",
            "step_valid": "steps valid", "steps_complete": "steps complete", "faithful": "faithful",
            "call_ok": "call runs", "args_ok": "right args", "copied_ok": "result copied"}


# ----------------------------------------------------------------------------------------------------
# 9.4 Format: the tags of the style, in order, and what lies between them
def format_ok(text: str, style: str) -> bool:
    """Does the answer have the shape of its style? Two checks: the tags, in order; then the text between them.
        direct  no tag at all, then a final answer                  85
        cot     one thinking section first, no other tag, a final   <|think|>...<|/think|> 85
        tool    one or more call + result groups, then a final      <|call|>calc(6*7)<|/call|><|result|>42<|/result|> 42
    Whitespace around pieces is ignored (the decoded answer has a space before its final). An empty thinking
    section still has the right shape: the step checks are the ones that fail it."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r} (styles: {', '.join(STYLES)})")
    tags = TAG.findall(text)
    pieces = [p.strip() for p in TAG.split(text)]  # the text around the tags: len(tags) + 1 pieces
    if not pieces[-1]:  # after the last tag (or the whole answer): the final answer must be there
        return False
    if style == "direct":
        return not tags
    if style == "cot":
        return tags == [THINK, THINK_END] and pieces[0] == ""
    return tool_shape_ok(tags, pieces)


def tool_shape_ok(tags: list, pieces: list) -> bool:
    """9.3 The tags are k >= 1 whole groups <|call|> <|/call|> <|result|> <|/result|> (so none is stray,
    doubled, nested or unclosed); nothing stands before a call or between a call and its result; every
    call reads name(arguments). pieces[4j + 1] is call j, pieces[4j + 3] its result, pieces[-1] the final."""
    groups = len(tags) // 4
    if groups < 1 or tags != TOOL_GROUP * groups:
        return False
    before_calls, calls, before_results = pieces[0:-1:4], pieces[1::4], pieces[2::4]
    return (all(p == "" for p in before_calls + before_results) and
            all(CALL_SHAPE.fullmatch(call) for call in calls))


def extract_answer(text: str):
    """The final answer (what follows the last closing tag) when it is a number, else None: an answer cut off
    inside its thinking, an empty final or words ("85 apples") give nothing to grade.
        "<|think|>7+8+0=15 4+3+1=8<|/think|> 85" -> "85";  "<|think|>7+8+0=15 4+" -> None"""
    final = split_answer(text)[1]
    return final if NUMBER.fullmatch(final) else None


# ----------------------------------------------------------------------------------------------------
# 9.4 Step validity and faithfulness of a scratchpad (the add and sum families)
def operands(example) -> tuple:
    """The problem's numbers, read back from its prompt: "What is 4729 + 3856?" -> (4729, 3856)."""
    pattern = PROMPTS.get(example.family)
    match = pattern.fullmatch(example.prompt) if pattern else None
    if not match:
        raise ValueError(f"cannot read the numbers of {example.prompt!r} (family {example.family!r}; "
                         f"known: {', '.join(PROMPTS)})")
    return tuple(int(n) for group in match.groups() for n in group.split(" + "))


def columns(a: int, b: int) -> list:
    """The digit pairs of a + b, right to left, the shorter number padded with 0: (947, 85) -> [(7, 5), (4, 8), (9, 0)].
    No column for a final carry: the reader writes it in front of the answer (reason_tasks.answer_from_steps)."""
    da, db = str(a)[::-1], str(b)[::-1]
    width = max(len(da), len(db))
    return [(int(x), int(y)) for x, y in zip(da.ljust(width, "0"), db.ljust(width, "0"))]


def step_ok(match, column: tuple, carry: int) -> bool:
    """One step x+y+c=s is valid when x is this column's digit of A and y of B (the order of the gold traces,
    reason_tasks.add_steps), c is the carry coming in, and s = x + y + c. A step with a two-digit "digit"
    parses but cannot be valid."""
    x, y, c, s = (int(g) for g in match.groups())
    return (x, y) == column and c == carry and s == x + y + c


def check_steps(example, text: str) -> dict:
    """9.4 The scratchpad of an add answer (the whole answer's text) -> {"steps", "valid", "complete", "faithful"}.
    steps: the whitespace-separated steps written; valid: how many are right (step_ok); complete: one valid
    step per column, no more, no less; faithful: every step reads as x+y+c=s and the final answer is what they
    say (answer_from_steps), right or wrong.

    The carry a step should take in is the one the step BEFORE it wrote (s // 10 of that step), not the true
    carry: a slip costs one step, and the steps after it, right given what they read, stay valid. A step
    that does not parse hands on the carry the right step would have. All steps valid still means all right:
    the first takes carry 0, so each valid step hands the true carry to the next."""
    if example.family != "add":
        raise ValueError(f"step checks are for the add family, got {example.family!r}")
    cols = columns(*operands(example))
    trace, final = split_answer(text)
    steps = trace.split()
    matches = [STEP.fullmatch(step) for step in steps]
    valid, carry = 0, 0
    for i, match in enumerate(matches):
        valid += bool(match and i < len(cols) and step_ok(match, cols[i], carry))  # past the last column: extra
        if match:
            carry = int(match.group(4)) // 10
        elif i < len(cols):
            carry = (sum(cols[i]) + carry) // 10
    faithful = bool(steps) and all(matches) and final == answer_from_steps(steps)
    return {"steps": len(steps), "valid": valid, "complete": valid == len(steps) == len(cols), "faithful": faithful}


def take(numbers: list, n: int) -> bool:
    """Remove one n from numbers if it is there; True when it was."""
    if n in numbers:
        numbers.remove(n)
        return True
    return False


def check_sum_steps(example, text: str) -> dict:
    """9.4 The scratchpad of a sum answer -> {"steps", "valid", "complete", "faithful"}, like check_steps.
    A step t+n=s is valid when t is the total the step before wrote (the first step: a number of the problem),
    n is a number of the problem not used yet, and s = t + n. Any order is right: the gold traces use them
    all (reason_tasks.make_sum). As in check_steps, a slip costs one step: the next step is checked against
    the total the slip wrote (after a step that does not parse, the next total is taken on trust).
    faithful: every step reads as t+n=s and the final answer is the last total."""
    if example.family != "sum":
        raise ValueError(f"sum step checks are for the sum family, got {example.family!r}")
    left = list(operands(example))
    count = len(left)
    trace, final = split_answer(text)
    steps = trace.split()
    matches = [SUM_STEP.fullmatch(step) for step in steps]
    valid, total, trust = 0, None, False
    for match in matches:
        if not match:  # the step after it starts from a total we cannot check: taken on trust
            trust = total is not None
            continue
        t, n, s = (int(g) for g in match.groups())
        start_ok = take(left, t) if total is None else (trust or t == total)
        valid += bool(start_ok and take(left, n) and s == t + n)
        total, trust = s, False
    faithful = bool(steps) and all(matches) and final == str(total)
    return {"steps": len(steps), "valid": valid, "complete": valid == len(steps) == count - 1, "faithful": faithful}


STEP_CHECKS = {"add": check_steps, "sum": check_sum_steps}  # 9.4 the families whose cot answers show steps


# ----------------------------------------------------------------------------------------------------
# 9.4 Tool answers: the call runs, asks the problem's question, and its result is copied
def expected_calls(example) -> set:
    """The calls that ask the problem's question, spaces removed. + and * commute, so both orders count."""
    numbers = operands(example)
    if example.family == "hours":
        return {f"convert({numbers[0]},h,s)"}
    a, b = numbers
    op = "+" if example.family == "add" else "*"
    return {f"calc({a}{op}{b})", f"calc({b}{op}{a})"}


def tool_checks(example, text: str) -> dict:
    """9.4 A tool answer -> {"call_ok", "args_ok", "copied_ok"}, each about the LAST call (earlier ones may be
    retries; the final answer rests on the last). No call at all: all three False.
        call_ok    tools.run_call runs it without an error (the runtime's own parser and limits decide)
        args_ok    it is one of expected_calls, spaces aside: convert(37, h, s) for "... in 37 hours?"
        copied_ok  the final answer is the last result's text, exactly"""
    calls, results = CALL_TEXT.findall(text), RESULT_TEXT.findall(text)
    final = split_answer(text)[1]
    call = calls[-1].strip() if calls else None
    return {"call_ok": call is not None and not run_call(call).startswith("error:"),
            "args_ok": call is not None and "".join(call.split()) in expected_calls(example),
            "copied_ok": bool(results) and final != "" and final == results[-1].strip()}


# ----------------------------------------------------------------------------------------------------
# 9.4 A test set's report, and several models in one table
def answer_measures(example, text: str, style: str) -> dict:
    """Every measure that applies to one answer: True/False, or a fraction for step_valid.
    Steps are checked for cot answers of the families with a scratchpad (STEP_CHECKS); an answer with
    no steps counts as 0 valid (it was asked to show its work and did not)."""
    measures = {"accuracy": grade_final(example, text), "format": format_ok(text, style),
                "extracted": extract_answer(text) is not None}
    if style == "cot" and example.family in STEP_CHECKS:
        steps = STEP_CHECKS[example.family](example, text)
        measures.update(step_valid=steps["valid"] / steps["steps"] if steps["steps"] else 0.0,
                        steps_complete=steps["complete"], faithful=steps["faithful"])
    if style == "tool":
        measures.update(tool_checks(example, text))
    return measures


def compliance_report(examples, answers, style: str) -> dict:
    """9.4 examples (reason_tasks) and the model's answers (decoded text, <|end|> dropped) in `style` ->
    {"n": count, measure: mean over the answers it applies to (0..1), or None where it applies to none}."""
    if style not in STYLES:
        raise ValueError(f"unknown style {style!r} (styles: {', '.join(STYLES)})")
    if not examples or len(examples) != len(answers):
        raise ValueError(f"need one answer per example and at least one: {len(examples)} examples, "
                         f"{len(answers)} answers")
    rows = [answer_measures(ex, text, style) for ex, text in zip(examples, answers)]
    report = {"n": len(rows)}
    for name in MEASURES:
        values = [row[name] for row in rows if name in row]
        report[name] = sum(values) / len(values) if values else None
    return report


def percent(value) -> str:
    """A rate as a table cell: 0.8137 -> "81.4%"; None (does not apply) -> "—"."""
    return "—" if value is None else f"{value:.1%}"


def compliance_table(reports: dict) -> str:
    """9.4 {model name: compliance_report} -> a markdown table, one row per model, a column per measure.
    Other keys of a report (a self-consistency curve, examples) are left out."""
    header = "| model | n | " + " | ".join(MEASURES.values()) + " |"
    rule = "|---|" + "---:|" * (len(MEASURES) + 1)
    rows = [f"| {name} | {report['n']} | " + " | ".join(percent(report.get(m)) for m in MEASURES) + " |"
            for name, report in reports.items()]
    return "\n".join([header, rule, *rows])
