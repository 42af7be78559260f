"""9.1 Self-consistency: sample several reasoning traces and let the final answers vote.

Greedy decoding follows one path: one wrong step and the answer is wrong. Sampling at a temperature gives
different paths; when the model is right more often than it is wrong *in any one particular way*, the most
common final answer is right more often than a single sample, or even than the greedy path (Wang et al. 2022,
"Self-Consistency Improves Chain of Thought Reasoning"). Wrong paths scatter over many different answers;
right paths agree.

    votes = sample_answers(model, tok, prompts, n=20, temperature=0.8, generator=g)   # 20 per prompt
    accuracy_at_n(votes, golds, [1, 5, 10, 20])     # majority of the first N samples, for each N

The first N of the same 20 samples are used for every N, so the curve is one set of samples read at several
sizes (and costs one run of 20, not 1 + 5 + 10 + 20).
"""
from collections import Counter

import torch

from evaluate import generate_answers
from reasoning_format import split_answer


def majority_vote(answers):
    """The most common answer, ignoring None (nothing extracted); ties go to the answer seen first.
    ["12", None, "13", "13", "12"] -> "12" (2 votes each; "12" came first). All None -> None."""
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None
    best = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == best)


def final_or_none(text):
    """The final answer after the scratchpad, or None when there is none (an empty or cut-off answer)."""
    final = split_answer(text)[1]
    return final or None


@torch.no_grad()
def sample_answers(model, tok, prompts, n, temperature, generator, max_new_tokens=48, batch_size=256):
    """n sampled answers per prompt -> a list (per prompt) of n final answers (None where none was written).
    All n copies of all prompts go through generate_answers in batches (rows sorted by length there)."""
    repeated = [p for p in prompts for _ in range(n)]
    texts = generate_answers(model, tok, repeated, batch_size, max_new_tokens, temperature, generator)
    finals = [final_or_none(t) for t in texts]
    return [finals[i * n:(i + 1) * n] for i in range(len(prompts))]


def accuracy_at_n(votes, golds, sizes):
    """{N: share of prompts whose majority over the first N samples equals the gold answer} for each N."""
    for size in sizes:
        if not 1 <= size <= min(len(v) for v in votes):
            raise ValueError(f"N = {size} needs between 1 and {min(len(v) for v in votes)} samples per prompt")
    return {size: sum(majority_vote(v[:size]) == gold for v, gold in zip(votes, golds)) / len(golds)
            for size in sizes}


def plot_self_consistency(curve, greedy, direct, path):
    """Accuracy against the number of votes N, with greedy CoT and the direct model as flat lines."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    sizes = sorted(curve)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(sizes, [100 * curve[n] for n in sizes], "o-", label="CoT + self-consistency (majority of N samples)")
    ax.axhline(100 * greedy, color="tab:green", ls="--", label="CoT, greedy")
    ax.axhline(100 * direct, color="tab:red", ls=":", label="direct answer, greedy")
    ax.set_xlabel("samples N")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_xticks(sizes)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
