"""Part 4: scale up the training loop: BPE tokens, gradient accumulation, mixed precision, LR schedules,
checkpoint/resume, logging, several processes (DDP), and the GPU fast path.

    python part4_scaling/train.py                         # CPU config: a few minutes on 2 cores
    python part4_scaling/train.py --preset gpu            # the 10-50M-parameter milestone run (H100)
    python part4_scaling/train.py --resume out/part4/last.pt   # carry on exactly where a run stopped
    torchrun --nproc_per_node 2 part4_scaling/train.py    # the same script on 2 processes
    python part4_scaling/train.py --help

Steps: data -> tokens (4.1, cached) -> model -> training loop (2.4) with accumulation and autocast (4.2),
a schedule (4.3), checkpoints (4.4) and logs (4.5) -> best checkpoint + plots -> samples (2.5).
"""
import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import regex
import torch
import torch.distributed as dist

from data import load_tokenizer, load_tokens, tokenizer_to_dict
from logger import RunLogger
from model import GPT, GPTConfig

ARCH = "part3_gpt"  # Part 4 trains Part 3's architecture: their checkpoints are interchangeable


@dataclass
class TrainConfig:
    preset: str = "cpu"         # cpu | gpu | shakespeare_gpu | tiny: a named set of defaults (PRESETS)
    data: str = "data/gutenberg_train_a.txt.xz"  # comma-separated .txt or .txt.xz files
    val_data: str = "data/gutenberg_fiction_valid.txt.xz"  # empty: hold out val_fraction of --data
    max_chars: int = 0          # > 0: read only the first max_chars characters of each file (quick runs)
    tokenizer: str = "bpe"      # bpe | bytes
    bpe_vocab_size: int = 4096  # BPE vocabulary, trained on the first tokenizer_chars of the data
    tokenizer_chars: int = 5_000_000
    cache_dir: str = "data/cache"
    out_dir: str = "out/part4"
    val_fraction: float = 0.1
    batch_size: int = 16        # sequences per micro-batch per process
    grad_accum_steps: int = 1   # 4.2 micro-batches per optimizer step
    max_steps: int = 1000
    lr: float = 2e-3            # peak learning rate after warmup (the CPU preset's measured figures use 2e-3)
    schedule: str = "cosine"    # 4.3 cosine | wsd | constant
    warmup_steps: int = 100     # a linear ramp lets the first updates find their scale before full lr
    min_lr_ratio: float = 0.1   # the decay ends at lr * min_lr_ratio
    decay_fraction: float = 0.2  # wsd: the last 20% of the steps decay linearly
    weight_decay: float = 0.1   # applied to weight matrices only (see make_optimizer)
    beta2: float = 0.99
    grad_clip: float = 1.0
    dtype: str = "auto"         # 4.2 auto | fp32 | bf16 | fp16
    compile: bool = False       # torch.compile the model (GPU: faster steps after ~30 s of compiling)
    eval_interval: int = 200
    eval_iters: int = 20
    log_interval: int = 50
    ckpt_interval: int = 200    # 4.4 write last.pt every this many steps (and at the end)
    resume: str = ""            # path of a last.pt to continue from
    stop_after: int = 0         # > 0: stop after this step as if interrupted (the schedule still uses max_steps)
    tensorboard: bool = True    # 4.5 also write TensorBoard scalars when tensorboard is installed
    sample_tokens: int = 200
    target_loss: float = 0.0    # > 0: also report the wall time when val loss first reaches it
    seed: int = 1337
    device: str = "auto"  # auto picks cuda, then mps, then cpu


# Named configurations. Flags given on the command line override them.
PRESETS = {
    "cpu": {"max_chars": 20_000_000},  # the TrainConfig/GPTConfig defaults, on the first 20M characters
    "tiny": {"max_chars": 1_000_000, "tokenizer_chars": 300_000, "bpe_vocab_size": 512, "max_steps": 60,
             "warmup_steps": 10, "eval_interval": 30, "eval_iters": 4, "batch_size": 8, "block_size": 64,
             "n_layer": 2, "n_head": 2, "n_embd": 64, "sample_tokens": 20, "ckpt_interval": 30},
    "gpu": {"data": "data/gutenberg_train_a.txt.xz,data/gutenberg_train_b.txt.xz", "bpe_vocab_size": 8192,
            "tokenizer_chars": 20_000_000, "batch_size": 32, "block_size": 1024, "n_layer": 6, "n_head": 12,
            "n_embd": 768, "max_steps": 5000, "lr": 1.5e-3, "warmup_steps": 200, "eval_interval": 500,
            "eval_iters": 40, "log_interval": 100, "ckpt_interval": 1000, "compile": True, "sample_tokens": 300},
    "shakespeare_gpu": {"data": "data/tinyshakespeare.txt", "val_data": "", "tokenizer": "bytes",
                        "batch_size": 64, "block_size": 256, "n_layer": 6, "n_head": 6, "n_embd": 384,
                        "max_steps": 1000, "lr": 3e-3, "warmup_steps": 100, "eval_interval": 50,
                        "eval_iters": 10, "log_interval": 100, "ckpt_interval": 100000, "dropout": 0.2,
                        "target_loss": 1.47, "sample_tokens": 300},
}


