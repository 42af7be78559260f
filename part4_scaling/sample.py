"""2.5 Generate text from a trained checkpoint, with the KV cache (3.4) unless --no_cache.

    python part4_scaling/sample.py --prompt "ROMEO:" --temperature 0.8 --top_k 50
    python part4_scaling/sample.py --temperature 0          # greedy: always the most likely token
    python part4_scaling/sample.py --max_new_tokens 2000    # longer than the context: the cache rolls (3.6)
"""
import argparse

import torch

from checkpoint import load_checkpoint
from data import tokenizer_from_dict
from runtime import pick_device


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default="out/part4/best.pt", help="(default: %(default)s)")
    p.add_argument("--prompt", default="\n", help="text to continue (default: a newline)")
    p.add_argument("--max_new_tokens", type=int, default=300, help="(default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 = greedy (default: %(default)s)")
    p.add_argument("--top_k", type=int, default=None, help="keep the k most likely tokens (default: off)")
    p.add_argument("--top_p", type=float, default=None, help="keep the smallest set with mass >= p (default: off)")
    p.add_argument("--num_samples", type=int, default=1, help="(default: %(default)s)")
    p.add_argument("--no_cache", action="store_true", help="3.4 rerun the whole context for every token (slow)")
    p.add_argument("--seed", type=int, default=1337, help="(default: %(default)s)")
    p.add_argument("--device", default="auto", help="(default: %(default)s)")
    args = p.parse_args(argv)
    if args.temperature < 0:
        p.error(f"--temperature must be >= 0, got {args.temperature}")
    if args.top_k is not None and args.top_k < 1:
        p.error(f"--top_k must be >= 1, got {args.top_k}")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        p.error(f"--top_p must be in (0, 1], got {args.top_p}")
    if args.max_new_tokens < 1 or args.num_samples < 1:
        p.error("--max_new_tokens and --num_samples must be >= 1")
    if not args.prompt:
        p.error("--prompt must not be empty (the model needs at least one token to continue)")
    return args


def main(argv=None):
    args = parse_args(argv)
    device = pick_device(args.device)
    model, ckpt = load_checkpoint(args.checkpoint, device)
    # the checkpoint carries its tokenizer; Part 2 and 3 checkpoints have none: those parts read bytes
    tok = tokenizer_from_dict(ckpt.get("tokenizer", {"kind": "bytes"}))
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
