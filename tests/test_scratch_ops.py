"""The course's own softmax and cross-entropy (2.3), AdamW and gradient clipping (2.4), checked against torch's
in every part that carries them: functional.py, optim.py and sampling.py are copied forward from Part 2."""
import copy

import pytest
import torch
import torch.nn.functional as F
from partloader import ROOT, load_part

PARTS = sorted(p.name for p in ROOT.glob("part[0-9]*_*") if (p / "functional.py").exists())
SAMPLING_PARTS = sorted(p.name for p in ROOT.glob("part[0-9]*_*") if (p / "sampling.py").exists())
TOL = 1e-6


def test_parts_are_found():
    assert "part2_tiny_llm" in PARTS and "part2_tiny_llm" in SAMPLING_PARTS
    for part in PARTS:
        assert (ROOT / part / "optim.py").exists(), f"{part} has functional.py but no optim.py"


@pytest.fixture(params=PARTS, scope="module")
def functional(request):
    return load_part(request.param, "functional")


@pytest.fixture(params=PARTS, scope="module")
def optim(request):
    return load_part(request.param, "optim")


def logits_of_scale(scale, dtype, shape=(16, 50), seed=0):
    """Random logits with entries of both signs up to `scale` in size, and one row that is nearly a tie."""
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale
    x[0] = scale  # every entry the same large value: exp of it overflows unless the maximum is subtracted
    x[1, 0] = -scale
    return x.to(dtype)


# --- 2.3 softmax and cross-entropy
@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_softmax_matches_torch_without_overflow(functional, scale):
    x = logits_of_scale(scale, torch.float32)
    if scale == 1e4:
        assert torch.isinf(x.exp()).any()  # the naive formula would divide inf by inf here
    for dim in (-1, 0):
        ours = functional.softmax(x, dim=dim)
        assert torch.isfinite(ours).all()
        assert (ours - F.softmax(x, dim=dim)).abs().max() <= TOL
        assert torch.allclose(ours.sum(dim), torch.ones(()), atol=TOL)


def test_softmax_gives_masked_entries_zero_weight(functional):
    x = torch.tensor([[0.0, float("-inf"), 1.0], [float("-inf"), float("-inf"), 5.0]])
    assert torch.allclose(functional.softmax(x), F.softmax(x, dim=-1), atol=TOL)
    assert functional.softmax(x)[1].tolist() == [0.0, 0.0, 1.0]


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_cross_entropy_matches_torch_without_overflow(functional, scale):
    targets = torch.randint(0, 50, (16,), generator=torch.Generator().manual_seed(1))
    # float64: the loss itself can be ~1e4, where float32 only resolves steps of ~1e-3
    x = logits_of_scale(scale, torch.float64)
    ours = functional.cross_entropy(x, targets)
    assert torch.isfinite(ours) and abs(ours - F.cross_entropy(x, targets)) <= TOL
    x = logits_of_scale(scale, torch.float32)
    ours, ref = functional.cross_entropy(x, targets), F.cross_entropy(x, targets)
    assert torch.isfinite(ours) and abs(ours - ref) <= TOL * max(1.0, ref.abs().item())


@pytest.mark.parametrize("scale", [1.0, 1e4])
def test_cross_entropy_gradient_matches_torch(functional, scale):
    targets = torch.randint(0, 50, (16,), generator=torch.Generator().manual_seed(2))
    ours = logits_of_scale(scale, torch.float64).requires_grad_()
    ref = ours.detach().clone().requires_grad_()
    functional.cross_entropy(ours, targets).backward()
    F.cross_entropy(ref, targets).backward()
    assert torch.isfinite(ours.grad).all()
    assert (ours.grad - ref.grad).abs().max() <= TOL


def test_cross_entropy_of_half_precision_logits_is_computed_in_float32(functional):
    x = logits_of_scale(10.0, torch.bfloat16)
    targets = torch.arange(16)
    loss = functional.cross_entropy(x, targets)
    assert loss.dtype == torch.float32
    assert abs(loss - F.cross_entropy(x.float(), targets)) <= TOL * 10


# --- 2.4 AdamW
def two_groups(params):
    """Weight decay on the matrix, none on the bias, a different learning rate for each: as train.py groups them."""
    return [{"params": [params[0]], "weight_decay": 0.1, "lr": 3e-2},
            {"params": [params[1]], "weight_decay": 0.0, "lr": 1e-2}]


def make_params():
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(6, 5, generator=gen, requires_grad=True), torch.randn(6, generator=gen, requires_grad=True)]


