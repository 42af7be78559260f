"""Talk to your fine-tuned model: a REPL, or one answer with --prompt.

    python part6_sft/chat.py                                  # type a request; an empty line (or Ctrl-D) ends
    python part6_sft/chat.py --prompt "uppercase: hello"      # one answer, then exit
    python part6_sft/chat.py --temperature 0.8 --top_k 20     # sample instead of the greedy answer

Each request goes to the model in the chat format it was fine-tuned on (6.1 chat_format.encode_prompt):
    <|user|>your text<|end|><|assistant|>
and the model writes until it emits <|end|> (or --max_new_tokens). Every request is a fresh conversation:
the model was trained on single turns only. What you type is plain text: typing "<|end|>" cannot close the
turn. The answer is printed, never run.

9.4 A reasoning model (a tokenizer with the reasoning tokens: Part 9's out/part9/tools/best.pt) answers through the
tool runtime (tools.generate_with_tools): its calls are run and their results written into its answer. The final
answer is printed, and its reasoning folded under it in one line, or whole with --show_trace true:

    python part9_reasoning/chat.py --prompt "What is 48213 * 9921?"
    478321173
      ▸ tool: calc(48213*9921) → 478321173
    python part9_reasoning/chat.py --prompt "What is 4729 + 3856?" --show_trace true
    8585
      thought: 9+6+0=15 2+5+1=8 7+8+0=15 4+3+1=8
    python part9_reasoning/chat.py --tools false      # the calls are not run: the model is without tool access

A chat model of Parts 6-8 has no reasoning tokens: it answers as it did there (no tools, no trace).
Try:  python -m pytest -q tests/part9/test_part9_chat.py
"""
import re
import argparse
import math

import torch

from chat_format import chat_token_ids, encode_prompt
from cli import interrupted, str_to_bool
from decode import generate_batch
from evaluate import PART, answer_text, generate_answers, load_chat_model
from reasoning_format import CALL, REASONING_TOKENS, RESULT, THINK
from runtime import pick_device
from sample import MIN_TEMPERATURE
from tools import generate_with_tools

