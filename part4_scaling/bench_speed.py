"""Speed, measured side by side with the reference (karpathy/nanoGPT) in one run, on one machine.

A tool, not a chapter. Absolute times on shared machines drift between runs, so every figure this script
prints is taken in the same call as the figure it is compared with, and the tables give the ratios.

    python part4_scaling/bench_speed.py --out out/bench_speed                 # both sections (GPU: ~5 min)
    python part4_scaling/bench_speed.py --sections time_to_loss --variants nanogpt_eager,part4_compiled
    python part4_scaling/bench_speed.py --device cpu --quick                  # tiny settings: a smoke test
    python part4_scaling/bench_speed.py --help

Section time_to_loss: each variant is a separate training process, started one after the other with the
same evaluation cadence (every 50 steps on 10 batches): nanoGPT's train_shakespeare_char recipe eager and
compiled, Part 4's `--preset shakespeare_gpu` eager and `--compile true`. This script reads each child's
output line by line as it is printed and stamps every line with the wall clock of this process.
  seconds to target: from launching the child (so imports, data loading and compiling count) to the arrival
                     of the first evaluation line with val loss <= --target_loss; the child is then killed.
  steps to target:   the step of that evaluation (optimizer updates done, the same meaning in both logs).
  ms/step:           (arrival of that evaluation line - arrival of the first training-step line) / (steps in
                     between). Everything the loop does in that span counts: evaluation, logging, checkpoint
                     writes, recompiling for evaluation. Not reached: the same up to the last evaluation seen.
  start-up s:        launch to the first training-step line (imports, data, model, compiling the step).
Step numbering: nanoGPT's `iter N` line follows update N+1 and its `step N: ... val loss` line comes after N
updates; Part 4's `step N | loss` follows update N and `step N | train .. | val ..` comes after N updates.
Before the first variant an untimed child imports the libraries and starts the device; every variant gets
empty torch.compile caches of its own (TORCHINDUCTOR_CACHE_DIR, TRITON_CACHE_DIR), so the order does not
matter. Each script keeps its own habits: nanoGPT also evaluates at step 0 and both write a checkpoint whenever val
loss improves; Part 4 evaluates with the uncompiled model.
nanoGPT needs its data prepared first (not timed): the reference folder is copied to a temp dir,
data/tinyshakespeare.txt goes to data/shakespeare_char/input.txt and its prepare.py runs there (with a stub
for `requests`, which it imports only to download a file that is already in place, if requests is missing).

Section throughput: Part 4's GPT (the model of its `--preset gpu`, shape flags applied) against nanoGPT's
GPT imported from the reference folder, in this one process, at one shape (default the GPU preset: 6 layers,
width 768, 12 heads, block 1024, vocab 8192, batch 32; the reference without biases). Synthetic random
tokens, bf16 autocast on CUDA (fp32 on CPU), the same training step for both (forward, backward, gradient
clipping, optimizer step), fused AdamW on CUDA for both (Part 4's make_optimizer, nanoGPT's
configure_optimizers; on CPU they differ: the course AdamW against torch's), the same warmup, then
interleaved timed rounds A, B, A, B ... so that clock or thermal drift hits both. MFU uses Part 4's formula
for both models: GPT.flops_per_token (6 x parameters + attention) over train.peak_flops of the GPU.

Writes bench_speed.md (tables, commands, versions, GPU) and bench_speed.json to --out.
"""
import argparse
import dataclasses
import importlib.util
import json
import os
import platform
import queue
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import types
from contextlib import nullcontext
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SHAKESPEARE = ROOT / "data" / "tinyshakespeare.txt"
VARIANTS = ("nanogpt_eager", "nanogpt_compiled", "part4_eager", "part4_compiled")


