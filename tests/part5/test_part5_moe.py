"""Part 5's Mixture-of-Experts: moe.py, the MoE blocks of model.py, and the worked example moe_by_hand.py.

Every test compares with an independent computation: a plain per-token loop (naive_routing, naive_kept,
naive_moe_output below), a paper's formula written another way, or a hand-worked example in the comments.
The carried code (sampling, KV cache, decode.py, ...) is tested on every part in tests/test_carried_forward.py;
here decoding is checked once more with MoE layers in the model.
"""
import math

import pytest
import torch
import torch.nn.functional as F
from partloader import load_part, one_line_exit

model, moe, decode, checkpoint, by_hand = load_part("part5_moe", "model", "moe", "decode", "checkpoint",
                                                    "moe_by_hand")
model4, checkpoint4 = load_part("part4_scaling", "model", "checkpoint")


def config(**overrides):
    cfg = dict(vocab_size=32, block_size=48, n_layer=2, n_head=2, n_embd=16, n_expert=4, top_k=2)
    return model.GPTConfig(**{**cfg, **overrides})


def scaled_up(module, std=0.5):
    """GPT-2's small init gives near-uniform routing and tiny outputs; larger weights make every difference
    (which expert wins, which token is dropped, which next token is greedy) show up."""
    torch.manual_seed(0)
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() >= 2:
                p.normal_(0, std)
    return module


def moe_layer(**overrides):
    return scaled_up(moe.MoE(config(**overrides)))


def moe_gpt(**overrides):
    return scaled_up(model.GPT(config(**overrides)), std=0.3)


def tokens(shape, vocab=32):
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(1))


def swiglu(x, c_fc, c_proj):
    """One expert on one token, written out: x (C,), c_fc (C, 2H) = [gate | up], c_proj (H, C)."""
    H = c_proj.size(0)
    a = x @ c_fc
    gate, up = a[:H], a[H:]
    return (gate * torch.sigmoid(gate) * up) @ c_proj                      # silu(g) = g * sigmoid(g)


def naive_routing(layer, x):
    """The router by hand, token by token: softmax probabilities, the top_k experts sorted by probability plus
    the layer's balance bias, their probabilities renormalised (k > 1) or raw (k = 1).
    x (N, C) -> probs (N, E), experts, weights (N, k)."""
    probs = torch.softmax(x @ layer.router.weight.T, dim=-1)
    bias = layer.balance_bias.tolist()
    experts, weights = [], []
    for p in probs.tolist():
        top = sorted(range(len(p)), key=lambda e: -(p[e] + bias[e]))[:layer.top_k]
        experts.append(top)
        weights.append([p[e] / (sum(p[i] for i in top) if layer.top_k > 1 else 1) for e in top])
    return probs, torch.tensor(experts), torch.tensor(weights)


def naive_kept(experts, capacity):
    """The drop rule in plain Python: every token's first choice, in token order, then every second choice,
    ...; an assignment keeps its place while its expert has a free slot. -> {(token, choice), ...} kept."""
    used, kept = {}, set()
    for j in range(len(experts[0])):
        for t, choices in enumerate(experts):
            e = choices[j]
            if used.get(e, 0) < capacity:
                used[e] = used.get(e, 0) + 1
                kept.add((t, j))
    return kept


def naive_moe_output(layer, x, weights, experts, capacity=None):
    """Loop over tokens and their chosen experts: the weighted sum of the experts' SwiGLU outputs, skipping
    the dropped assignments (capacity None = none dropped)."""
    kept = naive_kept(experts.tolist(), len(x) if capacity is None else capacity)
    y = torch.zeros_like(x)
    for t, j in kept:
        e = experts[t, j]
        y[t] += weights[t, j] * swiglu(x[t], layer.experts.c_fc[e], layer.experts.c_proj[e])
    return y


def switch_balance(probs, experts):
    """Switch's E * sum_i f_i P_i, rewritten: sum_i f_i P_i is the mean, over all N*k assignments, of the
    mean router probability P of the expert assigned. -> E * mean(P[assigned expert])."""
    return probs.size(-1) * probs.mean(0)[experts].mean()


