"""7.1-7.4 Training a reward model on preference pairs, and the report on it. train.py runs these steps:

    pairs = synthetic_pairs(...)           7.1 pairs from tasks.py's families + the SFT model's own mistakes
    data = encode_pairs(pairs, ...)        each pair as two padded rows (chosen, rejected), encoded once
    train_reward_model(rm, data, ...)      7.3 Bradley-Terry (or margin) loss on r_chosen - r_rejected
    report = sanity_report(rm, ...)        7.4 accuracy per kind, swap invariance, length bias, degenerate answers

Each step of the loop scores a batch of pairs in ONE forward pass: the chosen rows and the rejected rows are
stacked into a (2B, T) batch, so both sides see the same weights, dropout mode and padding rules.
"""
import os
import time

import torch

from chat_format import encode_prompt
from checks import (TEST_FILLERS, accuracy_by_kind, degenerate_outputs, length_bias, pair_rewards, plot_margins,
                    plot_rewards, swap_invariance)
from evaluate import generate_answers
from preferences import load_pairs_jsonl, make_pairs, model_error_pairs
from reward_model import encode_rows, logprob_scorer, make_scorer
from rm_loss import pair_accuracy, reward_loss
from tasks import make_examples

# 7.4 the milestone's thresholds (issue: Part 7), checked in the verdict line
TARGETS = {"overall": 0.95, "per_kind": 0.85, "model_errors": 0.90}


# ----------------------------------------------------------------------------------------------------
# 7.1 The pairs
def synthetic_pairs(cfg, sft_model, tok):
    """(train, val, test, test_errors) pairs. train: every family x every kind, plus pairs whose rejected
    answer the SFT model SAMPLED (temperature 1) on training prompts and got wrong; val: more pairs like the
    training ones, for picking the best checkpoint; test: held-out words and numbers (tasks.py's test split);
    test_errors: the SFT model's greedy answers to held-out prompts that the checker grades wrong."""
    train = make_pairs("train", cfg.pairs_per_family, cfg.seed)
    prompts = make_examples("train", cfg.error_prompts, cfg.seed + 2)
    gen = torch.Generator(device=next(sft_model.parameters()).device).manual_seed(cfg.seed)
    sampled = generate_answers(sft_model, tok, [ex.prompt for ex in prompts], cfg.eval_batch_size,
                               answer_room(sft_model, tok, prompts), temperature=1.0, generator=gen)
    train += model_error_pairs(prompts, sampled)
    val = make_pairs("train", cfg.test_per_family, cfg.seed + 1)
    test_examples = make_examples("test", cfg.test_per_family, cfg.seed)
    greedy = generate_answers(sft_model, tok, [ex.prompt for ex in test_examples], cfg.eval_batch_size,
                              answer_room(sft_model, tok, test_examples))
    return train, val, make_pairs("test", cfg.test_per_family, cfg.seed), model_error_pairs(test_examples, greedy)


def answer_room(model, tok, examples, most=24):
    """New tokens an answer may take: `most`, or what the longest prompt leaves of block_size."""
    longest = max(len(encode_prompt(tok, ex.prompt)) for ex in examples)
    return max(1, min(most, model.config.block_size - longest))


def jsonl_pairs(cfg):
    """(train, val, test, []) from a pairs .jsonl: its last val_fraction is held out (val = test)."""
    pairs = load_pairs_jsonl(cfg.pairs)
    n_test = max(1, int(len(pairs) * cfg.val_fraction))
    if len(pairs) <= n_test:
        raise ValueError(f"{cfg.pairs} has {len(pairs)} pairs: too few to hold out a test split")
    return pairs[:-n_test], pairs[-n_test:], pairs[-n_test:], []


def encode_pairs(pairs, tok, block_size, side="right"):
    """The pairs as tensors, encoded once: {"chosen": (idx, mask), "rejected": (idx, mask), "pairs": pairs}."""
    return {"pairs": pairs, "side": side,
            "chosen": encode_rows(tok, [p.prompt for p in pairs], [p.chosen for p in pairs], block_size, side),
            "rejected": encode_rows(tok, [p.prompt for p in pairs], [p.rejected for p in pairs], block_size, side)}


