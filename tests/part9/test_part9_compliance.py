"""9.4 Compliance measures (part9_reasoning/compliance.py) on hand-written answers, every expected figure worked
by hand: column sums done on paper, each bad step named, each rate counted answer by answer. Then the report
over the gold answers of reason_tasks (every measure 100%) and over copies spoiled in counted ways.

Run: python -m pytest -q tests/part9/test_part9_compliance.py
"""
import pytest
from partloader import load_part

c, rt, tasks = load_part("part9_reasoning", "compliance", "reason_tasks", "tasks")
Example = tasks.Example

# 4729 + 3856 = 8585. Columns right to left: 9+6=15 (carry 1), 2+5+1=8, 7+8=15 (carry 1), 4+3+1=8
ADD = Example("add", "What is 4729 + 3856?", "")
GOLD_TRACE = "9+6+0=15 2+5+1=8 7+8+0=15 4+3+1=8"
# 947 + 85 = 1032: 7+5=12, 4+8+1=13, 9+0+1=10 (85 padded with a 0), the last carry written in front
SHORT = Example("add", "What is 947 + 85?", "")
# 48213 * 9921 = 482130000 - 48213 * 79 = 482130000 - 3808827 = 478321173; 37 h = 37 * 3600 s = 133200 s
MUL = Example("mul", "What is 48213 * 9921?", "478321173")
HOURS = Example("hours", "How many seconds are in 37 hours?", "133200")
MUL_GOLD = "<|call|>calc(48213*9921)<|/call|><|result|>478321173<|/result|> 478321173"
HOURS_GOLD = "<|call|>convert(37, h, s)<|/call|><|result|>133200<|/result|> 133200"


def cot(trace, final):
    return f"<|think|>{trace}<|/think|> {final}"


def steps(trace, final, example=ADD):
    return c.check_steps(example, cot(trace, final))


# ----------------------------------------------------------------------------------------------------
# Format
@pytest.mark.parametrize("text, ok", [
    ("8585", True),
    ("-12", True),                                   # the shape is fine; whether it is a number is extract's job
    ("", False),                                     # no final answer
    ("   ", False),
    ("<|think|>9+6+0=15<|/think|> 8585", False),     # a direct answer may not think
    ("8585<|/think|>", False),                       # a stray tag after the answer
    ("<|call|>calc(4729+3856)<|/call|><|result|>8585<|/result|> 8585", False),
])
def test_format_direct(text, ok):
    assert c.format_ok(text, "direct") is ok


@pytest.mark.parametrize("text, ok", [
    (cot(GOLD_TRACE, "8585"), True),
    ("<|think|>9+6+0=15<|/think|>8585", True),                       # no space before the final: still the shape
    ("<|think|><|/think|> 8585", True),                              # empty scratchpad: shape ok, steps fail it
    (cot(GOLD_TRACE, ""), False),                                    # empty final
    (f"<|think|>{GOLD_TRACE}", False),                               # unclosed (cut off)
    (f"<|think|>{GOLD_TRACE} 8585", False),                          # unclosed, answer inside
    (f"<|think|><|think|>{GOLD_TRACE}<|/think|> 8585", False),       # duplicated opening tag
    (f"<|think|>{GOLD_TRACE}<|/think|><|/think|> 8585", False),      # duplicated closing tag
    ("<|think|>9+6+0=15<|/think|><|think|>2+5+1=8<|/think|> 8585", False),   # two thinking sections
    (f"{GOLD_TRACE}<|/think|> 8585", False),                         # closed but never opened
    (f"8585 <|think|>{GOLD_TRACE}<|/think|> 8585", False),           # text before the scratchpad
    (f"<|think|>{GOLD_TRACE}<|/think|> 8585<|result|>", False),      # stray tag after the final
    ("<|think|>calc<|/think|><|call|>calc(1+2)<|/call|><|result|>3<|/result|> 3", False),  # a tool inside cot
    ("8585", False),                                                 # no scratchpad at all
])
def test_format_cot(text, ok):
    assert c.format_ok(text, "cot") is ok


