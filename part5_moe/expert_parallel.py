"""5.3 Expert parallelism: the experts of every MoE layer spread over W processes, tokens travel to them.

    python part5_moe/expert_parallel.py     # 2 gloo processes on CPU: the bytes table -> out/part5/expert_parallel.md
    python part5_moe/expert_parallel.py --out part5_moe/results/expert_parallel.md   # update the published one

Data parallelism (DDP, Part 4) keeps every weight on every process and all-reduces every gradient. With
experts that is E times the feed-forward weights everywhere. Expert parallelism gives process r only the
experts [r*E/W, (r+1)*E/W): each process routes its own tokens, an all_to_all sends each token to the
process that holds its expert, and a second all_to_all brings the outputs back. The price: those
exchanges grow with tokens x width, where the all-reduce grows with the weights. main() measures both.
"""
import copy
import datetime
import os
import platform
import socket
import sys
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import cli
from model import GPT, GPTConfig
from moe import Experts, MoE, buffer_slots, combine, dispatch_buffer, expert_capacity

traffic = {"all_to_all": 0, "all_reduce": 0}  # 5.3 bytes this process sent to others (zero them to count a step)


# ----------------------------------------------------------------------------------------------------
# 5.3 The exchange: all_to_all, with a gradient
def exchange(x):
    """all_to_all: dim 0 of x in W equal chunks, chunk s goes to process s; returns the W chunks the
    processes sent to this one, in rank order. Only the W-1 chunks that leave the process cost bandwidth."""
    out = torch.empty_like(x)
    dist.all_to_all_single(out, x.contiguous())
    traffic["all_to_all"] += x.numel() * x.element_size() * (dist.get_world_size() - 1) // dist.get_world_size()
    return out


class AllToAll(torch.autograd.Function):
    """exchange() that autograd can go through. Chunk s of process r became chunk r of process s, so the
    gradient of chunk r on process s belongs to chunk s on process r: the backward is the same exchange."""

    @staticmethod
    def forward(ctx, x):
        return exchange(x)

    @staticmethod
    def backward(ctx, grad):
        return exchange(grad)


# ----------------------------------------------------------------------------------------------------
# 5.3 The layer: moe.MoE with only this process's experts; routing, losses and load counts are inherited
class ExpertParallelMoE(MoE):
    """The router (and any shared expert) is replicated and gets all-reduced like any dense weight; each routed
    expert lives on one process, which receives every token routed to it, so its gradient is complete as it
    stands. All processes form one expert-parallel group here; large runs use a group of fast-linked GPUs."""

    def __init__(self, config, rank, world_size):
        super().__init__(config)  # builds all E experts, then keeps 1/W of them below: simple, if not frugal
        if config.n_expert % world_size:
            raise ValueError(f"n_expert ({config.n_expert}) must divide by the number of processes ({world_size})")
        self.world_size, self.n_local = world_size, config.n_expert // world_size
        self.first = rank * self.n_local                                    # our experts: first ... first + n_local - 1
        self.experts = Experts(self.n_local, config.n_embd, config.expert_hidden, config.n_layer)  # 1/W of them

    def load_from(self, layer):
        """Copy a moe.MoE's weights: the router and shared experts whole (replicated), the routed experts' shard."""
        state = layer.state_dict()
        for name in ("experts.c_fc", "experts.c_proj"):
            state[name] = state[name][self.first:self.first + self.n_local]
        self.load_state_dict(state)
        return self

    def dispatch(self, x, weights, experts):
        """MoE.dispatch with an exchange on each side of the experts. x (N, C) are this process's tokens.
        Why a fixed capacity helps here: every process's buffer has the same shape (E, capacity, C), so
        all_to_all cuts it into W equal chunks. subtle: so all processes need the same number of tokens (as
        under DDP). Empty slots travel too: dropless (capacity N) sends E/k times the tokens; large systems
        send exact counts instead (all_to_all_single with split sizes, known after one small exchange)."""
        W, El, C = self.world_size, self.n_local, x.size(1)
        capacity = expert_capacity(x.size(0), self.n_expert, self.top_k, self.capacity_factor if self.training else 0)
        slot = buffer_slots(experts, self.n_expert, capacity)
        buffer = dispatch_buffer(x, slot, self.n_expert, capacity)          # (E, cap, C): chunk s for process s
        got = AllToAll.apply(buffer).view(W, El, capacity, C)               # our experts' slots from each process
        out = self.experts(got.transpose(0, 1).reshape(El, W * capacity, C))  # all of an expert's tokens at once
        out = out.view(El, W, capacity, C).transpose(0, 1).reshape(W * El, capacity, C)  # chunk s: process s's
        return combine(AllToAll.apply(out), slot, weights)                  # (E, cap, C) as if computed here


