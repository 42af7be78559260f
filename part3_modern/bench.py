"""Part 3 milestone: benchmarks before vs. after each upgrade, on the full tinyshakespeare.

    python part3_modern/bench.py              # everything, ~15 minutes on 2 CPU cores
    python part3_modern/bench.py --quick      # a ~4-minute look (300 steps, short KV and stream tests)
    python part3_modern/bench.py --only kv    # sections: ladder, grads, kv, stream (kv, stream use the ladder's model)
    python part3_modern/bench.py --results part3_modern/results   # update the published figures

1. The ladder: Part 2's model and recipe, then + RMSNorm (3.1), + RoPE (3.2), + SwiGLU (3.3), then the modern
   recipe (warmup, cosine decay, tuned lr). Same data, seed, steps and eval batches for every row. Recipe of
   Part 2's speed benchmark: 4 layers, 4 heads, width 128, block 64, batch 12, 2000 steps, eval every 100 steps.
   Wall times on a shared machine drift, so the ms/step column is measured separately, all configs
   interleaved in one loop; time to val 1.886 = steps to reach it x ms/step.
2. 3.1 gradients: LayerNorm vs RMSNorm, gradient norm at every step of the same short run.
3. 3.4 KV cache: greedy decoding tokens/s with and without the cache.
4. 3.5/3.6 streaming: per-token loss over a text 64x the training context, full attention (recomputed over the
   last block_size tokens) vs. the rolling cache with a window only vs. window + 4 attention sinks.
Results (tables, JSON and plots) go to --results (default: out/part3_bench/results, so a run never overwrites
the published figures in part3_modern/results by accident), next to the machine's matmul GFLOP/s.
"""
import argparse
import dataclasses
import json
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from model import GPT, GPTConfig, attention_mask, split_heads
from optim import clip_grad_norm
from tokenizer import ByteTokenizer
from train import TrainConfig, get_batch, load_checkpoint, load_text, lr_at, make_optimizer, split_data
from train import main as train_main

TARGET_VAL = 1.886
DATA = "data/tinyshakespeare.txt"
PART2_MODEL = dict(norm="layernorm", pos_embedding="learned", mlp="gelu")
PART2_RECIPE = dict(lr=2e-3, warmup_steps=0, min_lr_ratio=1.0)  # constant lr, as Part 2 trains
LADDER = [  # (name, model flags, recipe): each row adds one upgrade to the row above
    ("Part 2 (LayerNorm, learned positions, GELU)", PART2_MODEL, PART2_RECIPE),
    ("+ RMSNorm (3.1)", dict(PART2_MODEL, norm="rmsnorm"), PART2_RECIPE),
    ("+ RoPE (3.2)", dict(mlp="gelu"), PART2_RECIPE),
    ("+ SwiGLU (3.3) = all upgrades", {}, PART2_RECIPE),
    ("all upgrades + modern recipe", {}, {}),  # TrainConfig's defaults: warmup + cosine
]


def matmul_gflops(n=512, seconds=0.5):
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def recipe(flags, recipe_overrides, max_steps, out_dir):
    train_cfg = TrainConfig(data=DATA, out_dir=out_dir, overwrite=True, batch_size=12, max_steps=max_steps,
                            eval_interval=100, eval_iters=20, log_interval=500, sample_tokens=200,
                            target_loss=TARGET_VAL, **recipe_overrides)
    model_cfg = GPTConfig(block_size=64, n_layer=4, n_head=4, n_embd=128, **flags)
    return train_cfg, model_cfg


