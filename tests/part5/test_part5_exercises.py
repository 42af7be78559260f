"""Part 5 exercises (part5_moe/exercises.py): put your own solution there and run this file."""
import pytest
import torch
import torch.nn.functional as F
from partloader import load_part

ex, model, moe = load_part("part5_moe", "exercises", "model", "moe")


# --- 5.A expert-choice routing
def naive_expert_choice(x, router_weight, experts, capacity):
    """Expert by expert and token by token, in float64: each expert sorts all tokens by its probability, keeps
    the first `capacity`, and adds prob * (its SwiGLU of the token) to each. -> (y, [set of tokens per expert])."""
    x, w = x.double(), router_weight.double()
    probs = torch.softmax(x @ w.t(), dim=-1)
    y, chosen = torch.zeros_like(x), []
    for e in range(w.size(0)):
        tokens = sorted(range(x.size(0)), key=lambda i: -probs[i, e].item())[:capacity]
        c_fc, c_proj = experts.c_fc[e].double(), experts.c_proj[e].double()
        for i in tokens:
            gate, up = (x[i] @ c_fc).chunk(2)
            y[i] += probs[i, e] * ((F.silu(gate) * up) @ c_proj)
        chosen.append(set(tokens))
    return y, chosen


def test_expert_choice_by_hand():
    """Router = identity on 2 channels: token 0 leans to expert 0 (0.88), token 1 to expert 1, token 2 is
    undecided (0.5, 0.5). With 1 slot each, both experts take their favourite and token 2 gets nothing; with
    2 slots, token 2 is every expert's second pick and gets both."""
    x = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    experts = moe.Experts(2, 2, 3, 1)
    y, tokens = ex.expert_choice(x, torch.eye(2), experts, 1)
    assert tokens.tolist() == [[0], [1]]
    assert ex.experts_per_token(tokens, 3).tolist() == [1, 1, 0]
    assert y[2].abs().max() == 0  # no expert: the layer adds nothing, the token keeps its residual
    _, tokens = ex.expert_choice(x, torch.eye(2), experts, 2)
    assert sorted(map(sorted, tokens.tolist())) == [[0, 2], [1, 2]]
    assert ex.experts_per_token(tokens, 3).tolist() == [1, 1, 2]


@pytest.mark.parametrize("capacity", [1, 5, 16, 40])
def test_expert_choice_equals_a_naive_loop_and_fills_every_expert(capacity):
    torch.manual_seed(capacity)
    N, C, E = 40, 8, 4
    x, router_weight = torch.randn(N, C), torch.randn(E, C)
    experts = moe.Experts(E, C, 6, 1)
    with torch.no_grad():  # weights of std 1 instead of GPT's 0.02, so the outputs are not all near 0
        experts.c_fc.normal_()
        experts.c_proj.normal_()
    seen = []  # what the experts really ran on
    experts.register_forward_hook(lambda module, args, out: seen.append(args[0].shape))
    y, tokens = ex.expert_choice(x, router_weight, experts, capacity)
    want, chosen = naive_expert_choice(x, router_weight, experts, capacity)
    assert torch.allclose(y.double(), want, rtol=1e-5, atol=1e-5)
    assert seen == [(E, capacity, C)]  # every expert processes exactly `capacity` tokens: perfect balance
    assert [set(row) for row in tokens.tolist()] == chosen
    assert all(len(row) == capacity for row in chosen)  # capacity *different* tokens
    counts = ex.experts_per_token(tokens, N)
    assert counts.tolist() == [sum(i in c for c in chosen) for i in range(N)]
    assert int((counts == 0).sum()) == N - len(set().union(*chosen))  # the tokens that got no expert


def test_expert_choice_trains_the_router_through_its_gates():
    torch.manual_seed(0)
    router_weight = torch.randn(4, 8, requires_grad=True)
    y, _ = ex.expert_choice(torch.randn(16, 8), router_weight, moe.Experts(4, 8, 6, 1), 4)
    y.square().sum().backward()
    assert router_weight.grad.abs().sum(1).gt(0).all()  # every expert's row learns


# --- 5.B parameters by hand
def test_param_counts_by_hand():
    """vocab 10, C = 4, one block, one head, 2 experts of hidden 3, top-1, RoPE, RMSNorm, no biases:
    wte 40 + ln_1, ln_2 4 + 4 + attention 4*12 + 4*4 = 64 + router 2*4 = 8 + experts 2 * 3*4*3 = 72 + ln_f 4
    = 196 in all; a token uses one expert of the two: 196 - 36 = 160."""
    cfg = model.GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=4, bias=False, n_expert=2,
                          top_k=1, expert_hidden=3)
    assert ex.moe_param_counts(cfg) == (196, 160)