@pytest.mark.parametrize("text, ok", [
    (MUL_GOLD, True),
    (HOURS_GOLD, True),
    ("<|call|>calc(1/0)<|/call|><|result|>error: division by zero<|/result|> "        # two groups: a retry
     "<|call|>calc(48213*9921)<|/call|><|result|>478321173<|/result|> 478321173", True),
    ("<|call|> calc((2+3)*4) <|/call|><|result|>20<|/result|> 20", True),  # spaces and inner brackets: a call
    ("<|call|>calc(48213*9921)<|/call|><|result|>478321173<|/result|>", False),        # empty final
    ("<|call|>calc(48213*9921)<|/call|> 478321173", False),                           # call with no result
    ("<|call|>calc(48213*9921)<|/call|><|result|>478321173 478321173", False),        # unclosed result
    ("<|call|>calc(48213*9921)<|result|>478321173<|/result|> 478321173", False),      # unclosed call
    ("<|result|>478321173<|/result|><|call|>calc(48213*9921)<|/call|> 478321173", False),  # out of order
    ("<|call|><|call|>calc(48213*9921)<|/call|><|/call|><|result|>478321173<|/result|> 478321173", False),
    ("<|call|>calc(48213*9921)<|/call|><|call|>calc(1*1)<|/call|><|result|>1<|/result|> 1", False),
    ("<|call|>calc(48213*9921)<|/call|> = <|result|>478321173<|/result|> 478321173", False),  # text in between
    ("So: <|call|>calc(48213*9921)<|/call|><|result|>478321173<|/result|> 478321173", False),  # text before
    ("<|call|>48213*9921<|/call|><|result|>478321173<|/result|> 478321173", False),   # not name(args)
    ("<|call|>calc 48213*9921<|/call|><|result|>478321173<|/result|> 478321173", False),
    ("<|call|><|/call|><|result|>0<|/result|> 0", False),                             # empty call
    ("<|think|>x<|/think|><|call|>calc(6*7)<|/call|><|result|>42<|/result|> 42", False),  # a scratchpad too
    ("478321173", False),                                                              # no call at all
])
def test_format_tool(text, ok):
    assert c.format_ok(text, "tool") is ok


def test_format_refuses_an_unknown_style():
    with pytest.raises(ValueError, match="style"):
        c.format_ok("85", "poem")


@pytest.mark.parametrize("text, expected", [
    ("85", "85"),
    ("-12", "-12"),
    (cot(GOLD_TRACE, "8585"), "8585"),
    (MUL_GOLD, "478321173"),
    (f"<|think|>{GOLD_TRACE}", None),                  # cut off inside the scratchpad
    ("<|think|>9+6+0=15 2+", None),
    ("<|call|>calc(48213*9921)<|/call|>", None),      # cut off after the call
    (cot(GOLD_TRACE, ""), None),                      # empty final
    ("", None),
    ("85 apples", None),
    ("8.5", None),
    ("+85", None),
    ("--1", None),
    ("8 5", None),
])
def test_extract_answer(text, expected):
    assert c.extract_answer(text) == expected


# ----------------------------------------------------------------------------------------------------
# Steps: validity, completeness, faithfulness (4729 + 3856 = 8585)
def test_a_perfect_trace():
    assert steps(GOLD_TRACE, "8585") == {"steps": 4, "valid": 4, "complete": True, "faithful": True}


def test_the_digits_go_in_the_order_of_the_question():
    # "What is 4729 + 3856?": A's digit first, as reason_tasks.add_steps writes it; the swapped step is the same
    # sum but not the trace the model was taught, and a reader could not tell which operand it read
    assert steps("9+6+0=15 2+5+1=8 7+8+0=15 4+3+1=8", "8585")["valid"] == 4
    assert steps("6+9+0=15 2+5+1=8 7+8+0=15 4+3+1=8", "8585")["valid"] == 3


def test_the_shorter_number_is_padded_and_the_last_carry_is_no_step():
    assert steps("7+5+0=12 4+8+1=13 9+0+1=10", "1032", SHORT) == {"steps": 3, "valid": 3, "complete": True,
                                                                  "faithful": True}
    # 9+1+1: a digit made up past the end of 85; "1+0+0=1": a column for the final carry, which is extra
    assert steps("7+5+0=12 4+8+1=13 9+1+1=11", "1132", SHORT)["valid"] == 2
    # ...though read off, 12 13 10 1 still say 1032: the answer follows from the steps (faithful), the format
    # asks for one step per column (not complete)
    assert steps("7+5+0=12 4+8+1=13 9+0+1=10 0+0+1=1", "1032", SHORT) == {"steps": 4, "valid": 3,
                                                                          "complete": False, "faithful": True}


