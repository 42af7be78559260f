"""Part 1 milestone: a minimal GPT overfits (memorises) a toy dataset.

    python part1_transformer/train.py            # ~10 s on a laptop CPU
    python part1_transformer/train.py --help

The toy dataset is a short text cut into fixed chunks. A model that can memorise it drives the training
loss to ~0: the proof that attention, the MLP, residuals and the optimiser are wired correctly.
"""
import dataclasses
import time
from dataclasses import dataclass

import torch

import cli
from model import GPT, GPTConfig
from runtime import pick_device

TOY_TEXT = (
    "To be, or not to be, that is the question: "
    "whether 'tis nobler in the mind to suffer the slings and arrows of outrageous fortune, "
    "or to take arms against a sea of troubles and by opposing end them."
)


@dataclass
class TrainConfig:
    max_steps: int = 300        # optimizer steps; each one sees every toy chunk
    lr: float = 3e-3            # AdamW learning rate
    seed: int = 1337            # the same seed gives the same run
    log_interval: int = 50      # print the loss every this many steps
    device: str = "auto"        # auto picks cuda, then mps, then cpu

    def __post_init__(self):  # bad values fail here, as one line, before any work starts
        if not 0 < self.lr < float("inf"):  # subtle: written so that nan fails too
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if self.max_steps < 1 or self.log_interval < 1:
            raise ValueError("--max_steps and --log_interval must be >= 1")
        if not 0 <= self.seed < 2**63:  # torch's seeds are 64-bit integers
            raise ValueError(f"--seed must be between 0 and 2**63 - 1, got {self.seed}")


def parse_configs(argv=None, model_defaults=None):
    """Every config field is a --flag (cli.py): `train.py --n_layer 2 --lr 1e-3`; --help lists them all."""
    (train_cfg, model_cfg), _ = cli.parse_args(argv, __doc__, {"training": TrainConfig, "model": GPTConfig},
                                               defaults=model_defaults)
    return train_cfg, model_cfg


# ----------------------------------------------------------------------------------------------------
# The toy dataset: characters -> ids, cut into non-overlapping chunks of block_size + 1
def toy_batches(block_size):
    chars = sorted(set(TOY_TEXT))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([stoi[c] for c in TOY_TEXT])
    if block_size > len(ids) - 1:  # subtle: a chunk needs block_size + 1 characters (the targets are shifted by one)
        raise SystemExit(f"error: --block_size {block_size} is longer than the toy text ({len(ids)} characters); "
                         f"use --block_size {len(ids) - 1} or less")
    n_chunks = (len(ids) - 1) // block_size
    chunks = torch.stack([ids[i * block_size: i * block_size + block_size + 1] for i in range(n_chunks)])
    return chunks[:, :-1], chunks[:, 1:], chars  # inputs, targets shifted by one, the vocabulary


def main(train_cfg: TrainConfig, model_cfg: GPTConfig):
    torch.manual_seed(train_cfg.seed)
    device = pick_device(train_cfg.device)
    x, y, chars = toy_batches(model_cfg.block_size)
    model_cfg = dataclasses.replace(model_cfg, vocab_size=len(chars))
    x, y = x.to(device), y.to(device)
    model = GPT(model_cfg).to(device)
    print(f"device {device} | {model.num_params():,} parameters | toy data: {x.shape[0]} chunks of {x.shape[1]} chars")
    optimizer = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=0.0)

    losses, t0 = [], time.time()
    for step in range(1, train_cfg.max_steps + 1):
        _, loss = model(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % train_cfg.log_interval == 0 or step == 1:
            print(f"step {step:4d} | loss {loss.item():.4f} | {time.time() - t0:.1f}s")

    # Show the memorisation: greedily continue the first character of the text.
    start = torch.tensor([[chars.index(TOY_TEXT[0])]], device=device)
    out = model.eval().generate(start, model_cfg.block_size - 1, temperature=0)
    print("greedy continuation:", "".join(chars[i] for i in out[0].tolist()))
    return model, losses


if __name__ == "__main__":
    try:
        main(*parse_configs(model_defaults={"block_size": 32, "n_layer": 2, "n_embd": 64}))
    except KeyboardInterrupt:  # Ctrl-C: one line, not a traceback (Part 1 writes nothing to disk)
        raise cli.interrupted("Part 1 keeps nothing on disk; run it again (about 10 s)") from None
