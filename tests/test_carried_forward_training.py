"""Tests of Part 4's training loop, run on EVERY part that defines the name: later parts are copies of
Part 4, so their schedules, gradient accumulation, mixed precision, resume, logs and multi-process runs
must keep working there too (a fix in one copy and not the others fails here). Part 4's chapter-only
checks (its milestone, its command-line errors, checkpoints between parts) stay in tests/part4.
"""
import json
import math
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from partloader import load_part, part_params, parts_defining, run_script

# A small, fast run on the shipped corpus (its first 300k characters)
TINY = ["--preset", "tiny", "--max_chars", "300000", "--tokenizer_chars", "100000", "--tensorboard", "false"]


module_of = load_part  # one copy of each module per part (partloader keeps them)
params = part_params


def pretraining(train):
    """Part 6 on fine-tunes by default; these tests are of the pretraining loop, which --stage pretrain runs.
    (The fine-tuning run's resume and Ctrl-C are tested in test_bad_input.py, its batches in tests/part6.)"""
    return ["--stage", "pretrain"] if "stage" in train.TrainConfig.__dataclass_fields__ else []


def tiny_cfgs(train, tmp_path, *extra):
    return train.parse_configs([*TINY, *pretraining(train), "--out_dir", str(tmp_path), "--cache_dir",
                                str(tmp_path / "cache"), *extra])


def read_log(path):
    return [json.loads(line) for line in open(path)]


# --- 4.2 gradient accumulation and mixed precision
@pytest.mark.parametrize("part, mod", params("accumulate_gradients"))
def test_accumulated_gradients_equal_the_big_batch(part, mod):
    train, model = module_of(part, mod), module_of(part, "model")
    torch.manual_seed(0)
    gpt = model.GPT(model.GPTConfig(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32))
    x, y = torch.randint(0, 64, (2, 8, 16))
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    big_loss = train.accumulate_gradients(gpt, [(x, y)], nullcontext(), scaler)
    big = [p.grad.clone() for p in gpt.parameters()]
    gpt.zero_grad()
    micro = [(x[i:i + 2], y[i:i + 2]) for i in range(0, 8, 2)]  # 4 micro-batches of 2
    small_loss = train.accumulate_gradients(gpt, micro, nullcontext(), scaler)
    assert small_loss.item() == pytest.approx(big_loss.item(), rel=1e-5)  # floats: approx(0-d tensor) fails
    for a, b in zip(big, (p.grad for p in gpt.parameters())):
        assert torch.allclose(a, b, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("part, mod", params("pick_dtype"))
def test_dtype_choice(part, mod):
    train, model = module_of(part, mod), module_of(part, "model")
    assert train.pick_dtype("auto", "cpu")[0] == "fp32"  # CPUs without bf16 units are slower in bf16
    name, ctx, scale = train.pick_dtype("bf16", "cpu")
    assert (name, scale) == ("bf16", False)
    gpt = model.GPT(model.GPTConfig(vocab_size=32, block_size=8, n_layer=1, n_head=2, n_embd=16))
    with ctx:
        logits, loss = gpt(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long))
    assert logits.dtype == torch.bfloat16 and torch.isfinite(loss)
    with pytest.raises(SystemExit, match="fp16 needs a CUDA GPU"):
        train.pick_dtype("fp16", "cpu")


# --- 3.x warmup + cosine, 4.3 more schedules
def schedule_params():
    """(part, module, schedule) for every part with lr_at: Part 3 has cosine only (no `schedule` field)."""
    out = []
    for part, mod in parts_defining("lr_at"):
        fields = module_of(part, mod).TrainConfig.__dataclass_fields__
        for schedule in (["cosine", "wsd", "constant"] if "schedule" in fields else [None]):
            out.append(pytest.param(part, mod, schedule, id=f"{part}/{mod}.py-{schedule or 'cosine'}"))
    return out


@pytest.mark.parametrize("part, mod, schedule", schedule_params())
def test_schedules_warm_up_then_follow_their_shape(part, mod, schedule):
    train = module_of(part, mod)
    chosen = {"schedule": schedule} if schedule else {}
    cfg = train.TrainConfig(lr=1.0, warmup_steps=10, max_steps=110, min_lr_ratio=0.1, **chosen)
    lrs = [train.lr_at(s, cfg) for s in range(110)]
    assert lrs[:10] == pytest.approx([(s + 1) / 10 for s in range(10)])  # linear warmup to the peak
    assert max(lrs) == pytest.approx(1.0)
    assert all(a >= b - 1e-12 for a, b in zip(lrs[9:], lrs[10:]))  # never increases after warmup
    end = train.lr_at(110, cfg)
    if schedule in ("cosine", None):
        assert end == pytest.approx(0.1) and lrs[60] == pytest.approx(0.1 + 0.9 * 0.5)  # half-way: the mean
    elif schedule == "wsd":
        assert lrs[87] == 1.0 and end == pytest.approx(0.1)  # stable until 80% of the steps, then linear
        assert train.lr_at(99, cfg) == pytest.approx(1 - 0.9 * (99 - 88) / 22)
    else:
        assert end == 1.0