# ----------------------------------------------------------------------------------------------------
# 5.1 The load-balancing loss and the router z-loss
def test_balance_loss_is_one_under_perfectly_uniform_routing():
    probs = torch.full((8, 4), 0.25)
    experts = torch.tensor([[t % 4, (t + 1) % 4] for t in range(8)])  # every expert gets 4 of the 16 assignments
    assert moe.load_balancing_loss(probs, experts).item() == pytest.approx(1.0)


@pytest.mark.parametrize("n_expert", [2, 4, 8])
def test_balance_loss_is_n_expert_when_every_token_picks_one_expert_with_certainty(n_expert):
    probs = F.one_hot(torch.zeros(6, dtype=torch.long), n_expert).float()  # f = P = (1, 0, ..., 0)
    experts = torch.zeros(6, 1, dtype=torch.long)
    assert moe.load_balancing_loss(probs, experts).item() == pytest.approx(n_expert)


def test_balance_loss_hand_example_and_its_gradient_goes_through_P_only():
    # E=3, k=2. f = (1/4, 2/4, 1/4): expert 1 got 2 of the 4 assignments. P = column means = (0.3, 0.45, 0.25).
    # loss = 3 * (0.25 * 0.3 + 0.5 * 0.45 + 0.25 * 0.25) = 3 * 0.3625 = 1.0875
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]], requires_grad=True)
    experts = torch.tensor([[0, 1], [1, 2]])
    loss = moe.load_balancing_loss(probs, experts)
    assert loss.item() == pytest.approx(1.0875)
    assert loss.item() == pytest.approx(switch_balance(probs, experts).item())
    loss.backward()  # f is a count: d loss / d probs[t, i] = E * f_i / N = 3 * f_i / 2, the same for every token
    assert torch.allclose(probs.grad, torch.tensor([[0.375, 0.75, 0.375]] * 2))


def test_router_z_loss_hand_computation():
    logits = [[1.0, 2.0, 3.0], [0.0, 0.0, 0.0], [100.0, 101.0, 99.0]]  # the last overflows a naive float32 exp
    lse = [math.log(sum(math.exp(v) for v in row)) for row in logits]   # float64: exp(101) is fine here
    expected = sum(v * v for v in lse) / len(lse)
    assert moe.router_z_loss(torch.tensor(logits)).item() == pytest.approx(expected, rel=1e-6)
    assert moe.router_z_loss(torch.zeros(5, 4)).item() == pytest.approx(math.log(4) ** 2)


# ----------------------------------------------------------------------------------------------------
# 5.1 route()
@pytest.mark.parametrize("top_k", [2, 3])
def test_route_chooses_the_top_k_and_renormalises_their_probabilities(top_k):
    logits = torch.randn(6, 5, generator=torch.Generator().manual_seed(0))
    probs, weights, experts = moe.route(logits, top_k)
    for t, row in enumerate(logits.tolist()):
        p = [math.exp(v) / sum(math.exp(u) for u in row) for v in row]
        top = sorted(range(5), key=lambda e: -p[e])[:top_k]
        assert experts[t].tolist() == top
        assert weights[t].tolist() == pytest.approx([p[e] / sum(p[i] for i in top) for e in top], rel=1e-5)
        assert probs[t].tolist() == pytest.approx(p, rel=1e-5)
    assert torch.allclose(weights.sum(-1), torch.ones(6))


def test_route_docstring_example_and_k1_keeps_the_raw_probability():
    logits = torch.tensor([[0.5, 0.3, 0.2]]).log()
    _, weights, experts = moe.route(logits, 2)
    assert experts.tolist() == [[0, 1]] and weights[0].tolist() == pytest.approx([0.625, 0.375])  # 0.5/0.8, 0.3/0.8
    _, weights, experts = moe.route(logits, 1)
    assert experts.tolist() == [[0]] and weights[0].tolist() == pytest.approx([0.5])  # not renormalised to 1.0


