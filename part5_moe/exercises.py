"""Part 4 exercises: one function per exercise, each a worked solution (README.md, "Exercises").

Replace a solution with your own and run the same test:

    python -m pytest tests/part4/test_part4_exercises.py

The tests check each function against an independent computation (the paper's formula, a hand-worked
example, the tensors that training really allocates), so they pass for any correct answer.
"""
import math

from bpe import PATTERNS, Tokenizer
from train import lr_at


# ----------------------------------------------------------------------------------------------------
# Exercise 4.A (builds on 4.3): the inverse-square-root schedule of "Attention Is All You Need"
def lr_inverse_sqrt(step, cfg):
    """Task: the same linear warmup as lr_at, then decay as 1/sqrt(step), reaching cfg.lr exactly where
    warmup ends: lr * sqrt(warmup_steps / (step + 1)). It never needs max_steps, so a run can go on for
    as long as you like (the reason T5 and many early transformers used it); the price is an lr that is
    still high at the end of a short run. Counting steps from 1 (s = step + 1) this is the paper's
    d_model^-0.5 * min(s^-0.5, s * warmup^-1.5), up to the constant factor."""
    if step < cfg.warmup_steps:
        return lr_at(step, cfg)
    return cfg.lr * math.sqrt(cfg.warmup_steps / (step + 1))


def plot_with_inverse_sqrt(out, cfg):
    """The schedules of 4.3 (cfg.schedule's, over cfg.max_steps) with the inverse square root beside it."""
    import dataclasses

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = range(cfg.max_steps)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for schedule in ("cosine", "wsd"):
        other = dataclasses.replace(cfg, schedule=schedule)
        ax.plot(steps, [lr_at(s, other) for s in steps], label=schedule)
    ax.plot(steps, [lr_inverse_sqrt(s, cfg) for s in steps], label="inverse sqrt")
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------
# Exercise 4.B (builds on 4.1): a pre-tokenizer of your own, compared in bytes per token
LINES_PATTERN = r"[^\n]*\n|[^\n]+"  # one chunk per line: merges may cross spaces and punctuation


def bytes_per_token(tok: Tokenizer, text: str) -> float:
    """Task, part 1: how many bytes of UTF-8 text one token carries on average. Higher = the same context
    window holds more text; 1.0 = no compression at all (raw bytes)."""
    return len(text.encode("utf-8")) / len(tok.encode(text))


def compare_pretokenizers(train_text, texts, vocab_size, patterns=("gpt4", "gpt2", "lines")):
    """Task, part 2 (measure): train one tokenizer per pre-tokenizer pattern on train_text and return
    {pattern: {name: bytes per token on texts[name]}}. "lines" is LINES_PATTERN, anything else a key of
    PATTERNS or a regex of your own."""
    out = {}
    for pattern in patterns:
        tok = Tokenizer(LINES_PATTERN if pattern == "lines" else PATTERNS.get(pattern, pattern))
        tok.train(train_text, vocab_size)
        out[pattern] = {name: bytes_per_token(tok, text) for name, text in texts.items()}
    return out


# ----------------------------------------------------------------------------------------------------
# Exercise 4.C (builds on 4.2): how much memory does training with AdamW need?
def adamw_training_bytes(model, bytes_per_value=4):
    """Task: the bytes that training holds beside the activations: the weights, one gradient per weight,
    and AdamW's two running averages (exp_avg, exp_avg_sq) per weight: 4 values of 4 bytes (fp32) =
    16 bytes per parameter. Mixed precision (4.2) does not change this: autocast keeps fp32 weights and
    only computes in bf16. Returns {"weights", "grads", "adam", "total"} in bytes.
    Rule of thumb: a 50M-parameter model needs 0.8 GB before a single activation is stored."""
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)  # a tied matrix counts once
    parts = {"weights": n * bytes_per_value, "grads": n * bytes_per_value, "adam": 2 * n * bytes_per_value}
    return {**parts, "total": sum(parts.values())}


# ----------------------------------------------------------------------------------------------------
# The figures in README.md, "Exercises": python part4_scaling/exercises.py
def main(vocab_size=1024, plot_path="out/part4/schedules_inverse_sqrt.png"):
    import os

    from bpe import read_text
    from train import TrainConfig

    os.makedirs(os.path.dirname(plot_path), exist_ok=True)
    plot_with_inverse_sqrt(plot_path, TrainConfig(max_steps=1000, warmup_steps=100, lr=1e-3))
    print(f"4.A wrote {plot_path}")
    train_text = read_text("data/tinyshakespeare.txt")
    texts = {"tinyshakespeare (training text)": train_text,
             "Gutenberg valid (unseen)": read_text("data/gutenberg_fiction_valid.txt.xz", 1_000_000)}
    print(f"4.B bytes per token, vocab {vocab_size}, trained on tinyshakespeare")
    for pattern, row in compare_pretokenizers(train_text, texts, vocab_size).items():
        print(f"  {pattern:6s} " + " | ".join(f"{name}: {bpt:.2f}" for name, bpt in row.items()))


if __name__ == "__main__":
    main()
