"""Speed benchmark: the classic small-GPT CPU recipe on the full tinyshakespeare.

    python part2_tiny_llm/bench.py              # ~2 minutes on 2 CPU cores
    python part2_tiny_llm/bench.py --max_steps 200   # a quick look

Recipe: 4 layers, 4 heads, width 128, block 64, batch 12, 2000 steps, bytes (vocab 256).
Reports wall time, tokens/s, final val loss and the wall time at which val loss first reaches 1.886
(the figure a well-known reference implementation reaches after this recipe), next to the machine's
matmul GFLOP/s, since absolute times on a shared machine vary by 2x from day to day.
"""
import argparse
import json
import os
import platform
import time

import torch

from train import TrainConfig, GPTConfig, main as train_main

TARGET_VAL = 1.886


def matmul_gflops(n=512, seconds=0.5):
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - start) / 1e9


def recipe(max_steps, out_dir):
    train_cfg = TrainConfig(data="data/tinyshakespeare.txt", out_dir=out_dir, overwrite=True, batch_size=12,
                            max_steps=max_steps, eval_interval=100, eval_iters=20, log_interval=250,
                            sample_tokens=200, target_loss=TARGET_VAL)
    model_cfg = GPTConfig(block_size=64, n_layer=4, n_head=4, n_embd=128)
    return train_cfg, model_cfg


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--max_steps", type=int, default=2000, help="(default: %(default)s)")
    p.add_argument("--out_dir", default="out/part2_bench", help="(default: %(default)s)")
    p.add_argument("--results", default=None, help="also write the table and JSON to this folder")
    args = p.parse_args(argv)
    gflops_before = matmul_gflops()
    result = train_main(*recipe(args.max_steps, args.out_dir))
    gflops_after = matmul_gflops()
    reached = result["reached_target"]
    tokens = 12 * 64 * args.max_steps
    row = {
        "machine": f"{platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "matmul_gflops_before": round(gflops_before, 1), "matmul_gflops_after": round(gflops_after, 1),
        "steps": args.max_steps, "wall_s": round(result["wall_time"], 1),
        "tokens_per_s": round(tokens / result["wall_time"]), "best_val": round(result["best_val"], 4),
        "time_to_target_s": round(reached["time"], 1) if reached else None,
        "step_at_target": reached["step"] if reached else None,
    }
    table = "\n".join([
        "| machine | matmul GFLOP/s (before/after) | steps | wall time | tokens/s | best val | time to val 1.886 |",
        "|---|---|---|---|---|---|---|",
        f"| {row['machine']} | {row['matmul_gflops_before']} / {row['matmul_gflops_after']} | {row['steps']} "
        f"| {row['wall_s']} s | {row['tokens_per_s']:,} | {row['best_val']} | "
        + (f"{row['time_to_target_s']} s (step {row['step_at_target']}) |" if reached else "not reached |"),
    ])
    print("\n" + table)
    if args.results:
        os.makedirs(args.results, exist_ok=True)
        with open(os.path.join(args.results, "bench.json"), "w") as f:
            json.dump({**row, "history": result["history"]}, f, indent=1)
        with open(os.path.join(args.results, "bench.md"), "w") as f:
            f.write(f"Command: `python part2_tiny_llm/bench.py --results {args.results}`\n\n{table}\n")
    return row


if __name__ == "__main__":
    main()
