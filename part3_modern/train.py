"""Part 3: train the modernised GPT (RMSNorm, RoPE, SwiGLU) on a 100 KB text file, byte by byte.

    python part3_modern/train.py            # about 2 minutes on 2 CPU cores
    python part3_modern/train.py --help

Steps: data -> batches (2.2) -> model -> training loop (2.4) with validation loss (2.6) ->
best checkpoint + loss-curve PNG -> samples (2.5). Outputs go to --out_dir (default out/part3).
New in Part 3's loop: a modern recipe (linear warmup then cosine decay, weight decay on matrices only).
"""
import dataclasses
import math
import os
import time
from dataclasses import dataclass

import regex
import torch

import cli
from checkpoint import load_checkpoint, prepare_out_dir, save_checkpoint
from model import GPT, GPTConfig
from optim import AdamW, clip_grad_norm
from runtime import pick_device
from tokenizer import ByteTokenizer


@dataclass
class TrainConfig:
    data: str = "data/shakespeare_100k.txt"  # a UTF-8 text file
    out_dir: str = "out/part3"  # best.pt, loss.png
    overwrite: bool = False     # replace an earlier run's results in out_dir (else such a folder is refused)
    val_fraction: float = 0.1   # the last 10% of the text is held out
    batch_size: int = 12        # sequences per step
    max_steps: int = 2000       # optimizer steps
    lr: float = 1e-3            # peak lr, reached after warmup_steps (2e-3 and up reach val 1.886 later: README)
    warmup_steps: int = 50      # a linear ramp lets the first updates find their scale before full lr
    min_lr_ratio: float = 0.1   # cosine decay ends at lr * min_lr_ratio
    weight_decay: float = 0.1   # applied to weight matrices only (see make_optimizer)
    beta2: float = 0.99         # a little shorter memory than 0.999: steadier for small batches
    grad_clip: float = 1.0      # the gradient norm is scaled down to at most this
    eval_interval: int = 200    # estimate train/val loss every this many steps
    eval_iters: int = 20        # batches per loss estimate
    log_interval: int = 50      # print the training loss every this many steps
    sample_tokens: int = 500    # bytes sampled from the best checkpoint at the end
    target_loss: float = 0.0    # > 0: also report the wall time when val loss first reaches it
    seed: int = 1337            # the same seed gives the same run (on CPU)
    device: str = "auto"        # auto picks cuda, then mps, then cpu

    def __post_init__(self):  # bad values fail here, as one line, before any work starts
        if not 0 < self.lr < float("inf"):  # subtle: written so that nan fails too
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if min(self.max_steps, self.batch_size, self.eval_iters, self.eval_interval, self.log_interval) < 1:
            raise ValueError("--max_steps, --batch_size, --eval_iters, --eval_interval and --log_interval "
                             "must be >= 1")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"--val_fraction must be between 0 and 1, got {self.val_fraction}")
        if not 0 < self.grad_clip < float("inf"):  # a negative clip flips the gradient: training runs uphill
            raise ValueError(f"--grad_clip must be > 0, got {self.grad_clip}")
        if not 0 <= self.weight_decay < float("inf"):  # a negative decay pushes the weights away from 0
            raise ValueError(f"--weight_decay must be >= 0, got {self.weight_decay}")
        if not 0 <= self.beta2 < 1:
            raise ValueError(f"--beta2 must be in [0, 1), got {self.beta2}")
        if not 0 <= self.sample_tokens <= 100_000:  # sample.py's MAX_NEW_TOKENS: a typo must not look like a hang
            raise ValueError(f"--sample_tokens must be from 0 to 100000, got {self.sample_tokens}")
        if not 0 <= self.seed < 2**63:  # torch's seeds are 64-bit integers
            raise ValueError(f"--seed must be between 0 and 2**63 - 1, got {self.seed}")
        if self.warmup_steps < 0 or not 0 <= self.min_lr_ratio <= 1:
            raise ValueError("--warmup_steps must be >= 0 and --min_lr_ratio between 0 and 1")


def parse_configs(argv=None, model_defaults=None):
    """Every config field is a --flag (cli.py): `train.py --n_layer 2 --lr 1e-3`; --help lists them all."""
    (train_cfg, model_cfg), _ = cli.parse_args(argv, __doc__, {"training": TrainConfig, "model": GPTConfig},
                                               defaults=model_defaults)
    return train_cfg, model_cfg


