"""0.2 Check that this machine can run the course, and measure what it can do.

    python part0_setup/check_env.py                   # full report (about 15 s on a 2-core CPU)
    python part0_setup/check_env.py --quick           # shorter timings, fewer profiled steps
    python part0_setup/check_env.py --json out/env.json  # also save the numbers for later benchmarks

What it reports, in order:
  1. versions: Python and torch (exits with a one-line fix if something required is missing)
  2. devices: CUDA / MPS / CPU, and the one every chapter will pick (cuda > mps > cpu)
  3. mixed precision: does bf16 / fp16 autocast work on that device?
  4. speed: matmul GFLOP/s for fp32, bf16, fp16
  5. profiler: where the time goes in a few training steps of a tiny model
  6. CPU threads: is the default thread count faster than 1 thread for a small model?
"""
import argparse
import importlib.metadata
import json
import platform
import re
import sys
import time
import warnings
from pathlib import Path

# torch is imported inside a guard: a learner without it should get the install line below,
# not a traceback from this very import.
try:
    import torch
    from torch.profiler import ProfilerActivity, profile, record_function
except ImportError:
    torch = None

MIN_PYTHON = (3, 11)  # pyproject.toml's requires-python
# The course's requirements: requirements.txt at the repo root when this runs from the repository, else
# the same list written here (a copied part0_setup/ folder still checks something sensible).
REQUIREMENTS_FILE = Path(__file__).resolve().parents[1] / "requirements.txt"
FALLBACK_REQUIREMENTS = ["torch>=2.3,<3", "numpy>=1.24,<3", "matplotlib>=3.7,<4", "regex>=2023.0",
                         "pytest>=8.0,<10", "hypothesis>=6.80,<7"]
# the CPU wheel: a bare `pip install torch` on Linux pulls a multi-GB CUDA build
TORCH_WHEEL = ("torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu (CPU); "
               "for a GPU pick the CUDA command at https://pytorch.org/get-started/locally")


# ---------------------------------------------------------------- 0.2 requirements


def version_tuple(version: str, parts: int = 2) -> tuple:
    """"2.13.0+cpu" -> (2, 13); "2.4.0a0+git1234" -> (2, 4); parts=3 keeps three numbers (missing ones are 0)."""
    numbers = [int(n) for n in re.findall(r"\d+", version.split("+")[0])[:parts]]
    return tuple(numbers + [0] * (parts - len(numbers)))


def parse_requirement(line: str):
    """"numpy>=1.24,<3  # comment" -> ("numpy", [(">=", "1.24"), ("<", "3")]); None for blanks and comments."""
    line = line.split("#")[0].strip()
    if not line:
        return None
    name = re.match(r"[A-Za-z0-9_.\-]+", line)[0]
    return name, re.findall(r"(>=|<=|==|<|>)\s*([\w.]+)", line[len(name):])


def read_requirements(path=REQUIREMENTS_FILE) -> list:
    lines = Path(path).read_text().splitlines() if Path(path).is_file() else FALLBACK_REQUIREMENTS
    return [req for req in map(parse_requirement, lines) if req]


def satisfies(version: str, rules) -> bool:
    """Does version meet every (op, bound)? Compared on three numbers: "2.13.0+cpu" meets >=2.3 and <3."""
    have = version_tuple(version, 3)
    compare = {">=": tuple.__ge__, "<=": tuple.__le__, "==": tuple.__eq__, "<": tuple.__lt__, ">": tuple.__gt__}
    return all(compare[op](have, version_tuple(bound, 3)) for op, bound in rules)


def torch_version():
    """The installed torch version string, or None. A function so tests can pretend otherwise."""
    return None if torch is None else torch.__version__


def installed_version(name: str):
    """The installed version of a distribution, or None. Reads package metadata: nothing is imported
    (importing matplotlib alone takes ~1 s)."""
    if name == "torch":
        return torch_version()
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def find_problem(python=None, requirements=None):
    """The first missing or out-of-range requirement as a one-line fix, or None when everything is there."""
    python = tuple(python or sys.version_info[:2])
    if python < MIN_PYTHON:
        return (f"error: Python {python[0]}.{python[1]} is too old (need >= 3.11); "
                "install Python 3.11 from python.org or run: conda create -n llm python=3.11")
    for name, rules in requirements or read_requirements():
        version = installed_version(name)
        wanted = ",".join(op + bound for op, bound in rules)
        fix = f"pip install {TORCH_WHEEL}" if name == "torch" else f'pip install "{name}{wanted}"'
        if version is None:
            fix = fix if name == "torch" else "pip install -r requirements.txt"
            return f"error: {name} is not installed; run: {fix}"
        if not satisfies(version, rules):
            return f"error: {name} {version} is outside the tested range {wanted}; run: {fix}"
    return None


# ---------------------------------------------------------------- 0.2 devices


def available_devices() -> dict:
    """{"cuda": "NVIDIA H100 ..." or None, "mps": True/False, "cpu": "N threads"}."""
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    # torch.backends.mps exists on every build; is_available() is only True on Apple silicon
    mps = torch.backends.mps.is_available()
    return {"cuda": cuda, "mps": mps, "cpu": f"{torch.get_num_threads()} threads"}


