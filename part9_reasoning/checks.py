"""7.4 Sanity checks for a reward model: does it rank pairs right, and for the right reasons?

High pair accuracy is not enough: a reward model that likes long answers, or whose reward depends on what
else is in the batch, scores well on its eval set and then teaches the Part 8 policy exactly those flaws.
Every check takes `score(prompts, responses) -> (N,) tensor`, one reward per (prompt, response), so each
is tested with fake scorers; pairs are objects with .prompt .chosen .rejected .kind .family.

    pair_rewards(pairs, score)          (r_chosen, r_rejected), scored in batches
    accuracy_by_kind(pairs, r_c, r_r)   pair accuracy overall and per rejection kind
    swap_invariance(pairs, score)       same text, other batch or side -> the same reward?
    length_bias(prompts, golds, score)  does a content-free filler phrase raise it?
    degenerate_outputs(...)             is gold above an empty and a one-word-repeated answer?
    plot_rewards / plot_margins         the reward histograms, and r_c - r_r per rejection kind

Try:  python -m pytest -q tests/part7/test_part7_checks.py
"""
import os
from types import SimpleNamespace

import torch
from rm_loss import pair_accuracy

# 7.4 fillers for length_bias only: the training data's fillers are OTHER phrases, so this asks whether
# the model learned "padding adds nothing" or merely memorized a few strings
TEST_FILLERS = ("Let me think about this carefully.", "I hope this helps!", "Here is my answer.",
                "Thanks for asking.", "To put it simply,", "Feel free to ask more.")


