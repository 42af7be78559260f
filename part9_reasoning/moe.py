"""Part 5: Mixture-of-Experts. A layer that holds E feed-forward networks (experts) and sends each token to
only k of them, chosen by a small learned router. Parameters grow E-fold; the compute per token grows k-fold.

    5.1 routing and gating: route(), the load-balancing loss and the router z-loss (worked example: moe_by_hand.py)
    5.2 the MoE layer: Experts (stacked SwiGLU MLPs run as batched matmuls), MoE, capacity and token dropping
    5.3 stability: the router in float32, the z-loss, auxiliary-loss-free balancing (a selection bias)
    5.4 hybrids: always-on shared experts (n_shared_expert); MoE in every k-th block only (model.py: Block)

Every function here works on plain tensors, so each one can be tested on its own.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from functional import softmax  # 2.3 written out in functional.py


# ----------------------------------------------------------------------------------------------------
# 5.1 Routing: a linear router scores every expert for every token; each token goes to its top k
def route(logits, top_k, bias=None):
    """logits (N, E) -> (probs (N, E), weights (N, k), experts (N, k)).
    probs: the softmax over all experts (float32). experts: the top_k experts of each token. weights: how
    much of each chosen expert's output the token keeps.
    k > 1: the chosen probabilities renormalised to sum to 1 (Mixtral): [0.5, 0.3, 0.2], k=2 -> [0.625, 0.375].
    k = 1: the raw probability (Switch Transformer). subtle: renormalising one weight would always give 1.0,
    and the router would get no gradient from the language-model loss at all.
    bias (E,): added to the scores only to *choose* experts, never to weigh them (5.3, aux-loss-free balancing)."""
    probs = softmax(logits.float(), dim=-1)                                 # (N, E)
    scores = probs if bias is None else probs + bias
    experts = scores.topk(top_k, dim=-1).indices                            # (N, k)
    weights = probs.gather(-1, experts)                                     # (N, k)
    if top_k > 1:
        weights = weights / weights.sum(-1, keepdim=True)
    return probs, weights, experts


def expert_counts(experts, n_expert):
    """How many of the N*k assignments each expert received: (N, k) ids -> (E,) counts, e.g.
    [[0, 2], [0, 1]] with E=3 -> [2, 1, 1]."""
    flat = experts.flatten()
    return torch.zeros(n_expert, device=flat.device).scatter_add_(0, flat, torch.ones_like(flat, dtype=torch.float))


def load_balancing_loss(probs, experts):
    """Switch Transformer (Fedus et al. 2021, eq. 4): E * sum_i f_i * P_i, where f_i is the share of the
    assignments that went to expert i and P_i the router's mean probability for expert i. f is a count (no
    gradient); P carries the gradient that pulls probability away from overloaded experts. 1.0 when both
    are uniform (E * E * 1/E * 1/E), up to E when every token picks the same expert with certainty."""
    n_expert = probs.size(-1)
    f = expert_counts(experts, n_expert) / experts.numel()                 # (E,) sums to 1
    P = probs.mean(0)                                                       # (E,) sums to 1
    return n_expert * (f * P).sum()


def router_z_loss(logits):
    """ST-MoE (Zoph et al. 2022, eq. 5): the mean over tokens of logsumexp(router logits)^2. It keeps the
    logits small, where float rounding in the softmax stays harmless; it does not care which expert wins."""
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()


# ----------------------------------------------------------------------------------------------------
# 5.2 Capacity: each expert has a fixed number of slots per batch; assignments past them are dropped
def expert_capacity(n_tokens, n_expert, top_k, capacity_factor):
    """Slots per expert: capacity_factor * (assignments per expert if perfectly balanced), rounded up.
    capacity_factor 0 = dropless: n_tokens slots, as many as an expert can ever receive (a token picks k
    *different* experts). Any capacity_factor >= E/k also drops nothing."""
    if capacity_factor == 0:
        return n_tokens
    return min(n_tokens, math.ceil(capacity_factor * n_tokens * top_k / n_expert))


def assign_slots(experts, n_expert, capacity):
    """The slot of every assignment (N, k) in its expert's buffer, or -1 where the expert was full.
    Priority: all first choices before any second choice (GShard), then token order. Worked example,
    E=2, capacity 1: experts [[0, 1], [0, 1]] -> [[0, 0], [-1, -1]]: token 1 finds both experts full."""
    N, k = experts.shape
    flat = experts.t().reshape(-1)                                          # (k*N,) first choices first
    one_hot = F.one_hot(flat, n_expert)                                     # (k*N, E)
    position = (one_hot.cumsum(0) * one_hot).sum(-1) - 1                    # earlier assignments to the same expert
    position = torch.where(position < capacity, position, -1)
    return position.view(k, N).t()                                          # (N, k)


# The three steps of MoE.dispatch as functions, so that expert parallelism (expert_parallel.py) can put an
# exchange between processes between them: slots -> buffer -> (experts) -> combine
def buffer_slots(experts, n_expert, capacity):
    """The row of every assignment (N, k) in the flat (E * capacity) expert buffer: expert * capacity + its
    slot; a dropped assignment gets row E * capacity, one spare row past the end. E=2, capacity 1:
    experts [[0, 1], [0, 1]] -> [[0, 1], [2, 2]]."""
    position = assign_slots(experts, n_expert, capacity)                    # (N, k), -1 = dropped
    return torch.where(position >= 0, experts * capacity + position, n_expert * capacity)


def dispatch_buffer(x, slot, n_expert, capacity):
    """Copy each token into the slots of its experts: x (N, C), slot (N, k) -> (E, capacity, C); an empty
    slot stays 0. The dropped assignments all land in the spare row, which is then cut off."""
    C, k = x.size(1), slot.size(1)
    buffer = x.new_zeros(n_expert * capacity + 1, C).index_add(0, slot.flatten(), x.repeat_interleave(k, 0))
    return buffer[:-1].view(n_expert, capacity, C)


def combine(out, slot, weights):
    """The experts' outputs (E, capacity, C) back to the tokens: each token's k outputs, weighted -> (N, C)."""
    E, capacity, C = out.shape
    # the spare row gives 0: a dropped assignment adds nothing (a token that all its experts dropped keeps
    # only its residual)
    out = torch.cat([out.reshape(E * capacity, C), out.new_zeros(1, C)])
    return (out[slot] * weights.unsqueeze(-1)).sum(1)                      # (N, k, C) -> (N, C)


# ----------------------------------------------------------------------------------------------------
# 5.2 The experts: E SwiGLU networks with their weights stacked, so all of them run in one batched matmul
class Experts(nn.Module):
    """n SwiGLU MLPs (3.3): x (n, tokens, C) -> (n, tokens, C), expert e on x[e]. Weights as Part 3's MLP
    without biases (as in Mixtral): c_fc[e] maps C to gate and up (2*hidden), c_proj[e] maps hidden to C."""

    def __init__(self, n, n_embd, hidden, n_layer):
        super().__init__()
        self.c_fc = nn.Parameter(torch.randn(n, n_embd, 2 * hidden) * 0.02)
        # GPT-2's scaled init of residual projections, as GPT.__init__ does for every c_proj
        self.c_proj = nn.Parameter(torch.randn(n, hidden, n_embd) * 0.02 / math.sqrt(2 * n_layer))

    def forward(self, x):
        gate, up = torch.bmm(x, self.c_fc).chunk(2, dim=-1)                # each (n, tokens, hidden)
        return torch.bmm(F.silu(gate) * up, self.c_proj)                   # (n, tokens, C)


class MoE(nn.Module):
    """5.2 The MoE feed-forward layer, a drop-in for MLP: (B, T, C) -> (B, T, C).
    Each token goes to its top_k experts; its output is their outputs weighed by the router. The layer keeps
    its auxiliary losses of the last forward in self.aux (GPT.forward adds them to the loss) and counts the
    tokens each expert received (load_total, load_step) for the logs and for aux-loss-free balancing."""

    def __init__(self, config):
        super().__init__()
        E, C = config.n_expert, config.n_embd
        self.n_expert, self.top_k, self.capacity_factor = E, config.top_k, config.capacity_factor
        self.count_step_load = config.bias_update_rate > 0  # only aux-loss-free balancing needs each step's load
        hidden = config.expert_hidden
        self.router = nn.Linear(C, E, bias=False)
        self.experts = Experts(E, C, hidden, config.n_layer)
        # 5.4 DeepSeekMoE: shared experts see every token, the routed ones specialise on what is left
        self.shared = Experts(config.n_shared_expert, C, hidden, config.n_layer) if config.n_shared_expert else None
        self.dropout = nn.Dropout(config.dropout)
        # 5.3 aux-loss-free balancing (DeepSeek-V3): a per-expert bias on the scores, used only to choose experts,
        # nudged after every step towards balance (update_balance_bias). Saved in checkpoints; never trained.
        self.register_buffer("balance_bias", torch.zeros(E))
        self.register_buffer("load_step", torch.zeros(E), persistent=False)   # tokens per expert, this step
        self.register_buffer("load_total", torch.zeros(E), persistent=False)  # ... since the last log line
        self.aux = {}

    def forward(self, x):
        B, T, C = x.shape
        x = x.reshape(B * T, C)                                             # tokens are routed one by one
        # 5.3 the router in float32: under bf16 autocast its softmax would round small differences away
        with torch.autocast(x.device.type, enabled=False):
            logits = F.linear(x.float(), self.router.weight.float())       # (N, E)
        probs, weights, experts = route(logits, self.top_k, self.balance_bias)
        self.aux = {"balance": load_balancing_loss(probs, experts), "z": router_z_loss(logits)}
        if self.training:
            with torch.no_grad():
                counts = expert_counts(experts, self.n_expert)
                self.load_total += counts
                if self.count_step_load:
                    self.load_step += counts
        y = self.dispatch(x, weights, experts)
        if self.shared is not None:
            y = y + self.shared(x.unsqueeze(0).expand(self.shared.c_fc.size(0), -1, -1)).sum(0)
        return self.dropout(y).view(B, T, C)

    def dispatch(self, x, weights, experts):
        """Send each token to its experts' buffers, run every expert on its buffer at once, and bring the
        outputs back weighted: x (N, C), weights and experts (N, k) -> (N, C). No loop over tokens or experts.
        subtle: capacity (and so token dropping) applies in training only: in evaluation and generation a
        token's output must not depend on which other tokens share its batch, so those are dropless."""
        capacity = expert_capacity(x.size(0), self.n_expert, self.top_k, self.capacity_factor if self.training else 0)
        slot = buffer_slots(experts, self.n_expert, capacity)               # (N, k)
        buffer = dispatch_buffer(x, slot, self.n_expert, capacity)          # (E, capacity, C)
        return combine(self.experts(buffer), slot, weights)                 # (N, C)


# ----------------------------------------------------------------------------------------------------
# 5.3 Aux-loss-free balancing and the expert-load statistics, for every MoE layer of a model
def moe_layers(model):
    return [m for m in model.modules() if isinstance(m, MoE)]


@torch.no_grad()
def update_balance_bias(model, rate, world_size=1):
    """DeepSeek-V3's rule, after each optimizer step: raise the bias of each expert that got fewer tokens than
    the mean, lower it for the others, by a fixed rate: b_i += rate * sign(mean load - load_i). Under torchrun
    the loads of all processes are summed first, so every process keeps the same biases."""
    for layer in moe_layers(model):
        load = layer.load_step
        if world_size > 1:
            torch.distributed.all_reduce(load)
        layer.balance_bias += rate * torch.sign(load.mean() - load)
        load.zero_()


@torch.no_grad()
def take_expert_load(model):
    """Per MoE layer, the share of the assignments each expert received since the last call ([] for a
    dense model); resets the counts."""
    shares = []
    for layer in moe_layers(model):
        shares.append((layer.load_total / layer.load_total.sum().clamp(min=1)).tolist())
        layer.load_total.zero_()
    return shares