def choose_device() -> "torch.device":
    """The rule every chapter uses: the fastest backend that is present, cuda > mps > cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def synchronize(device) -> None:
    # GPU calls return before the work is done; wait for it, or timings measure only the launch
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


# ---------------------------------------------------------------- 0.2 mixed precision


def autocast_works(device, dtype) -> bool:
    """Run a tiny matmul under autocast; True only if it really computed in `dtype`.

    subtle: where a dtype is unsupported, autocast may warn and silently run in fp32 instead
    of failing, so checking that no exception was raised is not enough; check the result's dtype.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a = torch.randn(16, 16, device=device)
            with torch.autocast(device_type=device.type, dtype=dtype):
                out = a @ a
            return out.dtype == dtype and bool(torch.isfinite(out).all())
    except Exception:  # any failure means "not usable here": report it, don't crash
        return False


def dtype_support(device) -> dict:
    return {"bf16": autocast_works(device, torch.bfloat16), "fp16": autocast_works(device, torch.float16)}


# ---------------------------------------------------------------- 0.2 throughput


def time_matmul(a, b, device, seconds: float) -> float:
    """Repeat a @ b for about `seconds`; return GFLOP/s (one n x n matmul = 2 n^3 FLOPs)."""
    a @ b  # warm-up: the first call pays for kernel selection and memory allocation
    synchronize(device)
    calls, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        calls += 1
        synchronize(device)  # once per call, so the loop cannot queue far ahead of the device
    elapsed = time.perf_counter() - start
    return 2 * a.shape[0] ** 3 * calls / elapsed / 1e9


def time_one_matmul(n: int, device, dtype) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    a @ a  # warm-up
    synchronize(device)
    start = time.perf_counter()
    a @ a
    synchronize(device)
    return time.perf_counter() - start


def pick_size(device, dtype, seconds: float, sizes=(128, 256, 512, 1024)) -> int:
    """Grow the matrix size while one matmul stays under a tenth of the time budget (max 1024).

    CPUs without native bf16/fp16 units run those dtypes through slow fallback kernels, often 100x
    slower than fp32, where one 1024 matmul takes seconds. Growing from small sizes finds that out
    after a few milliseconds instead of after one very long call.
    """
    for n in sizes[:-1]:
        if time_one_matmul(n, device, dtype) > seconds / 10:
            return n
    return sizes[-1]


def matmul_gflops(device, dtype, seconds: float) -> tuple:
    """(GFLOP/s, matrix size used) for a square matmul in `dtype` on `device`."""
    n = pick_size(device, dtype, seconds)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    return time_matmul(a, b, device, seconds), n


def measure_all(device, seconds: float) -> dict:
    """{"fp32": (gflops, n), "bf16": ..., "fp16": ...}; a dtype that fails to run is left out."""
    results = {}
    for name, dtype in [("fp32", torch.float32), ("bf16", torch.bfloat16), ("fp16", torch.float16)]:
        try:
            results[name] = matmul_gflops(device, dtype, seconds)
        except RuntimeError:  # e.g. bf16 matmul on an old GPU or an old MPS
            pass
    return results


def recommend_dtype(device, support: dict, gflops: dict) -> str:
    """What to train in, with the reason, for the device the course picked."""
    if device.type == "cuda":
        if support["bf16"]:
            return "bf16 autocast (no GradScaler needed: bf16 has fp32's exponent range)"
        return "fp16 autocast + torch.amp.GradScaler (this GPU has no bf16)"
    if device.type == "mps":
        return "fp32 (the safe choice on MPS; low precision there is where NaN reports come from)"
    fp32, fp32_n = gflops.get("fp32", (0.0, 0))
    bf16, bf16_n = gflops.get("bf16", (0.0, 0))
    # compare like with like: a small matmul's time is mostly fixed overhead, not arithmetic
    if support["bf16"] and bf16_n == fp32_n and bf16 > 1.2 * fp32:
        return "bf16 autocast (this CPU has fast bf16 units)"
    return "fp32 (bf16/fp16 are not faster on this CPU; fp16 on CPU is rarely useful)"


# ---------------------------------------------------------------- 0.2 profiler


def tiny_model(vocab: int = 256, dim: int = 128) -> "torch.nn.Module":
    """A 2-layer MLP language model: token -> embedding -> MLP -> next-token logits.

    Defined here (not imported from Part 1) so this script works before any chapter is written.
    """
    return torch.nn.Sequential(
        torch.nn.Embedding(vocab, dim),
        torch.nn.Linear(dim, 4 * dim),
        torch.nn.GELU(),
        torch.nn.Linear(4 * dim, vocab),
    )