# ----------------------------------------------------------------------------------------------------
# Config from the command line: every dataclass field becomes a --flag with its default shown in --help
def add_config_args(parser, config_cls, title):
    group = parser.add_argument_group(title)
    for f in dataclasses.fields(config_cls):
        kind = f.type if isinstance(f.type, type) else type(f.default)
        if kind is bool:
            group.add_argument(f"--{f.name}", type=lambda s: s.lower() in ("1", "true", "yes"), default=f.default,
                               metavar="BOOL", help="(default: %(default)s)")
        else:
            group.add_argument(f"--{f.name}", type=kind, default=f.default, help="(default: %(default)s)")


def config_from_args(config_cls, args):
    return config_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(config_cls)})


def parse_configs(argv=None, model_defaults=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_args(parser, TrainConfig, "training")
    add_config_args(parser, GPTConfig, "model")
    if model_defaults:
        parser.set_defaults(**model_defaults)
    preset = parser.parse_known_args(argv)[0].preset  # a preset changes the defaults, flags still win
    if preset not in PRESETS:
        parser.error(f"--preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    parser.set_defaults(**PRESETS[preset])
    args = parser.parse_args(argv)
    try:
        train_cfg, model_cfg = config_from_args(TrainConfig, args), config_from_args(GPTConfig, args)
        check_train_config(train_cfg)
        return train_cfg, model_cfg
    except ValueError as e:
        parser.error(str(e))


def check_train_config(cfg: TrainConfig):
    if cfg.lr <= 0:
        raise ValueError(f"--lr must be > 0, got {cfg.lr}")
    if cfg.warmup_steps < 0 or not 0 <= cfg.min_lr_ratio <= 1:
        raise ValueError("--warmup_steps must be >= 0 and --min_lr_ratio between 0 and 1")
    if min(cfg.max_steps, cfg.batch_size, cfg.eval_iters, cfg.eval_interval, cfg.grad_accum_steps) < 1:
        raise ValueError("--max_steps, --batch_size, --eval_iters, --eval_interval and --grad_accum_steps must be >= 1")
    if not 0 < cfg.val_fraction < 1:
        raise ValueError(f"--val_fraction must be between 0 and 1, got {cfg.val_fraction}")
    if cfg.schedule not in ("cosine", "wsd", "constant"):
        raise ValueError(f"--schedule must be cosine, wsd or constant, got {cfg.schedule!r}")
    if cfg.dtype not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"--dtype must be auto, fp32, bf16 or fp16, got {cfg.dtype!r}")


def pick_device(name):
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


# ----------------------------------------------------------------------------------------------------
# 4.2 Mixed precision: pick the fastest dtype the device computes correctly, and say which
def pick_dtype(requested, device):
    """Returns (dtype name, autocast context, whether to scale the loss)."""
    kind = device.split(":")[0]
    if requested == "auto":
        if kind == "cuda":
            requested = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:  # CPUs without bf16 units run bf16 matmuls far slower than fp32; MPS autocast is fragile
            requested = "fp32"
    if requested == "fp16" and kind != "cuda":
        raise SystemExit("error: --dtype fp16 needs a CUDA GPU (use bf16 or fp32 here)")
    if requested == "bf16" and kind == "cuda" and not torch.cuda.is_bf16_supported():
        raise SystemExit("error: this GPU has no bf16; use --dtype fp16 (with loss scaling) or fp32")
    if requested == "fp32":
        return "fp32", nullcontext(), False
    dtype = torch.bfloat16 if requested == "bf16" else torch.float16
    # fp16 has a narrow exponent range: small gradients underflow to 0 unless the loss is scaled up first
    return requested, torch.autocast(device_type=kind, dtype=dtype), requested == "fp16"


# ----------------------------------------------------------------------------------------------------
# Several processes (torchrun): each process trains on its own slice of every global batch
def setup_distributed(device):
    """Returns (rank, world_size, device). torchrun sets RANK/WORLD_SIZE; a plain `python` run is rank 0 of 1."""
    if "RANK" not in os.environ:
        return 0, 1, device
    backend = "nccl" if device.startswith("cuda") else "gloo"
    dist.init_process_group(backend)
    if device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def mean_over_processes(value, world_size, device):
    if world_size == 1:
        return value
    t = torch.tensor(value, device=device)
    dist.all_reduce(t)
    return t.item() / world_size


# ----------------------------------------------------------------------------------------------------
# Data: token ids (uint16 memmap), split into train/val (2.6), sampled as shifted (x, y) pairs (2.2)
def load_splits(cfg: TrainConfig, block_size):
    paths = [p for p in cfg.data.split(",") if p]
    tok, tok_id = load_tokenizer(cfg.tokenizer, cfg.bpe_vocab_size, paths, cfg.cache_dir, cfg.tokenizer_chars)
    train = load_tokens(paths, tok, tok_id, cfg.cache_dir, cfg.max_chars)
    if cfg.val_data:
        val = load_tokens([cfg.val_data], tok, tok_id, cfg.cache_dir, cfg.max_chars)
    else:
        train, val = split_data(train, cfg.val_fraction, block_size)
    if min(len(train), len(val)) <= block_size:
        raise SystemExit(f"error: the data is too short for block_size {block_size} "
                         f"({len(train)} train / {len(val)} val tokens); use a longer file or a smaller --block_size")
    return tok, train, val


def split_data(ids, val_fraction, block_size):
    n_val = int(len(ids) * val_fraction)
    return ids[:-n_val], ids[-n_val:]


def get_batch(data, block_size, batch_size, generator=None, rank=0, world_size=1):
    """2.2 Random windows of block_size tokens; the targets are the same windows shifted by one.
    Every process draws the same global batch (same generator state) and keeps its own slice, so
    N processes with batch B see exactly the examples that 1 process with batch N*B sees."""
    starts = torch.randint(len(data) - block_size, (batch_size * world_size,), generator=generator)
    starts = starts[rank * batch_size:(rank + 1) * batch_size].numpy()
    offsets = np.arange(block_size + 1)
    window = torch.from_numpy(data[starts[:, None] + offsets].astype(np.int64))  # (B, T+1) in one gather
    return window[:, :-1], window[:, 1:]


def to_device(t, device):
    if device.startswith("cuda"):  # pinned host memory lets the copy overlap with GPU work
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


# ----------------------------------------------------------------------------------------------------
# 2.6 Validation loss: the average over eval_iters random batches, without dropout or gradients
@torch.no_grad()
def estimate_loss(model, splits, block_size, batch_size, eval_iters, device, seed=0, autocast=None):
    generator = torch.Generator().manual_seed(seed)  # the same batches every time: evals are comparable
    model.eval()
    out = {}
    for name, data in splits.items():
        losses = []
        for _ in range(eval_iters):
            x, y = get_batch(data, block_size, batch_size, generator)
            with autocast or nullcontext():
                losses.append(model(x.to(device), y.to(device))[1].item())
        out[name] = sum(losses) / len(losses)
    model.train()
    return out


# ----------------------------------------------------------------------------------------------------
# 4.4 Checkpoints: everything needed to continue bit for bit, written to a temp file then renamed
def save_checkpoint(path, model, model_cfg, step, val_loss, extra=None):
    state = {"arch": ARCH, "model": model.state_dict(), "model_config": dataclasses.asdict(model_cfg),
             "step": step, "val_loss": val_loss, **(extra or {})}
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def training_state(optimizer, scaler, generator, history, best_val, train_cfg):
    """The parts of a run besides the weights: optimizer moments, loss scale, RNG streams and data position."""
    rng = {"torch": torch.get_rng_state(), "batches": generator.get_state()}
    if torch.cuda.is_available():
        rng["cuda"] = torch.cuda.get_rng_state()
    return {"optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(), "rng": rng,
            "history": history, "best_val": best_val, "train_config": dataclasses.asdict(train_cfg)}


def restore_training_state(ckpt, optimizer, scaler, generator):
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    generator.set_state(ckpt["rng"]["batches"])  # the data position: the next batch is the one we would have drawn
    if "cuda" in ckpt["rng"] and torch.cuda.is_available():
        torch.cuda.set_rng_state(ckpt["rng"]["cuda"])


def load_checkpoint(path, device="cpu"):
    """Returns (model, checkpoint dict); exits with a one-line message on any unusable file."""
    if not os.path.isfile(path):
        raise SystemExit(f"error: checkpoint {path} not found; train first: python part4_scaling/train.py")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:  # truncated, not a torch file, or holds objects we refuse to unpickle
        raise SystemExit(f"error: cannot read checkpoint {path} ({type(e).__name__}); retrain to recreate it")
    if not isinstance(ckpt, dict) or ckpt.get("arch") != ARCH:
        found = ckpt.get("arch") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise SystemExit(f"error: {path} is a {found!r} checkpoint, not {ARCH!r}; use this chapter's own checkpoint")
    try:
        model = GPT(GPTConfig(**ckpt["model_config"]))
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError) as e:
        raise SystemExit(f"error: checkpoint {path} does not fit this model ({str(e).splitlines()[0]})")
    return model.to(device), ckpt


