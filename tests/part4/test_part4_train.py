"""Part 4: accumulation, mixed precision, schedules, resume, logging, multi-process, bad input."""
import json
import math

import numpy as np
import pytest
import torch
from partloader import assert_one_line_error, load_part, run_script

model, train, sample, plot_runs = load_part("part4_scaling", "model", "train", "sample", "plot_runs")

# A small, fast run on the shipped corpus (its first 300k characters)
TINY = ["--preset", "tiny", "--max_chars", "300000", "--tokenizer_chars", "100000", "--tensorboard", "false"]


def tiny_cfgs(tmp_path, *extra):
    return train.parse_configs([*TINY, "--out_dir", str(tmp_path), "--cache_dir", str(tmp_path / "cache"), *extra])


def read_log(path):
    return [json.loads(line) for line in open(path)]


# --- 4.2 gradient accumulation and mixed precision
def test_accumulated_gradients_equal_the_big_batch():
    torch.manual_seed(0)
    gpt = model.GPT(model.GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
    x, y = torch.randint(0, 64, (2, 8, 16))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    from contextlib import nullcontext

    big_loss = train.accumulate_gradients(gpt, [(x, y)], nullcontext(), scaler)
    big = [p.grad.clone() for p in gpt.parameters()]
    gpt.zero_grad()
    micro = [(x[i:i + 2], y[i:i + 2]) for i in range(0, 8, 2)]  # 4 micro-batches of 2
    small_loss = train.accumulate_gradients(gpt, micro, nullcontext(), scaler)
    assert small_loss == pytest.approx(big_loss, rel=1e-5)
    for a, b in zip(big, (p.grad for p in gpt.parameters())):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


def test_dtype_choice():
    assert train.pick_dtype("auto", "cpu")[0] == "fp32"  # CPUs without bf16 units are slower in bf16
    name, ctx, scale = train.pick_dtype("bf16", "cpu")
    assert (name, scale) == ("bf16", False)
    gpt = model.GPT(model.GPTConfig(vocab_size=32, block_size=8, n_layer=1, n_head=2, n_embd=16))
    with ctx:
        logits, loss = gpt(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    with pytest.raises(SystemExit, match="fp16 needs a CUDA GPU"):
        train.pick_dtype("fp16", "cpu")


# --- 4.3 schedules
@pytest.mark.parametrize("schedule", ["cosine", "wsd", "constant"])
def test_schedules_warm_up_then_follow_their_shape(schedule):
    cfg = train.TrainConfig(schedule=schedule, lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1)
    lrs = [train.lr_at(s, cfg) for s in range(110)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])  # linear warmup to the peak
    assert max(lrs) == pytest.approx(1.0)
    assert all(a >= b - 1e-12 for a, b in zip(lrs[9:], lrs[10:]))  # never increases after warmup
    end = train.lr_at(110, cfg)
    if schedule == "cosine":
        assert end == pytest.approx(0.1) and lrs[60] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way: the mean
    elif schedule == "wsd":
        assert lrs[87] == 1.0 and end == pytest.approx(0.1)  # stable until 80% of the steps, then linear
        assert train.lr_at(99, cfg) == pytest.approx(1 - 0.9 * (99 - 88) / 22)
    else:
        assert end == 1.0


# --- 4.4 resume equals an uninterrupted run
def test_resumed_run_equals_uninterrupted_run(tmp_path):
    straight = train.main(*tiny_cfgs(tmp_path / "straight", "--max_steps", "40", "--eval_interval", "10",
                                    "--log_interval", "1", "--dropout", "0.1", "--sample_tokens", "0"))
    cache = ["--cache_dir", str(tmp_path / "straight" / "cache")]
    first = tiny_cfgs(tmp_path / "resumed", "--max_steps", "40", "--eval_interval", "10", "--log_interval", "1",
                      "--dropout", "0.1", "--stop_after", "20", "--sample_tokens", "0", *cache)
    train.main(*first)
    second = tiny_cfgs(tmp_path / "resumed", "--max_steps", "40", "--eval_interval", "10", "--log_interval", "1",
                       "--dropout", "0.1", "--resume", str(tmp_path / "resumed" / "last.pt"), "--sample_tokens", "0",
                       *cache)
    resumed = train.main(*second)
    straight_losses = [r["loss"] for r in read_log(tmp_path / "straight" / "metrics.jsonl") if "loss" in r]
    resumed_losses = [r["loss"] for r in read_log(tmp_path / "resumed" / "metrics.jsonl") if "loss" in r]
    assert len(straight_losses) == 40
    assert resumed_losses == straight_losses  # exactly: same batches, same dropout masks, same optimizer state
    assert [h["val"] for h in resumed["history"]] == [h["val"] for h in straight["history"]]
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- 4.5 logging, plots, sampling from the checkpoint
def test_logs_plots_and_sampling(tmp_path):
    result = train.main(*tiny_cfgs(tmp_path, "--max_steps", "20", "--eval_interval", "10", "--log_interval", "5",
                                   "--grad_accum_steps", "2", "--schedule", "wsd"))
    rows = read_log(tmp_path / "metrics.jsonl")
    assert {"loss", "lr", "grad_norm", "tokens_per_s"} <= set(rows[1]) and any("val_loss" in r for r in rows)
    assert result["tokens_per_step"] == 8 * 64 * 2
    plot_runs.main([str(tmp_path / "metrics.jsonl"), "--out", str(tmp_path / "runs.png")])
    assert (tmp_path / "runs.png").stat().st_size > 5000
    texts = sample.main(["--checkpoint", str(tmp_path / "best.pt"), "--prompt", "The ", "--max_new_tokens", "5"])
    assert texts[0].startswith("The ")


def test_unigram_baseline_is_the_frequency_entropy():
    train_ids = np.array([0, 0, 1, 1])
    val_ids = np.array([0, 1])
    # add-one smoothing over a vocab of 3: p(0) = p(1) = 3/7
    assert train.unigram_loss(train_ids, val_ids, 3) == pytest.approx(-math.log(3 / 7))


# --- several processes: 2 x batch 4 (gloo, CPU) == 1 x batch 8
def test_two_processes_match_one_process_with_the_same_global_batch(tmp_path):
    common = [*TINY, "--cache_dir", str(tmp_path / "cache"), "--max_steps", "6", "--eval_interval", "3",
              "--log_interval", "1", "--sample_tokens", "0"]
    one = run_script("part4_scaling/train.py", *common, "--batch_size", "8", "--out_dir", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    two = run_script("-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29517",
                     "part4_scaling/train.py", *common, "--batch_size", "4", "--out_dir", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    a = [r["loss"] for r in read_log(tmp_path / "one" / "metrics.jsonl") if "loss" in r]
    b = [r["loss"] for r in read_log(tmp_path / "two" / "metrics.jsonl") if "loss" in r]
    assert len(a) == len(b) == 6
    assert a == pytest.approx(b, abs=1e-4)


# --- bad input
@pytest.mark.parametrize("args, words", [
    (["--schedule", "linear"], ["--schedule"]),
    (["--dtype", "fp8"], ["--dtype"]),
    (["--dtype", "fp16", "--device", "cpu"], ["fp16"]),
    (["--preset", "huge"], ["--preset"]),
    (["--grad_accum_steps", "0"], ["--grad_accum_steps"]),
    (["--data", "missing.txt"], ["not found"]),
    (["--tokenizer", "chars"], ["--tokenizer"]),
    (["--resume", "missing.pt"], ["not found"]),
])
def test_bad_flags_are_one_line_errors(args, words):
    assert_one_line_error(run_script("part4_scaling/train.py", "--preset", "tiny", "--max_chars", "100000", *args),
                          *words)


def test_resuming_another_chapters_checkpoint_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"arch": "part2_gpt", "model": {}}, path)
    assert_one_line_error(run_script("part4_scaling/train.py", "--preset", "tiny", "--max_chars", "100000",
                                     "--resume", str(path)), "part2_gpt")