def train_step(model, optimizer, tokens) -> None:
    """One step of next-token training, each phase labelled so it shows up in the profile."""
    inputs, targets = tokens[:, :-1], tokens[:, 1:]  # predict token t+1 from token t
    with record_function("forward"):
        logits = model(inputs)  # (B, T, vocab)
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets.flatten())
    with record_function("backward"):
        loss.backward()
    with record_function("optimizer.step"):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def profile_training(device, steps: int, rows: int = 12) -> str:
    """Profile `steps` training steps; return the table of ops sorted by their own CPU time."""
    torch.manual_seed(0)
    model = tiny_model().to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    tokens = torch.randint(0, 256, (16, 65), device=device)
    train_step(model, optimizer, tokens)  # warm-up outside the profile: first calls are slow
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)  # adds GPU kernel times as extra columns
    with profile(activities=activities) as prof:
        for _ in range(steps):
            train_step(model, optimizer, tokens)
        synchronize(device)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows)


def step_ms(device, threads: int, steps: int) -> float:
    """Average milliseconds per training step of the tiny model with `threads` CPU threads."""
    default = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = tiny_model().to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        tokens = torch.randint(0, 256, (16, 65), device=device)
        train_step(model, optimizer, tokens)  # warm-up
        start = time.perf_counter()
        for _ in range(steps):
            train_step(model, optimizer, tokens)
        return (time.perf_counter() - start) / steps * 1e3
    finally:
        torch.set_num_threads(default)  # leave the process as we found it


def thread_check(device, steps: int) -> dict:
    """Small models on a CPU can run *slower* with more threads: each op is too small to split, and
    if another program keeps a core busy, every op waits for the thread that core cannot run."""
    threads = torch.get_num_threads()
    return {threads: step_ms(device, threads, steps), 1: step_ms(device, 1, steps)}


# ---------------------------------------------------------------- report


def banner(title: str) -> None:
    print(f"\n== {title} " + "=" * max(0, 60 - len(title)))


def yes_no(flag) -> str:
    return "yes" if flag else "no"


def print_devices(devices: dict, device) -> None:
    print(f"cuda : {yes_no(devices['cuda'])}" + (f" ({devices['cuda']})" if devices["cuda"] else ""))
    print(f"mps  : {yes_no(devices['mps'])}")
    print(f"cpu  : yes ({devices['cpu']})")
    print(f"course will use: {device.type}")


def print_support(device, support: dict) -> None:
    print(f"bf16 autocast on {device.type}: {yes_no(support['bf16'])}")
    # fp16 autocast exists for CPU, but few CPUs have fast fp16 math: it is a GPU tool
    note = "  (works, but rarely faster on a CPU)" if device.type == "cpu" and support["fp16"] else ""
    print(f"fp16 autocast on {device.type}: {yes_no(support['fp16'])}{note}")


def print_gflops(gflops: dict) -> None:
    for name, (rate, n) in gflops.items():
        print(f"{name:5s}: {rate:9.1f} GFLOP/s  ({n}x{n} matmul)")


def print_threads(timings: dict) -> None:
    for threads, ms in timings.items():
        print(f"{threads} thread{'s' if threads > 1 else ' '}: {ms:7.1f} ms per step")
    if timings[1] < min(timings.values()) * 1.05:
        print("1 thread is as fast or faster here: for small models, call torch.set_num_threads(1) "
              "(or set OMP_NUM_THREADS=1)")


def write_json(path, report: dict) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # --json out/env.json works on a fresh clone
    Path(path).write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {path}")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="short timings, 1 profiled step, no thread check (used by tests)")
    parser.add_argument("--seconds", type=float, default=0.5, help="time per dtype for the matmul benchmark")
    parser.add_argument("--steps", type=int, default=5, help="training steps to profile")
    parser.add_argument("--json", metavar="PATH", help="also write the measured numbers to this JSON file")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    seconds, steps = (0.1, 1) if args.quick else (args.seconds, args.steps)

    problem = find_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 1

    banner("versions")
    print(f"python: {platform.python_version()}   torch: {torch.__version__}")

    banner("devices")
    devices, device = available_devices(), choose_device()
    print_devices(devices, device)

    banner(f"mixed precision on {device.type}")
    support = dtype_support(device)
    print_support(device, support)

    banner(f"matmul throughput on {device.type}")
    gflops = measure_all(device, seconds)
    print_gflops(gflops)
    print(f"recommended training dtype: {recommend_dtype(device, support, gflops)}")

    banner(f"profiler: {steps} training step{'s' * (steps > 1)} of a tiny MLP LM (AdamW)")
    print(profile_training(device, steps))

    timings = {}
    # skipped by --quick: with few steps the comparison is mostly noise
    if device.type == "cpu" and torch.get_num_threads() > 1 and not args.quick:
        banner("cpu threads: tiny model training step")
        timings = thread_check(device, steps=10)
        print_threads(timings)

    if args.json:
        write_json(args.json, {
            "python": platform.python_version(), "torch": torch.__version__, "device": device.type,
            "device_name": devices["cuda"] or platform.processor() or platform.machine(),
            "autocast": support, "gflops": {name: round(rate, 2) for name, (rate, _) in gflops.items()},
            "matmul_size": {name: n for name, (_, n) in gflops.items()},
            "cpu_step_ms_by_threads": {str(k): round(v, 2) for k, v in timings.items()},
        })
    return 0


if __name__ == "__main__":
    sys.exit(main())