def plot_losses(history, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["train"] for h in history], label="train")
    ax.plot(steps, [h["val"] for h in history], label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per token)")
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
# 4.3 Learning-rate schedules, and weight decay only where it makes sense
def lr_at(step, cfg: TrainConfig):
    """Linear warmup to cfg.lr over warmup_steps, then
    cosine:   a half cosine down to lr * min_lr_ratio at max_steps;
    wsd:      warmup-stable-decay: flat at lr, then a linear decay over the last decay_fraction of the steps
              (the run can be extended from any stable-phase checkpoint);
    constant: flat at lr."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    floor = cfg.lr * cfg.min_lr_ratio
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "wsd":
        decay_start = cfg.max_steps * (1 - cfg.decay_fraction)
        if step < decay_start:
            return cfg.lr
        return cfg.lr - (cfg.lr - floor) * min(1.0, (step - decay_start) / max(1, cfg.max_steps - decay_start))
    progress = (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
    return floor + (cfg.lr - floor) * cosine


def make_optimizer(model, cfg: TrainConfig, device="cpu"):
    """AdamW with weight decay on matrices (Linear and embedding weights) only: decaying norm gains
    and biases just pulls them towards 0 and 1-d parameters do not overfit the way matrices can."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": cfg.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    fused = device.startswith("cuda")  # one kernel for the whole update instead of several per tensor
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, cfg.beta2), fused=fused)


