"""Part 5 exercises: one function per exercise, each a worked solution (README.md, "Exercises").

    5.A expert-choice routing: each expert picks its tokens,      expert_choice, experts_per_token,
        not each token its experts (Zhou et al. 2022)             measure_expert_choice
    5.B an MoE's parameters, total and active, from the config    moe_param_counts
    5.C the assignments a capacity factor drops, and which        dropped_per_choice, dropped_fraction,
        choices lose them                                         measure_dropping

Replace a solution with your own and run the same test:

    python -m pytest tests/part5/test_part5_exercises.py

The tests check each function against an independent computation (a naive loop over tokens and experts,
a hand-worked example, the parameters a GPT really allocates, moe.assign_slots), so they pass for any
correct answer. `python part5_moe/exercises.py` prints the figures in README.md.
"""
import torch

from functional import softmax
from model import GPTConfig, swiglu_hidden
from moe import Experts, expert_capacity, route


# ----------------------------------------------------------------------------------------------------
# Exercise 5.A (builds on 5.1 and 5.2): expert-choice routing (Zhou et al. 2022)
def expert_choice(x, router_weight, experts: Experts, capacity):
    """Task: route the other way round. The router's softmax over experts is the same as route()'s, but each
    expert takes the `capacity` tokens with the highest probability for it (a top-k down each column of the
    (N, E) probabilities, not along each row), runs on them, and each chosen token gets the expert's output
    weighted by that probability. x (N, C), router_weight (E, C) -> (y (N, C), tokens (E, capacity)): the
    output and the tokens each expert chose.
    Every expert is exactly full, so the load is perfectly balanced and nothing pads or drops by construction;
    the price is that a token may get no expert at all (it keeps only its residual) or several.
    Needs capacity <= N. subtle: it is not causal: whether token t is chosen depends on every other token of
    the batch, the later ones included, which a decoder cannot know when it generates."""
    probs = softmax(x.float() @ router_weight.float().t(), dim=-1)          # (N, E), as in route()
    gates, tokens = probs.t().topk(capacity, dim=-1)                        # each (E, capacity)
    out = experts(x[tokens])                                                # (E, capacity, C): one bmm per matrix
    y = torch.zeros_like(x).index_add_(0, tokens.flatten(), (gates.unsqueeze(-1) * out).flatten(0, 1).to(x.dtype))
    return y, tokens


def experts_per_token(tokens, n_tokens):
    """How many experts chose each token: tokens (E, capacity) -> (N,) counts. 0 = the token got no expert."""
    return torch.bincount(tokens.flatten(), minlength=n_tokens)