def default_reference():
    """.ref/nanoGPT inside the repo (carried to a GPU machine) wins over the course machine's shared folder."""
    for path in (ROOT / ".ref" / "nanoGPT", ROOT.parent / "shared" / "reference" / "nanoGPT"):
        if (path / "train.py").is_file():
            return path
    return ROOT / ".ref" / "nanoGPT"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default="time_to_loss,throughput", help="comma-separated: time_to_loss, throughput")
    p.add_argument("--reference", type=Path, default=default_reference(),
                   help="nanoGPT folder (default: .ref/nanoGPT in the repo, else ../shared/reference/nanoGPT)")
    p.add_argument("--out", type=Path, default=ROOT / "out" / "bench_speed", help="folder for bench_speed.md/.json")
    p.add_argument("--device", default="auto", help="auto (cuda, else cpu), cuda or cpu")
    p.add_argument("--quick", action="store_true", help="tiny models, few steps, a high target loss (CPU test)")
    g = p.add_argument_group("time_to_loss")
    g.add_argument("--variants", default="", help=f"comma-separated subset of {', '.join(VARIANTS)} "
                   "(default: all four; with --quick the two eager ones)")
    g.add_argument("--target_loss", type=float, default=None, help="val loss to reach (default 1.47; --quick 2.8)")
    g.add_argument("--eval_interval", type=int, default=None, help="evaluate every N steps (default 50; --quick 10)")
    g.add_argument("--eval_iters", type=int, default=None, help="batches per evaluation (default 10; --quick 2)")
    g.add_argument("--max_seconds", type=float, default=None,
                   help="kill a child that has not reached the target after this long (default 120)")
    g = p.add_argument_group("throughput")
    g.add_argument("--n_layer", type=int, default=None, help="default 6 (--quick 2)")
    g.add_argument("--n_head", type=int, default=None, help="default 12 (--quick 2)")
    g.add_argument("--n_embd", type=int, default=None, help="default 768 (--quick 64)")
    g.add_argument("--block_size", type=int, default=None, help="default 1024 (--quick 64)")
    g.add_argument("--vocab_size", type=int, default=None, help="default 8192 (--quick 256)")
    g.add_argument("--batch_size", type=int, default=None, help="default 32 (--quick 4)")
    g.add_argument("--compile", default=None, choices=("true", "false"),
                   help="torch.compile both models (default true; --quick false)")
    g.add_argument("--warmup_steps", type=int, default=None, help="untimed steps per model first (default 10)")
    g.add_argument("--steps", type=int, default=None, help="timed steps per model per round (default 50)")
    g.add_argument("--rounds", type=int, default=None, help="interleaved rounds A, B, A, B ... (default 5)")
    g.add_argument("--part4_args", default="",
                   help="extra Part 4 train.py flags for its model config, e.g. \"--bias false\"")
    args = p.parse_args(argv)
    quick = args.quick
    for name, full, small in (("target_loss", 1.47, 2.8), ("eval_interval", 50, 10), ("eval_iters", 10, 2),
                              ("max_seconds", 120, 120), ("n_layer", 6, 2), ("n_head", 12, 2), ("n_embd", 768, 64),
                              ("block_size", 1024, 64), ("vocab_size", 8192, 256), ("batch_size", 32, 4),
                              ("warmup_steps", 10, 2), ("compile", "true", "false"), ("steps", 50, 3),
                              ("rounds", 5, 2)):
        if getattr(args, name) is None:
            setattr(args, name, small if quick else full)
    args.sections = [s for s in args.sections.split(",") if s]
    bad = set(args.sections) - {"time_to_loss", "throughput"}
    if bad:
        raise SystemExit(f"error: unknown --sections {', '.join(sorted(bad))}; use time_to_loss and/or throughput")
    default_variants = "nanogpt_eager,part4_eager" if quick else ",".join(VARIANTS)
    args.variants = [v for v in (args.variants or default_variants).split(",") if v]
    bad = set(args.variants) - set(VARIANTS)
    if bad:
        raise SystemExit(f"error: unknown --variants {', '.join(sorted(bad))}; choose from {', '.join(VARIANTS)}")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if not (args.reference / "train.py").is_file() or not (args.reference / "model.py").is_file():
        raise SystemExit(f"error: no nanoGPT at {args.reference}; pass --reference PATH, or run "
                         "`mkdir -p .ref && cp -r ../shared/reference/nanoGPT .ref/` in the repo root")
    return args


# ----------------------------------------------------------------------------------------------------
# Reading the children's logs (pure functions: tests/part4/test_part4_bench_speed.py checks them)
NANOGPT_EVAL = re.compile(r"^step (\d+): train loss (\S+), val loss (\S+)$")
NANOGPT_TRAIN = re.compile(r"^iter (\d+): loss ")
PART4_EVAL = re.compile(r"^step +(\d+) \| train (\S+) \| val (\S+)$")
PART4_TRAIN = re.compile(r"^step +(\d+) \| loss ")


