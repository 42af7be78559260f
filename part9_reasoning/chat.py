"""Talk to your fine-tuned model: a REPL, or one answer with --prompt.

    python part6_sft/chat.py                                  # type a request; an empty line (or Ctrl-D) ends
    python part6_sft/chat.py --prompt "uppercase: hello"      # one answer, then exit
    python part6_sft/chat.py --temperature 0.8 --top_k 20     # sample instead of the greedy answer

Each request goes to the model in the chat format it was fine-tuned on (6.1 chat_format.encode_prompt):
    <|user|>your text<|end|><|assistant|>
and the model writes until it emits <|end|> (or --max_new_tokens). Every request is a fresh conversation:
the model was trained on single turns only. What you type is plain text: typing "<|end|>" cannot close the
turn. The answer is printed, never run.
"""
import argparse
import math

import torch

from chat_format import chat_token_ids, encode_prompt
from cli import interrupted
from decode import generate_batch
from evaluate import PART, answer_text, generate_answers, load_chat_model
from runtime import pick_device
from sample import MIN_TEMPERATURE


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=f"out/{PART.split('_')[0]}/grpo/best.pt",
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


def answer(model, tok, prompt, temperature=0.0, top_k=None, max_new_tokens=64, generator=None):
    """The model's answer to one request. Greedy (temperature 0) is evaluate.py's answer, the one it scores;
    sampling draws each token from the model's distribution (2.5), reproducible with a seeded generator."""
    max_new_tokens = room_for_answer(model, tok, prompt, max_new_tokens)
    if temperature == 0:
        return generate_answers(model, tok, [prompt], batch_size=1, max_new_tokens=max_new_tokens)[0]
    end_id = chat_token_ids(tok)["end"]
    new_ids = generate_batch(model, [encode_prompt(tok, prompt)], max_new_tokens, stop_ids=[end_id],
                             temperature=temperature, top_k=top_k, generator=generator)[0]
    return answer_text(tok, new_ids, end_id)


def repl(model, tok, args, generator):
    """Read a request, print the answer, until an empty line, end of input (Ctrl-D) or Ctrl-C."""
    print("type a request and press Enter; an empty line (or Ctrl-D) ends")
    try:
        while True:
            prompt = input("you> ")
            if not prompt.strip():
                break
            try:
                reply = answer(model, tok, prompt, args.temperature, args.top_k, args.max_new_tokens, generator)
            except ValueError as e:  # a request too long for the model: say so, keep the conversation going
                print(f"error: {e}")
                continue
            print(f"model> {reply}")
    except (EOFError, KeyboardInterrupt):
        print()  # subtle: end the "you> " line, so the goodbye starts on its own line
    print("bye")


def main(argv=None):
    args = parse_args(argv)
    device = pick_device(args.device)
    model, tok = load_chat_model(args.checkpoint, device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    if args.prompt is None:
        return repl(model, tok, args, generator)
    try:
        text = answer(model, tok, args.prompt, args.temperature, args.top_k, args.max_new_tokens, generator)
    except ValueError as e:
        raise SystemExit(f"error: {e}")
    except KeyboardInterrupt:
        raise interrupted("no answer")
    print(text)
    return text


if __name__ == "__main__":
    main()
