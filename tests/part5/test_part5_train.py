"""Part 5's training loop with MoE layers: what accumulation means for an MoE, resume with the balancing bias,
and the expert-load log and plot. (Part 4's loop itself is tested on every part in test_carried_forward_training.py.)
"""
import json
from contextlib import nullcontext

import pytest
import torch
from partloader import load_part

TINY = ["--preset", "tiny", "--max_chars", "300000", "--tokenizer_chars", "100000", "--tensorboard", "false",
        "--n_expert", "4", "--sample_tokens", "0"]


@pytest.fixture(scope="module")
def part5():
    return load_part("part5_moe", "train", "model", "moe")


def tiny_cfgs(train, out, *extra):
    return train.parse_configs([*TINY, "--out_dir", str(out), "--cache_dir", str(out.parent / "cache"), *extra])


def grads_after(train, gpt, batches):
    gpt.zero_grad()
    loss = train.accumulate_gradients(gpt, batches, nullcontext(), torch.amp.GradScaler("cpu", enabled=False))
    return loss.item(), {name: p.grad.clone() for name, p in gpt.named_parameters()}


def test_accumulation_equals_the_big_batch_only_without_per_batch_terms(part5):
    """Gradient accumulation (4.2) relies on the loss being a mean over tokens. An MoE adds two terms that are
    not: the balancing loss is computed over each micro-batch (f and P are batch statistics), and capacity
    counts the tokens of each micro-batch. Dropless and without auxiliary losses, 4 x 2 sequences == 8."""
    train, model, _ = part5
    x, y = torch.randint(0, 64, (2, 8, 16))
    micro = [(x[i:i + 2], y[i:i + 2]) for i in range(0, 8, 2)]
    results = {}
    for aux in (0.0, 0.5):
        torch.manual_seed(0)
        gpt = model.GPT(model.GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32, n_expert=4,
                                        capacity_factor=0, aux_loss_coef=aux, z_loss_coef=0))
        results[aux] = grads_after(train, gpt, [(x, y)]), grads_after(train, gpt, micro)
    (big_loss, big), (small_loss, small) = results[0.0]
    assert small_loss == pytest.approx(big_loss, rel=1e-5)
    for name in big:
        assert torch.allclose(big[name], small[name], atol=1e-6, rtol=1e-4), name
    (big_loss, big), (small_loss, small) = results[0.5]
    router = "blocks.0.mlp.router.weight"
    assert not torch.allclose(big[router], small[router], atol=1e-6, rtol=1e-4)


def test_resume_with_the_balancing_bias_equals_a_straight_run(part5, tmp_path):
    """The bias of aux-loss-free balancing is state, not a parameter: it must be in last.pt (a buffer of the
    model), or a resumed run would start choosing experts differently."""
    train, _, _ = part5
    run = ["--max_steps", "8", "--eval_interval", "4", "--log_interval", "1", "--bias_update_rate", "0.01"]
    train.main(*tiny_cfgs(train, tmp_path / "straight", *run))
    train.main(*tiny_cfgs(train, tmp_path / "resumed", *run, "--stop_after", "4"))
    train.main(*train.parse_configs(["--resume", str(tmp_path / "resumed" / "last.pt"),
                                     "--cache_dir", str(tmp_path / "cache")]))
    rows = {name: [r["loss"] for r in map(json.loads, open(tmp_path / name / "metrics.jsonl")) if "loss" in r]
            for name in ("straight", "resumed")}
    assert len(rows["straight"]) == 8 and rows["resumed"] == rows["straight"]
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["model"]
    biases = [k for k in a if k.endswith("balance_bias")]
    assert len(biases) == 2 and any(a[k].abs().sum() > 0 for k in biases)  # the bias moved, and was saved
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_logs_expert_loads_and_plots_them(part5, tmp_path, capsys):
    train, _, moe = part5
    result = train.main(*tiny_cfgs(train, tmp_path / "out", "--max_steps", "6", "--eval_interval", "6",
                                   "--log_interval", "3"))
    rows = [json.loads(line) for line in open(tmp_path / "out" / "metrics.jsonl")]
    logged = [r for r in rows if "aux_balance" in r]
    assert [r["step"] for r in logged] == [1, 3, 6]
    assert all(1 <= r[f"max_load_layer{i}"] <= 4 for r in logged for i in range(2))  # between balanced and all-in-one
    assert all(0 < r["aux_balance"] < 4 and r["aux_z"] > 0 for r in logged)  # the balancing loss is at most E
    shares = result["expert_load"]
    assert len(shares) == 2 and all(sum(s) == pytest.approx(1.0) and len(s) == 4 for s in shares)
    assert (tmp_path / "out" / "expert_load.png").stat().st_size > 1000
    peak = max(max(s) * 4 for s in shares)  # the verdict line reports the busiest expert of the last interval
    assert f"experts: the busiest took {peak:.2f}x an even share" in capsys.readouterr().out


def test_a_dense_run_logs_no_expert_loads(part5, tmp_path):
    train, _, _ = part5
    result = train.main(*tiny_cfgs(train, tmp_path / "out", "--n_expert", "0", "--max_steps", "2",
                                   "--eval_interval", "2", "--log_interval", "1"))
    assert "expert_load" not in result and not (tmp_path / "out" / "expert_load.png").exists()
    assert not any("aux_balance" in line for line in open(tmp_path / "out" / "metrics.jsonl"))