def expert_parallel(model, rank, world_size):
    """Swap every MoE layer of a GPT (in place) for an ExpertParallelMoE with the same weights."""
    for block in model.blocks:
        if isinstance(block.mlp, MoE):
            block.mlp = ExpertParallelMoE(model.config, rank, world_size).load_from(block.mlp)
    return model


# ----------------------------------------------------------------------------------------------------
# 5.3 What the other setups send: the gradient all-reduce, written out as a ring (one of NCCL's algorithms)
def ring_all_reduce(flat):
    """Sum a 1-D tensor over all processes, in place. Reduce-scatter: W-1 steps, each passing one of W chunks
    to the right neighbour, who adds it to its own; after them process r holds the full sum of chunk r+1.
    All-gather: W-1 more steps pass the finished chunks round. Each process sends 2(W-1)/W of the tensor
    (exactly, when W divides its length), however many processes there are."""
    W, r = dist.get_world_size(), dist.get_rank()
    chunks = flat.tensor_split(W)                                           # views: updating them updates flat

    def pass_on(send, receive):  # send chunk `send` to the right, get chunk `receive` from the left
        got = torch.empty_like(chunks[receive])
        request = dist.isend(chunks[send], (r + 1) % W)
        dist.recv(got, (r - 1) % W)
        request.wait()
        traffic["all_reduce"] += chunks[send].numel() * chunks[send].element_size()
        return got

    for step in range(W - 1):
        chunks[(r - step - 1) % W].add_(pass_on((r - step) % W, (r - step - 1) % W))
    for step in range(W - 1):
        chunks[(r - step) % W].copy_(pass_on((r - step + 1) % W, (r - step) % W))
    return flat


def measure(config, batch_size, rank, world_size):
    """One real training step of each setup in this process (forward, backward, gradient all-reduce):
    {setup: (all_to_all bytes, all-reduce bytes)} that this process sent."""
    torch.manual_seed(0)  # the same weights on every process, as DDP makes sure ...
    dense, moe = GPT(replace(config, n_expert=0)), GPT(config)
    ep = expert_parallel(copy.deepcopy(moe), rank, world_size)
    torch.manual_seed(1 + rank)  # ... and different tokens
    idx = torch.randint(config.vocab_size, (batch_size, config.block_size + 1))
    sent = {}
    for setup, model in (("dense", dense), ("moe_dp", moe), ("moe_ep", ep)):
        traffic.update(all_to_all=0, all_reduce=0)
        model(idx[:, :-1], idx[:, 1:])[1].backward()
        # why the experts' gradients skip the all-reduce: each expert lives on one process only, and the
        # all_to_all backward already brought it the gradient from every process's tokens
        own = {id(p) for m in model.modules() if isinstance(m, ExpertParallelMoE) for p in m.experts.parameters()}
        ring_all_reduce(torch.cat([p.grad.flatten() for p in model.parameters() if id(p) not in own]))
        sent[setup] = (traffic["all_to_all"], traffic["all_reduce"])
    return sent


