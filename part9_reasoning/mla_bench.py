"""9.2 How small can the KV cache get? MHA vs GQA vs MLA at the same width, depth, steps, data and seed.

    python part9_reasoning/mla_bench.py                       # ~5 minutes on one CPU thread
    python part9_reasoning/mla_bench.py --steps 100           # a quick look (the losses are not settled yet)
    python part9_reasoning/mla_bench.py --kv_latent 32 --out_dir out/mla_32    # a smaller cache: 18.75% of MHA's

Three byte-level models are trained on tinyshakespeare with the same recipe, batches and seed; only attention
differs:
    mha   Part 3's multi-head attention: every head caches its own k and v
    gqa   grouped-query attention, n_kv_head k/v heads (default n_head/4) shared by groups of query heads
    mla   DeepSeek-V2's multi-head latent attention: one kv_latent-wide latent plus one rope_dim-wide RoPE key per
          token, shared by every head (decoded both ways: naive, and with the up-projections absorbed)
Reported per variant: parameters; KV-cache numbers and bf16 bytes per token (the formula, checked against what a
cache really holds) and their share of MHA's; validation loss at equal steps, on the same fixed batches; decoding
speed with the KV cache (GPT.generate, greedy), at batch 1 and at --decode_batch. The issue's target: MLA's cache
at most 25% of MHA's, at no more than +0.05 val loss. Written to --out_dir: mla.md, mla.json, mla.png.
"""
import argparse
import json
import os
import platform
import sys
import time

import numpy as np
import torch

from cli import str_to_bool
from data import read_text
from model import GPT, GPTConfig, kv_cache_numbers_per_token, set_absorb
from optim import clip_grad_norm
from tokenizer import ByteTokenizer
from train import TrainConfig, estimate_loss, get_batch, lr_at, make_optimizer, split_data

RESULT_FILES = ("mla.md", "mla.json", "mla.png")
TARGET_SHARE, TARGET_GAP = 0.25, 0.05  # the target: MLA's cache <= 25% of MHA's at <= +0.05 val loss
BF16_BYTES = 2


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                allow_abbrev=False)
    p.add_argument("--data", default="data/tinyshakespeare.txt", help="UTF-8 text, read as bytes; the last 10%% "
                   "is the validation set (default: %(default)s)")
    p.add_argument("--steps", type=int, default=450, help="training steps of every variant (default: %(default)s)")
    p.add_argument("--batch_size", type=int, default=16, help="sequences per step (default: %(default)s)")
    p.add_argument("--block_size", type=int, default=128, help="tokens per sequence (default: %(default)s)")
    p.add_argument("--n_layer", type=int, default=4, help="Transformer blocks (default: %(default)s)")
    p.add_argument("--n_embd", type=int, default=128, help="width of the residual stream (default: %(default)s)")
    p.add_argument("--n_head", type=int, default=4, help="query heads of every variant (default: %(default)s)")
    p.add_argument("--n_kv_head", type=int, default=0, help="gqa: key/value heads (default: 0 = n_head/4, at least 1)")
    p.add_argument("--kv_latent", type=int, default=48, help="mla: width of the cached latent (default: %(default)s)")
    p.add_argument("--rope_dim", type=int, default=16, help="mla: width of the shared RoPE key (default: %(default)s)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak learning rate; warmup then cosine to 10%% "
                   "(default: %(default)s)")
    p.add_argument("--warmup_steps", type=int, default=40, help="linear warmup steps (default: %(default)s)")
    p.add_argument("--eval_interval", type=int, default=75, help="steps between validation losses "
                   "(default: %(default)s)")
    p.add_argument("--eval_iters", type=int, default=20, help="fixed validation batches per estimate "
                   "(default: %(default)s)")
    p.add_argument("--log_interval", type=int, default=75, help="steps between progress lines (default: %(default)s)")
    p.add_argument("--decode_tokens", type=int, default=256, help="tokens generated per speed measurement "
                   "(default: %(default)s)")
    p.add_argument("--decode_batch", type=int, default=8, help="the larger decoding batch (the other is 1) "
                   "(default: %(default)s)")
    p.add_argument("--decode_rounds", type=int, default=2, help="speed measurements per setting, interleaved; the "
                   "fastest counts (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1337, help="weights and batches of every variant (default: %(default)s)")
    p.add_argument("--out_dir", default="part9_reasoning/results", help="where mla.md, mla.json and mla.png go "
                   "(default: %(default)s)")
    p.add_argument("--overwrite", type=str_to_bool, default=False, metavar="BOOL", help="replace results already "
                   "in --out_dir (default: %(default)s)")
    return p.parse_args(argv)


def check_args(args):
    """Bad values end the run with one line, before any training."""
    for name in ("steps", "batch_size", "block_size", "n_layer", "n_embd", "n_head", "eval_interval", "eval_iters",
                 "log_interval", "decode_tokens", "decode_batch", "decode_rounds"):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name} must be >= 1, got {getattr(args, name)}")
    if not 0 < args.lr < float("inf") or args.warmup_steps < 0:
        raise SystemExit(f"error: --lr must be > 0 and --warmup_steps >= 0, got {args.lr} and {args.warmup_steps}")
    try:
        configs = variant_configs(args)
    except ValueError as e:  # GPTConfig checks the shapes (n_head divides n_embd, rope_dim even, ...)
        raise SystemExit(f"error: {e}")
    if not os.path.isfile(args.data):
        raise SystemExit(f"error: data file {args.data} not found; run from the repo root or pass --data PATH")
    if os.path.exists(args.out_dir) and not os.path.isdir(args.out_dir):
        raise SystemExit(f"error: --out_dir {args.out_dir} is a file; pass a folder")
    found = [f for f in RESULT_FILES if os.path.exists(os.path.join(args.out_dir, f))]
    if found and not args.overwrite:
        raise SystemExit(f"error: {args.out_dir} already holds {', '.join(found)}; pass --overwrite true to replace "
                         "them, or another --out_dir")
    return configs


