"""Part 9 exercises: one function per exercise, each a worked solution (README.md, "Exercises").

    9.A verifier-guided voting: only samples whose steps check out vote (9.1, 9.4)   verified_vote,
                                                                                     compare_votes
    9.B a third tool: an integer square root, registered for a with-block (9.3)     isqrt, with_isqrt
    9.C a cache budget for MLA: the widest latent that fits (9.2)                   largest_latent

Replace a solution with your own and run the same test:

    python -m pytest tests/part9/test_part9_exercises.py

The tests check each function against an independent computation (hand-made samples and a brute-force count
with a step checker of their own, math.isqrt and r^2 <= n < (r + 1)^2, a search over every latent width, the
numbers the KV caches of real MLA and MHA models hold), so they pass for any correct answer. The figures in
README.md need the chain-of-thought model of `python part9_reasoning/train.py` (9.B and 9.C need nothing):

    python part9_reasoning/exercises.py                                  # ~10 s on a laptop CPU
    python part9_reasoning/exercises.py --problems 500 --samples 20      # more problems and votes
"""
import argparse
import math
import os
from contextlib import contextmanager

import torch

import tools
from chat_format import encode_prompt
from compliance import check_steps
from evaluate import generate_answers, load_chat_model
from model import GPTConfig, kv_cache_numbers_per_token
from reason_eval import final_or_none, majority_vote
from reason_tasks import final_answer, grade_final, make_examples
from tools import Tool, ToolError

COT_CHECKPOINT = "out/part9/reason/cot/best.pt"  # where python part9_reasoning/train.py (--stage reason) puts it


# ----------------------------------------------------------------------------------------------------
# Exercise 9.A (builds on 9.1 and 9.4): verifier-guided voting
def verified_vote(example, texts):
    """Task: an add problem (reason_tasks.make_examples) and texts, its n sampled answers as whole texts (what
    evaluate.generate_answers returns) -> the final answer the samples whose scratchpad checks out vote for:
    those that compliance.check_steps finds "complete" (one valid step per column, none extra) and "faithful"
    (the final answer is what the steps say). The most common final among them, ties to the first seen
    (reason_eval.majority_vote); when none passes, the plain majority of all n finals (9.1's vote), so the
    rule still answers whenever a sample does. None when no sample has a final answer at all.
    Hint: two lists of finals (reason_eval.final_or_none): the verified ones and all of them; majority_vote
    the first, or the second when the first is empty.
    Why: a plain vote counts a sample that dropped a carry as much as one whose every step is right, so a slip
    the model makes OFTEN (the same carry, dropped again and again) can out-vote the right answer. A program
    that checks every step (a process verifier, Lightman et al. 2023) throws those votes away before the
    count. For column addition the check is a whole proof: steps that are all valid, and a final read off
    them, ARE the sum. So every verified sample says the right answer, and the vote is right whenever one of
    the n samples is fully right: the ceiling of sampling n, not of majority. It falls back to majority only
    when no sample passes. A weaker verifier (a learned one, a reward model) lets some wrong traces through,
    which is why the rule still takes the majority among the passed instead of the first one.
    47 + 38, samples "75" x 3 (<|think|>7+8+0=15 4+3+0=7<|/think|> 75: the carry dropped) and "85" x 2 (the
    gold trace): majority_vote says "75", verified_vote "85"."""
    finals = [final_or_none(text) for text in texts]
    verified = []
    for text, final in zip(texts, finals):
        steps = check_steps(example, text)
        if steps["complete"] and steps["faithful"]:
            verified.append(final)
    return majority_vote(verified) if verified else majority_vote(finals)


