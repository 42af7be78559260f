"""9.1/9.3 Problems a small model cannot answer at a glance, written three ways: a direct answer, a worked
scratchpad (chain of thought), or a tool call.

    python part9_reasoning/reason_tasks.py              # a few examples of every family and style

9.1 add: multi-digit addition. Written directly, the first digit of the answer depends on every carry below
it, all decided in one forward pass. With a scratchpad the model writes one column per step, right to left,
each step `a+b+carry=sum`, and reads the answer off its own steps:

    What is 4729 + 3856?
    direct:  8585
    cot:     <|think|>9+6+0=15 2+5+1=8 7+8+0=15 4+3+1=8<|/think|> 8585

Every step is a fact a program can check (compliance.py: step validity), and each one only needs two
digits and the carry the step before wrote: the long computation becomes a chain of short ones.

9.1 sum: six one-digit numbers added up, one running total per step. Column addition has ONE right
scratchpad; a sum can be added in any order, and the training traces use a new order every time:

    What is 9 + 6 + 6 + 9 + 3 + 2?
    cot:     <|think|>2+6=8 8+3=11 11+6=17 17+9=26 26+9=35<|/think|> 35

so a sampled trace may take a path greedy decoding did not, and a slip on one path is unlikely on another.
That is what self-consistency needs (reason_eval.py): many paths to one answer, mistakes that scatter.

9.3 mul (multiply a 4-5 digit number by a 3-4 digit one) and hours (hours to seconds, x 3600): too hard for the
model in its head, easy for a tool. The tool style writes the call, the runtime (tools.py) writes the result,
and the model copies it:

    What is 48213 * 9921?
    tool:    <|call|>calc(48213*9921)<|/call|><|result|>478321173<|/result|> 478321173

Held-out problems: a problem is TEST when its operands are a held-out combination (tasks.is_test_combination:
crc32 of the sorted numbers divisible by 5), so no test problem is ever trained on, in any style.
"""
import argparse
import random
from dataclasses import dataclass

from reasoning_format import CALL, CALL_END, RESULT, RESULT_END, THINK, THINK_END, split_answer
from tasks import Example, draw_combination

STYLES = ("direct", "cot", "tool")


# ----------------------------------------------------------------------------------------------------
# 9.1 The scratchpad of column addition
def add_steps(a: int, b: int) -> list[str]:
    """The columns of a + b, right to left, each 'digit+digit+carry=sum'; the shorter number is padded with 0.
    add_steps(47, 38) -> ['7+8+0=15', '4+3+1=8']; the answer is read off: the last digits backwards (85),
    with the final carry in front when the last sum is >= 10."""
    da, db = str(a)[::-1], str(b)[::-1]
    steps, carry = [], 0
    for i in range(max(len(da), len(db))):
        x = int(da[i]) if i < len(da) else 0
        y = int(db[i]) if i < len(db) else 0
        s = x + y + carry
        steps.append(f"{x}+{y}+{carry}={s}")
        carry = s // 10
    return steps