@pytest.mark.parametrize("trace, final, valid", [
    # a wrong digit: column 2 takes 6 (from column 1) instead of 5; its sum 9 hands on carry 0, which column 3
    # takes correctly, so only that step is bad; read off, the steps say 15, 9, 15, 8 -> 8595
    ("9+6+0=15 2+6+1=9 7+8+0=15 4+3+1=8", "8595", 3),
    ("9+5+0=14 2+5+1=8 7+8+0=15 4+3+1=8", "8584", 3),   # column 1 takes 5 (from column 2) for 6
    # a wrong carry: column 2 forgets the 1 of 15 -> 2+5+0=7; the steps say 8575
    ("9+6+0=15 2+5+0=7 7+8+0=15 4+3+1=8", "8575", 3),
    # an arithmetic slip: 2+5+1 written as 9; the steps say 8595
    ("9+6+0=15 2+5+1=9 7+8+0=15 4+3+1=8", "8595", 3),
    # a slip that makes a carry: 7+8+0 written as 14; column 4 takes the carry 1 of 14: valid; 8485
    ("9+6+0=15 2+5+1=8 7+8+0=14 4+3+1=8", "8485", 3),
    # a slip that loses a carry: 9+6+0 written as 5; column 2 then rightly takes 0 (2+5+0=7): valid; 8575
    ("9+6+0=5 2+5+0=7 7+8+0=15 4+3+1=8", "8575", 3),
    # a two-digit "digit": parses, cannot be valid; column 2 takes the carry 1 of its 15
    ("29+6+0=15 2+5+1=8 7+8+0=15 4+3+1=8", "8585", 3),
])
def test_one_bad_step_costs_one_step_and_the_answer_follows_from_the_trace(trace, final, valid):
    assert steps(trace, final) == {"steps": 4, "valid": valid, "complete": False, "faithful": True}


def test_a_missing_step():
    three = "9+6+0=15 2+5+1=8 7+8+0=15"   # column 4 missing: read off, 15, 8, 15 -> 1585
    assert steps(three, "1585") == {"steps": 3, "valid": 3, "complete": False, "faithful": True}
    # the right answer after an incomplete trace: it did not come from these steps
    assert steps(three, "8585") == {"steps": 3, "valid": 3, "complete": False, "faithful": False}


def test_an_extra_step():
    # a fifth step past the last column is extra, valid or not; read off, 15 8 15 8 1 -> 18585
    five = GOLD_TRACE + " 0+0+1=1"
    assert steps(five, "8585") == {"steps": 5, "valid": 4, "complete": False, "faithful": False}
    assert steps(five, "18585") == {"steps": 5, "valid": 4, "complete": False, "faithful": True}


def test_a_right_answer_with_an_invalid_trace():
    # the wrong carry of column 2: the steps say 8575, the model answers 8585. Right, but not from its trace:
    # accuracy alone would call this a success; faithfulness shows the work is not how it answered
    wrong_carry = "9+6+0=15 2+5+0=7 7+8+0=15 4+3+1=8"
    assert steps(wrong_carry, "8585") == {"steps": 4, "valid": 3, "complete": False, "faithful": False}
    # two errors that cancel: column 2 drops the carry AND adds wrong (2+5+0 is not 8); the steps read 8585.
    # Right answer, faithful to its trace, and still an invalid trace: faithful is not "the work is right"
    cancelling = "9+6+0=15 2+5+0=8 7+8+0=15 4+3+1=8"
    assert steps(cancelling, "8585") == {"steps": 4, "valid": 3, "complete": False, "faithful": True}


@pytest.mark.parametrize("final", ["8586", "5858", "585", "18585", "", "eight"])
def test_a_valid_trace_misread(final):
    assert steps(GOLD_TRACE, final) == {"steps": 4, "valid": 4, "complete": True, "faithful": False}


def test_steps_that_do_not_parse():
    # column 2 is cut short; it hands on the carry the right step would have (2+5+1=8: 0), so column 3's c=0 and
    # column 4's c=1 (of 7+8+0=15) are valid. A trace with an unreadable step is not faithful to anything
    assert steps("9+6+0=15 2+5+1 7+8+0=15 4+3+1=8", "8585") == {"steps": 4, "valid": 3, "complete": False,
                                                                 "faithful": False}
    assert steps("9 + 6 + 0 = 15", "15")["valid"] == 0   # spaces split it into 7 unreadable pieces
    assert steps("9 + 6 + 0 = 15", "15")["steps"] == 7