# ----------------------------------------------------------------------------------------------------
# Data: bytes of the text file, split into train/val (2.6), sampled as shifted (x, y) pairs (2.2)
def load_text(path):
    if not os.path.isfile(path):
        raise SystemExit(f"error: data file {path} not found; run from the repo root or pass --data PATH")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise SystemExit(f"error: data file {path} is not UTF-8 text (byte {e.start}); pass --data with a text file")
    if not text:
        raise SystemExit(f"error: data file {path} is empty; pass --data with a text file")
    return text


def split_data(ids, val_fraction, block_size):
    data = torch.tensor(ids, dtype=torch.long)
    n_val = int(len(data) * val_fraction)
    train, val = data[:-n_val], data[-n_val:]
    if min(len(train), len(val)) <= block_size:
        raise SystemExit(f"error: the text is too short for block_size {block_size} "
                         f"({len(train)} train / {len(val)} val tokens); use a longer file or a smaller --block_size")
    return train, val


def get_batch(data, block_size, batch_size, generator=None):
    """2.2 Random windows of block_size tokens; the targets are the same windows shifted by one:
    x = [t0 t1 t2 t3] -> y = [t1 t2 t3 t4], so position i learns to predict token i+1."""
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    offsets = torch.arange(block_size)
    x = data[starts[:, None] + offsets]       # (B, T) gathered in one indexing op
    y = data[starts[:, None] + offsets + 1]   # (B, T)
    return x, y


# ----------------------------------------------------------------------------------------------------
# 2.6 Validation loss: the average over eval_iters random batches, without dropout or gradients
@torch.no_grad()
def estimate_loss(model, splits, block_size, batch_size, eval_iters, device, seed=0):
    generator = torch.Generator().manual_seed(seed)  # the same batches every time: evals are comparable
    model.eval()
    out = {}
    for name, data in splits.items():
        losses = [model(*(t.to(device) for t in get_batch(data, block_size, batch_size, generator)))[1].item()
                  for _ in range(eval_iters)]
        out[name] = sum(losses) / len(losses)
    model.train()
    return out


def check_not_diverged(val_loss, vocab_size, step):
    """Stop a run whose val loss is nan/inf or far worse than guessing every token uniformly (ln vocab_size):
    it diverged (too high a learning rate, for example) and more steps would only waste time."""
    if not val_loss < 2 * math.log(vocab_size):  # subtle: nan fails this test too
        raise SystemExit(f"error: val loss {val_loss:.4g} at step {step} is far above {math.log(vocab_size):.2f} "
                         "(guessing uniformly): training diverged; lower --lr (the best checkpoint so far is kept)")


def plot_losses(history, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["train"] for h in history], label="train")
    ax.plot(steps, [h["val"] for h in history], label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per byte)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def word_overlap(sample, reference_text):
    """Fraction of the words in sample that occur somewhere in reference_text (a cheap coherence check)."""
    words = regex.findall(r"[A-Za-z']+", sample)
    vocab = set(regex.findall(r"[A-Za-z']+", reference_text))
    return sum(w in vocab for w in words) / max(len(words), 1)


# ----------------------------------------------------------------------------------------------------
# The modern recipe: warmup + cosine learning rate, and weight decay only where it makes sense
def lr_at(step, cfg: TrainConfig):
    """Linear warmup to cfg.lr over warmup_steps, then cosine decay to lr * min_lr_ratio at max_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def make_optimizer(model, cfg: TrainConfig):
    """AdamW with weight decay on matrices (Linear and embedding weights) only: decaying norm gains
    and biases just pulls them towards 0 and 1-d parameters do not overfit the way matrices can."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2))