# ----------------------------------------------------------------------------------------------------
# 4.2 Gradient accumulation: k micro-batches of B give the gradient of one batch of k*B
def accumulate_gradients(model, micro_batches, autocast, scaler, ddp=False):
    """Forward and backward each micro-batch; returns the mean loss (a tensor: reading it with .item()
    would make the CPU wait for the GPU every step). Each loss is divided by the number of
    micro-batches, so the summed gradients equal the mean-loss gradient of the whole batch."""
    total = 0.0
    for i, (x, y) in enumerate(micro_batches):
        last = i == len(micro_batches) - 1
        # under DDP, gradients are averaged across processes only once, after the last micro-batch
        with (model.no_sync() if ddp and not last else nullcontext()):
            with autocast:
                _, loss = model(x, y)
            loss = loss / len(micro_batches)
            scaler.scale(loss).backward()
        total += loss.detach()
    return total


def unigram_loss(train_data, val_data, vocab_size):
    """The loss of the best context-free model: predict every token from train-set token frequencies
    (add-one smoothed). A model that does not beat this has learned nothing about context."""
    counts = np.bincount(np.asarray(train_data), minlength=vocab_size).astype(np.float64) + 1
    log_probs = np.log(counts / counts.sum())
    return float(-log_probs[np.asarray(val_data)].mean())


