"""Part 5 milestone: does a Mixture-of-Experts beat a dense model that spends the same compute per token?

    python part5_moe/bench.py                          # CPU scale: six runs, about 5 minutes on 2 cores
    python part5_moe/bench.py --quick                  # a quarter of the steps: a 1-2 minute look
    python part5_moe/bench.py --scale gpu              # the milestone on one GPU (Part 4's shape, ~12 minutes)
    python part5_moe/bench.py --only dense,moe --steps 200
    python part5_moe/bench.py --out part5_moe/results/cpu   # update the published figures

Every variant is one `python part5_moe/train.py ...` run (the exact command is in bench.md), with the same
data, tokens, seed, learning rate and schedule; only the feed-forward layers differ:
    dense           Part 4's model: a SwiGLU MLP in every block (--n_expert 0)
    moe             8 experts, top-2, each expert half the dense MLP's width: the same active parameters
    hybrid          MoE in every 2nd block only, dense MLPs elsewhere, plus 1 always-on shared expert (5.4)
    dense_total     dense, with the MLP widened until the model has the MoE's *total* parameters (upper bound)
    moe_no_balance  moe without the load-balancing and z losses: how unbalanced the router gets alone
    moe_bias        moe balanced without an auxiliary loss: a per-expert selection bias (5.3, DeepSeek-V3)
Read back from each run's folder: val losses and tokens/s (metrics.jsonl), the config (results.json), the
load of each expert. Written to --out: bench.md, bench.json, val_loss.png, expert_load.png.
"""
import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import time

import torch

from model import GPT, GPTConfig, swiglu_hidden

VAL = "data/gutenberg_fiction_valid.txt.xz"
SCALES = {  # the train.py flags every variant shares; "steps" and "evals" (points on the curve) set the rest
    "cpu": dict(preset="cpu", data="data/gutenberg_train_a.txt.xz", val_data=VAL, max_chars=3_000_000,
                tokenizer_chars=500_000, bpe_vocab_size=1024, n_layer=4, n_head=4, n_embd=128, block_size=64,
                batch_size=16, lr=2e-3, dtype="fp32", compile=False, eval_iters=20, steps=250, evals=5),
    # gpu: 1500 steps = 49M tokens, about 2 epochs of part A. Measured on an H200 (2026-12-04, results/gpu/):
    # 30 / 38 / 39 / 37 / 38 / 81 ms a step once compiled (dense, moe, moe_no_balance, hybrid, moe_bias,
    # dense_total); a whole run, start-up and compiling included, ~94 s (dense, the first run, which also trains
    # the BPE and tokenizes part A), ~99-110 s (the MoE variants), ~161 s (dense_total). All six runs take
    # ~12 minutes: on a machine that stops a command at 10, run them in two calls (--only dense,moe,moe_no_balance:
    # 315 s, and --only hybrid,dense_total,moe_bias: 377 s). After 100 steps (3.3M tokens) the MoE was 0.22 nats
    # behind dense, after 1500 steps 0.006: a shorter run measures the MoE's slow start, not the milestone; a
    # longer one (4000 steps, 5 epochs of part A) overfits the MoE first. An MoE evaluates dropless (each expert
    # runs on every token), so eval_iters is small: 8 x 32k tokens is plenty.
    "gpu": dict(preset="gpu", data="data/gutenberg_train_a.txt.xz", val_data=VAL, max_chars=0,  # part A only
                tokenizer_chars=20_000_000, bpe_vocab_size=8192, n_layer=6, n_head=12, n_embd=768, block_size=1024,
                batch_size=32, lr=1.5e-3, dtype="bf16", compile=True, eval_iters=8, steps=1500, evals=6),
}
MOE = dict(n_expert=8, top_k=2, capacity_factor=1.25, aux_loss_coef=0.01, z_loss_coef=0.001)
VARIANTS = {  # name: (what it is, its own flags); expert_hidden and mlp_hidden are filled in by variant_flags
    "dense": ("Part 4's dense model", dict(n_expert=0)),
    "moe": ("8 experts, top-2, half-width experts", MOE),
    "hybrid": ("MoE every 2nd block + 1 shared expert", dict(MOE, moe_every=2, n_shared_expert=1)),
    "dense_total": ("dense, MLP as wide as the MoE's total params", dict(n_expert=0)),
    "moe_no_balance": ("moe without balancing or z loss", dict(MOE, aux_loss_coef=0, z_loss_coef=0)),
    "moe_bias": ("moe, aux-loss-free balancing (bias)", dict(MOE, aux_loss_coef=0)),
}
BALANCED = ("moe", "hybrid", "moe_bias")  # the variants whose router is balanced by something