def test_bias_changes_which_experts_are_chosen_not_the_weights():
    # probs (0.5, 0.3, 0.2) + bias (0, 0, 0.5) = scores (0.5, 0.3, 0.7): expert 2 wins, but weighs its own 0.2
    logits, bias = torch.tensor([[0.5, 0.3, 0.2]]).log(), torch.tensor([0.0, 0.0, 0.5])
    probs, weights, experts = moe.route(logits, 1, bias)
    assert experts.tolist() == [[2]] and weights[0].tolist() == pytest.approx([0.2])
    assert probs[0].tolist() == pytest.approx([0.5, 0.3, 0.2])
    _, weights, experts = moe.route(logits, 2, bias)
    assert experts.tolist() == [[2, 0]] and weights[0].tolist() == pytest.approx([0.2 / 0.7, 0.5 / 0.7])


# ----------------------------------------------------------------------------------------------------
# 5.2 Capacity and token dropping
@pytest.mark.parametrize("experts, n_expert, capacity, slots", [
    ([[0, 1], [0, 1]], 2, 1, [[0, 0], [-1, -1]]),              # the docstring's: token 1 finds both experts full
    ([[0, 1], [1, 0]], 2, 1, [[0, -1], [0, -1]]),              # first choices first: token order alone would keep
                                                               # token 0's second choice and drop token 1's first
    ([[0, 1], [0, 2], [0, 1], [1, 0]], 3, 2, [[0, 1], [1, 0], [-1, -1], [0, -1]]),
    ([[2], [2], [1], [2]], 3, 2, [[0], [1], [0], [-1]]),        # k = 1: token order
])
def test_assign_slots_hand_examples(experts, n_expert, capacity, slots):
    assert moe.assign_slots(torch.tensor(experts), n_expert, capacity).tolist() == slots


def test_assign_slots_agrees_with_the_naive_drop_rule():
    experts = torch.rand(12, 4, generator=torch.Generator().manual_seed(0)).argsort(-1)[:, :2]  # 2 distinct each
    slots = moe.assign_slots(experts, 4, 3)
    kept = naive_kept(experts.tolist(), 3)
    assert {(t, j) for t in range(12) for j in range(2) if slots[t, j] >= 0} == kept
    assert len(kept) < 24  # some were dropped, so the comparison means something
    for e in range(4):  # the kept assignments of an expert fill its slots 0, 1, 2, ... once each
        taken = slots[(experts == e) & (slots >= 0)].tolist()
        assert sorted(taken) == list(range(len(taken)))


@pytest.mark.parametrize("n_tokens, n_expert, top_k, factor, capacity", [
    (10, 4, 2, 1.25, 7),   # ceil(1.25 * 10 * 2 / 4) = ceil(6.25)
    (10, 4, 2, 1.0, 5),
    (4, 3, 2, 1.0, 3),     # ceil(8 / 3): moe_by_hand.py's example
    (4, 2, 2, 10.0, 4),    # never more than n_tokens: an expert cannot receive a token twice
    (10, 4, 2, 0, 10),     # 0 = dropless
])
def test_expert_capacity_hand_values(n_tokens, n_expert, top_k, factor, capacity):
    assert moe.expert_capacity(n_tokens, n_expert, top_k, factor) == capacity


