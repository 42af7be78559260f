"""4.5 Plot training runs from their metrics.jsonl logs (no account, no server), or the 4.3 LR schedules.

    python part6_sft/plot_runs.py out/part5/metrics.jsonl [other/metrics.jsonl ...]   # -> out/runs.png
    python part6_sft/plot_runs.py --schedules --out part6_sft/results/schedules.png
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PANELS = [("loss", "training loss"), ("val_loss", "validation loss"), ("lr", "learning rate"),
          ("grad_norm", "gradient norm (before clipping)")]


def read_jsonl(path):
    if not os.path.isfile(path):
        raise SystemExit(f"error: log {path} not found; pass the metrics.jsonl of a run (its --out_dir)")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_runs(paths, out):
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for path in paths:
        rows = read_jsonl(path)
        label = os.path.basename(os.path.dirname(os.path.abspath(path)))
        for ax, (key, title) in zip(axes.flat, PANELS):
            points = [(r["step"], r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points), label=label)
            ax.set_title(title)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
    axes[0, 0].legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def plot_schedules(out, max_steps=1000, warmup=100):
    from train import TrainConfig, lr_at  # the same function the training loop calls

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for schedule in ("cosine", "wsd", "constant"):
        cfg = TrainConfig(schedule=schedule, max_steps=max_steps, warmup_steps=warmup, lr=1e-3)
        ax.plot(range(max_steps), [lr_at(s, cfg) for s in range(max_steps)], label=schedule)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title(f"4.3 schedules ({warmup} warmup steps, floor 0.1 x lr)", fontsize=10)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("logs", nargs="*", help="metrics.jsonl files")
    p.add_argument("--out", default="out/runs.png", help="the PNG to write (default: %(default)s)")
    p.add_argument("--schedules", action="store_true", help="plot the learning-rate schedules instead")
    args = p.parse_args(argv)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)  # out/ does not exist on a fresh clone
    if args.schedules:
        plot_schedules(args.out)
    elif args.logs:
        plot_runs(args.logs, args.out)
    else:
        p.error("give at least one metrics.jsonl, or --schedules")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    sys.exit(main())