def model_params(flags, vocab_size=None):
    """(total, active) parameters of the model these flags build (on the meta device: no memory, no time)."""
    config = {k: v for k, v in flags.items() if k in GPTConfig.__dataclass_fields__}
    with torch.device("meta"):
        model = GPT(GPTConfig(**dict(config, vocab_size=vocab_size or config["vocab_size"])))
    return model.num_params(), int(model.num_active_params())


def variant_flags(name, common, bias_rate):
    """All train.py flags of one variant. The shapes are spelled out: expert_hidden is the dense MLP's hidden
    width / top_k (what 0 would pick), dense_total's mlp_hidden gives the moe variant's total parameters."""
    flags = dict(common, **VARIANTS[name][1])
    if flags["n_expert"]:
        flags["expert_hidden"] = GPTConfig(n_embd=common["n_embd"], **MOE).expert_hidden
    if name == "moe_bias":
        flags["bias_update_rate"] = bias_rate
    if name == "dense_total":  # parameters grow linearly with mlp_hidden: two points give the line
        target = model_params(variant_flags("moe", common, bias_rate), common["bpe_vocab_size"])[0]
        p0, p1 = (model_params(dict(flags, mlp_hidden=h), common["bpe_vocab_size"])[0] for h in (1000, 2000))
        flags["mlp_hidden"] = round(1000 + (target - p0) * 1000 / (p1 - p0))
    return flags


def shape(flags):
    """The feed-forward layers of a variant in words, e.g. '4 MoE layers: 8 experts 128-170-128, top-2'."""
    c = GPTConfig(**{k: v for k, v in flags.items() if k in GPTConfig.__dataclass_fields__})
    dense = f"SwiGLU MLP {c.n_embd}-{c.mlp_hidden or swiglu_hidden(c.n_embd)}-{c.n_embd}"
    n_moe = sum(c.is_moe(i) for i in range(c.n_layer))
    if not n_moe:
        return f"{c.n_layer} x {dense}"
    text = f"{n_moe} MoE layers: {c.n_expert} experts {c.n_embd}-{c.expert_hidden}-{c.n_embd}, top-{c.top_k}"
    text += f" + {c.n_shared_expert} shared expert" if c.n_shared_expert else ""
    return text + (f"; {c.n_layer - n_moe} x {dense}" if n_moe < c.n_layer else "")