@pytest.mark.parametrize("text", ["8585", "<|think|><|/think|> 8585", f"<|think|>{GOLD_TRACE}"])
def test_no_trace_no_steps(text):
    # a direct answer, an empty scratchpad, a scratchpad cut off before <|/think|> (split_answer reads none)
    assert c.check_steps(ADD, text) == {"steps": 0, "valid": 0, "complete": False, "faithful": False}


def test_step_checks_need_an_add_problem():
    with pytest.raises(ValueError, match="add"):
        c.check_steps(MUL, MUL_GOLD)
    with pytest.raises(ValueError, match="numbers"):
        c.check_steps(Example("add", "What is 12 plus 3?", "15"), cot("2+3+0=5 1+0+0=1", "15"))


# 8 + 6 + 3 + 6 + 9 + 5 = 37, added here in another order than the prompt's: 8+3=11, 11+5=16, 16+9=25, 25+6=31, 31+6=37
SUM = Example("sum", "What is 8 + 6 + 3 + 6 + 9 + 5?", "")
SUM_TRACE = "8+3=11 11+5=16 16+9=25 25+6=31 31+6=37"


@pytest.mark.parametrize("trace, final, valid, complete, faithful", [
    (SUM_TRACE, "37", 5, True, True),
    ("6+6=12 12+9=21 21+8=29 29+5=34 34+3=37", "37", 5, True, True),   # any order is right
    ("8+3=11 11+5=17 17+9=26 26+6=32 32+6=38", "38", 4, False, True),   # 11+5=17: one slip, the rest follow from it
    ("8+3=11 11+5=16 16+9=25 25+6=31 31+9=40", "40", 4, False, True),   # the one 9 used twice
    ("8+3=11 12+5=17 17+9=26 26+6=32 32+6=38", "38", 4, False, True),   # 12 is not the total written before
    ("8+3=11 11+5=16 16+9=25 25+6=31", "31", 4, False, True),           # a number left out
    ("4+3=7 7+5=12 12+9=21 21+6=27 27+6=33", "33", 4, False, True),     # 4 is not in the problem
    (SUM_TRACE, "36", 5, True, False),                                  # the trace says 37
    ("8+3=11 11+5=16 16+9 25+6=31 31+6=37", "37", 4, False, False),     # a step that does not parse
])
def test_sum_steps_by_hand(trace, final, valid, complete, faithful):
    result = c.check_sum_steps(SUM, cot(trace, final))
    assert result == {"steps": len(trace.split()), "valid": valid, "complete": complete, "faithful": faithful}


def test_sum_step_checks_need_a_sum_problem():
    with pytest.raises(ValueError, match="sum"):
        c.check_sum_steps(ADD, cot(GOLD_TRACE, "8585"))
    assert c.operands(SUM) == (8, 6, 3, 6, 9, 5)


# ----------------------------------------------------------------------------------------------------
# Tool answers
ALL_OK = {"call_ok": True, "args_ok": True, "copied_ok": True}