@torch.no_grad()
def compare_votes(model, tok, examples, n, temperature, generator, batch_size=256) -> dict:
    """Task: sample n answers to each add problem (evaluate.generate_answers on n copies of every prompt, at
    `temperature`, drawing from `generator`; new tokens: what block_size leaves after the longest prompt) ->
        {"single":   accuracy of the first sample alone,
         "majority": accuracy of majority_vote over the n finals (9.1 self-consistency),
         "verified": accuracy of verified_vote,
         "any":      share of problems with at least one right sample (pass@n: no rule that picks one of the
                     samples' answers can beat it),
         "passed":   share of all samples whose trace checks out (complete and faithful),
         "none_passed": share of problems where no sample passed (verified_vote fell back to majority)}
    each a float in [0, 1]. A final answer is right when it equals reason_tasks.final_answer(example).
    Hint: the texts of problem i are texts[i * n:(i + 1) * n]; reuse verified_vote and check_steps.
    Why: the same samples read three ways show what the verifier adds: majority needs the right answer to be
    the most common one, the verifier only needs it to be there once with its work shown."""
    if n < 1 or not examples:
        raise ValueError(f"need n >= 1 samples and at least one problem; got n {n}, {len(examples)} problems")
    prompts = [ex.prompt for ex in examples for _ in range(n)]  # n copies of each, problem after problem
    room = model.config.block_size - max(len(encode_prompt(tok, ex.prompt)) for ex in examples)
    texts = generate_answers(model, tok, prompts, batch_size, room, temperature, generator)
    counts = dict.fromkeys(("single", "majority", "verified", "any", "passed", "none_passed"), 0)
    for i, ex in enumerate(examples):
        samples, gold = texts[i * n:(i + 1) * n], final_answer(ex)
        finals = [final_or_none(t) for t in samples]
        checks = [check_steps(ex, t) for t in samples]
        passed = sum(c["complete"] and c["faithful"] for c in checks)
        counts["single"] += grade_final(ex, samples[0])
        counts["majority"] += majority_vote(finals) == gold
        counts["verified"] += verified_vote(ex, samples) == gold
        counts["any"] += gold in finals
        counts["passed"] += passed / n
        counts["none_passed"] += passed == 0
    return {name: count / len(examples) for name, count in counts.items()}


# ----------------------------------------------------------------------------------------------------
# Exercise 9.B (builds on 9.3): a third tool
def isqrt(value) -> str:
    """Task: the tool isqrt(N): the floor of the square root of a whole number N >= 0, as text:
    isqrt(1000000) -> "1000", isqrt(99) -> "9". value is what the arithmetic walker computed from the call's
    argument (a Fraction, already within MAX_DIGITS: tools.parse_call checks it before the tool runs), so
    isqrt(2*500) and isqrt(4.0) are fine. A fraction (isqrt(2.5)) or a negative number is a ToolError, one line.
    Hint: math.isqrt on the numerator, after checking the denominator is 1 and the sign.
    Why: a tool takes the checked VALUE, never the text: parse_call has already refused names, calls, strings
    and oversized numbers, so the tool has only its own rules to enforce. math.isqrt is exact on integers of
    any size; float(n) ** 0.5 is not past 2^53 (isqrt(10**30 - 1) would come out as 10**15)."""
    if value.denominator != 1:
        raise ToolError(f"isqrt takes a whole number, got {tools.format_number(value)}")
    if value < 0:
        raise ToolError(f"isqrt takes a number >= 0, got {value.numerator}")
    return str(math.isqrt(value.numerator))


@contextmanager
def with_isqrt(tools_module=tools):
    """Task: register isqrt as a tool with one "number" parameter for the duration of a with-block:
        with with_isqrt(tools):
            tools.run_call("isqrt(1000000)")   # -> "1000"
        tools.run_call("isqrt(4)")             # -> "error: unknown tool 'isqrt' (tools: calc, convert)"
    Yield the registry in use inside the block. The registry of before the block comes back afterwards, even
    when the block raises; the original dict itself is never changed.
    Hint: parse_call looks the name TOOLS up in the tools module each time it runs, so rebinding
    tools_module.TOOLS to a NEW dict ({**old, "isqrt": Tool(...)}) is seen by run_call at once; try/finally
    puts the old one back.
    Why a with-block and a new dict: the registry is the runtime's whitelist, the only names a model's call
    may use. Adding to it in place (TOOLS["isqrt"] = ...) would leak to every later user of the module (a
    test, another run in the process); here the extra tool exists only where it was asked for. Everything
    that makes calc safe (the character, length, tree, digit and time limits, no name or call inside an
    argument, the argument count) now protects isqrt too, without one new line of checking."""
    saved = tools_module.TOOLS
    tools_module.TOOLS = {**saved, "isqrt": Tool(isqrt, ("number",))}
    try:
        yield tools_module.TOOLS
    finally:
        tools_module.TOOLS = saved


