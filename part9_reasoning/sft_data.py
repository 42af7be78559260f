"""6.1 Fine-tuning data as tensors, and 6.3 the curriculum: which examples a training step may draw.

Pretraining drew random windows of one long text (train.py: get_batch). Fine-tuning draws whole examples:
every row is one conversation, <|user|> prompt <|end|><|assistant|> response <|end|>, with the labels of
the prompt masked (chat_format.pad_batch). All examples are padded once, to the longest; a batch is cut
back to its own longest row, so short examples do not pay for the long ones' padding.

6.3 Curriculum: with --order curriculum the examples are sorted easy -> hard (tasks.order_examples) and
step s draws only from the easiest pool(s) of them, a share that grows linearly from CURRICULUM_START to
all of them at CURRICULUM_RAMP of the run ("competence-based" curriculum, Platanios et al. 2019). Easy
examples stay in the pool, so the model does not forget them. --order shuffle draws from all of them at
every step. Drawing with the run's generator keeps a resumed run identical to an uninterrupted one.
"""
import math
from dataclasses import dataclass

import torch

from chat_format import encode_prompt, encode_response, pad_batch

CURRICULUM_START = 0.2  # the share of the (ordered) examples the first step draws from
CURRICULUM_RAMP = 0.5   # ...and the fraction of the run after which every example can be drawn


@dataclass
class SFTSet:
    """Examples as padded tensors: x, y (N, T) from pad_batch; lengths (N,) the real length of each row."""
    x: torch.Tensor
    y: torch.Tensor
    lengths: torch.Tensor

    def __len__(self):
        return len(self.x)

    @property
    def mean_length(self):
        return self.lengths.float().mean().item()


def build_sft_set(examples, tok, block_size, pad_id):
    """Encode and pad the examples, in the order given (the curriculum's order, if any)."""
    pairs = [(encode_prompt(tok, ex.prompt), encode_response(tok, ex.response)) for ex in examples]
    x, y = pad_batch(pairs, pad_id, block_size)
    lengths = torch.tensor([len(p) + len(r) - 1 for p, r in pairs])
    return SFTSet(x, y, lengths)


def curriculum_pool(step, max_steps, order):
    """6.3 The share of the ordered examples step (0-based) may draw from: all of them when shuffled."""
    if order != "curriculum":
        return 1.0
    progress = step / max(1, CURRICULUM_RAMP * max_steps)
    return min(1.0, CURRICULUM_START + (1 - CURRICULUM_START) * progress)


def get_sft_batch(data: SFTSet, batch_size, generator=None, rank=0, world_size=1, pool=1.0):
    """Random rows from the first `pool` share of the examples, cut to the longest row drawn. As in
    get_batch, every process draws the same global batch and keeps its own slice."""
    n = max(1, math.ceil(pool * len(data)))
    rows = torch.randint(n, (batch_size * world_size,), generator=generator)
    rows = rows[rank * batch_size:(rank + 1) * batch_size]
    T = int(data.lengths[rows].max())
    return data.x[rows, :T], data.y[rows, :T]