def measure_expert_choice(n_tokens=4096, n_embd=64, n_expert=8, experts_per_token_on_average=2,
                          router_stds=(0.02, 0.2, 1.0), seed=0):
    """5.A (measure): the share of tokens that 0, 1, 2, 3 or more experts chose, for random tokens x ~ N(0, 1)
    and a random router of each std (0.02: GPT's init). capacity = N * 2 / E: the compute of top-2 routing.
    Returns {std: [share with 0, 1, 2, 3, >= 4 experts]}."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n_tokens, n_embd, generator=gen)
    experts = Experts(n_expert, n_embd, 16, 1)
    capacity = n_tokens * experts_per_token_on_average // n_expert
    shares = {}
    for std in router_stds:
        router_weight = torch.randn(n_expert, n_embd, generator=gen) * std
        with torch.no_grad():
            _, tokens = expert_choice(x, router_weight, experts, capacity)
        counts = experts_per_token(tokens, n_tokens).clamp(max=4)
        shares[std] = (torch.bincount(counts, minlength=5).float() / n_tokens).tolist()
    return shares


# ----------------------------------------------------------------------------------------------------
# Exercise 5.B (builds on 5.2 and 5.4): count the parameters by hand
def moe_param_counts(cfg: GPTConfig):
    """Task: (total, active) parameters of GPT(cfg) from the config's numbers alone, without building it.
    active = what one token uses: everything but the routed experts it is not sent to (n_expert - top_k of
    them in every MoE layer); the router and the shared experts are always used.
    A SwiGLU network of hidden size H on width C has 3 * C * H weights (gate and up: C -> 2H, down: H -> C);
    the experts have no biases, dense MLPs and attention have them with cfg.bias, RMSNorm has only a weight."""
    C, E = cfg.n_embd, cfg.n_expert
    bias = int(cfg.bias)

    def linear(n_in, n_out, with_bias=bias):
        return n_in * n_out + with_bias * n_out

    norm = C if cfg.norm == "rmsnorm" else C + bias * C                     # weight (and bias)
    attention = linear(C, 3 * C) + linear(C, C)                             # c_attn (q, k, v) and c_proj
    hidden = cfg.mlp_hidden or (swiglu_hidden(C) if cfg.mlp == "swiglu" else 4 * C)
    dense_mlp = linear(C, 2 * hidden if cfg.mlp == "swiglu" else hidden) + linear(hidden, C)
    expert = 3 * C * cfg.expert_hidden                                      # one SwiGLU expert, no biases
    moe = linear(C, E, with_bias=0) + (E + cfg.n_shared_expert) * expert    # router + routed + shared experts
    n_moe = sum(cfg.is_moe(layer) for layer in range(cfg.n_layer))         # n_layer // moe_every when E > 0

    embeddings = cfg.vocab_size * C                                         # tied with lm_head: counted once
    if cfg.pos_embedding == "learned":
        embeddings += cfg.block_size * C                                    # sinusoidal and RoPE learn nothing
    blocks = cfg.n_layer * (2 * norm + attention) + n_moe * moe + (cfg.n_layer - n_moe) * dense_mlp
    total = embeddings + blocks + norm                                      # + ln_f
    active = total - n_moe * (E - cfg.top_k) * expert if E else total
    return total, active


# ----------------------------------------------------------------------------------------------------
# Exercise 5.C (builds on 5.1 and 5.2): dropped tokens against the capacity factor
def dropped_per_choice(experts, n_expert, capacity):
    """Task, part 1: experts (N, k), each token's choices best first -> (k,) the number of assignments of each
    choice (first, second, ...) that find their expert full, with assign_slots's priority: all first choices
    before any second choice, then token order. moe.assign_slots gives every assignment its slot; counting
    is enough here: choice j of expert e finds max(0, capacity - (e's assignments of the choices before j))
    slots left."""
    N, k = experts.shape
    counts = torch.zeros(k, n_expert, dtype=torch.long)                     # (choice, expert)
    counts.scatter_add_(1, experts.t(), torch.ones(k, N, dtype=torch.long))
    before = counts.cumsum(0) - counts                                      # the earlier choices' assignments
    left = (capacity - before).clamp(min=0)
    return (counts - left).clamp(min=0).sum(1)                              # (k,)


def dropped_fraction(experts, n_expert, capacity):
    """Task, part 2: the share of all N * k assignments that find their expert full. Which assignments are
    dropped depends on the priority rule, how many does not: expert e keeps min(load_e, capacity)."""
    return dropped_per_choice(experts, n_expert, capacity).sum().item() / experts.numel()


def measure_dropping(capacity_factors=(1.0, 1.25, 1.5, 2.0), n_tokens=1024, n_expert=8, top_k=2, skew=1.0,
                     n_batches=50, seed=0):
    """5.C (measure): the dropped share of the assignments, averaged over n_batches batches of n_tokens (1024:
    the cpu preset's 16 x 64), for route() on (a) a uniform random router, logits ~ N(0, 1), and (b) a
    skewed one, the same logits + skew on expert 0. Returns rows (capacity factor, slots per expert,
    uniform dropped, skewed dropped, skewed dropped of the first choices, of the second) and the load of
    expert 0 under the skewed router, as a multiple of the mean."""
    gen = torch.Generator().manual_seed(seed)
    routers = {"uniform": torch.zeros(n_expert), "skewed": torch.zeros(n_expert).index_fill_(0, torch.tensor(0), skew)}
    batches = {name: [route(torch.randn(n_tokens, n_expert, generator=gen) + bias, top_k)[2] for _ in range(n_batches)]
               for name, bias in routers.items()}
    favoured = torch.cat(batches["skewed"]).eq(0).float().mean().item() * n_expert  # share of assignments x E
    rows = []
    for cf in capacity_factors:
        capacity = expert_capacity(n_tokens, n_expert, top_k, cf)
        uniform = sum(dropped_fraction(e, n_expert, capacity) for e in batches["uniform"]) / n_batches
        skewed = sum(dropped_fraction(e, n_expert, capacity) for e in batches["skewed"]) / n_batches
        per_choice = sum(dropped_per_choice(e, n_expert, capacity) for e in batches["skewed"]) / (n_batches * n_tokens)
        rows.append((cf, capacity, uniform, skewed, *per_choice.tolist()))
    return rows, favoured


# ----------------------------------------------------------------------------------------------------
# The figures in README.md, "Exercises": python part5_moe/exercises.py
def main():
    import dataclasses
    import math

    from train import parse_configs

    torch.manual_seed(0)
    print("5.A expert choice, 4096 random tokens, 8 experts, capacity 1024 (top-2's compute): share of tokens")
    print("    router                | 0 experts |     1 |     2 |     3 |  >= 4")
    for std, shares in measure_expert_choice().items():
        print(f"    {f'std {std:g}':21s} | {shares[0]:9.1%} | " + " | ".join(f"{s:5.1%}" for s in shares[1:]))
    # each expert choosing 1024 of 4096 at random, independently of the others: Binomial(8, 1/4) experts a token
    shares = [math.comb(8, j) * 0.25 ** j * 0.75 ** (8 - j) for j in range(4)]
    shares.append(1 - sum(shares))
    print(f"    {'independent, random':21s} | {shares[0]:9.1%} | " + " | ".join(f"{s:5.1%}" for s in shares[1:]))

    print("5.B parameters of the presets' models (vocabulary = --bpe_vocab_size), total and active per token")
    for preset in ("cpu", "gpu"):
        train_cfg, cfg = parse_configs(["--preset", preset])
        cfg = dataclasses.replace(cfg, vocab_size=train_cfg.bpe_vocab_size)
        for name, c in (("MoE", cfg), ("dense", dataclasses.replace(cfg, n_expert=0, expert_hidden=0))):
            total, active = moe_param_counts(c)
            print(f"    {preset} {name:5s}: {total:11,d} total, {active:11,d} active")

    rows, favoured = measure_dropping()
    print(f"5.C dropped share of the assignments, 1024 tokens, 8 experts, top-2 (mean of 50 batches); "
          f"skewed: expert 0 gets {favoured:.2f}x the mean load")
    print("    capacity factor | slots | uniform router | skewed router | skewed: of 1st choices | of 2nd choices")
    for cf, capacity, uniform, skewed, first, second in rows:
        print(f"    {cf:15.2f} | {capacity:5d} | {uniform:14.2%} | {skewed:13.2%} | {first:22.2%} | {second:14.2%}")


if __name__ == "__main__":
    main()
