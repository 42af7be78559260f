"""2.5 Generate text from a trained checkpoint, with the KV cache (3.4) unless --no_cache.

    python part6_sft/sample.py --prompt "ROMEO:" --temperature 0.8 --top_k 50
    python part6_sft/sample.py --temperature 0          # greedy: always the most likely token
    python part6_sft/sample.py --max_new_tokens 2000    # longer than the context: the cache rolls (3.6)
"""
import argparse
import math
from pathlib import Path

import torch

from checkpoint import load_checkpoint
from data import tokenizer_from_dict
from runtime import pick_device

PART = Path(__file__).resolve().parent.name.split("_")[0]  # "part2": read what this part's train.py writes
# Limits, so a typo (--max_new_tokens 1000000000000) ends in one line instead of a run that looks hung:
# the text is printed only once every token is sampled, and each sample holds its own cache in memory.
MAX_NEW_TOKENS = 100_000
MAX_SAMPLES = 100
MIN_TEMPERATURE = 1e-6  # logits / 1e-38 overflow float32 to inf, and softmax turns inf into nan


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=f"out/{PART}/best.pt", help="(default: %(default)s)")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max_new_tokens", type=int, default=300, help=f"at most {MAX_NEW_TOKENS} (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default: %(default)s)")
    p.add_argument("--top_k", type=int, default=None, help="keep the k most likely tokens (default: off)")
    p.add_argument("--top_p", type=float, default=None, help="keep the smallest set with mass >= p (default: off)")
    p.add_argument("--num_samples", type=int, default=1, help=f"at most {MAX_SAMPLES} (default: %(default)s)")
    p.add_argument("--no_cache", action="store_true", help="3.4 rerun the whole context for every token (slow)")
    p.add_argument("--seed", type=int, default=1337, help="(default: %(default)s)")
    p.add_argument("--device", default="auto", help="(default: %(default)s)")
    args = p.parse_args(argv)
    check_args(p, args)
    return args


def check_args(p, args):
    """One line naming the flag and its range for every value the sampler cannot use."""
    t = args.temperature
    if not (t == 0 or MIN_TEMPERATURE <= t < math.inf):  # subtle: written so that nan fails too
        p.error(f"--temperature must be 0 (greedy) or a number from {MIN_TEMPERATURE:g} up, got {t}")
    if args.top_k is not None and args.top_k < 1:
        p.error(f"--top_k must be >= 1, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        p.error(f"--top_p must be in (0, 1], got {args.top_p}")
    if not 1 <= args.max_new_tokens <= MAX_NEW_TOKENS:
        p.error(f"--max_new_tokens must be from 1 to {MAX_NEW_TOKENS}, got {args.max_new_tokens}; "
                "for a longer text, continue the output in another run")
    if not 1 <= args.num_samples <= MAX_SAMPLES:
        p.error(f"--num_samples must be from 1 to {MAX_SAMPLES}, got {args.num_samples}; run again with another --seed")
    if not -2**63 <= args.seed < 2**64:
        p.error(f"--seed must fit in 64 bits (0 to {2**64 - 1}), got {args.seed}")
    if not args.prompt:
        p.error("--prompt must not be empty (the model needs at least one token to continue)")
    try:
        args.prompt.encode("utf-8")
    except UnicodeEncodeError:  # Python keeps bytes that are not UTF-8 as "surrogates" no encoder accepts
        p.error("--prompt is not UTF-8 text; set the terminal to UTF-8 or retype the prompt")


def checkpoint_tokenizer(ckpt, path):
    """4.1 The checkpoint carries its tokenizer; Part 2 and 3 checkpoints have none: those parts read bytes."""
    try:
        return tokenizer_from_dict(ckpt.get("tokenizer", {"kind": "bytes"}))
    except (AttributeError, KeyError, TypeError, ValueError) as e:
        raise SystemExit(f"error: {path} holds a tokenizer this part cannot read ({type(e).__name__}: {e}); "
                         "retrain to recreate it")


def main(argv=None):
    args = parse_args(argv)
    device = pick_device(args.device)
    model, ckpt = load_checkpoint(args.checkpoint, device)
    tok = checkpoint_tokenizer(ckpt, args.checkpoint)
    prompt = tok.encode(args.prompt)
    if len(prompt) > model.config.block_size:  # the model only ever sees its last block_size tokens
        print(f"note: the prompt is {len(prompt)} tokens; the model sees only the last {model.config.block_size}")
    idx = torch.tensor([prompt] * args.num_samples, device=device)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    out = model.eval().generate(idx, args.max_new_tokens, args.temperature, args.top_k, args.top_p, gen,
                                use_cache=not args.no_cache)
    texts = [tok.decode(row.tolist()) for row in out]
    for i, text in enumerate(texts):
        print(f"--- sample {i + 1} (checkpoint step {ckpt['step']}, val loss {ckpt['val_loss']:.3f}) ---")
        print(text)
    return texts


if __name__ == "__main__":
    main()