@pytest.mark.parametrize("n_expert, top_k", [(4, 2), (3, 2), (5, 3), (8, 1)])
def test_capacity_factor_of_E_over_k_or_dropless_drops_nothing(n_expert, top_k):
    N = 12
    worst = torch.arange(top_k).repeat(N, 1)  # every token picks the same top_k experts
    for factor in (n_expert / top_k, 0):
        assert (moe.assign_slots(worst, n_expert, moe.expert_capacity(N, n_expert, top_k, factor)) >= 0).all()
    less = moe.expert_capacity(N, n_expert, top_k, n_expert / top_k / 2)
    assert (moe.assign_slots(worst, n_expert, less) < 0).any()  # half that capacity does drop
    layer = moe_layer(n_expert=n_expert, top_k=top_k, capacity_factor=n_expert / top_k).train()
    x = torch.randn(N, 16)
    _, experts, weights = naive_routing(layer, x)
    with torch.no_grad():
        assert torch.allclose(layer(x[None])[0], naive_moe_output(layer, x, weights, experts), atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# 5.2 The MoE layer against a loop over tokens and experts
def random_assignments(N, n_expert, top_k):
    g = torch.Generator().manual_seed(2)
    experts = torch.rand(N, n_expert, generator=g).argsort(-1)[:, :top_k]
    return experts, torch.rand(N, top_k, generator=g)


def test_dispatch_equals_the_naive_loop_dropless_in_eval():
    layer = moe_layer().eval()
    x = torch.randn(10, 16)
    experts, weights = random_assignments(10, 4, 2)
    with torch.no_grad():
        assert torch.allclose(layer.dispatch(x, weights, experts), naive_moe_output(layer, x, weights, experts),
                              atol=1e-5)


def test_dispatch_in_training_drops_what_the_naive_rule_drops():
    layer = moe_layer(capacity_factor=0.5).train()
    x = torch.randn(10, 16)
    experts, weights = random_assignments(10, 4, 2)
    capacity = 3  # ceil(0.5 * 10 tokens * 2 / 4 experts)
    assert len(naive_kept(experts.tolist(), capacity)) < 20  # something is dropped
    with torch.no_grad():
        got = layer.dispatch(x, weights, experts)
        assert torch.allclose(got, naive_moe_output(layer, x, weights, experts, capacity), atol=1e-5)
        assert not torch.allclose(got, naive_moe_output(layer, x, weights, experts), atol=1e-3)


@pytest.mark.parametrize("overrides", [{}, {"top_k": 1}, {"n_shared_expert": 1}, {"n_shared_expert": 2, "top_k": 3}])
def test_moe_forward_equals_naive_routing_plus_shared_experts(overrides):
    """5.4 shared experts see every token: output = routed output + the sum of the shared SwiGLUs."""
    layer = moe_layer(**overrides).eval()
    x = torch.randn(2, 5, 16)
    flat = x.reshape(10, 16)
    _, experts, weights = naive_routing(layer, flat)
    expected = naive_moe_output(layer, flat, weights, experts)
    for s in range(layer.shared.c_fc.size(0) if layer.shared is not None else 0):
        expected += torch.stack([swiglu(v, layer.shared.c_fc[s], layer.shared.c_proj[s]) for v in flat])
    with torch.no_grad():
        assert torch.allclose(layer(x), expected.view(2, 5, 16), atol=1e-5)


def test_the_balance_bias_steers_the_layers_choice_not_its_weights():
    layer = moe_layer(capacity_factor=0).train()
    layer.balance_bias.copy_(torch.tensor([0.0, 0.0, 0.0, 2.0]))  # beats any gap in probability (< 1)
    x = torch.randn(10, 16)
    _, experts, weights = naive_routing(layer, x)
    assert (experts[:, 0] == 3).all()
    with torch.no_grad():
        assert torch.allclose(layer(x[None])[0], naive_moe_output(layer, x, weights, experts), atol=1e-5)
    assert layer.load_total[3] == 10  # every token went to expert 3


def test_one_expert_with_k1_is_the_dense_swiglu_mlp():
    layer = moe_layer(n_expert=1, top_k=1, expert_hidden=12)
    mlp = model.MLP(model.GPTConfig(n_embd=16, n_head=2, bias=False, mlp_hidden=12))
    with torch.no_grad():  # nn.Linear keeps (out, in); the experts keep (in, out)
        mlp.c_fc.weight.copy_(layer.experts.c_fc[0].T)
        mlp.c_proj.weight.copy_(layer.experts.c_proj[0].T)
        x = torch.randn(2, 6, 16)
        for mode in (layer.eval, layer.train):  # one expert's softmax is exactly 1; capacity caps at N tokens
            mode()
            assert torch.allclose(layer(x), mlp(x), atol=1e-6)


# ----------------------------------------------------------------------------------------------------
# Gradients
def train_step(gpt, loss_of):
    """One forward in training mode on fixed tokens; backward of loss_of(loss, gpt); the (only) MoE layer."""
    gpt.train()
    idx = tokens((2, 16))
    _, loss = gpt(idx, idx.roll(-1, 1))
    loss_of(loss, gpt).backward()
    return moe.moe_layers(gpt)[0]


@pytest.mark.parametrize("top_k", [1, 2])
def test_lm_loss_alone_reaches_the_router_and_every_expert_that_got_tokens(top_k):
    gpt = moe_gpt(n_layer=1, top_k=top_k, aux_loss_coef=0, z_loss_coef=0, capacity_factor=0)
    layer = train_step(gpt, lambda loss, _: loss)
    assert layer.router.weight.grad.abs().sum() > 0  # k = 1 too: its weight is the raw probability
    got_tokens = layer.load_total > 0
    assert got_tokens.sum() >= 2
    for grads in (layer.experts.c_fc.grad, layer.experts.c_proj.grad):
        assert torch.equal(grads.flatten(1).abs().sum(1) > 0, got_tokens)


@pytest.mark.parametrize("top_k", [1, 2])
@pytest.mark.parametrize("coefs", [(1.0, 0.0), (0.0, 1.0)])
def test_aux_losses_alone_reach_the_router_and_no_expert(top_k, coefs):
    gpt = moe_gpt(n_layer=1, top_k=top_k, aux_loss_coef=coefs[0], z_loss_coef=coefs[1])
    layer = train_step(gpt, lambda _, gpt: gpt.aux_loss())
    assert layer.router.weight.grad.abs().sum() > 0
    assert layer.experts.c_fc.grad is None and layer.experts.c_proj.grad is None


# ----------------------------------------------------------------------------------------------------
# The model: where the MoE layers are, what a token costs, the training loss, decoding
@pytest.mark.parametrize("overrides, kinds", [
    ({"n_layer": 4, "moe_every": 2}, ["MLP", "MoE", "MLP", "MoE"]),
    ({"n_layer": 3, "moe_every": 1}, ["MoE", "MoE", "MoE"]),
    ({"n_layer": 3, "moe_every": 3}, ["MLP", "MLP", "MoE"]),
    ({"n_layer": 2, "n_expert": 0}, ["MLP", "MLP"]),
])
def test_moe_every_puts_moe_in_every_kth_block(overrides, kinds):
    gpt = model.GPT(config(**overrides))
    assert [type(b.mlp).__name__ for b in gpt.blocks] == kinds


def test_active_params_and_flops_by_hand():
    gpt = model.GPT(config(n_layer=2, moe_every=2, expert_hidden=6, n_shared_expert=1))  # C=16, V=32, E=4, k=2
    C, V, H, dense_hidden = 16, 32, 6, 43                        # dense SwiGLU: round(8 * 16 / 3) = 43
    attention = (C * 3 * C + 3 * C) + (C * C + C)                # c_attn and c_proj with biases
    block = 2 * C + attention                                    # + two RMSNorm weights
    dense_mlp = (C * 2 * dense_hidden + 2 * dense_hidden) + (dense_hidden * C + C)
    expert = C * 2 * H + H * C                                   # no biases
    moe_mlp = C * 4 + 4 * expert + 1 * expert                    # router, 4 routed experts, 1 shared
    total = V * C + 2 * block + dense_mlp + moe_mlp + C          # tied embedding; final norm
    active = total - (4 - 2) * expert                            # a token skips 2 of the 4 routed experts
    assert gpt.num_params() == total
    assert gpt.num_active_params() == pytest.approx(active)
    assert gpt.flops_per_token() == pytest.approx(6 * active + 12 * 2 * C * 48)


def test_training_loss_is_cross_entropy_plus_the_weighted_aux_losses():
    gpt = moe_gpt(n_layer=2, aux_loss_coef=0.1, z_loss_coef=0.01, capacity_factor=1.25)
    inputs = []
    for layer in moe.moe_layers(gpt):
        layer.register_forward_pre_hook(lambda m, args: inputs.append((m, args[0].reshape(-1, 16))))
    idx = tokens((2, 16))
    with torch.no_grad():
        logits, loss = gpt.train()(idx, idx.roll(-1, 1))
        ce = F.cross_entropy(logits.view(-1, 32), idx.roll(-1, 1).view(-1))
        aux = 0
        for layer, x in inputs:
            probs, experts, _ = naive_routing(layer, x)
            router_logits = x @ layer.router.weight.T
            z = router_logits.exp().sum(-1).log().pow(2).mean()
            aux += 0.1 * switch_balance(probs, experts) + 0.01 * z
        assert len(inputs) == 2 and aux > 1e-3
        assert loss.item() == pytest.approx((ce + aux).item(), rel=1e-5)
        logits, loss = gpt.eval()(idx, idx.roll(-1, 1))  # validation: pure cross-entropy
        assert loss.item() == pytest.approx(F.cross_entropy(logits.view(-1, 32), idx.roll(-1, 1).view(-1)).item())


PROMPTS = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [7, 8], [9], [3, 3, 3, 3]]


