"""2.5 Sampling: temperature reshapes the next-token distribution, top-k and top-p cut off its unlikely tail.
GPT.generate (model.py) calls sample_next_token once per new token."""
import torch

from functional import softmax


def top_k_filter(logits, k):
    """Keep the k largest logits of each row, set the rest to -inf."""
    kept = torch.full_like(logits, float("-inf"))
    values, indices = logits.topk(min(k, logits.size(-1)), dim=-1)
    return kept.scatter(-1, indices, values)


def top_p_filter(logits, p):
    """Nucleus sampling: keep the smallest set of most likely tokens whose probabilities sum to >= p."""
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = softmax(sorted_logits, dim=-1)
    mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above this one
    sorted_logits = sorted_logits.masked_fill(mass_before >= p, float("-inf"))  # the top token always stays
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def sample_next_token(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
    """logits (B, vocab) -> next token ids (B, 1). temperature 0 means greedy (argmax)."""
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return torch.multinomial(softmax(logits, dim=-1), num_samples=1, generator=generator)
