"""Where does a training step's GPU time go? Profiles a few compiled training steps of a config.

    python part4_scaling/profile_gpu.py --preset gpu --out_dir out/profile

Prints the CUDA kernels sorted by total time, grouped into matmuls, attention and the rest, which is
what limits MFU (the share of the GPU's peak matmul rate that the model's FLOPs use).
"""
import sys

import torch

from train import get_batch, load_splits, make_optimizer, parse_configs, pick_dtype, to_device
from model import GPT
import dataclasses


def kernel_group(name):
    name = name.lower()
    if any(k in name for k in ("gemm", "matmul", "cutlass", "sm90_xmma", "nvjet", "cublas")):
        return "matmul"
    if "flash" in name or "fmha" in name or "attention" in name:
        return "attention"
    return "other"


def main():
    train_cfg, model_cfg = parse_configs(sys.argv[1:])
    device = "cuda"
    tok, train_data, _ = load_splits(train_cfg, model_cfg.block_size)
    model_cfg = dataclasses.replace(model_cfg, vocab_size=tok.vocab_size)
    model = GPT(model_cfg).to(device)
    optimizer = make_optimizer(model, train_cfg, device)
    compiled = torch.compile(model) if train_cfg.compile else model
    _, autocast, _ = pick_dtype(train_cfg.dtype, device)
    gen = torch.Generator().manual_seed(0)

    def step():
        x, y = get_batch(train_data, model_cfg.block_size, train_cfg.batch_size, gen)
        with autocast:
            _, loss = compiled(to_device(x, device), to_device(y, device))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(5):  # compile and warm up outside the profile
        step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(10):
            step()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total > 0]
    total = sum(e.device_time_total for e in events)
    groups = {}
    for e in events:
        groups[kernel_group(e.key)] = groups.get(kernel_group(e.key), 0) + e.device_time_total
    print(f"GPU time in 10 steps: {total / 1e3:.1f} ms")
    for g, t in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"  {g:10s} {t / 1e3:8.1f} ms  {t / total:6.1%}")
    print("top kernels:")
    for e in sorted(events, key=lambda e: -e.device_time_total)[:15]:
        print(f"  {e.device_time_total / total:6.1%}  {kernel_group(e.key):9s} {e.key[:90]}")


if __name__ == "__main__":
    main()