def test_cached_generation_equals_recomputation_for_an_moe_model():
    gpt = moe_gpt(moe_every=2, n_shared_expert=1).eval()
    prompt = torch.tensor(PROMPTS[:1] + [PROMPTS[3] * 2 + [1]])
    greedy = [gpt.generate(prompt, 25, temperature=0, use_cache=c) for c in (True, False)]
    assert torch.equal(*greedy)
    assert len(set(greedy[0][0, 9:].tolist())) > 2  # not one token repeated: routing varies along the text
    sampled = [gpt.generate(prompt, 25, generator=torch.Generator().manual_seed(3), use_cache=c) for c in (True, False)]
    assert torch.equal(*sampled)


def test_generate_batch_equals_prompt_by_prompt_recomputation_for_an_moe_model():
    gpt = moe_gpt().eval()
    out = decode.generate_batch(gpt, PROMPTS, 20)
    assert out == [gpt.generate(torch.tensor([p]), 20, temperature=0, use_cache=False)[0, len(p):].tolist()
                   for p in PROMPTS]


# ----------------------------------------------------------------------------------------------------
# 5.3 Aux-loss-free balancing and the expert-load statistics
def test_update_balance_bias_hand_example_and_the_bias_is_saved():
    gpt = model.GPT(config(bias_update_rate=0.1))
    first, second = moe.moe_layers(gpt)
    first.load_step.copy_(torch.tensor([3.0, 1.0, 2.0, 2.0]))   # mean 2: expert 0 over, expert 1 under
    second.load_step.copy_(torch.tensor([0.0, 0.0, 0.0, 8.0]))  # mean 2: expert 3 over, the others under
    moe.update_balance_bias(gpt, 0.1)
    assert first.balance_bias.tolist() == pytest.approx([-0.1, 0.1, 0.0, 0.0])
    assert second.balance_bias.tolist() == pytest.approx([0.1, 0.1, 0.1, -0.1])
    assert first.load_step.sum() == 0 and second.load_step.sum() == 0
    state = gpt.state_dict()
    assert "blocks.0.mlp.balance_bias" in state
    assert not any("load_step" in k or "load_total" in k for k in state)
    fresh = model.GPT(config(bias_update_rate=0.1))
    fresh.load_state_dict(state)
    assert torch.equal(moe.moe_layers(fresh)[1].balance_bias, second.balance_bias)