def run_steps(optimizer, params, steps, first_step=0):
    """A least-squares loss on fresh data each step; halve the learning rates after step 5 (a schedule)."""
    for t in range(first_step, first_step + steps):
        gen = torch.Generator().manual_seed(100 + t)
        x, y = torch.randn(8, 5, generator=gen), torch.randn(8, 6, generator=gen)
        loss = ((x @ params[0].T + params[1] - y) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        if t == 5:
            for group in optimizer.param_groups:
                group["lr"] *= 0.5
        optimizer.step()


def assert_same(params_a, params_b, tol=TOL):
    for a, b in zip(params_a, params_b):
        assert (a - b).abs().max() <= tol


def test_adamw_matches_torch_over_ten_steps_with_weight_decay(optim):
    ours_p, ref_p = make_params(), make_params()
    kwargs = dict(betas=(0.9, 0.99), eps=1e-8)
    ours, ref = optim.AdamW(two_groups(ours_p), **kwargs), torch.optim.AdamW(two_groups(ref_p), **kwargs)
    start = [p.detach().clone() for p in ours_p]
    run_steps(ours, ours_p, 10)
    run_steps(ref, ref_p, 10)
    assert_same(ours_p, ref_p)
    for p, q in zip(ours_p, ref_p):
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert (ours.state[p][key] - ref.state[q][key]).abs().max() <= TOL
    assert ours.state[ours_p[0]]["step"].item() == 10
    assert all((a - b).abs().max() > 1e-2 for a, b in zip(ours_p, start))  # the parameters did move


def test_adamw_weight_decay_is_decoupled(optim):
    """With a zero gradient Adam's update is 0, so only the decay acts: p <- p * (1 - lr * wd)."""
    p = torch.ones(3, requires_grad=True)
    opt = optim.AdamW([p], lr=0.1, weight_decay=0.5)
    p.grad = torch.zeros(3)
    opt.step()
    assert torch.allclose(p.detach(), torch.full((3,), 0.95), atol=TOL)


@pytest.mark.parametrize("saved_by", ["course", "torch"])
def test_adamw_state_dict_is_interchangeable_with_torch(optim, saved_by):
    """Five steps with one optimizer, save its state dict, load it into the other kind, five more steps:
    the same as ten steps of torch's AdamW alone."""
    kinds = {"course": optim.AdamW, "torch": torch.optim.AdamW}
    first_p = make_params()
    first = kinds[saved_by](two_groups(first_p))
    run_steps(first, first_p, 5)
    state = copy.deepcopy(first.state_dict())
    second_p = [p.detach().clone().requires_grad_() for p in first_p]
    second = kinds["torch" if saved_by == "course" else "course"](two_groups(second_p))
    second.load_state_dict(state)
    run_steps(second, second_p, 5, first_step=5)
    ref_p = make_params()
    run_steps(torch.optim.AdamW(two_groups(ref_p)), ref_p, 10)
    assert_same(second_p, ref_p)


def test_adamw_rejects_bad_settings(optim):
    with pytest.raises(ValueError, match="betas"):
        optim.AdamW(make_params(), betas=(0.9, 1.0))


# --- 2.4 gradient clipping
def params_with_grads(scale):
    gen = torch.Generator().manual_seed(3)
    params = [torch.zeros(4, 3, requires_grad=True), torch.zeros(5, requires_grad=True),
              torch.zeros(2, requires_grad=True)]  # the last one gets no gradient, as a frozen parameter
    for p in params[:2]:
        p.grad = torch.randn(p.shape, generator=gen) * scale
    return params


@pytest.mark.parametrize("scale", [10.0, 1e-3])
def test_clip_grad_norm_matches_torch(optim, scale):
    ours, ref = params_with_grads(scale), params_with_grads(scale)
    before = [p.grad.clone() for p in ours[:2]]
    norm = optim.clip_grad_norm(ours, max_norm=1.0)
    ref_norm = torch.nn.utils.clip_grad_norm_(ref, max_norm=1.0)
    assert isinstance(norm, torch.Tensor) and abs(norm - ref_norm) <= TOL * max(1.0, ref_norm.item())
    expected_norm = torch.cat([g.flatten() for g in before]).norm()  # all gradients as one long vector
    assert abs(norm - expected_norm) <= TOL * max(1.0, expected_norm.item())
    for p, q in zip(ours[:2], ref[:2]):
        assert (p.grad - q.grad).abs().max() <= TOL
    clipped = torch.cat([p.grad.flatten() for p in ours[:2]]).norm()
    if scale > 1:
        assert abs(clipped - 1.0) <= 1e-5  # scaled down to the limit
    else:
        assert all(torch.equal(p.grad, b) for p, b in zip(ours, before))  # under the limit: untouched
    assert ours[2].grad is None


# --- 2.5 sampling with the course's softmax
@pytest.mark.parametrize("part", SAMPLING_PARTS)
def test_sampling_handles_huge_logits(part):
    sampling = load_part(part, "sampling")
    logits = torch.tensor([[1e4, 0.0, -1e4], [0.0, 1e4, 1e4 - 1.0]])
    gen = torch.Generator().manual_seed(0)
    draws = torch.cat([sampling.sample_next_token(logits, 1.0, top_p=0.99, generator=gen) for _ in range(20)], 1)
    assert draws[0].tolist() == [0] * 20
    assert set(draws[1].tolist()) <= {1, 2}
