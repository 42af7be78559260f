"""Part 2 exercises: one function per exercise, each a worked solution (README.md, "Exercises").

Replace a solution with your own and run the same test:

    python -m pytest tests/part2/test_part2_exercises.py

The tests check each function against an independent computation (a loop, a hand-worked example),
so they pass for any correct answer, not only for this one.
"""
import statistics

import torch
import torch.nn.functional as F

from train import estimate_loss


# ----------------------------------------------------------------------------------------------------
# Exercise 2.A (builds on 2.5): min-p sampling
def min_p_filter(logits, min_p):
    """Task: keep the tokens whose probability is at least min_p times the probability of the most likely
    token; set the other logits to -inf (same contract as model.top_k_filter / top_p_filter).
    Unlike top-p, the cut follows the model's confidence: a peaked distribution keeps few tokens, a flat
    one keeps many. probs [0.5, 0.3, 0.15, 0.05], min_p 0.2 -> threshold 0.1 -> the first three stay."""
    probs = F.softmax(logits, dim=-1)
    threshold = min_p * probs.max(dim=-1, keepdim=True).values               # (B, 1)
    return logits.masked_fill(probs < threshold, float("-inf"))             # the top token always stays


# ----------------------------------------------------------------------------------------------------
# Exercise 2.B (builds on 2.6): validation loss over the whole split, and the noise of the estimate
@torch.no_grad()
def full_val_loss(model, data, block_size, batch_size=32):
    """Task: the mean loss over EVERY target token of `data` (a 1-d tensor of ids), not over random
    batches: cut it into consecutive windows of block_size, score them, and average per token."""
    model.eval()
    n_full = (len(data) - 1) // block_size
    x = data[:n_full * block_size].view(n_full, block_size)                 # (n_full, T)
    y = data[1:n_full * block_size + 1].view(n_full, block_size)            # (n_full, T), shifted by one
    pairs = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, n_full, batch_size)]
    tail = len(data) - 1 - n_full * block_size
    if tail:  # subtle: the last few tokens do not fill a window; score them as one shorter row
        pairs.append((data[-tail - 1:-1][None], data[-tail:][None]))
    total = sum(model(xb, yb)[1].item() * yb.numel() for xb, yb in pairs)  # each loss is a mean: weight it
    model.train()
    return total / (len(data) - 1)


def val_loss_noise(model, val, block_size, batch_size, eval_iters, n_repeats=5):
    """Task, part 2 (measure): how much does the reported val loss move between evaluations of the SAME
    model? Return (spread of estimate_loss over n_repeats seeds, spread of full_val_loss over n_repeats
    calls), each the standard deviation. The random-batch estimate is noisy; the full pass is not."""
    sampled = [estimate_loss(model, {"val": val}, block_size, batch_size, eval_iters, "cpu", seed=s)["val"]
               for s in range(n_repeats)]
    full = [full_val_loss(model, val, block_size) for _ in range(n_repeats)]
    return statistics.stdev(sampled), statistics.stdev(full)


# ----------------------------------------------------------------------------------------------------
# Exercise 2.C (builds on 2.3/2.6): the loss a bigram table gets, a baseline every model must beat
def bigram_loss(train_ids, val_ids, vocab_size, alpha=1.0):
    """Task: count how often each token follows each other token in train_ids, turn the counts into
    next-token probabilities with add-alpha smoothing, P(b | a) = (n(a, b) + alpha) / (n(a) + alpha * V),
    and return the mean cross-entropy (nats) of val_ids under it. Loss below this = the model uses more
    context than the previous token."""
    train_ids, val_ids = torch.as_tensor(train_ids), torch.as_tensor(val_ids)
    counts = torch.zeros(vocab_size, vocab_size)                            # counts[a, b] = n(a, b)
    counts.index_put_((train_ids[:-1], train_ids[1:]), torch.ones(len(train_ids) - 1), accumulate=True)
    probs = (counts + alpha) / (counts.sum(1, keepdim=True) + alpha * vocab_size)
    return -probs[val_ids[:-1], val_ids[1:]].log().mean().item()



# ----------------------------------------------------------------------------------------------------
# The figures in README.md, "Exercises": python part2_tiny_llm/exercises.py [checkpoint]
def main(ckpt_path="out/part2/best.pt", data_path="data/shakespeare_100k.txt"):
    from tokenizer import ByteTokenizer
    from train import TrainConfig, load_checkpoint, load_text, split_data

    cfg = TrainConfig()
    gpt, _ = load_checkpoint(ckpt_path)
    block_size = gpt.config.block_size
    train, val = split_data(ByteTokenizer().encode(load_text(data_path)), cfg.val_fraction, block_size)
    for alpha in (1.0, 0.1, 0.01):  # add-one gives too much mass to the 195 bytes this text never uses
        print(f"2.C bigram baseline, alpha {alpha}: val loss {bigram_loss(train, val, 256, alpha):.4f}")
    sampled = [estimate_loss(gpt, {"val": val}, block_size, cfg.batch_size, cfg.eval_iters, "cpu", seed=s)["val"]
               for s in range(10)]
    print(f"2.B full val split: {full_val_loss(gpt, val, block_size):.4f} | estimate_loss ({cfg.eval_iters} batches "
          f"of {cfg.batch_size}) over 10 seeds: mean {statistics.mean(sampled):.4f}, "
          f"std {statistics.stdev(sampled):.4f}, range {min(sampled):.4f}-{max(sampled):.4f}")


if __name__ == "__main__":
    import sys

    main(*sys.argv[1:2])