def param_counts(config, world_size):
    """{setup: (weights each process holds, weights whose gradients are all-reduced)}"""
    dense, moe = GPT(replace(config, n_expert=0)), GPT(config)
    n_dense, n_moe = sum(p.numel() for p in dense.parameters()), sum(p.numel() for p in moe.parameters())
    n_experts = sum(p.numel() for name, p in moe.named_parameters() if ".mlp.experts." in name)
    return {"dense": (n_dense, n_dense), "moe_dp": (n_moe, n_moe),
            "moe_ep": (n_moe - n_experts + n_experts // world_size, n_moe - n_experts)}


def bytes_formula(config, batch_size, world_size, value_bytes=4):
    """The same {setup: (all_to_all bytes, all-reduce bytes)} from the sizes alone (fp32: 4 bytes a value)."""
    W, E = world_size, config.n_expert
    slots = E * expert_capacity(batch_size * config.block_size, E, config.top_k, config.capacity_factor)
    n_moe = sum(config.is_moe(i) for i in range(config.n_layer))
    # per MoE layer: dispatch and combine forward, their reverses backward; (W-1)/W of each buffer leaves
    all_to_all = {"dense": 0, "moe_dp": 0, "moe_ep": n_moe * 4 * slots * config.n_embd * value_bytes * (W - 1) // W}
    return {setup: (all_to_all[setup], 2 * (W - 1) * reduced * value_bytes // W)  # ring all-reduce
            for setup, (_, reduced) in param_counts(config, W).items()}


# ----------------------------------------------------------------------------------------------------
# The command line: the cpu preset's model on 2 processes
@dataclass
class RunConfig:
    batch_size: int = 16        # sequences of block_size tokens per process per step (the cpu preset's)
    world_size: int = 2         # processes (gloo, one CPU thread each)
    out: str = "out/part5/expert_parallel.md"  # the table (--out part5_moe/results/... updates the published one)

    def __post_init__(self):
        if self.batch_size < 1 or self.world_size < 2:
            raise ValueError(f"need batch_size >= 1 and world_size >= 2, got {self.batch_size}, {self.world_size}")


def parse_args(argv):
    (run, config), _ = cli.parse_args(argv, __doc__, {"run": RunConfig, "model": GPTConfig},
                                      defaults={"n_expert": 8, "vocab_size": 4096})  # the cpu preset's model
    if not config.n_expert or config.n_expert % run.world_size:
        raise SystemExit(f"error: --n_expert ({config.n_expert}) must be a positive multiple of --world_size")
    return run, config


def table(config, run, measured, command):
    names = {"dense": "dense GPT, data parallel", "moe_dp": "MoE GPT, data parallel (every expert everywhere)",
             "moe_ep": f"MoE GPT, expert parallel ({config.n_expert // run.world_size} experts a process)"}
    formula, held = bytes_formula(config, run.batch_size, run.world_size), param_counts(config, run.world_size)
    lines = ["# Expert parallelism: bytes each process sends in one training step", "",
             f"`{command}` on a {os.cpu_count()}-core CPU ({platform.machine()}), torch {torch.__version__}, "
             f"{datetime.date.today()}: {run.world_size} gloo processes, {run.batch_size} x {config.block_size} "
             f"tokens each, n_layer {config.n_layer}, n_embd {config.n_embd}, {config.n_expert} experts top-"
             f"{config.top_k}, capacity_factor {config.capacity_factor}, fp32.", "",
             "| setup | weights per process | all_to_all: measured / formula | gradient all-reduce: measured / "
             "formula | total |", "|---|---|---|---|---|"]
    for setup, name in names.items():
        (a2a, ar), (fa2a, far) = measured[setup], formula[setup]
        lines.append(f"| {name} | {held[setup][0]:,} | {a2a:,} / {fa2a:,} | {ar:,} / {far:,} | {a2a + ar:,} |")
    return "\n".join(lines) + "\n"


def worker(rank, port, run, config, command):
    torch.set_num_threads(1)  # one thread per process: the processes share the machine's cores
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=run.world_size)
    try:
        measured = measure(config, run.batch_size, rank, run.world_size)
        if rank == 0:
            text = table(config, run, measured, command)
            os.makedirs(os.path.dirname(run.out) or ".", exist_ok=True)
            with open(run.out, "w", encoding="utf-8") as f:
                f.write(text)
            print(text + f"\nwritten to {run.out}")
    finally:
        dist.destroy_process_group()


def free_port():
    """A port no one listens on now (the system picks it), never a fixed one that another run may hold."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    run, config = parse_args(argv)
    command = " ".join(["python part5_moe/expert_parallel.py", *argv])
    mp.spawn(worker, args=(free_port(), run, config, command), nprocs=run.world_size)


if __name__ == "__main__":
    main()