def pair_batch(data, rows, device):
    """Rows `rows` of both sides, stacked into one (2B, T) batch: chosen first, then rejected."""
    (ci, cm), (ri, rm_) = data["chosen"], data["rejected"]
    T = max(ci.size(1), ri.size(1))

    def pad(t):  # to T columns on the data's side: id 0 and mask 0 (the mask hides it)
        extra = T - t.size(1)
        return torch.nn.functional.pad(t, (extra, 0) if data["side"] == "left" else (0, extra))
    idx = torch.cat([pad(ci[rows]), pad(ri[rows])])
    mask = torch.cat([pad(cm[rows]), pad(rm_[rows])])
    return idx.to(device), mask.to(device)


# ----------------------------------------------------------------------------------------------------
# 7.3 The loop
def pair_loss(rm, data, rows, cfg, device):
    """(loss, r_chosen, r_rejected) for the pairs at `rows`."""
    idx, mask = pair_batch(data, rows, device)
    rewards = rm(idx, mask)
    r_chosen, r_rejected = rewards.chunk(2)
    return reward_loss(r_chosen, r_rejected, cfg.rm_loss, cfg.rm_margin or None, cfg.center_coef), r_chosen, r_rejected


@torch.no_grad()
def evaluate_pairs(rm, data, cfg, device, batch_size=128):
    """Mean loss and pair accuracy over every pair of data."""
    rm.eval()
    n = len(data["pairs"])
    losses, chosen, rejected = [], [], []
    for i in range(0, n, batch_size):
        rows = torch.arange(i, min(n, i + batch_size))
        loss, r_c, r_r = pair_loss(rm, data, rows, cfg, device)
        losses.append(loss.item() * len(rows))
        chosen.append(r_c.float().cpu())
        rejected.append(r_r.float().cpu())
    rm.train()
    return sum(losses) / n, pair_accuracy(torch.cat(chosen), torch.cat(rejected))


