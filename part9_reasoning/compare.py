"""The milestone table: the SFT model, PPO, GRPO and DPO on the same held-out prompts, in one run.

    python part8_alignment/compare.py                       # every out/part8/<algo>/best.pt that exists
    python part8_alignment/compare.py --out part8_alignment/results   # compare.md, compare.json, compare.png there

Each policy checkpoint names the SFT model it started from and the reward model it used (train.py stores
both); they must be the same for every policy, or the rows would not be comparable (one line says so).
Every figure comes from rl_eval.evaluate_policy with the same prompts and seed: reward-model score, win rate
against SFT (sampled and greedy), verifiable accuracy (all families and SFT's weak ones), KL to the SFT
model, answer length and format compliance.
"""
import argparse
import os

import torch

import train
from checkpoint import read_checkpoint
from rl_eval import comparison_table, family_mean, write_json
from rl_train import frozen
from runtime import pick_device

ALGOS = ("ppo", "grpo", "dpo")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", default="out/part8", help="the folder with <algo>/best.pt (default: %(default)s)")
    p.add_argument("--out", default="out/part8", help="where compare.md/.json/.png go (default: %(default)s)")
    p.add_argument("--test_per_family", type=int, default=50,
                   help="held-out prompts per task family (default: %(default)s)")
    p.add_argument("--max_new_tokens", type=int, default=24, help="longest answer (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1337, help="which prompts, and the sampling (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: %(default)s)")
    args = p.parse_args(argv)
    if args.test_per_family < 1 or args.max_new_tokens < 1:
        p.error("--test_per_family and --max_new_tokens must be >= 1")
    return args


def find_policies(runs):
    """{"PPO": path, ...} for every <algo>/best.pt under runs, and the SFT and reward model they share."""
    found = {a.upper(): os.path.join(runs, a, "best.pt") for a in ALGOS
             if os.path.isfile(os.path.join(runs, a, "best.pt"))}
    if not found:
        raise SystemExit(f"error: no policy in {runs} (<algo>/best.pt): run python part8_alignment/train.py "
                         "--algo ppo (or grpo, dpo) first")
    origins = {name: read_checkpoint(path, mmap=True) for name, path in found.items()}
    pairs = {(c.get("sft"), c.get("reward_model")) for c in origins.values()}
    if len(pairs) != 1 or None in next(iter(pairs)):
        raise SystemExit(f"error: the policies in {runs} started from different SFT or reward models "
                         f"({sorted(map(str, pairs))}): rerun them with the same --sft and --reward_model")
    sft, rm = next(iter(pairs))
    return found, sft, rm


def plot(rows, families, path):
    """compare.png: win rate against SFT, verifiable accuracy on SFT's weak families, KL, one bar per model."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(rows)
    panels = (("RM win rate vs SFT (sampled)", [rows[n]["win_rate"] for n in names]),
              ("accuracy, SFT's weak families", [family_mean(rows[n], families) for n in names]),
              ("KL to SFT (per answer)", [rows[n]["kl"] for n in names]))
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    for ax, (title, values) in zip(axes, panels):
        ax.bar(names, values, color=["gray", "tab:blue", "tab:orange", "tab:green"][:len(names)])
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    args = parse_args(argv)
    found, sft_path, rm_path = find_policies(args.runs)
    device = pick_device(args.device)
    _, tok, ref, rm_score = train.load_models(sft_path, rm_path, device)
    models = {"SFT": ref}
    for name, path in found.items():
        models[name] = frozen(train.load_checkpoint(path, device)[0])
    cfg = argparse.Namespace(test_per_family=args.test_per_family, seed=args.seed, max_new_tokens=args.max_new_tokens)
    torch.manual_seed(args.seed)
    rows, families = train.grade_policies(models, tok, rm_score, cfg, device)
    table = comparison_table(rows, families)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "compare.md"), "w") as f:
        f.write(f"# SFT and the aligned policies, {len(rows['SFT']['greedy'])} held-out prompts\n\n"
                f"SFT: {sft_path}; reward model: {rm_path}\n\n{table}\n\nSFT's weak families (< 90%): "
                f"{', '.join(families)}\n")
    write_json(os.path.join(args.out, "compare.json"), rows)
    plot(rows, families, os.path.join(args.out, "compare.png"))
    print(table)
    return rows


if __name__ == "__main__":
    main()
