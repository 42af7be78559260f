"""Speed of the course's softmax, cross_entropy, AdamW and clip_grad_norm next to torch's.

    python part2_tiny_llm/bench_ops.py                      # train.py's model and batch, ~30 s on one core
    python part2_tiny_llm/bench_ops.py --vocab_size 50304 --batch_size 8 --block_size 256   # a GPT-2 vocabulary

Each pair runs interleaved (course, torch, course, torch, ...) in one process, so a busy machine slows both
alike; the table gives the median time of each and the ratio course / torch (> 1: the course code is slower).
The last rows time a whole training step of train.py's model (forward, loss, backward, clip, AdamW), once
with torch's ops and once with the course's: that ratio decides which one the training code uses.
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from functional import cross_entropy, softmax
from model import GPT, GPTConfig
from optim import AdamW, clip_grad_norm


def timed(fn, sync):
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


def compare(course, torch_fn, repeats, sync):
    """Median seconds of each function, run alternately after a warm-up."""
    for _ in range(3):
        course(), torch_fn()
    times = {"course": [], "torch": []}
    for _ in range(repeats):
        times["course"].append(timed(course, sync))
        times["torch"].append(timed(torch_fn, sync))
    return statistics.median(times["course"]), statistics.median(times["torch"])


def training_step(model, x, y, loss_fn, clip_fn, optimizer, autocast, compile_loss):
    def loss_of(x, y):
        with autocast:
            logits, _ = model(x)
            return loss_fn(logits.flatten(0, 1), y.flatten())
    if compile_loss:  # the loss inside the compiled graph, as when GPT.forward computes it
        loss_of = torch.compile(loss_of)

    def step():
        loss = loss_of(x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_fn(model.parameters(), 1.0)
        optimizer.step()
    return step


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch_size", type=int, default=12, help="(default: %(default)s, as train.py)")
    p.add_argument("--block_size", type=int, default=64, help="(default: %(default)s)")
    p.add_argument("--vocab_size", type=int, default=256, help="(default: %(default)s, bytes)")
    p.add_argument("--n_layer", type=int, default=4, help="(default: %(default)s)")
    p.add_argument("--n_head", type=int, default=4, help="(default: %(default)s)")
    p.add_argument("--n_embd", type=int, default=128, help="(default: %(default)s)")
    p.add_argument("--repeats", type=int, default=50, help="timed runs of each (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="(default: %(default)s)")
    p.add_argument("--bf16", action="store_true", help="training steps under bf16 autocast (GPU)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model and loss of the training steps")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    autocast = torch.autocast(device.type, torch.bfloat16, enabled=args.bf16)
    cfg = GPTConfig(vocab_size=args.vocab_size, block_size=args.block_size, n_layer=args.n_layer,
                    n_head=args.n_head, n_embd=args.n_embd)
    N, V = args.batch_size * args.block_size, args.vocab_size
    torch.manual_seed(0)
    logits = (torch.randn(N, V, device=device) * 3).requires_grad_()
    targets = torch.randint(0, V, (N,), device=device)
    x, y = torch.randint(0, V, (2, args.batch_size, args.block_size), device=device)

    def loss_backward(fn):
        return lambda: fn(logits, targets).backward()

    def new_model():
        torch.manual_seed(0)
        return GPT(cfg).to(device)

    def torch_adamw(params):  # what train.py uses: on CUDA, Part 4 picks the fused kernel
        return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.1, fused=device.type == "cuda")

    # optimizer and clipping rows: one model each, gradients in place, so every call does the full work
    course_model, torch_model = new_model(), new_model()
    for m in (course_model, torch_model):
        m(x, y)[1].backward()
    course_opt = AdamW(course_model.parameters(), lr=1e-4, weight_decay=0.1)
    torch_opt = torch_adamw(torch_model.parameters())
    # training-step rows
    step_course, step_torch = new_model(), new_model()
    opt_course = AdamW(step_course.parameters(), lr=1e-4, weight_decay=0.1)
    opt_torch = torch_adamw(step_torch.parameters())
    torch_clip = torch.nn.utils.clip_grad_norm_

    def step(model, loss_fn, clip_fn, optimizer):
        return training_step(model, x, y, loss_fn, clip_fn, optimizer, autocast, args.compile)

    rows = [
        (f"softmax ({N}, {V})", lambda: softmax(logits, -1), lambda: F.softmax(logits, -1)),
        (f"cross_entropy ({N}, {V}), forward", lambda: cross_entropy(logits, targets),
         lambda: F.cross_entropy(logits, targets)),
        (f"cross_entropy ({N}, {V}), forward + backward", loss_backward(cross_entropy), loss_backward(F.cross_entropy)),
        (f"clip_grad_norm, {course_model.num_params():,} params",
         lambda: clip_grad_norm(course_model.parameters(), 1.0),
         lambda: torch_clip(torch_model.parameters(), 1.0)),
        (f"AdamW step (torch fused: {device.type == 'cuda'})", course_opt.step, torch_opt.step),
        ("training step: cross_entropy only (torch AdamW and clipping in both)",
         step(step_torch, cross_entropy, torch_clip, opt_torch),
         step(step_torch, F.cross_entropy, torch_clip, opt_torch)),
        ("training step: all course ops vs all torch ops",
         step(step_course, cross_entropy, clip_grad_norm, opt_course),
         step(step_torch, F.cross_entropy, torch_clip, opt_torch)),
    ]
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, bf16 {args.bf16}, "
          f"compile {args.compile}, median of {args.repeats} interleaved runs each")
    print("| operation | course ms | torch ms | course / torch |")
    print("|---|---:|---:|---:|")
    for name, course, torch_fn in rows:
        a, b = compare(course, torch_fn, args.repeats, sync)
        print(f"| {name} | {a * 1e3:.3f} | {b * 1e3:.3f} | {a / b:.2f} |")


if __name__ == "__main__":
    main()