def command(flags, out_dir):
    steps = flags["steps"]
    args = {k: v for k, v in flags.items() if k not in ("steps", "evals")}
    args.update(max_steps=steps, warmup_steps=max(1, steps // 10), eval_interval=max(1, steps // flags["evals"]),
                log_interval=max(1, steps // 20), ckpt_interval=steps, sample_tokens=0, tensorboard=False, seed=1337,
                out_dir=out_dir, overwrite=True)
    text = {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in args.items()}
    train = os.path.relpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py"))  # part5_moe/train.py
    return [sys.executable, train] + [x for k, v in text.items() for x in (f"--{k}", v)]


def run_variant(name, cmd, log_path):
    """Run train.py, its whole output into log_path; print the lines that show progress."""
    start = time.time()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(log_path, "w") as log, subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                      text=True, env=env) as child:
        for line in child.stdout:
            log.write(line)
            if any(word in line for word in ("BPE", "tokenizing", "parameters |", "| val ", "best val", "rror")):
                print(f"  {name} {line.rstrip()}", flush=True)
    if child.returncode:
        raise SystemExit(f"error: variant {name} failed (exit {child.returncode}); its output: {log_path}")
    return time.time() - start


# ----------------------------------------------------------------------------------------------------
# Reading a run back: results.json (config, params, tokens) and metrics.jsonl (losses, speed, loads)
def summarize_run(run_dir):
    """One table row from a finished run's folder."""
    with open(os.path.join(run_dir, "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    per_step = results["tokens_seen"] / results["steps"]
    speeds = [r["tokens_per_s"] for r in rows if "tokens_per_s" in r and r["step"] > 1]  # step 1: start-up, compile
    tok_s = statistics.median(speeds) if speeds else None
    curve = [(r["step"] * per_step, r["val_loss"]) for r in rows if "val_loss" in r]
    loads = [r for r in rows if any(k.startswith("max_load_layer") for k in r)]
    total, active = model_params(results["model_config"])
    return {"params": total, "active_params": active, "tokens": results["tokens_seen"],
            "best_val": results["best_val"], "final_val": curve[-1][1] if curve else None, "val_curve": curve,
            "tokens_per_s": round(tok_s) if tok_s else None, "ms_per_step": 1000 * per_step / tok_s if tok_s else None,
            # the busiest expert over the last log interval, x the mean load: the max over the MoE layers
            "max_load": max(v for k, v in loads[-1].items() if k.startswith("max_load_layer")) if loads else None,
            "wall_s": results["wall_s"]}


def expert_shares(run_dir):
    """Per MoE layer, each expert's share of the assignments over the run's last log interval (results.json)."""
    with open(os.path.join(run_dir, "results.json")) as f:
        return json.load(f)["expert_load"], "training, last log interval"


def verdicts(rows):
    """(target, met, figures) for each milestone target whose variants were run."""
    out = []
    if "dense" in rows and "moe" in rows:
        d, m = rows["dense"], rows["moe"]
        gain = d["final_val"] - m["final_val"]
        out.append(("MoE >= 0.03 nats better than dense (equal active params, equal tokens)", gain >= 0.03,
                    f"dense {d['final_val']:.4f}, moe {m['final_val']:.4f}: {gain:+.4f} nats"))
        ratio = m["ms_per_step"] / d["ms_per_step"]
        out.append(("MoE step time <= 1.3x dense", ratio <= 1.3,
                    f"{m['ms_per_step']:.1f} vs {d['ms_per_step']:.1f} ms: {ratio:.2f}x"))
    for name in BALANCED:
        if name in rows and rows[name]["max_load"] is not None:
            load = rows[name]["max_load"]
            out.append((f"{name}: no expert above 1.5x the mean load", load <= 1.5, f"busiest expert {load:.2f}x"))
    if "moe_no_balance" in rows and "moe" in rows:
        off, on = rows["moe_no_balance"]["max_load"], rows["moe"]["max_load"]
        out.append(("imbalance without balancing shown", off > on, f"busiest expert {off:.2f}x off, {on:.2f}x on"))
    return out


# ----------------------------------------------------------------------------------------------------
# The report: a markdown table, JSON, and two plots
def table(rows):
    lines = ["| variant | params total / active | best val | final val | tokens/s | ms/step | vs dense | max load |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    dense_ms = rows.get("dense", {}).get("ms_per_step")
    for name, r in rows.items():
        ratio = f"{r['ms_per_step'] / dense_ms:.2f}x" if dense_ms and r["ms_per_step"] else ""
        load = f"{r['max_load']:.2f}x" if r["max_load"] is not None else ""
        lines.append(f"| {name} | {r['params'] / 1e6:.2f}M / {r['active_params'] / 1e6:.2f}M | {r['best_val']:.4f} | "
                     f"{r['final_val']:.4f} | {r['tokens_per_s']:,} | {r['ms_per_step']:.1f} | {ratio} | {load} |")
    return lines


def plot(rows, shares, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    for name, r in rows.items():
        ax.plot([t / 1e6 for t, _ in r["val_curve"]], [v for _, v in r["val_curve"]], marker="o", label=name)
    ax.set(xlabel="training tokens (M)", ylabel="val loss (nats/token)", title="Same data, tokens and seed")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "val_loss.png"), dpi=100)
    plt.close(fig)
    if not shares:
        return
    fig, axes = plt.subplots(len(shares), 1, figsize=(8, 2.6 * len(shares)), sharey=True, squeeze=False)
    for ax, (name, (layers, source)) in zip(axes[:, 0], shares.items()):
        n = len(layers[0])
        for layer, s in enumerate(layers):
            ax.bar([layer * (n + 1) + e for e in range(n)], s, color=f"C{layer % 10}")
        ax.axhline(1 / n, color="k", linestyle="--", linewidth=1)
        ax.set_xticks([layer * (n + 1) + (n - 1) / 2 for layer in range(len(layers))],
                      [f"MoE layer {i}" for i in range(len(layers))])
        ax.set(ylabel="share of tokens", title=f"{name} ({source}; dashed: perfect balance)")
    fig.tight_layout()
    fig.savefig(os.path.join(out, "expert_load.png"), dpi=100)
    plt.close(fig)


def machine():
    versions = f"Python {platform.python_version()}, torch {torch.__version__}"
    if torch.cuda.is_available():
        return f"{torch.cuda.get_device_name()}, {versions}"
    return f"{platform.machine()} CPU, {os.cpu_count()} cores, {versions}"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--scale", choices=SCALES, default="cpu", help="cpu: a small model, ~5 min on 2 cores; "
                   "gpu: Part 4's milestone shape on one H100 (default: %(default)s)")
    p.add_argument("--only", default=",".join(VARIANTS), help="comma-separated variants (default: %(default)s)")
    p.add_argument("--steps", type=int, default=0, help="training steps of every variant (default: 0 = the scale's: "
                   + ", ".join(f"{k} {v['steps']}" for k, v in SCALES.items()) + ")")
    p.add_argument("--quick", action="store_true", help="a quarter of the scale's steps: a quick look")
    p.add_argument("--bias_update_rate", type=float, default=1e-2, help="moe_bias: how far each expert's selection "
                   "bias moves per step. DeepSeek-V3's 1e-3 is too slow for runs this short: at the CPU scale the "
                   "busiest expert was still at 1.72x after 250 steps, 1.10x with 1e-2 (default: %(default)s)")
    p.add_argument("--out", "--results", dest="results", default=None, help="bench.md, bench.json and the plots "
                   "(default: out/part5_bench/SCALE; pass part5_moe/results/SCALE to update the published figures)")
    p.add_argument("--runs", default=None, help="the training runs' folders: checkpoints, logs "
                   "(default: out/part5_bench/runs_SCALE)")
    args = p.parse_args(argv)
    args.command = shlex.join(["python", "part5_moe/bench.py", *(sys.argv[1:] if argv is None else argv)])
    args.variants = [v for v in args.only.split(",") if v]
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown or not args.variants:
        p.error(f"--only: unknown variant {', '.join(unknown) or '(none)'}; choose from {', '.join(VARIANTS)}")
    if args.steps < 0 or not 0 < args.bias_update_rate < 1:
        p.error("--steps must be >= 1 (0: the scale's) and --bias_update_rate between 0 and 1")
    args.steps = args.steps or SCALES[args.scale]["steps"] // (4 if args.quick else 1)
    args.results = args.results or f"out/part5_bench/{args.scale}"
    args.runs = args.runs or f"out/part5_bench/runs_{args.scale}"
    if not os.path.isfile(SCALES[args.scale]["data"]):
        p.error(f"{SCALES[args.scale]['data']} not found; run from the repo root")
    for flag, path in (("--out", args.results), ("--runs", args.runs)):
        if os.path.exists(path) and not os.path.isdir(path):
            p.error(f"{flag} {path} is a file, not a folder")
    return args


def write_report(args, rows, commands, shares, checks, loads, elapsed):
    """bench.json (everything, curves included) and bench.md (the command, the machine, the table, the verdicts)."""
    report = {"command": args.command, "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine(),
              "load_average_before_after": loads, "wall_s": round(elapsed), "steps": args.steps, "rows": rows,
              "commands": commands, "targets": [{"target": t, "met": met, "figures": f} for t, met, f in checks],
              "expert_shares": {n: {"source": s, "shares": layers} for n, (layers, s) in shares.items()}}
    with open(os.path.join(args.results, "bench.json"), "w") as f:
        json.dump(report, f, indent=1)
    tokens = next(iter(rows.values()))["tokens"]
    lines = [f"# Part 5 milestone bench ({args.scale})", "", f"`{args.command}` on {report['date']}: {machine()}, "
             f"load average {loads[0]:.2f} before and {loads[1]:.2f} after; {elapsed:.0f} s in all. Every variant: "
             f"{args.steps} steps, {tokens:,} tokens, seed 1337, the same data, lr and schedule.", "",
             *table(rows), "", "tokens/s: the median of the logged intervals (step 1, start-up and compiling, left "
             "out); ms/step from it. max load: the busiest expert's share of the assignments x n_expert, over the "
             "last log interval, in the busiest MoE layer (1.00x = even; with top-2 of 8 at most 4.00x: every token "
             "picks it).", "", *[f"- {'met' if met else 'MISSED'}: {t} ({f})" for t, met, f in checks], "",
             "Feed-forward layers:", "", *[f"- {n}: {r['shape']}" for n, r in rows.items()], "",
             "![val loss](val_loss.png)", ""]
    lines += ["![expert load](expert_load.png)", ""] if shares else []
    lines += ["Commands (each run's full output: RUNS/VARIANT.log):", "",
              *[f"- {n}: `{c}`" for n, c in commands.items()]]
    with open(os.path.join(args.results, "bench.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    return report


def main(argv=None):
    args = parse_args(argv)
    common = dict(SCALES[args.scale], steps=args.steps)
    os.makedirs(args.results, exist_ok=True)
    os.makedirs(args.runs, exist_ok=True)
    load_before, start, rows, commands = os.getloadavg()[0], time.time(), {}, {}
    print(f"{machine()} | load average {load_before:.2f} | {len(args.variants)} variants x {args.steps} steps")
    for i, name in enumerate(args.variants, 1):
        flags, run_dir = variant_flags(name, common, args.bias_update_rate), os.path.join(args.runs, name)
        cmd = command(flags, run_dir)
        commands[name] = shlex.join(["python", *cmd[1:]])
        print(f"[{i}/{len(args.variants)}] {name}: {VARIANTS[name][0]}; {shape(flags)}", flush=True)
        seconds = run_variant(name, cmd, run_dir + ".log")
        rows[name] = dict(summarize_run(run_dir), shape=shape(flags))
        print(f"  {name} done in {seconds:.0f}s | final val {rows[name]['final_val']:.4f} | "
              f"{rows[name]['tokens_per_s']:,} tok/s | {time.time() - start:.0f}s so far", flush=True)
        # the report so far after every variant: a run cut off by a time limit keeps what finished
        shares = {n: expert_shares(os.path.join(args.runs, n)) for n in ("moe", "moe_no_balance") if n in rows}
        checks = verdicts(rows)
        plot(rows, shares, args.results)
        elapsed = time.time() - start
        report = write_report(args, rows, commands, shares, checks, [round(load_before, 2),
                              round(os.getloadavg()[0], 2)], elapsed)
    print("\n".join(["", *table(rows), "", *[f"{'met' if met else 'MISSED'}: {t} ({f})" for t, met, f in checks],
                     f"wrote bench.md, bench.json and plots to {args.results} | {elapsed:.0f}s"]))
    return report


if __name__ == "__main__":
    main()