def parse_line(line, flavor):
    """("eval", step, val loss) or ("train", step, None) or None, with step = optimizer updates done."""
    line = line.strip()
    eval_re, train_re, offset = ((NANOGPT_EVAL, NANOGPT_TRAIN, 1) if flavor == "nanogpt"
                                 else (PART4_EVAL, PART4_TRAIN, 0))
    if m := eval_re.match(line):
        return "eval", int(m.group(1)), float(m.group(3))
    if m := train_re.match(line):  # nanoGPT prints `iter N` after its update N+1 (iter_num counts from 0)
        return "train", int(m.group(1)) + offset, None
    return None


def summarize(timed_lines, flavor, target):
    """timed_lines: [(seconds since launch, line)]. Returns the figures defined in this file's docstring."""
    first_train, evals = None, []
    for t, line in timed_lines:
        parsed = parse_line(line, flavor)
        if parsed is None:
            continue
        kind, step, val = parsed
        if kind == "train" and first_train is None:
            first_train = (t, step)
        elif kind == "eval":
            evals.append((t, step, val))
            if val <= target:
                break
    reached = bool(evals) and evals[-1][2] <= target
    out = {"reached": reached, "evals": [{"t": round(t, 2), "step": s, "val": v} for t, s, v in evals],
           "startup_s": round(first_train[0], 2) if first_train else None}
    if reached:
        out.update(seconds_to_target=round(evals[-1][0], 2), steps_to_target=evals[-1][1], val=evals[-1][2])
    end = next((e for e in reversed(evals) if first_train and e[1] > first_train[1]), None)
    if end:
        out["ms_per_step"] = round(1000 * (end[0] - first_train[0]) / (end[1] - first_train[1]), 2)
    return out


# ----------------------------------------------------------------------------------------------------
# Section time_to_loss: the children and their commands
def prepare_nanogpt(reference, workdir):
    """A writable copy of the reference with its shakespeare_char data prepared (train.bin, val.bin, meta.pkl)."""
    dest = workdir / "nanoGPT"
    shutil.copytree(reference, dest, ignore=shutil.ignore_patterns("out*", "__pycache__", "*.bin", "*.pt"))
    shutil.copyfile(SHAKESPEARE, dest / "data" / "shakespeare_char" / "input.txt")
    env = dict(os.environ)
    if importlib.util.find_spec("requests") is None:  # prepare.py imports it only to download input.txt
        stubs = workdir / "stubs"
        stubs.mkdir()
        (stubs / "requests.py").write_text("def get(*a, **k):\n    raise RuntimeError('no network here')\n")
        env["PYTHONPATH"] = os.pathsep.join([str(stubs), env.get("PYTHONPATH", "")])
    subprocess.run([sys.executable, "data/shakespeare_char/prepare.py"], cwd=dest, env=env, check=True,
                   stdout=subprocess.DEVNULL)
    return dest


def variant_command(name, args, nanogpt_dir, workdir):
    """(argv, cwd, log flavor) of one variant; --quick shrinks both recipes the same way."""
    compiled = name.endswith("compiled")
    if name.startswith("nanogpt"):
        cmd = [sys.executable, "train.py", "config/train_shakespeare_char.py", f"--eval_interval={args.eval_interval}",
               f"--eval_iters={args.eval_iters}", f"--max_iters={400 if args.quick else 2000}",
               f"--out_dir={workdir / name}"]
        cmd += [] if compiled else ["--compile=False"]
        if args.device == "cpu":
            cmd += ["--device=cpu", "--dtype=float32"]
        if args.quick:
            cmd += ["--block_size=64", "--batch_size=12", "--n_layer=2", "--n_head=2", "--n_embd=64",
                    "--dropout=0.0", "--log_interval=1", "--lr_decay_iters=400"]
        return cmd, nanogpt_dir, "nanogpt"
    cmd = [sys.executable, str(HERE / "train.py"), "--preset", "shakespeare_gpu", "--eval_interval",
           str(args.eval_interval), "--eval_iters", str(args.eval_iters), "--out_dir", str(workdir / name),
           "--device", args.device] + (["--compile", "true"] if compiled else [])
    if args.quick:
        cmd += ["--block_size", "64", "--batch_size", "12", "--n_layer", "2", "--n_head", "2", "--n_embd", "64",
                "--dropout", "0.0", "--log_interval", "1", "--max_steps", "400", "--sample_tokens", "0"]
    return cmd, ROOT, "part4"