# ----------------------------------------------------------------------------------------------------
# 1. The ladder
def step_times(configs, rounds, steps_per_round=10):
    """Median ms per training step of each (model_cfg, train_cfg), measured round-robin so that a busy spell
    of the machine slows every config alike."""
    runs = []
    for train_cfg, model_cfg in configs:
        torch.manual_seed(0)
        model = GPT(dataclasses.replace(model_cfg, vocab_size=256))
        runs.append((model, make_optimizer(model, train_cfg), model_cfg, train_cfg, []))
    data = torch.randint(0, 256, (10_000,))
    for r in range(rounds + 1):
        for model, optimizer, model_cfg, train_cfg, times in runs:
            start = time.perf_counter()
            for _ in range(steps_per_round):
                x, y = get_batch(data, model_cfg.block_size, train_cfg.batch_size)
                _, loss = model(x, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                clip_grad_norm(model.parameters(), train_cfg.grad_clip)
                optimizer.step()
            if r > 0:  # round 0 warms up
                times.append((time.perf_counter() - start) / steps_per_round * 1000)
    return [statistics.median(run[-1]) for run in runs]


def run_ladder(args):
    configs = [recipe(flags, rec, args.max_steps, os.path.join(args.out_dir, f"rung{i}"))
               for i, (_, flags, rec) in enumerate(LADDER)]
    rows = []
    for (name, _, _), (train_cfg, model_cfg) in zip(LADDER, configs):
        print(f"\n=== {name}")
        result = train_main(train_cfg, model_cfg)
        reached = result["reached_target"]
        rows.append({"name": name, "params": GPT(dataclasses.replace(model_cfg, vocab_size=256)).num_params(),
                     "best_val": round(result["best_val"], 4), "final_val": round(result["history"][-1]["val"], 4),
                     "wall_s": round(result["wall_time"], 1),
                     "tokens_per_s": round(12 * 64 * args.max_steps / result["wall_time"]),
                     "step_at_target": reached["step"] if reached else None,
                     "wall_to_target_s": round(reached["time"], 1) if reached else None,
                     "history": result["history"], "checkpoint": result["checkpoint"],
                     "model_config": dataclasses.asdict(model_cfg),
                     "recipe": {k: getattr(train_cfg, k) for k in ("lr", "warmup_steps", "min_lr_ratio",
                                                                   "weight_decay")}})
    print("\n=== ms per training step, all configs interleaved")
    for row, ms in zip(rows, step_times(configs, rounds=args.timing_rounds)):
        row["ms_per_step"] = round(ms, 1)
        row["time_to_target_s"] = round(row["step_at_target"] * ms / 1000, 1) if row["step_at_target"] else None
    base, best = rows[0], rows[-1]
    summary = {"step_time_ratio": round(best["ms_per_step"] / base["ms_per_step"], 3)}
    if base["time_to_target_s"] and best["time_to_target_s"]:
        summary["time_to_target_ratio"] = round(best["time_to_target_s"] / base["time_to_target_s"], 3)
        summary["wall_to_target_ratio"] = round(best["wall_to_target_s"] / base["wall_to_target_s"], 3)
    return {"rows": rows, **summary}


def ladder_table(ladder):
    lines = ["| model | recipe | params | best val | val at end | ms/step (interleaved) | tokens/s (run) | wall time "
             f"| step at val {TARGET_VAL} | time to {TARGET_VAL} (steps x ms/step) | wall time to {TARGET_VAL} |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in ladder["rows"]:
        reached = r["step_at_target"] is not None
        lines.append(f"| {r['name']} | {recipe_name(r['recipe'])} | {r['params']:,} | {r['best_val']:.4f} "
                     f"| {r['final_val']:.4f} "
                     f"| {r['ms_per_step']} | {r['tokens_per_s']:,} | {r['wall_s']} s "
                     f"| {r['step_at_target'] if reached else 'not reached'} "
                     f"| {str(r['time_to_target_s']) + ' s' if reached else '-'} "
                     f"| {str(r['wall_to_target_s']) + ' s' if reached else '-'} |")
    return "\n".join(lines)


def recipe_name(rec):
    if rec["warmup_steps"] == 0 and rec["min_lr_ratio"] == 1.0:
        return f"lr {rec['lr']:g} constant"
    return f"lr {rec['lr']:g}, warmup {rec['warmup_steps']}, cosine to {rec['min_lr_ratio']:g}x"


def plot_ladder(ladder, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in ladder["rows"]:
        steps = [h["step"] for h in r["history"]]
        vals = [h["val"] for h in r["history"]]
        axes[0].plot(steps, vals, label=r["name"])
        axes[1].plot([s * r["ms_per_step"] / 1000 for s in steps], vals, label=r["name"])
    for ax, xlabel in zip(axes, ["step", "training time, s (steps x interleaved ms/step)"]):
        ax.axhline(TARGET_VAL, color="grey", ls="--", lw=0.8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("val loss (nats per byte)")
        ax.set_ylim(top=2.4)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------
# 2. 3.1 Gradients: LayerNorm vs RMSNorm
def gradient_norms(flags, steps):
    """Total gradient norm (before clipping) at every step of a short run with Part 2's recipe."""
    train_cfg, model_cfg = recipe(flags, PART2_RECIPE, steps, out_dir="")
    torch.manual_seed(train_cfg.seed)
    gen = torch.Generator().manual_seed(train_cfg.seed)
    train_data, _ = split_data(ByteTokenizer().encode(load_text(DATA)), train_cfg.val_fraction, 64)
    model = GPT(dataclasses.replace(model_cfg, vocab_size=256))
    optimizer = make_optimizer(model, train_cfg)
    norms, losses = [], []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step, train_cfg)
        _, loss = model(*get_batch(train_data, 64, train_cfg.batch_size, gen))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        norms.append(clip_grad_norm(model.parameters(), train_cfg.grad_clip).item())
        losses.append(loss.item())
        optimizer.step()
    return {"grad_norm": norms, "loss": losses}


def run_grads(args):
    out = {name: gradient_norms(dict(PART2_MODEL, norm=norm), args.grad_steps)
           for name, norm in (("LayerNorm", "layernorm"), ("RMSNorm", "rmsnorm"))}
    for r in out.values():
        n = r["grad_norm"]
        r["summary"] = {"median_first_100": round(statistics.median(n[:100]), 3),
                        "median_rest": round(statistics.median(n[100:]), 3),
                        "max": round(max(n), 3), "clipped_fraction": round(sum(g > 1.0 for g in n) / len(n), 3),
                        "mean_loss_last_100": round(statistics.mean(r["loss"][-100:]), 4)}
    return out


def grads_table(grads):
    lines = ["| norm | median grad norm, steps 1-100 | median grad norm, later | max | steps clipped (norm > 1) "
             "| mean train loss, last 100 steps |", "|---|---:|---:|---:|---:|---:|"]
    for name, r in grads.items():
        s = r["summary"]
        lines.append(f"| {name} | {s['median_first_100']} | {s['median_rest']} | {s['max']} "
                     f"| {s['clipped_fraction']:.0%} | {s['mean_loss_last_100']} |")
    return "\n".join(lines)


def plot_grads(grads, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for (name, r), colour in zip(grads.items(), ["C0", "C1"]):
        axes[0].plot(r["grad_norm"], color=colour, alpha=0.3, lw=0.6)
        axes[0].plot(range(19, len(r["grad_norm"])), moving_average(r["grad_norm"], 20), color=colour, label=name)
        axes[1].plot(range(19, len(r["loss"])), moving_average(r["loss"], 20), color=colour, label=name)
    axes[0].axhline(1.0, color="grey", ls="--", lw=0.8)  # the clipping threshold
    axes[0].set_ylabel("gradient norm before clipping (faint: every step)")
    axes[1].set_ylabel("train loss (20-step average)")
    for ax in axes:
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend()
    axes[0].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------
# 3. 3.4 KV cache speed
def trained_model(args, **overrides):
    """The ladder's all-upgrades model, with config overrides that need no new weights (block_size, window,
    n_sink: RoPE has no position table, so a model trained on 64 tokens can be built for any length)."""
    path = os.path.join(args.out_dir, f"rung{len(LADDER) - 1}", "best.pt")
    if not os.path.isfile(path):
        raise SystemExit(f"error: {path} not found; run the ladder first: python part3_modern/bench.py --only ladder")
    trained, _ = load_checkpoint(path)
    model = GPT(dataclasses.replace(trained.config, **overrides))
    model.load_state_dict(trained.state_dict())
    return model.eval()


def timed_generate(model, prompt, n, use_cache):
    start = time.perf_counter()
    out = model.generate(prompt, n, temperature=0, use_cache=use_cache)
    return out, time.perf_counter() - start


def run_kv(args):
    """Greedy decoding from a short prompt. The no-cache baseline reruns the whole text for each token, so the
    model is built with block_size = prompt + new tokens: nothing is cropped and both give the same tokens.
    The last row decodes a batch of sequences at once: the same number of steps, more work per step."""
    prompt = torch.tensor([ByteTokenizer().encode("ROMEO:\nWhat light")])
    runs = [(n, 1) for n in args.kv_tokens] + ([(512, args.kv_batch)] if args.kv_batch > 1 else [])
    rows = []
    for n, batch in runs:
        model = trained_model(args, block_size=prompt.size(1) + n)
        prompts = prompt.expand(batch, -1)
        cached = min((timed_generate(model, prompts, n, True) for _ in range(3)), key=lambda r: r[1])
        full = timed_generate(model, prompts, n, False)
        rows.append({"new_tokens": n, "batch": batch, "prompt_tokens": prompt.size(1),
                     "cached_tok_s": round(batch * n / cached[1]), "no_cache_tok_s": round(batch * n / full[1]),
                     "speedup": round(full[1] / cached[1], 1), "same_tokens": torch.equal(cached[0], full[0])})
        print(rows[-1])
    return rows


def kv_table(rows):
    lines = ["| new tokens | batch | with cache, tokens/s | without cache, tokens/s | speed-up | same greedy tokens |",
             "|---:|---:|---:|---:|---:|---|"]
    lines += [f"| {r['new_tokens']} | {r.get('batch', 1)} | {r['cached_tok_s']:,} | {r['no_cache_tok_s']:,} "
              f"| {r['speedup']}x | {r['same_tokens']} |" for r in rows]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------
# 4. 3.5/3.6 Streaming
@torch.no_grad()
def losses_recomputed(model, tokens, context):
    """(a) Each token predicted from the `context` tokens before it (fewer at the start) by a fresh forward pass."""
    first = model(tokens[None, :context])[0][0]                              # predicts tokens 1..context
    windows = tokens[:-1].unfold(0, context, 1)[1:]                           # (N - context, context), sliding by 1
    last = torch.cat([model(chunk)[0][:, -1] for chunk in windows.split(256)])  # predicts tokens context+1..N
    return torch.cat([F.cross_entropy(first, tokens[1:context + 1], reduction="none"),
                      F.cross_entropy(last, tokens[context + 1:], reduction="none")])


@torch.no_grad()
def losses_streamed(model, tokens):
    """(b)/(c) One token at a time through the rolling KV cache; returns the loss of each next token."""
    cache = model.new_cache()
    losses = []
    for t in range(len(tokens) - 1):
        logits = model(tokens[None, t:t + 1], cache=cache)[0][0, -1]
        losses.append(F.cross_entropy(logits, tokens[t + 1]))
    slots = {tuple(c.k.shape) for c in cache}
    return torch.stack(losses), slots


@torch.no_grad()
def losses_dense(model, tokens):
    """(d) Plain full attention over the whole stream, far past the 64 positions the model was trained on."""
    logits = model(tokens[None, :-1])[0][0]
    return F.cross_entropy(logits, tokens[1:], reduction="none")


@torch.no_grad()
def attention_on_first_token(model, windows, min_query=16):
    """Mean attention weight that queries at positions >= min_query put on position 0, per layer (all heads).
    An attention sink shows up as a weight far above the uniform share 1/(query position + 1)."""
    x, per_layer = model.wte(windows), []
    T = windows.size(1)
    for block in model.blocks:
        attn = block.attn
        q, k, _ = attn.c_attn(block.ln_1(x)).split(x.size(-1), dim=2)
        rope = attn.rope_cos[:T], attn.rope_sin[:T]
        q, k = split_heads(q, attn.n_head, rope), split_heads(k, attn.n_head, rope)
        scores = (q @ k.transpose(-2, -1) / q.size(-1) ** 0.5).masked_fill(~attention_mask(T), float("-inf"))
        per_layer.append(round(F.softmax(scores, dim=-1)[:, :, min_query:, 0].mean().item(), 4))
        x = block(x)
    uniform = round(sum(1 / (i + 1) for i in range(min_query, T)) / (T - min_query), 4)
    return {"per_layer": per_layer, "uniform": uniform}


def moving_average(values, width):
    values = torch.as_tensor(values, dtype=torch.float32)
    return F.avg_pool1d(values[None, None], width, stride=1)[0, 0].tolist() if len(values) >= width else values.tolist()


def run_stream(args):
    text = load_text(DATA)
    _, val = split_data(ByteTokenizer().encode(text), 0.1, 64)
    tokens = val[:args.stream_len + 1]
    context = 64
    curves = {
        "(a) full attention, last 64 tokens recomputed": losses_recomputed(trained_model(args), tokens, context),
    }
    slots = {}
    for name, window, n_sink in (("(b) rolling cache, window 64, no sinks", 64, 0),
                                 ("(c) rolling cache, window 60 + 4 sinks", 60, 4)):
        curves[name], slots[name] = losses_streamed(trained_model(args, window=window, n_sink=n_sink), tokens)
    curves["(d) dense attention over the whole stream"] = losses_dense(
        trained_model(args, block_size=len(tokens)), tokens)
    rows = []
    for name, losses in curves.items():
        rows.append({"name": name, "first_64": round(losses[:context].mean().item(), 4),
                     "after_64": round(losses[context:].mean().item(), 4),
                     "last_quarter": round(losses[-len(losses) // 4:].mean().item(), 4),
                     "cache_shapes": sorted(slots.get(name, []))})
    sinks = attention_on_first_token(trained_model(args), tokens.unfold(0, context, context)[:64])
    return {"stream_len": len(tokens) - 1, "rows": rows, "first_token_attention": sinks,
            "curves": {k: v.tolist() for k, v in curves.items()}}


def stream_table(stream):
    lines = [f"| method | mean loss, tokens 1-64 | mean loss, tokens 65-{stream['stream_len']} "
             "| mean loss, last quarter | KV cache per layer (B, heads, slots, head size) |",
             "|---|---:|---:|---:|---|"]
    for r in stream["rows"]:
        shapes = ", ".join(str(s) for s in r["cache_shapes"]) or "-"
        lines.append(f"| {r['name']} | {r['first_64']} | {r['after_64']} | {r['last_quarter']} | {shapes} |")
    sinks = stream.get("first_token_attention")
    if sinks:
        lines.append(f"\nAttention weight on the first token of a 64-token window (queries 16-63, all heads), per "
                     f"layer: {', '.join(str(w) for w in sinks['per_layer'])}; a uniform spread would give "
                     f"{sinks['uniform']}.")
    return "\n".join(lines)


def plot_stream(stream, path, width=128):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, losses in stream["curves"].items():
        smooth = moving_average(losses, width)
        ax.plot(range(width, width + len(smooth)), smooth, label=name, lw=1)
    ax.axvline(64, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("position in the stream (tokens); dashed: the training context")
    ax.set_ylabel(f"loss per token ({width}-token moving average)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="300 steps, KV cache up to 256 tokens, a 1024-token stream")
    p.add_argument("--only", choices=["ladder", "grads", "kv", "stream"], nargs="+", default=None,
                   help="run only these sections (default: all)")
    p.add_argument("--max_steps", type=int, default=2000, help="steps of each ladder row (default: %(default)s)")
    p.add_argument("--timing_rounds", type=int, default=8, help="rounds of 10 interleaved steps per config "
                   "for ms/step (default: %(default)s)")
    p.add_argument("--grad_steps", type=int, default=500, help="3.1 gradient run length (default: %(default)s)")
    p.add_argument("--kv_tokens", type=int, nargs="+", default=[128, 256, 512, 1024], help="(default: %(default)s)")
    p.add_argument("--kv_batch", type=int, default=8, help="one more KV-cache row: 512 tokens for this many "
                   "sequences at once; 1 = skip (default: %(default)s)")
    p.add_argument("--stream_len", type=int, default=4096, help="tokens in the streaming test (default: %(default)s)")
    p.add_argument("--out_dir", default=None, help="checkpoints (default: out/part3_bench, or out/part3_bench_quick)")
    p.add_argument("--results", default=None, help="tables, JSON and plots (default: OUT_DIR/results; pass "
                   "part3_modern/results to update the published figures)")
    args = p.parse_args(argv)
    args.out_dir = args.out_dir or ("out/part3_bench_quick" if args.quick else "out/part3_bench")
    args.command = "python part3_modern/bench.py" + (" --quick" if args.quick else "")
    args.command += f" --results {args.results}" if args.results else ""
    args.results = args.results or os.path.join(args.out_dir, "results")
    if args.quick:
        args.max_steps, args.timing_rounds, args.grad_steps = 300, 3, 200
        args.kv_tokens, args.kv_batch, args.stream_len = [128, 256], 1, 1024
    if args.max_steps < 100 or args.grad_steps < 101 or args.stream_len < 256 or min(args.kv_tokens) < 1:
        p.error("--max_steps must be >= 100, --grad_steps > 100, --stream_len >= 256 and --kv_tokens >= 1")
    if not os.path.isfile(DATA):
        p.error(f"{DATA} not found; run from the repo root")
    return args


def main(argv=None):
    args = parse_args(argv)
    sections = args.only or ["ladder", "grads", "kv", "stream"]
    os.makedirs(args.results, exist_ok=True)
    json_path = os.path.join(args.results, "bench.json")
    results = {}
    if os.path.isfile(json_path) and args.only:  # keep the other sections of an earlier full run
        with open(json_path) as f:
            results = json.load(f)
    results["machine"] = (f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
                          f"{torch.get_num_threads()} threads")
    gflops_before = round(matmul_gflops(), 1)
    t0 = time.time()
    if "ladder" in sections:
        results["ladder"] = run_ladder(args)
        plot_ladder(results["ladder"], os.path.join(args.results, "val_loss.png"))
    if "grads" in sections:
        results["grads"] = run_grads(args)
        plot_grads(results["grads"], os.path.join(args.results, "grad_norms.png"))
    if "kv" in sections:
        results["kv"] = run_kv(args)
    if "stream" in sections:
        results["stream"] = run_stream(args)
        plot_stream(results["stream"], os.path.join(args.results, "streaming.png"))
    gflops = {"before": gflops_before, "after": round(matmul_gflops(), 1)}
    if args.only and "matmul_gflops" in results:  # a rerun of some sections: keep the first run's figures
        results["rerun"] = results.get("rerun", []) + [{"sections": args.only, "matmul_gflops": gflops,
                                                        "wall_s": round(time.time() - t0)}]
    else:
        results["matmul_gflops"], results["bench_wall_s"] = gflops, round(time.time() - t0)
        results["command"] = args.command

    report = write_report(results, os.path.join(args.results, "bench.md"))
    print("\n" + report)
    with open(json_path, "w") as f:
        json.dump(results, f, indent=1)
    return results


def write_report(results, path):
    g = results["matmul_gflops"]
    parts = [f"# Part 3 benchmark\n\nCommand: `{results['command']}` (from the repo root), "
             f"{results['bench_wall_s']} s. Machine: {results['machine']}; matmul {g['before']} GFLOP/s before, "
             f"{g['after']} after (512x512 fp32)."]
    for r in results.get("rerun", []):
        parts[0] += (f" Rerun with `--only {' '.join(r['sections'])}`: matmul {r['matmul_gflops']['before']} / "
                     f"{r['matmul_gflops']['after']} GFLOP/s, {r['wall_s']} s.")
    if "ladder" in results:
        lad = results["ladder"]
        parts.append(f"## 1. Upgrades, one at a time (full tinyshakespeare, {lad['rows'][0]['history'][-1]['step']} "
                     f"steps)\n\n{ladder_table(lad)}\n\nms/step of all upgrades / Part 2: {lad['step_time_ratio']}. "
                     f"Time to val {TARGET_VAL}, all upgrades + modern recipe / Part 2: "
                     f"{lad.get('time_to_target_ratio', 'n/a')} (steps x ms/step), "
                     f"{lad.get('wall_to_target_ratio', 'n/a')} (wall clock of the runs).\n\n![val loss](val_loss.png)")
    if "grads" in results:
        parts.append("## 2. LayerNorm vs RMSNorm gradients (Part 2 model and recipe)\n\n"
                     f"{grads_table(results['grads'])}\n\n![gradient norms](grad_norms.png)")
    if "kv" in results:
        parts.append(f"## 3. KV cache: greedy decoding, all-upgrades model\n\n{kv_table(results['kv'])}")
    if "stream" in results:
        parts.append(f"## 4. Streaming {results['stream']['stream_len']} tokens (model trained on 64)\n\n"
                     f"{stream_table(results['stream'])}\n\n![streaming](streaming.png)")
    report = "\n\n".join(parts) + "\n"
    with open(path, "w") as f:
        f.write(report)
    return report


if __name__ == "__main__":
    main()