def train_reward_model(rm, train, val, cfg, device, log, save_best, lr_of):
    """7.3 --rm_steps steps of --rm_batch_size pairs; every eval_interval the val pairs pick the best model
    (save_best(step, val_loss, val_acc) writes it). lr_of(step): the schedule (train.py: Part 4's lr_at).
    Returns the history of evaluations."""
    optimizer = torch.optim.AdamW(rm.parameters(), lr=cfg.rm_lr, weight_decay=0.0, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(cfg.seed)
    history, best, t0 = [], float("inf"), time.time()
    rm.train()
    for step in range(1, cfg.rm_steps + 1):
        for group in optimizer.param_groups:
            group["lr"] = lr_of(step - 1)
        rows = torch.randint(len(train["pairs"]), (cfg.rm_batch_size,), generator=gen)
        loss, r_c, r_r = pair_loss(rm, train, rows, cfg, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(rm.parameters(), cfg.grad_clip)
        optimizer.step()
        if step % cfg.log_interval == 0 or step == 1:
            spent = time.time() - t0
            log.scalars(step, rm_loss=loss.item(), batch_acc=pair_accuracy(r_c, r_r), lr=lr_of(step - 1))
            log.text(f"rm step {step:5d} | loss {loss.item():.4f} | batch acc {pair_accuracy(r_c, r_r):.0%} | "
                     f"lr {lr_of(step - 1):.2e} | {step * cfg.rm_batch_size / spent:,.0f} pairs/s | "
                     f"ETA {spent / step * (cfg.rm_steps - step):.0f}s")
        if step % cfg.eval_interval == 0 or step == cfg.rm_steps:
            val_loss, val_acc = evaluate_pairs(rm, val, cfg, device)
            history.append({"step": step, "time": time.time() - t0, "val": val_loss, "val_acc": val_acc})
            log.scalars(step, val_loss=val_loss, val_acc=val_acc)
            log.text(f"rm step {step:5d} | val loss {val_loss:.4f} | val pair accuracy {val_acc:.1%}")
            if val_loss < best:
                best = val_loss
                save_best(step, val_loss, val_acc)
    return history


# ----------------------------------------------------------------------------------------------------
# 7.4 The report
def sanity_report(rm, tok, test, test_errors, cfg, device, out_dir, sft_model=None):
    """Every 7.4 check on the held-out pairs, the plots, and the figures for results.json. sft_model: also
    rank the pairs by its log-probabilities, the reference a reward model should beat."""
    score = make_scorer(rm, tok, device)
    r_c, r_r = pair_rewards(test, score)
    by_kind = accuracy_by_kind(test, r_c, r_r)
    golds = list(dict.fromkeys((p.prompt, p.chosen) for p in test))  # each held-out prompt's gold, once
    prompts, responses = [g[0] for g in golds], [g[1] for g in golds]
    report = {"accuracy": by_kind, "swap": swap_invariance(test[:256], score),
              "length_bias": length_bias(prompts, responses, score, TEST_FILLERS),
              "degenerate": degenerate_outputs(prompts, responses, score),
              "left_padding": swap_invariance(test[:64], make_scorer(rm, tok, device, side="left"))}
    if test_errors:
        e_c, e_r = pair_rewards(test_errors, score)
        report["model_errors"] = {"pairs": len(test_errors), "accuracy": pair_accuracy(e_c, e_r)}
    if sft_model is not None:
        report["sft_logprob"] = accuracy_by_kind(test, *pair_rewards(test, logprob_scorer(sft_model, tok, device)))
    margins = {kind: (r_c - r_r)[[p.kind == kind for p in test]] for kind in sorted({p.kind for p in test})}
    plot_rewards(r_c, r_r, os.path.join(out_dir, "rewards.png"))
    plot_margins(margins, os.path.join(out_dir, "margins.png"))
    return report


def verdict(report):
    """One line: each milestone figure against its target (issue: Part 7)."""
    acc = report["accuracy"]
    kinds = {k: v for k, v in acc.items() if k != "overall"}
    worst = min(kinds, key=kinds.get)
    checks = [("overall", acc["overall"], TARGETS["overall"]),
              (f"worst kind ({worst})", kinds[worst], TARGETS["per_kind"])]
    if "model_errors" in report:
        checks.append(("SFT's own wrong answers", report["model_errors"]["accuracy"], TARGETS["model_errors"]))
    parts = [f"{name} {value:.1%} ({'met' if value >= target else 'MISSED'}: >= {target:.0%})"
             for name, value, target in checks]
    lb = report["length_bias"]
    parts.append(f"length bias {lb['share_higher']:.0%} of padded answers score higher "
                 f"({'none' if lb['passed'] else 'FAILED'})")
    return "verdict: held-out pair accuracy " + "; ".join(parts)


def report_table(report):
    """report.md: the figures as Markdown tables."""
    acc = report["accuracy"]
    ref = report.get("sft_logprob", {})  # 7.4 the SFT model's log-probabilities, untrained, for comparison
    lines = ["# Reward model: held-out pairs", "", "| rejection kind | pair accuracy | SFT log-prob (reference) |",
             "| --- | ---: | ---: |"]
    lines += [f"| {k} | {v:.1%} | " + (f"{ref[k]:.1%} |" if k in ref else "|") for k, v in acc.items()]
    if "model_errors" in report:
        m = report["model_errors"]
        lines += ["", f"Gold preferred over the SFT model's own wrong answers: {m['accuracy']:.1%} of "
                  f"{m['pairs']} pairs."]
    s, lp, lb, d = report["swap"], report["left_padding"], report["length_bias"], report["degenerate"]
    lines += ["", "| sanity check | figure | passed |", "| --- | --- | --- |",
              f"| swap/batch invariance (right padding) | max reward difference {s['max_diff']:.2e} | {s['passed']} |",
              f"| swap/batch invariance (left padding) | max reward difference {lp['max_diff']:.2e} | {lp['passed']} |",
              f"| length bias (held-out fillers) | {lb['share_higher']:.1%} score higher, mean change "
              f"{lb['mean_change']:+.3f} | {lb['passed']} |",
              f"| empty answer below gold | {d['empty_below_gold']:.1%} | {d['passed']} |",
              f"| one word repeated below gold | {d['repeated_below_gold']:.1%} | {d['passed']} |"]
    return "\n".join(lines) + "\n"


def write_report(report, out_dir):
    with open(os.path.join(out_dir, "report.md"), "w") as f:
        f.write(report_table(report))