def answer_from_steps(steps: list[str]) -> str:
    """What a correct reader writes after the scratchpad: the last digit of each sum, backwards, and the
    final carry. ['7+8+0=15', '4+3+1=8'] -> '85'; ['9+9+0=18'] -> '18'."""
    sums = [int(step.split("=")[1]) for step in steps]
    return (str(sums[-1] // 10) if sums[-1] >= 10 else "") + "".join(str(s % 10) for s in reversed(sums))


def sum_steps(order) -> list[str]:
    """9.1 The running totals of a sum, in the order given: sum_steps([2, 6, 3]) -> ['2+6=8', '8+3=11']."""
    total, steps = order[0], []
    for n in order[1:]:
        steps.append(f"{total}+{n}={total + n}")
        total += n
    return steps


# ----------------------------------------------------------------------------------------------------
# 9.1 / 9.3 The families: each draws its operands and writes the problem in the requested style
@dataclass(frozen=True)
class Problem:
    prompt: str
    answer: str        # the final answer, what grading compares
    trace: str = ""    # the scratchpad of the cot style
    call: str = ""     # the tool call of the tool style


def make_add(rng, split, digits=(3, 4)):
    a, b = draw_combination(rng, split, lambda r: tuple(r.randint(10 ** (n - 1), 10 ** n - 1)
                                                        for n in (r.choice(digits), r.choice(digits))))
    return Problem(f"What is {a} + {b}?", str(a + b), trace=" ".join(add_steps(a, b)), call=f"calc({a}+{b})")


def make_sum(rng, split, count=6):
    numbers = draw_combination(rng, split, lambda r: tuple(r.randint(1, 9) for _ in range(count)))
    order = list(numbers)
    rng.shuffle(order)  # any order is right: the traces show them all (the prompt keeps its own)
    prompt = "What is " + " + ".join(map(str, numbers)) + "?"
    return Problem(prompt, str(sum(numbers)), trace=" ".join(sum_steps(order)))


def make_mul(rng, split):
    a, b = draw_combination(rng, split, lambda r: (r.randint(1000, 99999), r.randint(100, 9999)))
    return Problem(f"What is {a} * {b}?", str(a * b), call=f"calc({a}*{b})")


def make_hours(rng, split):
    (h,) = draw_combination(rng, split, lambda r: (r.randint(2, 999),))
    return Problem(f"How many seconds are in {h} hours?", str(h * 3600), call=f"convert({h}, h, s)")


FAMILIES = {"add": make_add, "sum": make_sum, "mul": make_mul, "hours": make_hours}
FAMILY_STYLES = {"add": ("direct", "cot", "tool"), "sum": ("direct", "cot"), "mul": ("direct", "tool"),
                 "hours": ("direct", "tool")}


def render(problem: Problem, style: str) -> str:
    """The gold response in one style (see the module docstring for the three)."""
    if style == "direct":
        return problem.answer
    if style == "cot":
        return f"{THINK}{problem.trace}{THINK_END} {problem.answer}"
    return f"{CALL}{problem.call}{CALL_END}{RESULT}{problem.answer}{RESULT_END} {problem.answer}"


def make_examples(families, style, split, per_family, seed) -> list[Example]:
    """per_family examples of each family in `style`, from one seeded generator (same seed, same problems
    in every style: the direct and cot models are trained and tested on the very same additions)."""
    examples = []
    for family in families:
        if style not in FAMILY_STYLES[family]:
            raise ValueError(f"family {family} has no {style} style (it has {', '.join(FAMILY_STYLES[family])})")
        rng = random.Random(f"{seed}-{family}-{split}")  # per family: adding a family leaves the others alone
        for _ in range(per_family):
            problem = FAMILIES[family](rng, split)
            examples.append(Example(family, problem.prompt, render(problem, style)))
    return examples


def final_answer(example: Example) -> str:
    """The gold final answer of an example in any style."""
    return split_answer(example.response)[1]


def grade_final(example: Example, prediction: str) -> bool:
    """9.4 Answer accuracy: the final answer after the scratchpad or the tool result, exactly."""
    return split_answer(prediction)[1] == final_answer(example)


def main(argv=None):
    p = argparse.ArgumentParser(description="Show examples of Part 9's reasoning families in each style.")
    p.add_argument("--show", type=int, default=2, help="examples per family and style")
    p.add_argument("--seed", type=int, default=0, help="which problems")
    args = p.parse_args(argv)
    if args.show < 1:
        raise SystemExit(f"error: --show must be >= 1, got {args.show}")
    for family, styles in FAMILY_STYLES.items():
        for style in styles:
            for ex in make_examples([family], style, "train", args.show, args.seed):
                print(f"[{family}/{style}] {ex.prompt}  ->  {ex.response}")


if __name__ == "__main__":
    main()