TAG = re.compile("(" + "|".join(re.escape(t) for t in REASONING_TOKENS) + ")")  # 9.4 any of the six tags
SECTIONS = {THINK: "thought", CALL: "call", RESULT: "result"}  # 9.4 an opening tag -> the kind of its section
TOP_K_WITH_TOOLS = ("--top_k is not available with a reasoning model: the tool runtime (tools.generate_with_tools) "
                    "samples from the whole distribution; leave --top_k out")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=f"out/{PART.split('_')[0]}/tools/best.pt",
                   help="a fine-tuned checkpoint, written by train.py (default: %(default)s)")
    p.add_argument("--prompt", default=None, help="answer this one request and exit (default: the REPL)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="0 = greedy, the answer evaluate.py scores; > 0 samples (default: %(default)s)")
    p.add_argument("--top_k", type=int, default=None, help="when sampling, keep the k most likely tokens "
                   "(default: off)")
    p.add_argument("--max_new_tokens", type=int, default=64,
                   help="longest answer, in tokens; the model's block_size caps it (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1337, help="for sampling (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: %(default)s)")
    p.add_argument("--tools", type=str_to_bool, default=True, help="true: a reasoning model's tool calls are run "
                   "and their results written into its answer; false: not run, the model is without tool access "
                   "(default: %(default)s)")
    p.add_argument("--show_trace", type=str_to_bool, default=False, help="true: print the whole reasoning under "
                   "the answer (scratchpad, each call and its result); false: one summary line (default: %(default)s)")
    args = p.parse_args(argv)
    check_args(p, args)
    return args


def check_args(p, args):
    """One line naming the flag and its range for every value the generator cannot use."""
    t = args.temperature
    if not (t == 0 or MIN_TEMPERATURE <= t < math.inf):  # subtle: written so that nan fails too
        p.error(f"--temperature must be 0 (greedy) or a number from {MIN_TEMPERATURE:g} up, got {t}")
    if args.top_k is not None and args.top_k < 1:
        p.error(f"--top_k must be >= 1, got {args.top_k}")
    if args.max_new_tokens < 1:
        p.error(f"--max_new_tokens must be >= 1, got {args.max_new_tokens}")
    if not -2**63 <= args.seed < 2**64:
        p.error(f"--seed must fit in 64 bits (0 to {2**64 - 1}), got {args.seed}")
    if args.prompt is not None and not args.prompt.strip():
        p.error("--prompt must not be empty; leave it out for the REPL")


def room_for_answer(model, tok, prompt, max_new_tokens):
    """max_new_tokens, capped so that the prompt and the answer fit in block_size (the cache does not roll).
    A prompt that leaves no room at all is a one-line ValueError."""
    room = model.config.block_size - len(encode_prompt(tok, prompt))
    if room < 1:
        raise ValueError(f"the request is too long: with the chat tokens it fills the model's "
                         f"{model.config.block_size} tokens of context; shorten it")
    return min(max_new_tokens, room)


def answer(model, tok, prompt, temperature=0.0, top_k=None, max_new_tokens=64, generator=None, use_tools=True):
    """The model's answer to one request. Greedy (temperature 0) is evaluate.py's answer, the one it scores;
    sampling draws each token from the model's distribution (2.5), reproducible with a seeded generator.
    9.4 A reasoning model answers through the tool runtime (answer_with_tools): the text holds its reasoning."""
    max_new_tokens = room_for_answer(model, tok, prompt, max_new_tokens)
    if has_reasoning_tokens(tok):  # 9.4
        return answer_with_tools(model, tok, prompt, temperature, top_k, max_new_tokens, generator, use_tools)
    if temperature == 0:
        return generate_answers(model, tok, [prompt], batch_size=1, max_new_tokens=max_new_tokens)[0]
    end_id = chat_token_ids(tok)["end"]
    new_ids = generate_batch(model, [encode_prompt(tok, prompt)], max_new_tokens, stop_ids=[end_id],
                             temperature=temperature, top_k=top_k, generator=generator)[0]
    return answer_text(tok, new_ids, end_id)


def has_reasoning_tokens(tok):
    """9.4 A Part 9 model's tokenizer has the six reasoning tokens; a chat model of Parts 6-8 has none and
    answers as it did there: no tools, no trace."""
    return all(t in getattr(tok, "special_tokens", {}) for t in REASONING_TOKENS)


def answer_with_tools(model, tok, prompt, temperature, top_k, max_new_tokens, generator, use_tools):
    """9.4 The answer through the tool runtime (tools.generate_with_tools, 9.3): each call the model writes is run
    and its result written into the answer (use_tools=False: not run, as in train.py's "tools off" row).
    Returns the answer's whole text, <|end|> dropped: the tags decode to their names, for fold_answer to read."""
    if top_k is not None:
        raise ValueError(TOP_K_WITH_TOOLS)
    run = generate_with_tools(model, tok, [encode_prompt(tok, prompt)], max_new_tokens, temperature, generator,
                              use_tools)[0]
    return answer_text(tok, run.ids, chat_token_ids(tok)["end"])


def fold_answer(text):
    """9.4 An answer's text -> (final, parts): the final answer, and the reasoning before it as [(kind, text)],
    kind "thought", "call" or "result" for a tagged section, "text" for words between sections. serve.py's page
    reads the stream with the same rule (splitReply).
        fold_answer("<|call|>calc(6*7)<|/call|><|result|>42<|/result|> 42") -> ("42", [("call", "calc(6*7)"),
                                                                                      ("result", "42")])
    The final answer is the text after the last tag: split_answer's whenever that tag is a <|/think|> or
    <|/result|>, as in every well-formed answer. Otherwise this reads what split_answer leaves whole: after a call
    that was not run (<|/call|> last) the words after it; in a section still open (cut off) no final answer yet."""
    parts, open_section, outside = [], False, ""
    for piece in TAG.split(text):  # text, tag, text, ..., text: the capturing group keeps the tags
        if not TAG.fullmatch(piece):
            if open_section:
                parts[-1][1] += piece
            else:
                outside += piece
            continue
        if outside.strip():  # words between two sections: part of the reasoning, not the answer
            parts.append(["text", outside])
        outside, open_section = "", piece in SECTIONS
        if open_section:
            parts.append([SECTIONS[piece], ""])
    return ("" if open_section else outside.strip()), [(kind, body.strip()) for kind, body in parts]


def plural(n, word):
    return f"{n} {word}" + ("" if n == 1 else "s")


def trace_summary(parts):
    """9.4 The reasoning in one line: "thought: 4 steps · tool: calc(48213*9921) → 478321173". A step is one
    space-separated item of the scratchpad (the add family writes one column each); a call followed by no result
    was not run (--tools false, or past the runtime's limit)."""
    pieces = []
    steps = sum(len(body.split()) for kind, body in parts if kind == "thought")
    if any(kind == "thought" for kind, _ in parts):
        pieces.append(f"thought: {plural(steps, 'step')}")
    for i, (kind, body) in enumerate(parts):
        if kind == "call":
            after = parts[i + 1] if i + 1 < len(parts) else ("", "")
            pieces.append(f"tool: {body} → " + (after[1] if after[0] == "result" else "not run"))
    return " · ".join(pieces) or "reasoning: " + plural(len(parts), "part")


def folded(text, show_trace=False):
    """9.4 What chat.py prints for an answer: the final answer, then its reasoning folded under it, in one
    summary line (trace_summary) or, with show_trace, whole: a line per part. An answer without reasoning prints
    alone, as in Part 8."""
    final, parts = fold_answer(text)
    if not parts:
        return final
    lines = [f"  {kind}: {body}" for kind, body in parts] if show_trace else [f"  ▸ {trace_summary(parts)}"]
    return "\n".join([final or "(no final answer after the reasoning)", *lines])


def repl(model, tok, args, generator):
    """Read a request, print the answer, until an empty line, end of input (Ctrl-D) or Ctrl-C."""
    print("type a request and press Enter; an empty line (or Ctrl-D) ends")
    try:
        while True:
            prompt = input("you> ")
            if not prompt.strip():
                break
            try:
                reply = answer(model, tok, prompt, args.temperature, args.top_k, args.max_new_tokens, generator,
                               args.tools)
            except ValueError as e:  # a request too long for the model: say so, keep the conversation going
                print(f"error: {e}")
                continue
            print(f"model> {folded(reply, args.show_trace)}")
    except (EOFError, KeyboardInterrupt):
        print()  # subtle: end the "you> " line, so the goodbye starts on its own line
    print("bye")


def main(argv=None):
    args = parse_args(argv)
    device = pick_device(args.device)
    model, tok = load_chat_model(args.checkpoint, device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    if args.top_k is not None and has_reasoning_tokens(tok):  # 9.4 now, not at every request of the REPL
        raise SystemExit(f"error: {TOP_K_WITH_TOOLS}")
    if args.prompt is None:
        return repl(model, tok, args, generator)
    try:
        text = answer(model, tok, args.prompt, args.temperature, args.top_k, args.max_new_tokens, generator,
                      args.tools)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    except KeyboardInterrupt:
        raise interrupted("no answer")
    print(folded(text, args.show_trace))
    return text


if __name__ == "__main__":
    main()