def child_env(workdir, name):
    """Unbuffered output (a piped child buffers its prints otherwise) and empty compile caches of its own:
    every compiled variant compiles from scratch, whatever ran before it."""
    return {**os.environ, "PYTHONUNBUFFERED": "1", "TORCHINDUCTOR_CACHE_DIR": str(workdir / "inductor" / name),
            "TRITON_CACHE_DIR": str(workdir / "triton" / name)}


def warm_up(device, workdir):
    """One untimed child imports the libraries and starts the device first, so that the first timed variant
    does not pay alone for a cold disk cache or a sleeping GPU driver."""
    code = f"import matplotlib, numpy, regex, torch; torch.ones(1, device={device!r}).sum().item()"
    subprocess.run([sys.executable, "-c", code], env=child_env(workdir, "warm_up"), check=True)


def watch(cmd, cwd, env, flavor, target, max_seconds, log_path):
    """Run cmd, stamp each output line on arrival, stop it once the target is reached or max_seconds pass.
    Returns (timed lines, why it stopped)."""
    lines, arrivals = [], queue.Queue()
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            bufsize=1, start_new_session=True)  # its own process group: compile workers too

    def reader():
        for line in proc.stdout:
            arrivals.put((time.perf_counter() - t0, line))
        arrivals.put((time.perf_counter() - t0, None))

    threading.Thread(target=reader, daemon=True).start()
    why = "timeout"
    with open(log_path, "w") as log:
        while True:
            try:
                t, line = arrivals.get(timeout=max(0.0, t0 + max_seconds - time.perf_counter()))
            except queue.Empty:
                break
            if line is None:
                why = f"exited with code {proc.wait()}"
                break
            log.write(f"{t:9.3f} {line}")
            lines.append((t, line))
            parsed = parse_line(line, flavor)
            if parsed and parsed[0] == "eval" and parsed[2] <= target:
                why = "target"
                break
    stop(proc)
    return lines, why


def stop(proc):
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)  # the child's own group (start_new_session): itself and its workers
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def time_to_loss(args, out_dir):
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_speed_") as tmp:
        workdir = Path(tmp)
        nanogpt_dir = prepare_nanogpt(args.reference, workdir) if any(v.startswith("nanogpt")
                                                                       for v in args.variants) else None
        warm_up(args.device, workdir)
        for name in args.variants:
            cmd, cwd, flavor = variant_command(name, args, nanogpt_dir, workdir)
            print(f"[time_to_loss] {name}: {shlex.join(cmd)}  (in {cwd})", flush=True)
            lines, why = watch(cmd, cwd, child_env(workdir, name), flavor, args.target_loss, args.max_seconds,
                               out_dir / f"{name}.log")
            row = {"variant": name, "command": shlex.join(cmd), "cwd": str(cwd), "stopped": why,
                   **summarize(lines, flavor, args.target_loss)}
            if why.startswith("exited") and not row["reached"]:
                print("".join(line for _, line in lines[-15:]), file=sys.stderr)
            print(f"[time_to_loss] {name}: {why}, {row.get('seconds_to_target')} s, step "
                  f"{row.get('steps_to_target')}, {row.get('ms_per_step')} ms/step", flush=True)
            rows.append(row)
    return rows


def time_to_loss_table(rows, target):
    refs = [r["seconds_to_target"] for r in rows if r["variant"].startswith("nanogpt") and r["reached"]]
    best_ref = min(refs) if refs else None
    header = ["variant", f"s to val {target}", "steps", "ms/step", "start-up s",
              "s / nanoGPT's best" + (f" ({best_ref} s)" if best_ref else ""), "stopped"]
    body = []
    for r in rows:
        ratio = f"{r['seconds_to_target'] / best_ref:.2f}x" if best_ref and r["reached"] else "-"
        body.append([r["variant"], r.get("seconds_to_target", "not reached"), r.get("steps_to_target", "-"),
                     r.get("ms_per_step", "-"), r["startup_s"], ratio, r["stopped"]])
    return table(header, body)


