"""5.3 Expert parallelism (part5_moe/expert_parallel.py) on 2 real processes (gloo, CPU).

The expert-parallel layer must compute what one moe.MoE computes on the tokens of both processes together:
the same outputs, and the same gradients once they are put together (a process's experts' gradients as they
are, the replicated router's summed over the processes). No tokens may be dropped for that to hold (capacity
is per process), so the cases are dropless, have capacity_factor >= E/k, or run in evaluation mode. The bytes
each process sends must equal the formulas. One pair of processes runs every case (about 5 s).
"""
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from partloader import ROOT, load_part, one_line_exit

ep = load_part("part5_moe", "expert_parallel")
moe, model = load_part("part5_moe", "moe", "model")

W, B, T = 2, 3, 5  # processes, and each one's batch: N = 15 tokens per process
LAYER = dict(vocab_size=32, block_size=8, n_layer=2, n_head=2, n_embd=16, n_expert=4, expert_hidden=24)
CASES = {  # the name shows in a failure
    "top-2 dropless": dict(top_k=2, capacity_factor=0.0, train=True),
    "top-1 capacity E/k, a shared expert": dict(top_k=1, capacity_factor=4.0, n_shared_expert=1, train=True),
    "top-2 capacity 1.25, evaluation (dropless)": dict(top_k=2, capacity_factor=1.25, train=False),
}
GPT_SIZES = dict(vocab_size=64, block_size=8, n_layer=4, n_head=2, n_embd=16, n_expert=4, moe_every=2)  # measure()


def config_of(case):
    return model.GPTConfig(**LAYER, **{k: v for k, v in case.items() if k != "train"})


def grads(layer):
    return {name: p.grad.clone() for name, p in layer.named_parameters()}


def worker(rank, port, inputs, results):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=W)
    try:
        data, out = torch.load(inputs), {}
        for name, case in CASES.items():
            reference = moe.MoE(config_of(case))
            reference.load_state_dict(data[name]["state"])
            layer = ep.ExpertParallelMoE(config_of(case), rank, W).load_from(reference).train(case["train"])
            x = data[name]["x"][rank].clone().requires_grad_()
            ep.traffic["all_to_all"] = 0
            y = layer(x)
            (y * data[name]["g"][rank]).sum().backward()
            out[name] = {"y": y.detach(), "x_grad": x.grad, "grads": grads(layer), "z": layer.aux["z"].item(),
                         "load": layer.load_total.clone(), "bytes": ep.traffic["all_to_all"]}
        out["measure"] = ep.measure(model.GPTConfig(**GPT_SIZES), 2, rank, W)
        flat = torch.arange(11.0) * (rank + 1)  # 11: the two chunks differ in length
        expected = flat.clone()
        dist.all_reduce(expected)
        ep.traffic["all_reduce"] = 0
        out["ring"] = (ep.ring_all_reduce(flat), expected, ep.traffic["all_reduce"])
        torch.save(out, results.format(rank=rank))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Each case's reference layer and inputs -> both processes; returns (data, [rank 0's results, rank 1's])."""
    folder = tmp_path_factory.mktemp("expert_parallel")
    torch.manual_seed(0)
    data = {}
    for name, case in CASES.items():
        reference = moe.MoE(config_of(case))
        with torch.no_grad():
            reference.router.weight.mul_(3)  # clear winners: a near tie in the top-k could flip with rounding
            reference.balance_bias.normal_(0, 0.01)  # routing must use the bias, as moe.MoE does
        data[name] = {"state": reference.state_dict(), "x": torch.randn(W, B, T, 16), "g": torch.randn(W, B, T, 16)}
    torch.save(data, folder / "inputs.pt")
    # subtle: spawn starts fresh interpreters, which find worker() by importing this file by its module name
    # (tests.part5....): they need the repository root on sys.path, which a plain `pytest` leaves off
    sys.path.insert(0, str(ROOT))
    try:
        mp.spawn(worker, args=(ep.free_port(), str(folder / "inputs.pt"), str(folder / "results{rank}.pt")), nprocs=W)
    finally:
        sys.path.remove(str(ROOT))
    return data, [torch.load(folder / f"results{rank}.pt") for rank in range(W)]


@pytest.mark.parametrize("name", CASES)
def test_outputs_and_gradients_match_one_moe_on_all_tokens(run, name):
    data, results = run
    case, inputs = CASES[name], data[name]
    reference = moe.MoE(config_of(case)).train(case["train"])
    reference.load_state_dict(inputs["state"])
    x = inputs["x"].reshape(W * B, T, 16).requires_grad_()  # both processes' tokens in one batch
    y = reference(x)
    (y * inputs["g"].reshape(W * B, T, 16)).sum().backward()
    want, got = grads(reference), [r[name] for r in results]
    E_local = reference.n_expert // W
    for rank, r in enumerate(got):
        mine = slice(rank * B, (rank + 1) * B)
        torch.testing.assert_close(r["y"], y[mine].detach(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(r["x_grad"], x.grad[mine], atol=1e-5, rtol=1e-5)
        for param in ("experts.c_fc", "experts.c_proj"):  # a process's experts: the full gradient, no all-reduce
            torch.testing.assert_close(r["grads"][param], want[param][rank * E_local:(rank + 1) * E_local],
                                       atol=1e-5, rtol=1e-5)
    for param in [p for p in want if not p.startswith("experts.")]:  # replicated: the processes' parts sum up
        torch.testing.assert_close(sum(r["grads"][param] for r in got), want[param], atol=1e-5, rtol=1e-5)
    assert sum(r["z"] for r in got) / W == pytest.approx(reference.aux["z"].item(), rel=1e-5)
    if case["train"]:
        assert torch.equal(sum(r["load"] for r in got), reference.load_total)


@pytest.mark.parametrize("name", CASES)
def test_all_to_all_bytes_are_four_buffers_less_the_part_that_stays(run, name):
    case, (_, results) = CASES[name], run
    capacity = moe.expert_capacity(B * T, 4, case["top_k"], case["capacity_factor"] if case["train"] else 0)
    buffer_bytes = 4 * capacity * 16 * 4  # E x capacity x C floats of 4 bytes
    assert [r[name]["bytes"] for r in results] == [4 * buffer_bytes // 2] * W  # 2 forward + 2 backward, half leaves


def test_measured_step_bytes_equal_the_formula(run):
    _, results = run
    formula = ep.bytes_formula(model.GPTConfig(**GPT_SIZES), 2, W)
    for r in results:
        assert r["measure"] == formula
    a2a, reduced = formula["moe_ep"]
    assert a2a > 0 and formula["dense"][0] == formula["moe_dp"][0] == 0
    assert reduced < formula["dense"][1] < formula["moe_dp"][1]  # the experts' gradients stay home


def test_ring_all_reduce_sums_and_sends_2_w_minus_1_over_w_of_the_tensor(run):
    for result, expected, sent in (r["ring"] for r in run[1]):
        assert torch.equal(result, expected)
        assert sent == 2 * (W - 1) * 11 * 4 // W  # W=2: each process sends one chunk each way, 11 floats in all


def test_bad_flags_are_one_line_errors_and_the_table_stays_out_of_the_repository(capsys):
    assert ep.parse_args([])[0].out.startswith("out/")  # out/ is in .gitignore
    for argv in (["--n_expert", "3"], ["--n_expert", "0"], ["--batch_size", "0"], ["--world_size", "1"]):
        with pytest.raises(SystemExit) as exit_:
            ep.parse_args(argv)
        one_line_exit(exit_, capsys)