def test_training_forward_counts_the_load_and_take_expert_load_gives_shares_and_resets():
    gpt = model.GPT(config(bias_update_rate=0.1)).train()
    gpt(tokens((2, 8)))
    for layer in moe.moe_layers(gpt):
        assert layer.load_step.sum() == layer.load_total.sum() == 2 * 8 * 2  # N * k assignments
    shares = moe.take_expert_load(gpt)
    assert len(shares) == 2 and all(sum(s) == pytest.approx(1.0) for s in shares)
    moe.moe_layers(gpt)[0].load_total.copy_(torch.tensor([1.0, 3.0, 0.0, 4.0]))
    assert moe.take_expert_load(gpt) == [pytest.approx([0.125, 0.375, 0.0, 0.5]), [0.0] * 4]
    assert moe.take_expert_load(gpt) == [[0.0] * 4, [0.0] * 4]  # reset by the last call
    assert moe.take_expert_load(model.GPT(config(n_expert=0))) == []
    gpt.eval()(tokens((2, 8)))
    assert moe.take_expert_load(gpt) == [[0.0] * 4, [0.0] * 4]  # evaluation does not count


# ----------------------------------------------------------------------------------------------------
# Checkpoints across parts, and bad configs
def test_a_part4_checkpoint_loads_in_part5_and_gives_the_same_logits(tmp_path):
    torch.manual_seed(0)
    dense = model4.GPT(model4.GPTConfig(vocab_size=32, block_size=16, n_layer=2, n_head=2, n_embd=16)).eval()
    checkpoint4.save_checkpoint(str(tmp_path / "p4.pt"), dense, dense.config, step=1, val_loss=2.0)
    loaded, _ = checkpoint.load_checkpoint(str(tmp_path / "p4.pt"))
    assert loaded.config.n_expert == 0 and not moe.moe_layers(loaded)
    idx = tokens((2, 16))
    with torch.no_grad():
        assert torch.equal(loaded.eval()(idx)[0], dense(idx)[0])


