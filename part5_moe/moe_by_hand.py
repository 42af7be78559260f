"""5.1 A Mixture-of-Experts layer by hand: 4 tokens, 3 experts, top-2 routing, d = 2.

    python part5_moe/moe_by_hand.py

Prints every step (router logits, softmax, top-2 choice, renormalised weights, each expert's output, the
weighted sum), the two auxiliary losses (load balancing, router z-loss) and what a capacity factor of 1
drops, then checks every number against moe.py's functions and its MoE layer given the same weights.
"""
import argparse
import math

import torch

from model import GPTConfig
from moe import MoE, assign_slots, expert_capacity, load_balancing_loss, route, router_z_loss

torch.set_printoptions(precision=4, sci_mode=False)

X = torch.tensor([[2.0, 1.0], [1.0, 2.0], [-1.0, -2.0], [1.0, -2.0]])  # 4 tokens, d = 2
W_ROUTER = torch.tensor([[1.0, 0.0, -1.0],                              # (d, E): one column per expert
                         [0.0, 1.0, 0.0]])
# Each expert is a SwiGLU network with one hidden unit: out = silu(x . gate) * (x . up) * proj
GATE = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])              # (E, d): row e is expert e's
UP = torch.tensor([[0.0, 1.0], [1.0, 0.0], [1.0, -1.0]])
PROJ = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
TOP_K, CAPACITY_FACTOR = 2, 1.0


def moe_step_by_step(verbose=True):
    say = print if verbose else (lambda *a: None)
    N, E = X.size(0), W_ROUTER.size(1)
    say(f"x: one row per token\n{X}")
    logits = X @ W_ROUTER
    say(f"\n1. router logits = x @ W_router: how much each token (row) wants each expert (column)\n{logits}")
    probs = logits.exp() / logits.exp().sum(-1, keepdim=True)
    say(f"\n2. softmax over the experts: probs (each row sums to 1)\n{probs}")
    experts = torch.tensor([sorted(range(E), key=lambda e: -p[e])[:TOP_K] for p in probs.tolist()])
    say(f"\n3. top-{TOP_K}: each token's {TOP_K} most probable experts, best first\n{experts}")
    chosen = probs.gather(1, experts)
    weights = chosen / chosen.sum(-1, keepdim=True)
    say(f"\n4. weights: the chosen probabilities renormalised to sum to 1\n{weights}")
    say("\n5. each chosen expert on its token: h = silu(x . gate) * (x . up), output = h * proj")
    out = torch.zeros_like(X)
    expert_out = {}
    for t in range(N):
        for j, e in enumerate(experts[t].tolist()):
            g, u = X[t] @ GATE[e], X[t] @ UP[e]
            h = g / (1 + math.exp(-g)) * u                                     # silu(g) = g * sigmoid(g)
            expert_out[t, e] = h * PROJ[e] + 0.0                              # + 0.0: no "-0.0000" printed
            out[t] += weights[t, j] * expert_out[t, e]
            say(f"   token {t} -> expert {e}: silu({g:.2f}) * {u:.2f} = {h:.4f}, output {expert_out[t, e]}")
    say(f"\n6. combined output: sum of weight * expert output over each token's {TOP_K} experts\n{out}")

    f = torch.tensor([(experts == e).sum().item() / (N * TOP_K) for e in range(E)])
    P = probs.mean(0)
    balance = E * (f * P).sum()
    say(f"\n7. load balancing (Switch Transformer): f_i = share of the {N * TOP_K} assignments, "
        f"P_i = mean probability\n   f = {f}\n   P = {P}\n   loss = E * sum(f * P) = {E} * {(f * P).sum():.4f} "
        f"= {balance:.4f}   (1.0 = perfectly balanced, {E} = every token on one expert)")
    lse = torch.tensor([math.log(sum(math.exp(v) for v in row)) for row in logits.tolist()])
    z = lse.pow(2).mean()
    say(f"\n8. router z-loss (ST-MoE): logsumexp of each token's logits {lse}\n   z = mean of their squares "
        f"= {z:.4f}")

    capacity = math.ceil(CAPACITY_FACTOR * N * TOP_K / E)
    say(f"\n9. capacity factor {CAPACITY_FACTOR}: ceil({CAPACITY_FACTOR} * {N} tokens * {TOP_K} / {E} experts) "
        f"= {capacity} slots per expert,\n   filled by all first choices, then the second choices, in token order")
    slots, kept = [[] for _ in range(E)], torch.zeros(N, TOP_K, dtype=torch.bool)
    for j in range(TOP_K):
        for t in range(N):
            e = experts[t, j].item()
            kept[t, j] = len(slots[e]) < capacity
            if kept[t, j]:
                slots[e].append(f"token {t} (choice {j + 1})")
            else:
                say(f"   token {t}'s choice {j + 1} (expert {e}) is dropped: expert {e} is full")
    for e in range(E):
        say(f"   expert {e}'s slots: {', '.join(slots[e])}")
    out_capped = torch.stack([sum((weights[t, j] * expert_out[t, experts[t, j].item()] for j in range(TOP_K)
                                   if kept[t, j]), torch.zeros(2)) for t in range(N)])
    say(f"   output in training (dropped parts missing; the residual still carries the token)\n{out_capped}")
    return dict(logits=logits, probs=probs, experts=experts, weights=weights, out=out, f=f, P=P,
                balance=balance, z=z, capacity=capacity, kept=kept, out_capped=out_capped)


def moe_layer():
    """moe.MoE holding the weights above: router (E, d), c_fc[e] = [gate | up] (d, 2), c_proj[e] = proj (1, d)."""
    cfg = GPTConfig(n_embd=2, n_head=1, n_layer=1, n_expert=3, top_k=TOP_K, expert_hidden=1,
                    capacity_factor=CAPACITY_FACTOR)
    layer = MoE(cfg)
    with torch.no_grad():
        layer.router.weight.copy_(W_ROUTER.T)
        layer.experts.c_fc.copy_(torch.stack([GATE, UP], dim=-1))
        layer.experts.c_proj.copy_(PROJ[:, None, :])
    return layer


def main(verbose=True):
    r = moe_step_by_step(verbose)
    N, E = X.size(0), W_ROUTER.size(1)
    probs, weights, experts = route(r["logits"], TOP_K)
    assert torch.equal(experts, r["experts"]), "moe.route chose other experts"
    assert torch.allclose(probs, r["probs"]) and torch.allclose(weights, r["weights"]), "moe.route weighs otherwise"
    assert torch.allclose(load_balancing_loss(probs, experts), r["balance"]), "moe.load_balancing_loss differs"
    assert torch.allclose(router_z_loss(r["logits"]), r["z"]), "moe.router_z_loss differs"
    capacity = expert_capacity(N, E, TOP_K, CAPACITY_FACTOR)
    assert capacity == r["capacity"] and torch.equal(assign_slots(experts, E, capacity) >= 0, r["kept"])
    layer = moe_layer()
    with torch.no_grad():  # evaluation is dropless (the full output); training applies the capacity
        assert torch.allclose(layer.eval()(X[None])[0], r["out"], atol=1e-6), "moe.MoE (eval) differs"
        assert torch.allclose(layer.train()(X[None])[0], r["out_capped"], atol=1e-6), "moe.MoE (train) differs"
    if verbose:
        print("\nOK: every step matches moe.py (route, the two losses, capacity and the MoE layer)")
    return r


if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()