# ----------------------------------------------------------------------------------------------------
# 7.4 Scoring
def score_in_batches(prompts, responses, score, batch_size=64) -> torch.Tensor:
    """score() over batches of batch_size rows -> (N,) float32 on the CPU, without gradients."""
    out = []
    for i in range(0, len(prompts), batch_size):
        p, r = prompts[i:i + batch_size], responses[i:i + batch_size]
        with torch.no_grad():
            got = torch.as_tensor(score(p, r))
        if got.shape != (len(p),):
            raise ValueError(f"score must return one reward per response, shape ({len(p)},); got {tuple(got.shape)}")
        out.append(got.detach().float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def pair_rewards(pairs, score, batch_size=64):
    """(r_chosen, r_rejected), each (N,). A call scores batch_size pairs: their chosen answers, then
    their rejected ones (2 x batch_size rows)."""
    rc, rr = [torch.zeros(0)], [torch.zeros(0)]
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        texts = [p.chosen for p in chunk] + [p.rejected for p in chunk]
        both = score_in_batches([p.prompt for p in chunk] * 2, texts, score, batch_size=2 * len(chunk))
        rc.append(both[:len(chunk)])
        rr.append(both[len(chunk):])
    return torch.cat(rc), torch.cat(rr)


def accuracy_by_kind(pairs, r_chosen, r_rejected) -> dict:
    """{"overall": acc, kind: acc, ...} (kinds sorted): pair accuracy, a tie counting as wrong."""
    result = {"overall": pair_accuracy(r_chosen, r_rejected)}
    for kind in sorted({p.kind for p in pairs}):
        keep = torch.tensor([p.kind == kind for p in pairs])
        result[kind] = pair_accuracy(r_chosen[keep], r_rejected[keep])
    return result


# ----------------------------------------------------------------------------------------------------
# 7.4 The checks
def _share(hits) -> float:
    """Share of True, as an exact Python division: a float32 mean of 1 in 10 is 0.10000000149 > 0.10."""
    return int(hits.sum()) / max(len(hits), 1)


def swap_invariance(pairs, score, tol=1e-4, alone=16) -> dict:
    """A reward must depend on the (prompt, response) text only: never on the other rows of its batch, its
    position there, or which side of a pair it came from. Padding bugs (the reward read at position T - 1
    of a right-padded row, attention to pad tokens) break exactly this.

    max_diff: the largest |reward change| of the same text against pair_rewards' order, when scored in
    another composition (pairs in reverse order, rejected before chosen, in batches of 3 rows that mix
    different pairs), alone (batches of 1, no padding at all: the first `alone` pairs, to keep it quick)
    and on the other side (each pair with chosen and rejected swapped).
    swapped_accuracy_sum: accuracy + accuracy of the swapped pairs; 1 when nothing ties and the side does
    not matter (a tie counts as wrong both ways, so ties lower it)."""
    if not pairs:
        raise ValueError("swap_invariance needs at least one pair")
    rc, rr = pair_rewards(pairs, score)
    rows = [(i, side) for i in reversed(range(len(pairs))) for side in ("rejected", "chosen")]
    mixed = score_in_batches([pairs[i].prompt for i, _ in rows], [getattr(pairs[i], s) for i, s in rows],
                             score, batch_size=3)
    few = pairs[:alone]
    single = score_in_batches([p.prompt for p in few] * 2, [p.chosen for p in few] + [p.rejected for p in few],
                              score, batch_size=1)
    swapped = [SimpleNamespace(prompt=p.prompt, chosen=p.rejected, rejected=p.chosen) for p in pairs]
    sc, sr = pair_rewards(swapped, score)  # sc: the rejected texts, scored on the chosen side
    got = torch.cat([mixed, single, sc, sr])
    want = torch.cat([torch.stack([rr[i] if side == "rejected" else rc[i] for i, side in rows]),
                      rc[:len(few)], rr[:len(few)], rr, rc])
    max_diff = (got - want).abs().max().item()
    return {"max_diff": max_diff, "passed": max_diff <= tol,
            "swapped_accuracy_sum": pair_accuracy(rc, rr) + pair_accuracy(sc, sr)}


def length_bias(prompts, responses, score, fillers=TEST_FILLERS) -> dict:
    """Adds a filler phrase to each gold response (cycling through fillers, each one both prepended and
    appended: items 2k and 2k + 1 get fillers[k % len(fillers)], before and after) and compares the rewards.

    A filler adds no content, so a sound reward model scores the padded response lower (or equal) nearly
    always. passed: at most 10% of items score higher. Why 10%: a model that reacted to the filler at
    random would raise about half the items; a length-loving one (the bias a policy exploits by rambling)
    raises almost all; 10% leaves room for a few items where the small model's noise outweighs the
    penalty, while 1 in 5 is already a trend."""
    padded = []
    for i, response in enumerate(responses):
        filler = fillers[(i // 2) % len(fillers)]
        parts = (filler, response) if i % 2 == 0 else (response, filler)
        padded.append(" ".join(x for x in parts if x))
    plain = score_in_batches(list(prompts), list(responses), score)
    longer = score_in_batches(list(prompts), padded, score)
    share = _share(longer > plain)
    return {"share_higher": share, "mean_change": (longer - plain).mean().item(), "passed": share <= 0.10}


def degenerate_outputs(prompts, responses, score) -> dict:
    """The gold response against two answers that say nothing: an empty one, and one word repeated 12 times
    (the gold's first word, "the" if it is empty). A policy optimizing the reward (Part 8) would find such holes fast.
    passed: the gold scores strictly higher for at least 90% of prompts, against each."""
    prompts, words = list(prompts), [(r.split() or ["the"])[0] for r in responses]
    gold = score_in_batches(prompts, list(responses), score)
    empty = score_in_batches(prompts, [""] * len(prompts), score)
    repeated = score_in_batches(prompts, [" ".join([w] * 12) for w in words], score)
    empty_share, repeated_share = _share(empty < gold), _share(repeated < gold)
    return {"empty_below_gold": empty_share, "repeated_below_gold": repeated_share,
            "passed": empty_share >= 0.9 and repeated_share >= 0.9}


# ----------------------------------------------------------------------------------------------------
# 7.4 Plots
def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    return plt


def _numpy(values):
    return torch.as_tensor(values).detach().float().cpu().numpy()


def _save(fig, path):
    """Written to a temp file then renamed: a failed write never leaves half a PNG at path."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp"
    try:
        fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=100)
        os.replace(tmp, path)
    finally:
        _pyplot().close(fig)
        if os.path.exists(tmp):
            os.remove(tmp)


def plot_rewards(r_chosen, r_rejected, path):
    """Histograms of the chosen and rejected rewards on shared bins: two separated humps are what we want."""
    rc, rr = _numpy(r_chosen), _numpy(r_rejected)
    bins = torch.linspace(float(min(rc.min(), rr.min())), float(max(rc.max(), rr.max())) + 1e-6, 31).numpy()
    fig, ax = _pyplot().subplots(figsize=(6, 4))
    ax.hist(rc, bins=bins, alpha=0.6, label=f"chosen (mean {rc.mean():.2f})")
    ax.hist(rr, bins=bins, alpha=0.6, label=f"rejected (mean {rr.mean():.2f})")
    ax.set(xlabel="reward", ylabel="pairs", title=f"7.4 rewards of {len(rc)} held-out pairs")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_margins(margins_by_kind, path):
    """A box per rejection kind of r_c - r_r, each pair a dot on it; below the zero line = ranked wrong."""
    kinds = list(margins_by_kind)
    data = [_numpy(margins_by_kind[k]) for k in kinds]
    fig, ax = _pyplot().subplots(figsize=(max(5, 1.2 * len(kinds)), 4))
    ax.boxplot(data, showfliers=False)
    g = torch.Generator().manual_seed(0)  # the same jitter every time
    for i, d in enumerate(data, start=1):
        ax.plot(i + (torch.rand(len(d), generator=g).numpy() - 0.5) * 0.3, d, ".", alpha=0.4, color="tab:blue")
    ax.axhline(0.0, color="tab:red", linewidth=1)
    ax.set_xticks(range(1, len(kinds) + 1), [f"{k}\n(n={len(d)})" for k, d in zip(kinds, data)], fontsize=8)
    ax.set(ylabel="r_chosen - r_rejected", title="7.4 reward margin per rejection kind")
    ax.grid(alpha=0.3, axis="y")
    _save(fig, path)