CONFIGS = {
    "dense": {},
    "dense, Part 2's pieces": {"mlp": "gelu", "norm": "layernorm", "pos_embedding": "learned"},
    "dense, wider MLP, no biases": {"mlp_hidden": 100, "bias": False},
    "all MoE": {"n_expert": 8},
    "MoE every 2nd block": {"n_expert": 4, "moe_every": 2},
    "MoE in block 3 of 4 only": {"n_expert": 4, "moe_every": 3},
    "shared experts": {"n_expert": 4, "n_shared_expert": 2},
    "top-1": {"n_expert": 8, "top_k": 1},
    "top-3, own expert size, learned positions, LayerNorm": {"n_expert": 6, "top_k": 3, "expert_hidden": 20,
                                                            "pos_embedding": "learned", "norm": "layernorm"},
    "hybrid with a shared expert, wider dense MLP": {"n_expert": 4, "moe_every": 2, "n_shared_expert": 1,
                                                     "mlp_hidden": 64, "bias": False},
}


@pytest.mark.parametrize("overrides", CONFIGS.values(), ids=CONFIGS.keys())
def test_param_counts_equal_the_model(overrides):
    cfg = model.GPTConfig(vocab_size=50, block_size=16, n_layer=4, n_head=2, n_embd=32, **overrides)
    gpt = model.GPT(cfg)
    total, active = ex.moe_param_counts(cfg)
    assert total == gpt.num_params()
    assert active == pytest.approx(gpt.num_active_params(), abs=1e-6)
    assert active == total if not cfg.n_expert else active < total


# --- 5.C dropped tokens against the capacity factor
def naive_drops(experts, n_expert, capacity):
    """The queue of assign_slots, one assignment at a time: all first choices in token order, then all
    second choices, ... -> dropped assignments per choice."""
    N, k = experts.shape
    used, dropped = [0] * n_expert, [0] * k
    for j in range(k):
        for i in range(N):
            e = experts[i, j].item()
            if used[e] < capacity:
                used[e] += 1
            else:
                dropped[j] += 1
    return dropped


@pytest.mark.parametrize("experts, n_expert, capacity, per_choice", [
    ([[0, 1], [0, 1]], 2, 1, [1, 1]),          # moe.assign_slots's example: token 1 finds both experts full
    ([[0], [0], [0], [1]], 3, 2, [1]),         # top-1: expert 0 has 2 slots for 3 tokens
    ([[0, 1], [1, 0], [0, 1]], 2, 2, [0, 2]),  # first choices fill expert 0 (2) and half of expert 1 (1); of the
    # second choices token 0 takes expert 1's last slot, tokens 1 and 2 find their experts full
    ([[1, 0], [1, 0]], 2, 2, [0, 0]),          # enough slots: nothing dropped
])
def test_dropped_by_hand(experts, n_expert, capacity, per_choice):
    experts = torch.tensor(experts)
    assert ex.dropped_per_choice(experts, n_expert, capacity).tolist() == per_choice
    assert ex.dropped_fraction(experts, n_expert, capacity) == pytest.approx(sum(per_choice) / experts.numel())


@pytest.mark.parametrize("top_k", [1, 2, 3])
@pytest.mark.parametrize("capacity_factor", [0.5, 1.0, 1.25, 2.0])
def test_dropped_equals_a_naive_queue_and_assign_slots(top_k, capacity_factor):
    torch.manual_seed(top_k)
    N, E = 200, 6
    logits = torch.randn(N, E) + torch.tensor([1.5, 0.5, 0, 0, 0, 0])  # skewed: some experts overflow
    experts = moe.route(logits, top_k)[2]
    capacity = moe.expert_capacity(N, E, top_k, capacity_factor)
    want = naive_drops(experts, E, capacity)
    assert ex.dropped_per_choice(experts, E, capacity).tolist() == want
    assert want == (moe.assign_slots(experts, E, capacity) < 0).sum(0).tolist()  # the chapter's slots agree
    assert ex.dropped_fraction(experts, E, capacity) == pytest.approx(sum(want) / (N * top_k))


def test_nothing_is_dropped_at_capacity_factor_e_over_k_or_dropless():
    torch.manual_seed(0)
    experts = moe.route(torch.randn(64, 8) + torch.arange(8.0), 2)[2]  # as skewed as it gets
    for capacity_factor in (8 / 2, 0):
        assert ex.dropped_fraction(experts, 8, moe.expert_capacity(64, 8, 2, capacity_factor)) == 0


def test_measured_dropped_share_falls_with_capacity_and_respects_the_favoured_experts_bound():
    """More slots never drop more; the skewed router drops at least what its favoured expert cannot hold."""
    n_tokens, n_expert, top_k = 512, 8, 2
    rows, favoured = ex.measure_dropping(n_tokens=n_tokens, n_expert=n_expert, top_k=top_k, n_batches=5)
    assert favoured > 1.5  # the skew really favours expert 0
    for column in range(2, 6):
        assert all(a[column] >= b[column] for a, b in zip(rows, rows[1:]))
    for _, capacity, _, skewed, first, second in rows:
        assert skewed >= favoured / n_expert - capacity / (n_tokens * top_k) - 1e-9
        assert skewed == pytest.approx((first + second) / top_k)
