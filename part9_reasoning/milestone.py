"""Part 9's milestone: one table of the measured gains, from the four runs that measure them.

    python part9_reasoning/train.py                  # 9.1 additions -> out/part9/reason/results.json
    python part9_reasoning/train.py --reason_family sum --reason_steps 800 --sc_temperature 0.8 \
        --rl_steps 100 --rollouts 128
                                                     # 9.1 sums in any order -> out/part9/reason_sum/results.json
    python part9_reasoning/train.py --stage tools    # 9.3 -> out/part9/tools/results.json
    python part9_reasoning/mla_bench.py              # 9.2 -> part9_reasoning/results/mla.json
    python part9_reasoning/milestone.py              # -> part9_reasoning/results/milestone.md

Every row names the gain the issue asks for, the two figures it compares and whether it holds. Nothing is
re-measured here: the figures are read from the runs' results.json files, so the table can be rebuilt at once.
"""
import argparse
import json
import os


def load(path, command):
    """A run's results, or a one-line exit naming the command that makes them."""
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise SystemExit(f"error: {path} not found; run `{command}` first") from None
    except json.JSONDecodeError as e:
        raise SystemExit(f"error: {path} is not valid JSON ({e.msg}); run `{command}` again") from None


def row(claim, ours, against, holds):
    return f"| {claim} | {ours} | {against} | {'yes' if holds else '**no**'} |"


def pct(x):
    return f"{100 * x:.1f}%"


SUM_COMMAND = ("python part9_reasoning/train.py --reason_family sum --reason_steps 800 --sc_temperature 0.8 "
               "--rl_steps 100 --rollouts 128")
FAMILY_TEXT = {"add": "held-out additions", "sum": "held-out sums of six digits, any order"}


def family_of(run):
    return run["train_config"].get("reason_family", "add")


def reasoning_rows(reason):
    what = FAMILY_TEXT[family_of(reason)]
    rows = reason["rows"]
    cot, direct = rows["cot"], rows["direct"]
    sc = {int(n): a for n, a in cot["sc"].items()}
    best = max(sc, key=sc.get)
    out = [row(f"9.1 CoT > direct ({what}, greedy)", f"CoT {pct(cot['accuracy'])}",
               f"direct {pct(direct['accuracy'])}", cot["accuracy"] > direct["accuracy"]),
           row(f"9.1 CoT + self-consistency > CoT greedy ({what}, best N = {best})",
               "SC " + ", ".join(f"N={n} {pct(a)}" for n, a in sorted(sc.items())), f"greedy {pct(cot['accuracy'])}",
               sc[best] > cot["accuracy"])]
    if "cot + grpo" in rows:
        grpo = rows["cot + grpo"]
        out.append(row(f"9.1 GRPO on the CoT model ({what}, verifiable reward)", f"after GRPO {pct(grpo['accuracy'])}",
                       f"before {pct(cot['accuracy'])}", grpo["accuracy"] > cot["accuracy"]))
    return out


def tool_rows(tools):
    rows = tools["rows"]
    on, off, direct = rows["tools on"], rows["tools off"], rows["direct"]
    return [row("9.3 tool use > no tool (held-out large products and hours to seconds)", f"tools {pct(on['accuracy'])}",
                f"same model, calls not run {pct(off['accuracy'])}; direct model {pct(direct['accuracy'])}",
                on["accuracy"] > max(off["accuracy"], direct["accuracy"]))]


def mla_rows(mla):
    """mla_bench.py's verdict: MLA's cache as a share of MHA's, and its val loss against MHA's."""
    v = mla["verdict"]
    mha = next(r for r in mla["rows"] if r["variant"] == "mha")
    return [row(f"9.2 MLA cache <= {v['target_share']:.0%} of MHA's at <= +{v['target_gap']} val loss",
                f"cache {v['mla_share']:.1%} of MHA's, val loss {mha['val_loss'] + v['mla_gap']:.3f} "
                f"({v['mla_gap']:+.3f})", f"MHA val loss {mha['val_loss']:.3f}", v["met"])]


def compliance_rows(*runs):
    """9.4 the compliance rates of every variant, one line each."""
    lines = []
    for stage in runs:
        run_name = stage["stage"] if family_of(stage) == "add" else f"{stage['stage']} ({family_of(stage)})"
        for name, r in stage["rows"].items():
            parts = [f"format {pct(r['format'])}"]
            for key, label in (("step_valid", "steps valid"), ("faithful", "faithful"), ("call_ok", "calls run"),
                               ("copied_ok", "result copied")):
                if r.get(key) is not None:
                    parts.append(f"{label} {pct(r[key])}")
            lines.append(f"| {run_name}: {name} | {pct(r['accuracy'])} | {', '.join(parts)} |")
    return lines


def milestone_table(reason, reason_sum, tools, mla):
    gains = ["| gain | ours | against | holds |", "|---|---|---|---|",
             *reasoning_rows(reason), *reasoning_rows(reason_sum), *tool_rows(tools), *mla_rows(mla)]
    compliance = ["| run: model | accuracy | compliance (9.4) |", "|---|---|---|",
                  *compliance_rows(reason, reason_sum, tools)]
    return "\n".join(gains) + "\n\n" + "\n".join(compliance) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out_dir", default="out/part9", help="where train.py wrote its runs (default: %(default)s)")
    p.add_argument("--mla", default="part9_reasoning/results/mla.json", help="mla_bench.py's results "
                   "(default: %(default)s)")
    p.add_argument("--write", default="part9_reasoning/results/milestone.md",
                   help="the table goes here too ('' = print only; default: %(default)s)")
    args = p.parse_args(argv)
    reason = load(os.path.join(args.out_dir, "reason", "results.json"), "python part9_reasoning/train.py")
    reason_sum = load(os.path.join(args.out_dir, "reason_sum", "results.json"), SUM_COMMAND)
    tools = load(os.path.join(args.out_dir, "tools", "results.json"), "python part9_reasoning/train.py --stage tools")
    mla = load(args.mla, "python part9_reasoning/mla_bench.py")
    table = milestone_table(reason, reason_sum, tools, mla)
    print(table)
    if args.write:
        tmp = args.write + ".tmp"
        with open(tmp, "w") as f:
            f.write("# Part 9 milestone: measured gains\n\n" + table)
        os.replace(tmp, args.write)
    return table


if __name__ == "__main__":
    main()