def variant_configs(args):
    """{name: GPTConfig}: the same model but for attention."""
    common = dict(vocab_size=256, block_size=args.block_size, n_layer=args.n_layer, n_head=args.n_head,
                  n_embd=args.n_embd)
    return {"mha": GPTConfig(**common),
            "gqa": GPTConfig(**common, n_kv_head=args.n_kv_head or max(1, args.n_head // 4)),
            "mla": GPTConfig(**common, attention="mla", kv_latent=args.kv_latent, rope_dim=args.rope_dim)}


def load_data(args):
    """Bytes of the text as token ids (2.1), split 90/10 into train and validation (2.6)."""
    ids = np.array(ByteTokenizer().encode(read_text(args.data)), dtype=np.uint16)
    train, val = split_data(ids, 0.1, args.block_size)
    if min(len(train), len(val)) <= args.block_size:
        raise SystemExit(f"error: {args.data} is too short for --block_size {args.block_size}")
    return train, val


# ----------------------------------------------------------------------------------------------------
# Training: one variant, the same recipe and batches as the others
class Progress:
    """Step, loss, training tokens/s and the time left for the training of all variants (evals included)."""

    def __init__(self, total_steps):
        self.total, self.done, self.start = total_steps, 0, time.perf_counter()

    def line(self, name, step, steps, loss, tokens_per_s):
        eta = (self.total - self.done) * (time.perf_counter() - self.start) / max(1, self.done)
        print(f"{name:4s} step {step:4d}/{steps} | loss {loss:.4f} | {tokens_per_s:,.0f} tok/s | "
              f"ETA training {int(eta) // 60}m{int(eta) % 60:02d}s", flush=True)


def train_variant(name, cfg, train, val, args, progress):
    """Train from the seed; return the model and its validation losses [(step, loss)] on fixed batches."""
    torch.manual_seed(args.seed)
    model = GPT(cfg)
    recipe = TrainConfig(lr=args.lr, max_steps=args.steps, warmup_steps=args.warmup_steps, min_lr_ratio=0.1)
    optimizer = make_optimizer(model, recipe)
    batches = torch.Generator().manual_seed(args.seed)  # the same batches, in the same order, for every variant
    history, tokens, step_seconds, logged = [], args.batch_size * args.block_size, 0.0, 0
    for step in range(1, args.steps + 1):
        t0 = time.perf_counter()
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step - 1, recipe)
        x, y = get_batch(train, args.block_size, args.batch_size, batches)
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm(model.parameters(), recipe.grad_clip)
        optimizer.step()
        step_seconds += time.perf_counter() - t0  # tokens/s of training alone, validation not counted
        if step % args.eval_interval == 0 or step == args.steps:
            history.append((step, validation_loss(model, val, args)))
        progress.done += 1
        if step % args.log_interval == 0 or step == args.steps:
            progress.line(name, step, args.steps, loss.item(), tokens * (step - logged) / step_seconds)
            step_seconds, logged = 0.0, step
    return model.eval(), history


def validation_loss(model, val, args):
    """2.6 The mean loss over eval_iters batches drawn with seed 0: the same batches at each call, for each variant."""
    return estimate_loss(model, {"val": val}, args.block_size, args.batch_size, args.eval_iters, "cpu", seed=0)["val"]


# ----------------------------------------------------------------------------------------------------
# The cache and decoding speed
def held_per_token(model, prompt):
    """Numbers the KV cache really holds per token after the prompt: every layer's tensors, counted."""
    cache = model.new_cache()
    with torch.no_grad():
        model(prompt, cache=cache)
    return sum(t.numel() for c in cache for t in (c.k, c.v)) / prompt.numel()


def decode_tokens_per_s(model, prompt, n_tokens):
    """Tokens per second of GPT.generate with the KV cache (3.4; it rolls past block_size, 3.6), greedy."""
    start = time.perf_counter()
    model.generate(prompt, n_tokens, temperature=0)
    return prompt.size(0) * n_tokens / (time.perf_counter() - start)


def decode_speeds(models, val, args):
    """{(setting, batch): tokens/s}, the fastest of decode_rounds measurements taken round-robin, so that a busy
    spell of the machine slows every setting alike. Settings: each variant, and MLA also absorbed."""
    settings = [(name, False) for name in models] + [("mla", True)]
    prompts = {b: torch.from_numpy(np.stack([val[i * 97:i * 97 + 16] for i in range(b)]).astype(np.int64))
               for b in (1, args.decode_batch)}  # 16 bytes of validation text per row
    best = {}
    for _ in range(args.decode_rounds):
        for name, absorb in settings:
            model = set_absorb(models[name], absorb)
            for b, prompt in prompts.items():
                model.generate(prompt, 4, temperature=0)  # warm-up
                key = (name + ("_absorbed" if absorb else ""), b)
                best[key] = max(best.get(key, 0.0), decode_tokens_per_s(model, prompt, args.decode_tokens))
        set_absorb(models["mla"], False)
    return best


# ----------------------------------------------------------------------------------------------------
# Report
def summarize(configs, models, histories, speeds, held, args):
    mha_numbers, mha_val = kv_cache_numbers_per_token(configs["mha"]), histories["mha"][-1][1]
    rows = []
    for name, cfg in configs.items():
        numbers, val = kv_cache_numbers_per_token(cfg), histories[name][-1][1]
        if held[name] != numbers:  # the formula must describe the cache the model really fills
            raise SystemExit(f"error: {name}'s cache holds {held[name]} numbers per token, the formula says {numbers}")
        paths = [name, "mla_absorbed"] if name == "mla" else [name]
        rows.append({"variant": name, "attention": describe(cfg), "params": models[name].num_params(),
                     "cache_numbers_per_token": numbers, "cache_numbers_held": held[name],
                     "cache_bytes_per_token_bf16": numbers * BF16_BYTES, "cache_share_of_mha": numbers / mha_numbers,
                     "val_loss": val, "val_gap_to_mha": val - mha_val, "history": histories[name],
                     "decode_tokens_per_s": {p: {str(b): round(speeds[(p, b)], 1) for b in (1, args.decode_batch)}
                                             for p in paths}})
    mla = rows[-1]
    verdict = {"target_share": TARGET_SHARE, "target_gap": TARGET_GAP, "mla_share": mla["cache_share_of_mha"],
               "mla_gap": mla["val_gap_to_mha"],
               "met": mla["cache_share_of_mha"] <= TARGET_SHARE and mla["val_gap_to_mha"] <= TARGET_GAP}
    return rows, verdict


def describe(cfg):
    hs = cfg.n_embd // cfg.n_head
    if cfg.attention == "mla":
        return f"MLA: latent {cfg.kv_latent} + RoPE key {cfg.rope_dim}, {cfg.n_head} heads of {hs}"
    n_kv = cfg.n_kv_head or cfg.n_head
    return f"{'MHA' if n_kv == cfg.n_head else 'GQA'}: {cfg.n_head} query heads, {n_kv} k/v heads of {hs}"


def table(rows, args):
    b = args.decode_batch
    lines = ["| variant | attention | params | cache numbers / token | bf16 bytes / token | % of MHA | val loss "
             f"| vs MHA | decode tok/s, batch 1 | decode tok/s, batch {b} |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        for path, speed in r["decode_tokens_per_s"].items():
            first = path == r["variant"]
            cells = [f"{r['params']:,}", f"{r['cache_numbers_per_token']:,}", f"{r['cache_bytes_per_token_bf16']:,}",
                     f"{100 * r['cache_share_of_mha']:.2f}%", f"{r['val_loss']:.4f}", f"{r['val_gap_to_mha']:+.4f}"]
            name = r["variant"] if first else f"{r['variant']} (absorbed)"
            lines.append(f"| {name} | {r['attention'] if first else 'the same model, W_uk/W_uv absorbed'} | "
                         + " | ".join(cells if first else ["\""] * len(cells))
                         + f" | {speed['1']:,.0f} | {speed[str(b)]:,.0f} |")
    return "\n".join(lines)


def report(rows, verdict, args, argv, wall):
    word = "met" if verdict["met"] else "NOT met"
    return "\n".join([
        "# 9.2 KV cache: MHA vs GQA vs MLA", "",
        f"`python {' '.join([os.path.relpath(__file__)] + argv)}` ({wall / 60:.1f} min, "
        f"{torch.get_num_threads()} thread(s), {platform.machine()}, torch {torch.__version__})",
        "",
        f"Byte-level, {args.n_layer} layers, width {args.n_embd}, block {args.block_size}; {args.steps} steps of "
        f"{args.batch_size} sequences, lr {args.lr:g} (warmup {args.warmup_steps}, cosine to 10%), seed {args.seed}; "
        f"val loss on the same {args.eval_iters} fixed batches. Cache per token over all layers (the formula, "
        "checked against the numbers a cache holds); decoding: GPT.generate with the KV cache, greedy, "
        f"{args.decode_tokens} new tokens after 16, fastest of {args.decode_rounds} interleaved runs.", "",
        table(rows, args), "",
        f"Target (cache <= {100 * TARGET_SHARE:.0f}% of MHA's at <= +{TARGET_GAP} val loss): **{word}** — MLA's "
        f"cache is {100 * verdict['mla_share']:.2f}% of MHA's, its val loss {verdict['mla_gap']:+.4f} from MHA's.", ""])


def plot(rows, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for r in rows:
        steps, losses = zip(*r["history"])
        share = f"{100 * r['cache_share_of_mha']:.0f}% of MHA's cache"
        ax.plot(steps, losses, marker=".", label=f"{r['variant']} ({share})")
    ax.set_xlabel("step")
    ax.set_ylabel("val loss (nats per byte)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_results(out_dir, rows, verdict, markdown, args):
    """Each file is written to a temp name, then renamed: an interrupted run leaves no half-written result."""
    os.makedirs(out_dir, exist_ok=True)
    files = {"mla.json": lambda f: json.dump({"args": vars(args), "rows": rows, "verdict": verdict}, f, indent=1),
             "mla.md": lambda f: f.write(markdown)}
    for name, write in files.items():
        tmp = os.path.join(out_dir, name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            write(f)
        os.replace(tmp, os.path.join(out_dir, name))
    tmp = os.path.join(out_dir, "mla.tmp.png")
    plot(rows, tmp)
    os.replace(tmp, os.path.join(out_dir, "mla.png"))


def run(args):
    """The whole benchmark; returns (rows, verdict). main() adds the checks and the files."""
    configs = check_args(args)
    train, val = load_data(args)
    progress = Progress(args.steps * len(configs))
    models, histories = {}, {}
    for name, cfg in configs.items():
        print(f"=== {name}: {describe(cfg)}", flush=True)
        models[name], histories[name] = train_variant(name, cfg, train, val, args, progress)
    prompt = torch.from_numpy(val[:args.block_size].astype(np.int64))[None]
    held = {name: held_per_token(m, prompt) for name, m in models.items()}
    print("=== decoding speed", flush=True)
    speeds = decode_speeds(models, val, args)
    return summarize(configs, models, histories, speeds, held, args)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    start = time.perf_counter()
    rows, verdict = run(args)
    markdown = report(rows, verdict, args, argv, time.perf_counter() - start)
    write_results(args.out_dir, rows, verdict, markdown, args)
    print("\n" + markdown)
    print(f"written: {', '.join(os.path.join(args.out_dir, f) for f in RESULT_FILES)}")
    return rows, verdict


if __name__ == "__main__":
    main()