def test_a_part5_moe_checkpoint_is_refused_by_part4_in_one_line(tmp_path, capsys):
    gpt = model.GPT(config())
    checkpoint.save_checkpoint(str(tmp_path / "p5.pt"), gpt, gpt.config, step=1, val_loss=2.0)
    with pytest.raises(SystemExit) as err:
        checkpoint4.load_checkpoint(str(tmp_path / "p5.pt"))
    assert "n_expert=4" in one_line_exit(err, capsys)


@pytest.mark.parametrize("overrides, words", [
    ({"top_k": 5}, "top_k"),                         # more than the 4 experts
    ({"top_k": 0}, "top_k"),
    ({"capacity_factor": -1.0}, "capacity_factor"),
    ({"capacity_factor": float("nan")}, "capacity_factor"),
    ({"aux_loss_coef": float("nan")}, "aux_loss_coef"),
    ({"z_loss_coef": float("nan")}, "z_loss_coef"),
    ({"bias_update_rate": float("inf")}, "bias_update_rate"),
    ({"mlp": "gelu"}, "swiglu"),
    ({"moe_every": 0}, "moe_every"),
    ({"n_expert": -1}, "n_expert"),
])
def test_config_rejects_bad_moe_values(overrides, words):
    with pytest.raises(ValueError, match=words):
        config(**overrides)


# ----------------------------------------------------------------------------------------------------
# 5.1 The worked example
def test_moe_by_hand_agrees_with_moe_py(capsys):
    r = by_hand.main()
    assert "OK: every step matches moe.py" in capsys.readouterr().out
    # by hand: logits = x @ W_router = [[2, 1, -2], [1, 2, -1], [-1, -2, 1], [1, -2, -1]]
    assert r["experts"].tolist() == [[0, 1], [1, 0], [2, 0], [0, 2]]
    probs, weights, experts = moe.route(r["logits"], 2)
    assert torch.allclose(r["probs"], probs) and torch.allclose(r["weights"], weights)
    assert r["f"].tolist() == [0.5, 0.25, 0.25]  # expert 0 got 4 of the 8 assignments
    assert r["balance"].item() == pytest.approx(moe.load_balancing_loss(probs, experts).item())
    assert r["z"].item() == pytest.approx(moe.router_z_loss(r["logits"]).item())
    # 3 slots each; expert 0 is filled by tokens 0 and 3 (first choices), then token 1: token 2's second is dropped
    assert (moe.assign_slots(experts, 3, r["capacity"]) >= 0).tolist() == r["kept"].tolist()
    assert r["kept"].tolist() == [[True, True], [True, True], [True, False], [True, True]]
    layer = by_hand.moe_layer()
    x = by_hand.X
    with torch.no_grad():
        assert torch.allclose(naive_moe_output(layer, x, weights, experts), r["out"], atol=1e-6)
        assert torch.allclose(naive_moe_output(layer, x, weights, experts, capacity=3), r["out_capped"], atol=1e-6)