# ----------------------------------------------------------------------------------------------------
# Exercise 9.C (builds on 9.2): a cache budget for MLA
def largest_latent(n_embd, rope_dim, fraction, multiple=8) -> int:
    """Task: the widest latent d_c whose MLA cache is at most `fraction` of MHA's, per token and layer
    (model.kv_cache_numbers_per_token):
        MLA  rope_dim + d_c   <=   fraction * 2 * n_embd   MHA (k and v of every head)
    with d_c a multiple of `multiple` (default 8: matrix widths GPUs multiply fastest; even, as model.py's
    cache row travels in two halves) and d_c >= rope_dim (the rope key must fit in the first half, so
    GPTConfig refuses a narrower latent). ValueError when even the smallest such d_c does not fit, or on bad
    inputs (n_embd < 1, rope_dim < 0, multiple not a positive even number, fraction outside (0, 1]).
    Hint: a width is a whole number, so the budget can be rounded down first: d_c + rope_dim <= floor(budget).
    Then round the room left for the latent down to a multiple. Integers from there: no float edge cases.
    Why: the cache, not the weights, is what limits a reasoning model's serving: long traces times many users.
    With a budget ("a quarter of MHA's memory") MLA gives the widest latent in it, the most room from which
    to rebuild every head's k and v, with the RoPE key a fixed cost paid first. GQA can only move in steps
    of one whole k, v head pair (2 hs per layer, and n_head must divide by the kv heads): for width 128 and 4
    heads, 256, 128 or 64 numbers; MLA any multiple of 8. DeepSeek-V2 keeps 512 + 64 = 576 numbers per layer
    where its 128 heads of 128 would keep 32768 (1.8%).
    Width 128, rope_dim 16, fraction 1/4: MHA keeps 2 * 128 = 256 numbers per token and layer, the budget is
    64, the rope key takes 16, 48 is left and a multiple of 8: d_c = 48 (MLA 64 numbers, 25% of MHA)."""
    if n_embd < 1 or rope_dim < 0 or multiple < 2 or multiple % 2 or not 0 < fraction <= 1:
        raise ValueError(f"need n_embd >= 1, rope_dim >= 0, an even multiple >= 2 and 0 < fraction <= 1; got "
                         f"n_embd {n_embd}, rope_dim {rope_dim}, multiple {multiple}, fraction {fraction}")
    budget = math.floor(fraction * 2 * n_embd)                  # numbers per token and layer MLA may keep
    latent = (budget - rope_dim) // multiple * multiple         # the room left, down to a multiple
    smallest = max(multiple, -(-rope_dim // multiple) * multiple)  # the first multiple >= rope_dim, at least one
    if latent < smallest:
        raise ValueError(f"no latent fits: {fraction:g} of MHA's {2 * n_embd} numbers per token and layer is "
                         f"{budget}, less than rope_dim {rope_dim} + the smallest latent {smallest}; allow at "
                         f"least {(rope_dim + smallest) / (2 * n_embd):.4g}")
    return latent


# ----------------------------------------------------------------------------------------------------
# The figures in README.md, "Exercises": python part9_reasoning/exercises.py
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=COT_CHECKPOINT,
                   help="9.A the chain-of-thought model that votes (default: %(default)s)")
    p.add_argument("--problems", type=int, default=200, help="9.A held-out additions (default: %(default)s)")
    p.add_argument("--samples", type=int, default=10, help="9.A answers sampled per problem (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.5, help="9.A of those samples (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="9.A which problems, and the sampling (default: %(default)s; test problems are held out "
                        "from training for every seed)")
    args = p.parse_args(argv)
    if args.problems < 1 or args.samples < 1:
        p.error(f"--problems and --samples must be >= 1, got {args.problems} and {args.samples}")
    if not 0 < args.temperature < float("inf"):  # written so that nan fails too
        p.error(f"--temperature must be > 0 (the votes need different samples), got {args.temperature}")
    if not os.path.isfile(args.checkpoint):
        raise SystemExit(f"error: no chain-of-thought model at {args.checkpoint}; train one first with "
                         f"python part9_reasoning/train.py (it writes {COT_CHECKPOINT}), or give --checkpoint")
    return args


def main(argv=None):
    args = parse_args(argv)
    model, tok = load_chat_model(args.checkpoint)
    examples = make_examples(["add"], "cot", "test", args.problems, args.seed)
    n = args.samples
    got = compare_votes(model, tok, examples, n, args.temperature, torch.Generator().manual_seed(args.seed))
    print(f"9.A {args.problems} held-out additions, {n} samples each at temperature {args.temperature:g} "
          f"({args.checkpoint})")
    print("    rule                                          accuracy")
    for key, name in (("single", "one sample"), ("majority", f"majority of {n} (9.1 self-consistency)"),
                      ("verified", f"verified vote of {n} (steps checked, 9.4)"),
                      ("any", f"any of {n} right (pass@{n}: the ceiling)")):
        print(f"    {name:44s} {got[key]:8.1%}")
    print(f"    samples whose steps check out: {got['passed']:.1%}; problems where none did (majority decides): "
          f"{got['none_passed']:.1%}")

    print("9.B tools.run_call inside `with with_isqrt(tools):`")
    calls = ("isqrt(1000000)", "isqrt(2*10**20)", "isqrt(99)", "isqrt(8/2)", "isqrt(" + "9" * tools.MAX_DIGITS + ")",
             "isqrt(" + "9" * (tools.MAX_DIGITS + 1) + ")", "isqrt(-4)", "isqrt(2.5)", "isqrt(1, 2)",
             "isqrt(__import__('os'))", "isqrt(9**9**9)")
    with with_isqrt(tools):
        for call in calls:
            shown = call if len(call) < 30 else f"isqrt(99...9, {len(call) - 7} digits)"
            print(f"    {shown:28s} -> {tools.run_call(call)}")
    print(f"    after the block: {'isqrt(4)':11s} -> {tools.run_call('isqrt(4)')}")

    print("9.C the widest MLA latent (a multiple of 8) whose cache is at most a fraction of MHA's, per token "
          "and layer")
    print("    width  heads  rope_dim  MHA numbers | 1/2          1/4          1/8          1/16")
    for n_embd, n_head in ((128, 4), (768, 12), (4096, 32)):
        rope_dim = n_embd // n_head // 2  # DeepSeek-V2's proportion: half a head
        cells = []
        for fraction in (1 / 2, 1 / 4, 1 / 8, 1 / 16):
            try:
                latent = largest_latent(n_embd, rope_dim, fraction)
            except ValueError:
                cells.append(f"{'none fits':12s}")
                continue
            mla = GPTConfig(n_embd=n_embd, n_head=n_head, n_layer=1, attention="mla", kv_latent=latent,
                            rope_dim=rope_dim)
            share = kv_cache_numbers_per_token(mla) / (2 * n_embd)
            cells.append(f"{latent:4d} ({share:5.1%})")
        print(f"    {n_embd:5d}  {n_head:5d}  {rope_dim:8d}  {2 * n_embd:11d} | " + " ".join(cells).rstrip())


if __name__ == "__main__":
    main()