# ----------------------------------------------------------------------------------------------------
# Section throughput: both GPTs in this process, the same training step, interleaved rounds
def load_reference_model(reference):
    """nanoGPT's model.py imported by file, under a name no course module uses."""
    spec = importlib.util.spec_from_file_location("nanogpt_reference_model", reference / "model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_models(args):
    sys.path.insert(0, str(HERE))  # Part 4's modules import each other by bare name
    import train as part4_train
    from model import GPT

    shape = ["--n_layer", args.n_layer, "--n_head", args.n_head, "--n_embd", args.n_embd, "--block_size",
             args.block_size, "--batch_size", args.batch_size]
    train_cfg, model_cfg = part4_train.parse_configs(["--preset", "gpu", *map(str, shape),
                                                      *shlex.split(args.part4_args)])
    torch.manual_seed(0)
    ours = GPT(dataclasses.replace(model_cfg, vocab_size=args.vocab_size)).to(args.device)
    ref_lib = load_reference_model(args.reference)
    ref_cfg = ref_lib.GPTConfig(block_size=args.block_size, vocab_size=args.vocab_size, n_layer=args.n_layer,
                                n_head=args.n_head, n_embd=args.n_embd, dropout=0.0, bias=False)
    ref = ref_lib.GPT(ref_cfg).to(args.device)
    kind = args.device.split(":")[0]
    models = {
        "part4": (ours, part4_train.make_optimizer(ours, train_cfg, args.device), ours.flops_per_token()),
        # Part 4's formula on the reference's parameters: GPT.flops_per_token with the reference as `self`
        "nanogpt": (ref, ref.configure_optimizers(0.1, 6e-4, (0.9, 0.95), kind),
                    GPT.flops_per_token(types.SimpleNamespace(config=ref_cfg, num_params=lambda: sum(
                        p.numel() for p in ref.parameters())))),
    }
    configs = {"part4": dataclasses.asdict(ours.config), "nanogpt": dataclasses.asdict(ref_cfg)}
    return models, configs, part4_train.peak_flops(args.device)


def sync(device):
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def throughput(args):
    models, configs, peak = build_models(args)
    device, kind = args.device, args.device.split(":")[0]
    autocast = torch.autocast(kind, dtype=torch.bfloat16) if kind == "cuda" else nullcontext()
    gen = torch.Generator().manual_seed(0)
    windows = [torch.randint(args.vocab_size, (args.batch_size, args.block_size + 1), generator=gen) for _ in range(4)]
    # synthetic tokens, on the device before timing (no data loading in the step); contiguous, as a loader gives
    pool = [(w[:, :-1].contiguous().to(device), w[:, 1:].contiguous().to(device)) for w in windows]
    steps = {}
    for name, (model, optimizer, _) in models.items():
        fast = torch.compile(model) if args.compile == "true" else model

        def step(i, model=model, fast=fast, optimizer=optimizer):
            x, y = pool[i % len(pool)]
            with autocast:
                _, loss = fast(x, y)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        steps[name] = step
    for name, step in steps.items():  # compiling happens here, outside the timed rounds
        t = time.perf_counter()
        for i in range(args.warmup_steps):
            step(i)
        sync(device)
        print(f"[throughput] {name}: {args.warmup_steps} warmup steps in {time.perf_counter() - t:.1f} s", flush=True)
    times = {name: [] for name in steps}
    for r in range(args.rounds):
        for name, step in steps.items():  # A, B in every round: drift hits both
            sync(device)
            t = time.perf_counter()
            for i in range(args.steps):
                step(i)
            sync(device)
            times[name].append((time.perf_counter() - t) / args.steps)
        print(f"[throughput] round {r + 1}: " + ", ".join(f"{n} {1000 * ts[-1]:.2f} ms/step"
                                                         for n, ts in times.items()), flush=True)
    tokens = args.batch_size * args.block_size
    rows = []
    for name, (model, _, flops_per_token) in models.items():
        ms = 1000 * statistics.median(times[name])
        tok_s = tokens / ms * 1000
        rows.append({"model": name, "params": sum(p.numel() for p in model.parameters()),
                     "flops_per_token": flops_per_token, "ms_per_step_median": round(ms, 3),
                     "ms_per_step_rounds": [round(1000 * s, 3) for s in times[name]], "tokens_per_s": round(tok_s),
                     "mfu": round(flops_per_token * tok_s / peak, 4) if peak else None, "config": configs[name]})
    return rows


def throughput_table(rows):
    ref = next(r for r in rows if r["model"] == "nanogpt")
    body = [[r["model"], f"{r['params']:,}", r["ms_per_step_median"], f"{r['tokens_per_s']:,}",
             f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a", f"{r['tokens_per_s'] / ref['tokens_per_s']:.3f}x"]
            for r in rows]
    return table(["model", "parameters", "ms/step (median of rounds)", "tokens/s", "MFU (Part 4 formula)",
                  "tokens/s vs nanoGPT"], body)


def model_line(rows):
    """What differs between the two models besides the shape (the reference: biases off, LayerNorm, GELU MLP,
    learned positions)."""
    ours = rows[0]["config"]
    return (f"Part 4 model (its --preset gpu): bias {ours['bias']}, {ours['norm']}, {ours['mlp']} MLP, "
            f"{ours['pos_embedding']} positions; nanoGPT: bias {rows[1]['config']['bias']}, LayerNorm, GELU MLP, "
            "learned positions.")


# ----------------------------------------------------------------------------------------------------
def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" ---: " for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows])