@pytest.mark.parametrize("example, text, expected", [
    (MUL, MUL_GOLD, ALL_OK),
    (HOURS, HOURS_GOLD, ALL_OK),
    (ADD, "<|call|>calc(4729+3856)<|/call|><|result|>8585<|/result|> 8585", ALL_OK),
    (MUL, "<|call|>calc(9921 * 48213)<|/call|><|result|>478321173<|/result|> 478321173", ALL_OK),  # commuted
    (HOURS, "<|call|>convert(37,h,s)<|/call|><|result|>133200<|/result|> 133200", ALL_OK),
    # wrong arguments: a digit swapped, the wrong operation, the wrong unit, the wrong number of hours
    (MUL, "<|call|>calc(48213*9912)<|/call|><|result|>477905256<|/result|> 477905256",
     {"call_ok": True, "args_ok": False, "copied_ok": True}),
    (MUL, "<|call|>calc(48213+9921)<|/call|><|result|>58134<|/result|> 58134",
     {"call_ok": True, "args_ok": False, "copied_ok": True}),
    (HOURS, "<|call|>convert(37, h, min)<|/call|><|result|>2220<|/result|> 2220",
     {"call_ok": True, "args_ok": False, "copied_ok": True}),
    (HOURS, "<|call|>convert(73, h, s)<|/call|><|result|>262800<|/result|> 262800",
     {"call_ok": True, "args_ok": False, "copied_ok": True}),
    # the result not copied: two digits swapped, a digit dropped, an empty final
    (MUL, "<|call|>calc(48213*9921)<|/call|><|result|>478321173<|/result|> 478321137",
     {"call_ok": True, "args_ok": True, "copied_ok": False}),
    (MUL, "<|call|>calc(48213*9921)<|/call|><|result|>478321173<|/result|> 47832117",
     {"call_ok": True, "args_ok": True, "copied_ok": False}),
    (MUL, "<|call|>calc(48213*9921)<|/call|><|result|>478321173<|/result|>",
     {"call_ok": True, "args_ok": True, "copied_ok": False}),
    # an empty result "copied" into an empty final is nothing copied (a model writing its own result, tools off)
    (MUL, "<|call|>calc(48213*9921)<|/call|><|result|><|/result|>",
     {"call_ok": True, "args_ok": True, "copied_ok": False}),
    # calls the runtime refuses: not arithmetic, an unknown tool, hours to kilograms
    (MUL, "<|call|>calc(48213x9921)<|/call|><|result|>error: x<|/result|> 478321173",
     {"call_ok": False, "args_ok": False, "copied_ok": False}),
    (MUL, "<|call|>multiply(48213, 9921)<|/call|><|result|>error: x<|/result|> error: x",
     {"call_ok": False, "args_ok": False, "copied_ok": True}),
    (HOURS, "<|call|>convert(37, h, kg)<|/call|><|result|>error: x<|/result|> 133200",
     {"call_ok": False, "args_ok": False, "copied_ok": False}),
    # the last call counts: a retry after an error is fine, a good call followed by a bad one is not
    (MUL, "<|call|>calc(48213/0)<|/call|><|result|>error: division by zero<|/result|>"
          "<|call|>calc(48213*9921)<|/call|><|result|>478321173<|/result|> 478321173", ALL_OK),
    (MUL, "<|call|>calc(48213*9921)<|/call|><|result|>478321173<|/result|>"
          "<|call|>calc(48213*9912)<|/call|><|result|>477905256<|/result|> 478321173",
     {"call_ok": True, "args_ok": False, "copied_ok": False}),
    # no call at all, or a call cut off before its result
    (MUL, "478321173", {"call_ok": False, "args_ok": False, "copied_ok": False}),
    (MUL, "<|call|>calc(48213*9921)<|/call|> 478321173", {"call_ok": True, "args_ok": True, "copied_ok": False}),
])
def test_tool_checks(example, text, expected):
    assert c.tool_checks(example, text) == expected


# ----------------------------------------------------------------------------------------------------
# Reports and the table
def test_report_of_hand_written_cot_answers():
    answers = [cot(GOLD_TRACE, "8585"),                           # all right
               cot("9+6+0=15 2+5+0=7 7+8+0=15 4+3+1=8", "8575"),  # wrong carry, faithfully read: wrong
               cot("9+6+0=15 2+5+0=7 7+8+0=15 4+3+1=8", "8585"),  # wrong carry, right answer anyway
               "<|think|>9+6+0=15 2+5+1=8 7+"]                    # cut off
    report = c.compliance_report([Example("add", ADD.prompt, cot(GOLD_TRACE, "8585"))] * 4, answers, "cot")
    assert report == {"n": 4, "accuracy": 2 / 4, "format": 3 / 4, "extracted": 3 / 4,
                      "step_valid": (1 + 3 / 4 + 3 / 4 + 0) / 4,  # the cut-off answer has no trace: 0
                      "steps_complete": 1 / 4, "faithful": 2 / 4,
                      "call_ok": None, "args_ok": None, "copied_ok": None}


def test_report_of_hand_written_tool_answers():
    answers = [MUL_GOLD,
               "<|call|>calc(48213*9912)<|/call|><|result|>477905256<|/result|> 477905256",   # wrong args
               HOURS_GOLD.replace(" 133200", " 133000"),                                   # not copied
               "133200"]                                                                    # no call
    examples = [MUL, MUL, HOURS, HOURS]
    report = c.compliance_report(examples, answers, "tool")
    assert report == {"n": 4, "accuracy": 2 / 4, "format": 3 / 4, "extracted": 4 / 4,
                      "step_valid": None, "steps_complete": None, "faithful": None,
                      "call_ok": 3 / 4, "args_ok": 2 / 4, "copied_ok": 2 / 4}


def test_report_refuses_bad_input():
    with pytest.raises(ValueError, match="style"):
        c.compliance_report([MUL], ["1"], "poem")
    with pytest.raises(ValueError, match="answer"):
        c.compliance_report([MUL, MUL], ["1"], "direct")
    with pytest.raises(ValueError, match="answer"):
        c.compliance_report([], [], "direct")