# ----------------------------------------------------------------------------------------------------
# 2.4 The training loop, written out
def main(train_cfg: TrainConfig, model_cfg: GPTConfig):
    torch.manual_seed(train_cfg.seed)
    gen = torch.Generator().manual_seed(train_cfg.seed)
    device = pick_device(train_cfg.device)

    # --- data
    tok = ByteTokenizer()
    text = load_text(train_cfg.data)
    train_data, val_data = split_data(tok.encode(text), train_cfg.val_fraction, model_cfg.block_size)
    splits = {"train": train_data, "val": val_data}
    prepare_out_dir(train_cfg.out_dir, train_cfg.overwrite)  # after the input checks: a typo deletes nothing

    # --- model and optimizer
    model_cfg = dataclasses.replace(model_cfg, vocab_size=tok.vocab_size)
    model = GPT(model_cfg).to(device)
    optimizer = make_optimizer(model, train_cfg)
    tokens_per_step = train_cfg.batch_size * model_cfg.block_size
    print(f"device {device} | {model.num_params():,} parameters | {len(train_data):,} train / "
          f"{len(val_data):,} val bytes | {tokens_per_step} tokens per step")

    # --- train
    history, best_val, reached_at = [], float("inf"), None
    ckpt_path = os.path.join(train_cfg.out_dir, "best.pt")
    t_start = time.time()
    try:
        for step in range(1, train_cfg.max_steps + 1):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step - 1, train_cfg)
            x, y = get_batch(train_data, model_cfg.block_size, train_cfg.batch_size, gen)
            _, loss = model(x.to(device), y.to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            clip_grad_norm(model.parameters(), train_cfg.grad_clip)  # tames rare loss spikes
            optimizer.step()

            elapsed = time.time() - t_start
            if step % train_cfg.log_interval == 0 or step == 1:
                eta = elapsed / step * (train_cfg.max_steps - step)
                print(f"step {step:5d} | loss {loss.item():.4f} | {tokens_per_step * step / elapsed:,.0f} tok/s "
                      f"| {elapsed:.0f}s elapsed, ETA {eta:.0f}s")
            if step % train_cfg.eval_interval == 0 or step == train_cfg.max_steps:
                losses = estimate_loss(model, splits, model_cfg.block_size, train_cfg.batch_size,
                                       train_cfg.eval_iters, device)
                history.append({"step": step, "time": time.time() - t_start, **losses})
                print(f"step {step:5d} | train {losses['train']:.4f} | val {losses['val']:.4f}")
                check_not_diverged(losses["val"], model_cfg.vocab_size, step)
                if losses["val"] < best_val:  # keep the best model, not the last (later steps may overfit)
                    best_val = losses["val"]
                    save_checkpoint(ckpt_path, model, model_cfg, step, best_val)
                if reached_at is None and losses["val"] <= train_cfg.target_loss:
                    reached_at = history[-1]
                    print(f"reached val {train_cfg.target_loss} at step {step}, {reached_at['time']:.1f}s")
    except KeyboardInterrupt:  # Ctrl-C: say what is kept instead of a traceback
        kept = f"{ckpt_path} holds the best model so far (val {best_val:.4f})" if history else "nothing was saved"
        raise cli.interrupted(f"at step {step}; {kept}") from None
    wall = time.time() - t_start
    plot_losses(history, os.path.join(train_cfg.out_dir, "loss.png"))

    # --- sample from the best checkpoint (2.5)
    model, _ = load_checkpoint(ckpt_path, device)
    prompt = torch.tensor([tok.encode("\n")], device=device)
    out = model.eval().generate(prompt, train_cfg.sample_tokens, temperature=0.8, top_k=50, generator=None)
    sample = tok.decode(out[0].tolist())
    overlap = word_overlap(sample, tok.decode(train_data.tolist()))
    print(f"--- sample (temperature 0.8, top-k 50) ---{sample}\n---")
    print(f"best val loss {best_val:.4f} | {wall:.0f}s | {tokens_per_step * train_cfg.max_steps / wall:,.0f} tok/s "
          f"| {overlap:.0%} of sampled words occur in the training text")
    return {"best_val": best_val, "history": history, "wall_time": wall, "sample": sample,
            "word_overlap": overlap, "reached_target": reached_at, "checkpoint": ckpt_path}


if __name__ == "__main__":
    try:
        main(*parse_configs())
    except KeyboardInterrupt:  # Ctrl-C outside the training loop (reading data, sampling)
        raise cli.interrupted("stopped at once; out_dir keeps the files of the last finished save") from None
    except RuntimeError as e:  # the allocators of CPU, CUDA and MPS say it in these words
        if "out of memory" not in str(e) and "can't allocate memory" not in str(e):
            raise
        raise SystemExit("error: out of memory; lower --batch_size (or --block_size, --n_embd, --n_layer)") from None