def environment(device):
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True).stdout.strip()
    except OSError:
        commit = ""
    return {"command": shlex.join([sys.executable, *sys.argv]), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.version.cuda,
            "device": torch.cuda.get_device_name(device) if device.startswith("cuda") else platform.processor() or
            "cpu", "cpu_threads": torch.get_num_threads(), "git_commit": commit or None,
            "date_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())}


def main(argv=None):
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    env = environment(args.device)
    report = {"environment": env, "settings": {k: str(v) if isinstance(v, Path) else v
                                               for k, v in vars(args).items()}}
    md = [f"# Speed, side by side with nanoGPT ({env['device']})", "",
          f"`{env['command']}`", "", f"python {env['python']} | torch {env['torch']} (CUDA {env['cuda']}) | "
          f"{env['device']} | commit {env['git_commit']} | {env['date_utc']} UTC", ""]
    write_report(args.out, report, md)  # after each section too: a run cut short keeps what it measured
    if "time_to_loss" in args.sections:
        rows = time_to_loss(args, args.out)
        report["time_to_loss"] = rows
        md += [f"## Time to val loss {args.target_loss} (eval every {args.eval_interval} steps on "
               f"{args.eval_iters} batches; seconds from launching the process)", "",
               time_to_loss_table(rows, args.target_loss), "",
               "ms/step: from the first training-step line to the target's evaluation line, evaluations included.",
               "", "Commands:", ""] + [f"- {r['variant']}: `{r['command']}` (in {r['cwd']})" for r in rows] + [""]
        write_report(args.out, report, md)
    if "throughput" in args.sections:
        rows = throughput(args)
        report["throughput"] = rows
        ratio = rows[0]["tokens_per_s"] / rows[1]["tokens_per_s"]
        md += [f"## Training throughput, {args.n_layer} layers x {args.n_embd} wide, {args.n_head} heads, block "
               f"{args.block_size}, vocab {args.vocab_size}, batch {args.batch_size}, compile {args.compile}, "
               f"{'bf16 autocast' if args.device.startswith('cuda') else 'fp32'}, synthetic tokens", "",
               throughput_table(rows), "", model_line(rows), "",
               f"Part 4 / nanoGPT tokens/s: **{ratio:.3f}x** (median of {args.rounds} interleaved rounds of "
               f"{args.steps} steps after {args.warmup_steps} warmup steps each)", ""]
        write_report(args.out, report, md)
    print("\n" + "\n".join(md) + f"\nwritten: {args.out / 'bench_speed.md'}, {args.out / 'bench_speed.json'}")


def write_report(out, report, md):
    (out / "bench_speed.md").write_text("\n".join(md))
    (out / "bench_speed.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