# --- 4.4 resume equals an uninterrupted run (training_state / restore_training_state, through train.main)
@pytest.mark.parametrize("part, mod", params("restore_training_state"))
def test_resumed_run_equals_uninterrupted_run(part, mod, tmp_path):
    """The fast version of the milestone's resume check: 12 steps straight == 6 steps, stop, resume to 12."""
    train = module_of(part, mod)
    run = ["--max_steps", "12", "--eval_interval", "6", "--log_interval", "1", "--dropout", "0.1",
           "--sample_tokens", "0"]
    straight = train.main(*tiny_cfgs(train, tmp_path / "straight", *run))
    cache = ["--cache_dir", str(tmp_path / "straight" / "cache")]
    train.main(*tiny_cfgs(train, tmp_path / "resumed", *run, "--stop_after", "6", *cache))
    # only --resume (and the output folder): every other setting comes from the checkpoint
    resumed = train.main(*train.parse_configs(["--resume", str(tmp_path / "resumed" / "last.pt"), *cache]))
    straight_losses = [r["loss"] for r in read_log(tmp_path / "straight" / "metrics.jsonl") if "loss" in r]
    resumed_losses = [r["loss"] for r in read_log(tmp_path / "resumed" / "metrics.jsonl") if "loss" in r]
    assert len(straight_losses) == 12
    assert resumed_losses == straight_losses  # exactly: same batches, same dropout masks, same optimizer state
    assert [h["val"] for h in resumed["history"]] == [h["val"] for h in straight["history"]]
    a = torch.load(tmp_path / "straight" / "last.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "resumed" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- 4.5 logging, plots, sampling from the checkpoint
@pytest.mark.parametrize("part, mod", params("RunLogger"))
def test_run_logger_writes_one_json_object_per_line(part, mod, tmp_path):
    logger = module_of(part, mod)
    log = logger.RunLogger(str(tmp_path), tensorboard=False)
    log.scalars(1, loss=2.5, val_loss=None)  # None: not measured this step, left out of the line
    log.close()
    log = logger.RunLogger(str(tmp_path), tensorboard=False, resume_step=1)  # a resumed run adds to the file
    log.scalars(2, loss=2.0, lr=1e-3)
    log.scalars(3, loss=1.5)
    log.close()
    rows = read_log(tmp_path / "metrics.jsonl")
    assert [{k: v for k, v in r.items() if k != "time"} for r in rows] == [{"step": 1, "loss": 2.5},
                                                                           {"step": 2, "loss": 2.0, "lr": 1e-3},
                                                                           {"step": 3, "loss": 1.5}]
    # killed after step 3, resumed from a checkpoint of step 2: step 3 is done again, so its old row goes
    log = logger.RunLogger(str(tmp_path), tensorboard=False, resume_step=2)
    log.scalars(3, loss=1.4)
    log.close()
    assert [(r["step"], r["loss"]) for r in read_log(tmp_path / "metrics.jsonl")] == [(1, 2.5), (2, 2.0), (3, 1.4)]
    logger.RunLogger(str(tmp_path / "missing"), enabled=False).scalars(3, loss=1.0)  # other ranks write nothing


@pytest.mark.parametrize("part, mod", params("RunLogger"))
def test_logs_plots_and_sampling(part, mod, tmp_path):
    train, plot_runs, sample = (module_of(part, m) for m in ("train", "plot_runs", "sample"))
    result = train.main(*tiny_cfgs(train, tmp_path, "--max_steps", "20", "--eval_interval", "10",
                                   "--log_interval", "5", "--grad_accum_steps", "2", "--schedule", "wsd"))
    rows = read_log(tmp_path / "metrics.jsonl")
    assert {"loss", "lr", "grad_norm", "tokens_per_s"} <= set(rows[1]) and any("val_loss" in r for r in rows)
    assert result["tokens_per_step"] == 8 * 64 * 2
    plot_runs.main([str(tmp_path / "metrics.jsonl"), "--out", str(tmp_path / "runs.png")])
    assert (tmp_path / "runs.png").stat().st_size > 5000
    texts = sample.main(["--checkpoint", str(tmp_path / "best.pt"), "--prompt", "The ", "--max_new_tokens", "5"])
    assert texts[0].startswith("The ")


@pytest.mark.parametrize("part, mod", params("unigram_loss"))
def test_unigram_baseline_is_the_frequency_entropy(part, mod):
    train_ids = np.array([0, 0, 1, 1])
    val_ids = np.array([0, 1])
    # add-one smoothing over a vocab of 3: p(0) = p(1) = 3/7
    assert module_of(part, mod).unigram_loss(train_ids, val_ids, 3) == pytest.approx(-math.log(3 / 7))


# --- several processes (distributed.py): 2 x batch 4 (gloo, CPU) == 1 x batch 8
@pytest.mark.parametrize("part, mod", params("wrap_model"))
def test_two_processes_match_one_process_with_the_same_global_batch(part, mod, tmp_path):
    train = module_of(part, "train")
    common = [*TINY, *pretraining(train), "--cache_dir", str(tmp_path / "cache"), "--max_steps", "6",
              "--eval_interval", "3",
              "--log_interval", "1", "--sample_tokens", "0"]
    train.main(*train.parse_configs([*common, "--batch_size", "8", "--out_dir", str(tmp_path / "one")]))
    # --standalone: torchrun finds a free port itself (a fixed port fails when another run holds it)
    two = run_script("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                     f"{part}/train.py", *common, "--batch_size", "4", "--out_dir", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    a = [r["loss"] for r in read_log(tmp_path / "one" / "metrics.jsonl") if "loss" in r]
    b = [r["loss"] for r in read_log(tmp_path / "two" / "metrics.jsonl") if "loss" in r]
    assert len(a) == len(b) == 6
    assert a == pytest.approx(b, abs=1e-4)
