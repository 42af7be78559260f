"""6.2 The SFT loss: the causal LM loss, counted on the response tokens only.

Pretraining scores every next token. Fine-tuning on (prompt, response) pairs scores only the response
and its <|end|> (chat_format.py): the prompt is given, and padding is not text. Getting this wrong is
silent (the loss still goes down, the model just also learns to write prompts), so each piece is a small
function on plain tensors that a test checks on its own:

    label_mask(prompt_lens, response_lens, T)  which label positions count           (B, T) bool
    token_logprobs(logits, labels)             log p(label) at each position          (B, T)
    masked_sum / masked_mean                   sums and means over the counted ones
    sft_loss(logits, labels)                   -mean log p over the response tokens   scalar
    response_logprob(logits, labels)           log p(response | prompt) per row       (B,)  (Parts 7-8)
    accumulate_gradients(model, micro_batches) one step's backward over micro-batches, token-weighted

Worked example (one row, prompt of p = 3 tokens, response of r = 2): x has p + r - 1 = 4 positions and
labels [-100, -100, r0, r1]; with log p(r0) = -0.5 and log p(r1) = -1.5 the loss is (0.5 + 1.5) / 2 = 1.0.
Whatever the logits at positions 0 and 1 are, the loss is the same.

Try:  python -m pytest -q tests/part6/test_part6_sft_loss.py
"""
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from chat_format import IGNORE_INDEX


# ----------------------------------------------------------------------------------------------------
# 6.2 Which labels count
def label_mask(prompt_lens, response_lens, T) -> torch.Tensor:
    """True at the target positions t whose label is a response token: p - 1 <= t < p - 1 + r.
    Why p - 1: y[t] is the token after x[t], so the first response token (index p of the full sequence)
    is the label at t = p - 1. prompt_lens [3, 1], response_lens [2, 2], T = 4 ->
        [[F, F, T, T],
         [T, T, F, F]]      (the same as chat_format.pad_batch's y != IGNORE_INDEX)"""
    p = torch.as_tensor(prompt_lens).view(-1, 1)                            # (B, 1)
    r = torch.as_tensor(response_lens).view(-1, 1)                          # (B, 1)
    t = torch.arange(T).view(1, -1)                                         # (1, T)
    return (t >= p - 1) & (t < p - 1 + r)                                   # (B, T)


# ----------------------------------------------------------------------------------------------------
# 6.2 Log-probabilities and masked reductions
def token_logprobs(logits, labels) -> torch.Tensor:
    """log softmax(logits[b, t])[labels[b, t]] -> (B, T); 0 where the label is IGNORE_INDEX.
    Computed in float32: log-probs of bf16/fp16 logits lose the small differences that matter."""
    counted = labels != IGNORE_INDEX
    safe = labels.masked_fill(~counted, 0)  # subtle: gather cannot index -100; the value is masked below
    logp = F.log_softmax(logits.float(), dim=-1)                            # (B, T, V)
    picked = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)                # (B, T)
    return picked.masked_fill(~counted, 0.0)


def masked_sum(values, mask, dim=None):
    """Sum of values where mask is True (all of them, or along dim). torch.where, not values * mask:
    a -inf or nan at a masked position must not leak in (-inf * 0 = nan)."""
    kept = torch.where(mask, values, torch.zeros_like(values))
    return kept.sum() if dim is None else kept.sum(dim)


def masked_mean(values, mask, dim=None):
    """Mean over the True entries; 0 (not nan) when there are none: an empty mean contributes nothing."""
    count = mask.sum() if dim is None else mask.sum(dim)
    return masked_sum(values, mask, dim) / count.clamp(min=1)


# ----------------------------------------------------------------------------------------------------
# 6.2 The loss and the sequence log-probability
def sft_loss(logits, labels) -> torch.Tensor:
    """Mean negative log-likelihood over the labels != IGNORE_INDEX: every response token of the batch
    counts once, whatever row it is in. The same as F.cross_entropy(..., ignore_index=-100) (what
    model.py computes), except that a batch with nothing to count gives 0 instead of nan."""
    return -masked_mean(token_logprobs(logits, labels), labels != IGNORE_INDEX)


def response_logprob(logits, labels) -> torch.Tensor:
    """log p(response | prompt) of each row -> (B,): the sum of its counted tokens' log-probs.
    Parts 7-8 compare these between two answers (reward model, DPO) and two models (policy, reference)."""
    return token_logprobs(logits, labels).sum(-1)  # ignored positions are already 0


# ----------------------------------------------------------------------------------------------------
# 6.2 Gradient accumulation, weighted by response tokens
def counted_labels(micro_batches) -> list:
    """Labels that count in each (x, y) micro-batch, as Python ints: the weights below need them before
    the first backward (on a GPU this reads a few numbers back once per step)."""
    counts = [int((y != IGNORE_INDEX).sum()) for _, y in micro_batches]
    if not counts or min(counts) == 0:  # the model's mean over nothing would be 0 / 0 = nan
        raise ValueError("every micro-batch needs at least one response token (a label != -100); "
                         "build batches with chat_format.pad_batch, whose rows all end with <|end|>")
    return counts


def accumulate_gradients(model, micro_batches, autocast=None, scaler=None, ddp=False):
    """Forward and backward each (x, y) micro-batch; returns the token-weighted mean loss, detached.

    Part 5 divided each micro-batch's loss by the number of micro-batches: right when every micro-batch
    holds the same number of counted tokens (pretraining). Here a micro-batch of short answers has few
    response tokens, and `model(x, y)` returns the mean over ITS tokens, so each loss is weighted by
    (its counted tokens) / (counted tokens of all micro-batches). The summed gradients are then those of
    one big batch's mean over all its response tokens (tested). An MoE model's auxiliary loss (training
    mode) rides along with the same weights, which sum to 1.
    subtle: under DDP each process weights by its own tokens and DDP averages the processes' gradients,
    so processes count equally, not tokens; exact across processes would need an all_reduce of the counts."""
    autocast = nullcontext() if autocast is None else autocast  # None: full precision
    counts = counted_labels(micro_batches)
    total_tokens = sum(counts)
    total = 0.0
    for i, ((x, y), n) in enumerate(zip(micro_batches, counts)):
        last = i == len(micro_batches) - 1
        # under DDP, gradients are averaged across processes only once, after the last micro-batch
        with (model.no_sync() if ddp and not last else nullcontext()):
            with autocast:
                _, loss = model(x, y)
            loss = loss * (n / total_tokens)
            (loss if scaler is None else scaler.scale(loss)).backward()
        total += loss.detach()
    return total
