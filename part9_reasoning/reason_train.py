"""9.1/9.3 Training a small reasoning model: the same GPT and the same masked loss as Part 6, a small vocabulary.

Arithmetic wants one token per digit. Part 4's BPE writes "4729" as "472" + "9", so a column of the sum
would be hidden inside a token; here the tokenizer is bpe.Tokenizer with no merges (256 byte ids, one per
character of these prompts) plus the chat and reasoning tokens, and the model is trained from scratch on the
problems, which a CPU does in minutes. Everything else is Part 6's: prompt + response in the chat format,
labels masked to the response (6.2), a cosine schedule, batched greedy grading (6.4). New here: responses may
hold reasoning tags (reasoning_format.encode_reasoning_response) and tool results are masked out of the loss
(reasoning_format.mask_tool_results).
"""
import math
import time
from dataclasses import dataclass

import torch

from bpe import Tokenizer
from chat_format import chat_token_ids, encode_prompt, pad_batch
from model import GPT, GPTConfig
from reasoning_format import add_reasoning_tokens, encode_reasoning_response, mask_tool_results, reasoning_token_ids
from sft_data import SFTSet, get_sft_batch


def reasoning_tokenizer() -> Tokenizer:
    """Byte-level (no merges) with the chat tokens and the six reasoning tokens: vocab_size 266."""
    tok = Tokenizer()
    add_reasoning_tokens(tok)
    return tok


def build_reasoning_set(examples, tok, block_size) -> SFTSet:
    """Examples -> padded tensors as sft_data.build_sft_set, with reasoning tags as ids and every tool
    result's tokens out of the labels (9.3)."""
    pairs = [(encode_prompt(tok, ex.prompt), encode_reasoning_response(tok, ex.response)) for ex in examples]
    x, y = pad_batch(pairs, chat_token_ids(tok)["end"], block_size)
    ids = reasoning_token_ids(tok)
    y = mask_tool_results(y, ids["result"], ids["result_end"])
    lengths = torch.tensor([len(p) + len(r) - 1 for p, r in pairs])
    return SFTSet(x, y, lengths)


@dataclass
class ReasonConfig:
    """What one training run of a reasoning model needs (train.py fills it from its flags)."""
    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 50
    seed: int = 0
    log_interval: int = 100


def new_model(tok, n_layer=4, n_embd=128, n_head=4, block_size=96, **overrides) -> GPT:
    """A fresh Part 3-style GPT (RoPE, RMSNorm, SwiGLU) sized for the reasoning vocabulary."""
    return GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
                         n_embd=n_embd, bias=False, **overrides))


def reason_lr_at(step, cfg: ReasonConfig):
    """Linear warmup, then cosine down to a tenth of cfg.lr at the last step."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train_reasoner(model, data: SFTSet, cfg: ReasonConfig, log=print, name="model"):
    """cfg.steps AdamW steps on random batches of `data`; a progress line every cfg.log_interval steps.
    Returns the loss of each step."""
    device = next(model.parameters()).device
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    losses, started, tokens = [], time.time(), 0
    model.train()
    for step in range(cfg.steps):
        for group in optimizer.param_groups:
            group["lr"] = reason_lr_at(step, cfg)
        x, y = get_sft_batch(data, cfg.batch_size, gen)
        _, loss = model(x.to(device), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        tokens += x.numel()
        if (step + 1) % cfg.log_interval == 0 or step + 1 == cfg.steps:
            spent = time.time() - started
            log(f"{name} step {step + 1:5d}/{cfg.steps} | loss {loss.item():.4f} | {tokens / spent:,.0f} tok/s "
                f"| ETA {spent / (step + 1) * (cfg.steps - step - 1):.0f}s")
    model.eval()
    return losses