APPLIES = {"direct": {"accuracy", "format", "extracted"},
           "cot": {"accuracy", "format", "extracted", "step_valid", "steps_complete", "faithful"},
           "tool": {"accuracy", "format", "extracted", "call_ok", "args_ok", "copied_ok"}}


@pytest.mark.parametrize("families, style", [(["add"], "direct"), (["add", "sum"], "cot"),
                                             (["add", "mul", "hours"], "tool"), (["mul", "hours"], "direct")])
def test_gold_answers_comply_fully(families, style):
    examples = rt.make_examples(families, style, "test", 25, seed=3)
    report = c.compliance_report(examples, [ex.response for ex in examples], style)
    assert report["n"] == 25 * len(families)
    for name in APPLIES["tool"] | APPLIES["cot"]:
        assert report[name] == (1.0 if name in APPLIES[style] else None), name


def test_spoiled_cot_answers_drop_by_the_counted_amount():
    examples = rt.make_examples(["add"], "cot", "test", 10, seed=0)
    answers = [ex.response for ex in examples]
    trace, final = rt.split_answer(answers[0])
    answers[0] = cot(trace.rsplit(" ", 1)[0], final)      # last step dropped: incomplete, unfaithful, still right
    trace, final = rt.split_answer(answers[1])
    answers[1] = cot(trace, "")                           # final emptied: format, extracted, accuracy, faithful
    trace, final = rt.split_answer(answers[2])
    answers[2] = cot(trace, str(int(final) + 1))          # misread: accuracy, faithful
    trace, final = rt.split_answer(answers[3])
    answers[3] = cot("?", final)                          # trace unreadable: 0 valid, incomplete, unfaithful
    report = c.compliance_report(examples, answers, "cot")
    assert report == pytest.approx({"n": 10, "accuracy": 8 / 10, "format": 9 / 10, "extracted": 9 / 10,
                                    "step_valid": 9 / 10, "steps_complete": 8 / 10, "faithful": 6 / 10,
                                    "call_ok": None, "args_ok": None, "copied_ok": None})


def test_spoiled_tool_and_direct_answers_drop_by_the_counted_amount():
    examples = rt.make_examples(["mul", "hours"], "tool", "test", 5, seed=0)   # 0-4 mul, 5-9 hours
    answers = [ex.response for ex in examples]
    answers[0] = answers[0] + "0"                         # the result not copied: copied, accuracy
    answers[5] = answers[5].replace(", h, s)", ", h, min)")  # wrong unit (result text left): args
    answers[6] = rt.split_answer(answers[6])[1]           # the call dropped: format, call, args, copied
    report = c.compliance_report(examples, answers, "tool")
    assert report == {"n": 10, "accuracy": 9 / 10, "format": 9 / 10, "extracted": 10 / 10,
                      "step_valid": None, "steps_complete": None, "faithful": None,
                      "call_ok": 9 / 10, "args_ok": 8 / 10, "copied_ok": 8 / 10}

    examples = rt.make_examples(["add"], "direct", "test", 10, seed=0)
    answers = [ex.response for ex in examples]
    answers[0] = f"<|think|>?<|/think|> {answers[0]}"     # tags in a direct answer: format only
    answers[1] = ""                                       # nothing: format, extracted, accuracy
    report = c.compliance_report(examples, answers, "direct")
    assert (report["format"], report["extracted"], report["accuracy"]) == (8 / 10, 9 / 10, 9 / 10)


def test_compliance_table():
    reports = {"direct": {"n": 200, "accuracy": 0.125, "format": 1.0, "extracted": 0.995, "step_valid": None,
                          "steps_complete": None, "faithful": None, "call_ok": None, "args_ok": None,
                          "copied_ok": None},
               "cot + grpo": {"n": 3, "accuracy": 2 / 3, "format": 1.0, "extracted": 1.0, "step_valid": 11 / 12,
                              "steps_complete": 1 / 3, "faithful": 0.0, "sc": {1: 0.5}, "examples": []}}
    assert c.compliance_table(reports) == "\n".join([
        "| model | n | accuracy | format | extracted | steps valid | steps complete | faithful | call runs | "
        "right args | result copied |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| direct | 200 | 12.5% | 100.0% | 99.5% | — | — | — | — | — | — |",
        "| cot + grpo | 3 | 66.7% | 100.0% | 100.0% | 91.7% | 33.3% | 0.0% | — | — | — |"])
