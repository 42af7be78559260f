"""7.2 A reward model: Part 6's transformer as a shared trunk, plus one scalar head.

    rm = RewardModel(sft_model)                       # the trunk starts as the SFT model (its lm_head unused)
    idx, mask = encode_rows(tok, prompts, responses)  # (B, T) ids and 1 = real token / 0 = padding
    rewards = rm(idx, mask)                           # (B,) one number per (prompt, response)

The head reads the hidden state of the LAST REAL token of each row: the response's <|end|>, the one position
that has seen the prompt and the whole response (causal attention: earlier positions have not). Padding is
where this goes silently wrong:
  - right padding ([text, pad, pad]): the last real token is not the last column. Reading column -1 scores
    the padding, and every reward of a batch then depends on how long its longest row is;
  - left padding ([pad, pad, text]): column -1 is right, but the text's tokens would attend to the padding
    before them and their positions would start at 2, not 0.
`PaddedRows` handles both: every row gets its own positions (0 at its first real token) and sees only its
own real keys. tests/part7/test_part7_reward_model.py checks that a reward is the same alone, right-padded
and left-padded, next to rows of any length.
"""
import math

import torch
from torch import nn

from chat_format import chat_token_ids, encode_prompt, encode_response, pad_batch
from checkpoint import load_checkpoint, save_checkpoint
from rm_loss import gather_last
from sft_loss import response_logprob


class PaddedRows:
    """7.2 Attention that ignores padding on either side. It speaks the interface CausalSelfAttention calls
    for a KV cache (make_room, append, mask; decode.py uses the same hook) but stores nothing: make_room
    gives every row its own positions and `mask` lets a token see only real keys at or before it."""

    n_seen = 0

    def __init__(self, mask):
        mask = mask.bool()                                               # (B, T)
        T = mask.size(1)
        self.positions = (mask.long().cumsum(1) - 1).clamp(min=0)        # (B, T) 0 at the first real token
        causal = torch.ones(T, T, dtype=torch.bool, device=mask.device).tril()
        visible = causal & mask[:, None, :]                              # (B, T, T): key j real and j <= i
        # subtle: a padding query would see no key at all, and softmax over nothing is NaN (which would then
        # leak into the gradients); letting it see itself keeps it finite, and no real token reads it
        visible |= torch.eye(T, dtype=torch.bool, device=mask.device)
        self.mask = visible[:, None]                                     # (B, 1, T, T), True = may attend

    def __getitem__(self, layer):  # the same mask and positions for every layer
        return self

    def make_room(self, T):
        return self.positions

    def append(self, k, v):
        return k, v


class RewardModel(nn.Module):
    """7.2 trunk: a GPT (the SFT model); head: Linear(n_embd, 1) read at each row's last real token."""

    def __init__(self, trunk):
        super().__init__()
        if trunk.config.pos_embedding != "rope":  # PaddedRows gives positions per row: RoPE takes them
            raise ValueError("the reward model needs a RoPE trunk (pos_embedding='rope', Parts 3-6's default)")
        if trunk.config.window:  # PaddedRows' mask replaces the sliding-window mask (3.5): refuse, not ignore
            raise ValueError("the reward model needs full attention (window=0): a sliding-window trunk would "
                             "silently attend further back than it was trained to")
        self.trunk = trunk
        self.head = nn.Linear(trunk.config.n_embd, 1)
        # small random weights (std 1/sqrt(C+1), as in Stiennon et al. 2020): rewards start near 0 and the
        # trunk gets a gradient from the first step (a zero head would give it none)
        nn.init.normal_(self.head.weight, std=1 / math.sqrt(trunk.config.n_embd + 1))
        nn.init.zeros_(self.head.bias)

    def forward(self, idx, mask):
        """idx (B, T) token ids, mask (B, T) 1 for real tokens -> rewards (B,)."""
        hidden = self.trunk.features(idx, PaddedRows(mask))              # (B, T, C)
        return self.head(gather_last(hidden, mask)).squeeze(-1)          # (B,)


def encode_rows(tok, prompts, responses, block_size=None, side="right"):
    """7.2 (prompt, response) texts -> idx (B, T), mask (B, T), padded on `side` with <|end|>.
    A row is encode_prompt + encode_response, the chat format the SFT model answered in. A row longer than
    block_size keeps its LAST block_size tokens: the reward is read at the end, which must stay."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be left or right, got {side!r}")
    if len(prompts) != len(responses) or not prompts:
        raise ValueError(f"need as many prompts as responses, at least one (got {len(prompts)}, {len(responses)})")
    rows = [encode_prompt(tok, p) + encode_response(tok, r) for p, r in zip(prompts, responses)]
    if block_size:
        rows = [row[-block_size:] for row in rows]
    T = max(len(row) for row in rows)
    idx = torch.full((len(rows), T), chat_token_ids(tok)["end"], dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for b, row in enumerate(rows):
        cols = slice(0, len(row)) if side == "right" else slice(T - len(row), T)
        idx[b, cols], mask[b, cols] = torch.tensor(row), 1
    return idx, mask


def make_scorer(rm, tok, device="cpu", side="right"):
    """score(prompts, responses) -> rewards (N,) on the CPU: what checks.py's sanity checks call."""
    def score(prompts, responses):
        idx, mask = encode_rows(tok, prompts, responses, rm.trunk.config.block_size, side)
        was_training = rm.training
        rm.eval()
        try:
            with torch.no_grad():
                return rm(idx.to(device), mask.to(device)).float().cpu()
        finally:
            rm.train(was_training)
    return score


def logprob_scorer(model, tok, device="cpu"):
    """7.4 A reference to beat, not a reward model: score = log P(response | prompt) under a chat model (the
    SFT model), summed over the response's tokens and its <|end|> (sft_loss.response_logprob). It needs no
    training, so a trained reward model that ranks pairs worse than this has not read out what its trunk knew."""
    def score(prompts, responses):
        block = model.config.block_size
        rows = []
        for prompt, response in zip(prompts, responses):
            answer = encode_response(tok, response)[:block]
            rows.append((encode_prompt(tok, prompt)[-max(1, block + 1 - len(answer)):], answer))  # keep the end
        idx, labels = pad_batch(rows, chat_token_ids(tok)["end"])  # 6.1 labels: the answer's tokens only
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                return response_logprob(model(idx.to(device))[0], labels.to(device)).float().cpu()
        finally:
            model.train(was_training)
    return score


# ----------------------------------------------------------------------------------------------------
# 7.2 Checkpoints: the trunk as a GPT checkpoint (loaded the usual way), the head and tokenizer beside it
def save_reward_model(path, rm, tok_dict, step, val_loss, extra=None):
    save_checkpoint(path, rm.trunk, rm.trunk.config, step, val_loss,
                    {"tokenizer": tok_dict, "reward_head": rm.head.state_dict(), **(extra or {})})


def load_reward_model(path, device="cpu"):
    """(RewardModel, checkpoint dict); a checkpoint without a reward head is refused in one line."""
    trunk, ckpt = load_checkpoint(path, device)
    if "reward_head" not in ckpt:
        raise SystemExit(f"error: {path} is not a reward model (no reward head): give a best.pt of "
                         "part7_reward/train.py")
    rm = RewardModel(trunk)
    rm.head.load_state_dict(ckpt["reward_head"])
    return rm.to(device), ckpt