def peak_flops(device):
    """Dense bf16 tensor-core peak of known GPUs, for the MFU estimate (None elsewhere)."""
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in (("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("L4", 121e12), ("4090", 165e12)):
        if key in name:
            return flops
    return None


# ----------------------------------------------------------------------------------------------------
# 2.4 The training loop, written out
def main(train_cfg: TrainConfig, model_cfg: GPTConfig):
    device = pick_device(train_cfg.device)
    rank, world_size, device = setup_distributed(device)
    master = rank == 0  # only one process logs, evaluates for the record and writes checkpoints
    torch.manual_seed(train_cfg.seed + rank)  # dropout differs per process; batches come from `gen`
    gen = torch.Generator().manual_seed(train_cfg.seed)
    os.makedirs(train_cfg.out_dir, exist_ok=True)
    dtype_name, autocast, use_scaler = pick_dtype(train_cfg.dtype, device)
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True  # fp32 matmuls on tensor cores where fp32 remains
        torch.backends.cudnn.allow_tf32 = True

    # --- data
    tok, train_data, val_data = load_splits(train_cfg, model_cfg.block_size)
    splits = {"train": train_data, "val": val_data}

    # --- model, optimizer, loss scaler; a resumed run takes all three from its checkpoint
    ckpt = None
    if train_cfg.resume:
        model, ckpt = load_checkpoint(train_cfg.resume, device)
        model_cfg = model.config
    else:
        model_cfg = dataclasses.replace(model_cfg, vocab_size=tok.vocab_size)
        model = GPT(model_cfg).to(device)
    if model_cfg.vocab_size < tok.vocab_size:
        raise SystemExit(f"error: the model has {model_cfg.vocab_size} tokens but the tokenizer {tok.vocab_size}")
    optimizer = make_optimizer(model, train_cfg, device)
    scaler = torch.amp.GradScaler(device.split(":")[0], enabled=use_scaler)
    history, best_val, start_step = [], float("inf"), 1
    if ckpt is not None:
        restore_training_state(ckpt, optimizer, scaler, gen)
        history, best_val, start_step = ckpt["history"], ckpt["best_val"], ckpt["step"] + 1
    time_offset = history[-1]["time"] if history else 0.0  # wall time of the run before a resume
    tok_state = {"tokenizer": tokenizer_to_dict(tok)}
    raw_model = model
    if train_cfg.compile:
        model = torch.compile(model)
    ddp = world_size > 1
    if ddp:
        device_ids = [device] if device.startswith("cuda") else None
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    tokens_per_step = train_cfg.batch_size * model_cfg.block_size * train_cfg.grad_accum_steps * world_size
    flops_per_step = raw_model.flops_per_token() * tokens_per_step
    peak = peak_flops(device)
    log = RunLogger(train_cfg.out_dir, enabled=master, tensorboard=train_cfg.tensorboard, append=ckpt is not None)
    log.text(f"device {device} x{world_size} | dtype {dtype_name} | {raw_model.num_params():,} parameters | "
             f"vocab {tok.vocab_size} | {len(train_data):,} train / {len(val_data):,} val tokens | "
             f"{tokens_per_step:,} tokens per step" + (f" | resumed at step {start_step}" if ckpt else ""))

    # --- train
    reached_at = next((h for h in history if h["val"] <= train_cfg.target_loss), None)
    last_step = min(train_cfg.max_steps, train_cfg.stop_after or train_cfg.max_steps)
    t_start, t_last, step = time.time(), time.time(), start_step - 1
    logged_step = step  # the last step whose speed was measured
    for step in range(start_step, last_step + 1):
        lr = lr_at(step - 1, train_cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        micro = [get_batch(train_data, model_cfg.block_size, train_cfg.batch_size, gen, rank, world_size)
                 for _ in range(train_cfg.grad_accum_steps)]
        micro = [(to_device(x, device), to_device(y, device)) for x, y in micro]
        loss = accumulate_gradients(model, micro, autocast, scaler, ddp)
        scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)  # a tensor, no sync
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)

        if step % train_cfg.log_interval == 0 or step == 1:
            loss, grad_norm = mean_over_processes(loss.item(), world_size, device), grad_norm.item()
            now = time.time()
            steps_done, logged_step = step - logged_step, step
            tok_s = tokens_per_step * steps_done / (now - t_last)
            mfu = flops_per_step * steps_done / (now - t_last) / peak if peak else None
            eta = (now - t_start) / (step - start_step + 1) * (last_step - step)
            log.scalars(step, loss=loss, lr=lr, grad_norm=grad_norm, tokens_per_s=tok_s, mfu=mfu)
            log.text(f"step {step:5d} | loss {loss:.4f} | lr {lr:.2e} | grad norm {grad_norm:.2f} | "
                     f"{tok_s:,.0f} tok/s" + (f" | MFU {mfu:.1%}" if mfu else "") + f" | ETA {eta:.0f}s")
            t_last = now
        if step % train_cfg.eval_interval == 0 or step == last_step:
            t_eval = time.time()
            losses = estimate_loss(raw_model, splits, model_cfg.block_size, train_cfg.batch_size,
                                   train_cfg.eval_iters, device, autocast=autocast)
            history.append({"step": step, "time": time_offset + time.time() - t_start, **losses})
            log.scalars(step, val_loss=losses["val"], train_loss=losses["train"])
            log.text(f"step {step:5d} | train {losses['train']:.4f} | val {losses['val']:.4f}")
            if losses["val"] < best_val:  # keep the best model, not the last (later steps may overfit)
                best_val = losses["val"]
                if master:
                    save_checkpoint(os.path.join(train_cfg.out_dir, "best.pt"), raw_model, model_cfg, step, best_val,
                                    tok_state)
            if reached_at is None and losses["val"] <= train_cfg.target_loss:
                reached_at = history[-1]
                log.text(f"reached val {train_cfg.target_loss} at step {step}, {reached_at['time']:.1f}s")
            t_last += time.time() - t_eval  # tokens/s and MFU measure training steps, not evaluation
        if master and (step % train_cfg.ckpt_interval == 0 or step == last_step):
            save_checkpoint(os.path.join(train_cfg.out_dir, "last.pt"), raw_model, model_cfg, step, best_val,
                            {**tok_state, **training_state(optimizer, scaler, gen, history, best_val, train_cfg)})
    wall = time.time() - t_start
    log.close()
    if master and step >= start_step:
        tok_s = tokens_per_step * (step - start_step + 1) / wall
        log.text(f"best val loss {best_val:.4f} | {wall:.0f}s | {tok_s:,.0f} tok/s")

    result = {"best_val": best_val, "history": history, "wall_time": wall, "reached_target": reached_at,
              "unigram_val": unigram_loss(train_data, val_data, tok.vocab_size),
              "tokens_per_step": tokens_per_step, "params": raw_model.num_params(), "dtype": dtype_name,
              "steps": step, "checkpoint": os.path.join(train_cfg.out_dir, "best.pt")}
    if master and history:
        plot_losses(history, os.path.join(train_cfg.out_dir, "loss.png"))
        write_summary(result, train_cfg, model_cfg, device, world_size, wall, step - start_step + 1)
        reference = tok.decode(np.asarray(val_data[:1_000_000]).tolist())
        result.update(sample_from_best(result["checkpoint"], tok, reference, train_cfg, device, autocast))
    if ddp:
        dist.destroy_process_group()
    return result


def write_summary(result, train_cfg, model_cfg, device, world_size, wall, steps_run):
    """results.json: the figures a milestone report needs, next to the exact command."""
    mfus = [r["mfu"] for r in read_metrics(train_cfg.out_dir) if "mfu" in r]
    summary = {"command": " ".join(["python"] + sys.argv), "device": torch.cuda.get_device_name(device)
               if device.startswith("cuda") else device, "processes": world_size, "dtype": result["dtype"],
               "params": result["params"], "steps": result["steps"],
               "tokens_seen": result["tokens_per_step"] * steps_run,
               "wall_s": round(wall, 1), "tokens_per_s_overall": round(result["tokens_per_step"] * steps_run / wall),
               "median_mfu": round(statistics.median(mfus), 4) if mfus else None,  # robust to the start-up step
               "best_val": result["best_val"],
               "unigram_val": result["unigram_val"], "reached_target": result["reached_target"],
               "train_config": dataclasses.asdict(train_cfg), "model_config": dataclasses.asdict(model_cfg)}
    with open(os.path.join(train_cfg.out_dir, "results.json"), "w") as f:
        json.dump(summary, f, indent=1)


def read_metrics(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def sample_from_best(ckpt_path, tok, reference_text, train_cfg, device, autocast):
    """2.5 Sample from the best checkpoint and measure how many sampled words are real words."""
    if train_cfg.sample_tokens < 1:
        return {}
    model, _ = load_checkpoint(ckpt_path, device)
    newline = tok.encode("\n")
    prompt = torch.tensor([newline], device=device)
    with autocast:
        out = model.eval().generate(prompt, train_cfg.sample_tokens, temperature=0.8, top_k=50)
    sample = tok.decode(out[0].tolist())
    overlap = word_overlap(sample, reference_text)
    print(f"--- sample (temperature 0.8, top-k 50) ---{sample}\n---")
    print(f"{overlap:.0%} of sampled words occur in the validation text")
    return {"sample": sample, "word_overlap": overlap}


if __name__ == "__main__":
    main(*parse_configs())
