"""8.4 Rollouts: the policy answers a batch of prompts, each answer is scored, and everything the losses need
is stacked into padded tensors once.

    examples = draw_prompts(pool, 64, generator)                 # tasks.Example rows: prompt + gold + family
    batch = generate_rollouts(policy, tok, examples, 24, gen)    # sampled answers, batched with the KV cache
    batch.scores = score_answers("rm", batch, rm_score)          # the reward model, the task checker, or both

A row of a batch is the chat format of Part 6, prompt then the sampled answer, right-padded:
    x      = <|user|> What is 3 + 5 ? <|end|> <|assistant|>  8            pad pad
    labels = -100    -100 ...                      -100        8  <|end|>  -100 -100
`labels` holds the answer's tokens (the actions the policy took) and -100 elsewhere, exactly as in SFT
(chat_format.pad_batch), so `labels != -100` is the response mask every RL loss averages over: the prompt and
the padding never count.
"""
import time
from dataclasses import dataclass

import torch

from chat_format import IGNORE_INDEX, chat_token_ids, encode_prompt, pad_batch
from decode import generate_batch
from evaluate import answer_text
from tasks import grade

REWARDS = ("rm", "checker", "mix")


@dataclass
class Rollouts:
    """One batch of sampled answers. Row b: examples[b] (prompt, gold, family) and its answer."""
    examples: list            # tasks.Example per row
    answer_ids: list          # the sampled token ids per row, <|end|> included when the row stopped
    responses: list           # the answers as text (without <|end|>)
    x: torch.Tensor           # (B, T) prompt + answer[:-1], right-padded
    labels: torch.Tensor      # (B, T) the answer's tokens where they are predicted, IGNORE_INDEX elsewhere
    ended: torch.Tensor       # (B,) True where the answer stopped at <|end|> (well-formed)
    scores: torch.Tensor = None  # (B,) the sequence reward, set by score_answers
    seconds: float = 0.0      # time spent generating (the log compares it with the update time)

    @property
    def mask(self):
        """(B, T) True on the answer's tokens: what every RL loss averages over."""
        return self.labels != IGNORE_INDEX

    @property
    def lengths(self):
        """(B,) answer tokens per row, <|end|> included."""
        return self.mask.sum(1)


def draw_prompts(pool, n, generator, repeat=1):
    """n examples drawn from pool without replacement, each repeated `repeat` times in a row
    (GRPO: a group of G answers to one prompt sits in consecutive rows)."""
    picks = torch.randperm(len(pool), generator=generator)[:n].tolist()
    return [pool[i] for i in picks for _ in range(repeat)]


@torch.no_grad()
def generate_rollouts(policy, tok, examples, max_new_tokens, generator=None, temperature=1.0):
    """8.4 Sample one answer per example, all in one batch (decode.generate_batch: a preallocated KV cache;
    rows of different lengths; each stops at its own <|end|>). temperature 1: the samples come from the
    very distribution whose log-probabilities the losses compute from the raw logits."""
    end_id = chat_token_ids(tok)["end"]
    prompts = [encode_prompt(tok, ex.prompt) for ex in examples]
    max_new_tokens = room_in_block(policy, prompts, max_new_tokens)
    was_training = policy.training
    policy.eval()
    start = time.perf_counter()
    try:
        answers = generate_batch(policy, prompts, max_new_tokens, stop_ids=[end_id], temperature=temperature,
                                 generator=generator)
    finally:
        policy.train(was_training)
    x, labels = pad_batch(list(zip(prompts, answers)), end_id)  # 6.1: the labels are the answer's tokens only
    device = next(policy.parameters()).device
    x, labels = x.to(device), labels.to(device)  # where the losses will read them
    ended = torch.tensor([a[-1] == end_id for a in answers], device=device)
    return Rollouts(examples, answers, [answer_text(tok, a, end_id) for a in answers], x, labels, ended,
                    seconds=time.perf_counter() - start)


def rollouts_in_batches(policy, tok, examples, max_new_tokens, generator=None, temperature=1.0, batch_size=256):
    """generate_rollouts over `examples` a batch of batch_size at a time (the KV cache of one batch stays
    small): a list of Rollouts, in the order of the examples. temperature 0: greedy answers."""
    return [generate_rollouts(policy, tok, examples[i:i + batch_size], max_new_tokens, generator, temperature)
            for i in range(0, len(examples), batch_size)]


def room_in_block(model, prompts, max_new_tokens):
    """max_new_tokens, capped so that the longest prompt of the batch and its answer fit in block_size (the
    batch's KV cache holds both and does not roll)."""
    return max(1, min(max_new_tokens, model.config.block_size - max(map(len, prompts))))


def checker_scores(examples, responses):
    """8.4 The verifiable reward: 1.0 where tasks.grade accepts the answer, else 0.0."""
    return torch.tensor([float(grade(ex, r)) for ex, r in zip(examples, responses)])


def score_answers(kind, batch, rm_score=None, checker_weight=1.0, missing_end_penalty=1.0):
    """8.4 The sequence reward of each row -> (B,):
    rm: the reward model's score of (prompt, answer) (rm_score(prompts, responses), reward_model.make_scorer);
    checker: 1 if the task checker accepts the answer, else 0 (a verifiable reward: nothing to hack);
    mix: the reward model's score + checker_weight * the checker's.
    An answer that never reached <|end|> (cut at max_new_tokens) loses missing_end_penalty: the reward model
    scores the text it sees, and an unfinished answer must not look as good as a finished one."""
    if kind not in REWARDS:
        raise ValueError(f"reward must be one of {', '.join(REWARDS)}, got {kind!r}")
    scores = torch.zeros(len(batch.examples))
    if kind in ("rm", "mix"):
        scores += rm_score([ex.prompt for ex in batch.examples], batch.responses).float()
    if kind in ("checker", "mix"):
        scores += (checker_weight if kind == "mix" else 1.0) * checker_scores(batch.examples, batch.responses)
    return scores - missing_end_penalty * (~batch.ended).float().cpu()


def minibatches(n, size, generator):
    """The rows 0..n-1 in a random order, cut into index tensors of `size` (the last may be shorter)."""
    order = torch.randperm(n, generator=generator)
    return [order[i:i + size] for i in range(0, n, size)]
