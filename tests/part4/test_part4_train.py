"""Part 4: accumulation, mixed precision, schedules, resume, logging, multi-process, bad input."""
import dataclasses
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
    assert small_loss.item() == pytest.approx(big_loss.item(), rel=1e-5)  # floats: approx(0-d tensor) fails
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
    """The fast version of the milestone's resume check: 12 steps straight == 6 steps, stop, resume to 12."""
    run = ["--max_steps", "12", "--eval_interval", "6", "--log_interval", "1", "--dropout", "0.1",
           "--sample_tokens", "0"]
    straight = train.main(*tiny_cfgs(tmp_path / "straight", *run))
    cache = ["--cache_dir", str(tmp_path / "straight" / "cache")]
    train.main(*tiny_cfgs(tmp_path / "resumed", *run, "--stop_after", "6", *cache))
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


def fake_last_pt(tmp_path, **train_overrides):
    """A last.pt with the configs a real one stores (the weights are never trained: parse_configs reads configs)."""
    cfg = model.GPTConfig(vocab_size=512, block_size=64, n_layer=1, n_head=2, n_embd=32)
    train_cfg = train.TrainConfig(**{"lr": 3e-3, "max_steps": 50, **train_overrides})
    path = str(tmp_path / "last.pt")
    train.save_checkpoint(path, model.GPT(cfg), cfg, 25, 4.0, {"train_config": dataclasses.asdict(train_cfg)})
    return path


def test_resume_takes_the_stored_configs(tmp_path, capsys):
    path = fake_last_pt(tmp_path, batch_size=4)
    train_cfg, model_cfg = train.parse_configs(["--resume", path, "--block_size", "64"])  # equal: fine
    assert (train_cfg.lr, train_cfg.batch_size, train_cfg.max_steps) == (3e-3, 4, 50)
    assert (model_cfg.block_size, model_cfg.n_embd, model_cfg.vocab_size) == (64, 32, 512)
    train_cfg, _ = train.parse_configs(["--resume", path, "--max_steps", "80", "--out_dir", str(tmp_path)])
    assert train_cfg.max_steps == 80 and train_cfg.out_dir == str(tmp_path)  # allowed, with a warning
    assert "warning: --max_steps 80" in capsys.readouterr().err


@pytest.mark.parametrize("flag, value", [("--block_size", "128"), ("--lr", "0.001"), ("--n_embd", "64"),
                                         ("--preset", "gpu")])
def test_resume_refuses_flags_that_contradict_the_checkpoint(tmp_path, flag, value):
    path = fake_last_pt(tmp_path)
    if flag == "--preset":  # a preset only changes defaults, and a resume takes the stored values instead
        assert train.parse_configs(["--resume", path, flag, value])[1].block_size == 64
        return
    with pytest.raises(SystemExit, match=f"{flag} {value}.*contradicts the checkpoint") as err:
        train.parse_configs(["--resume", path, flag, value])
    assert "\n" not in str(err.value)


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
    train.main(*train.parse_configs([*common, "--batch_size", "8", "--out_dir", str(tmp_path / "one")]))
    # --standalone: torchrun finds a free port itself (a fixed port fails when another run holds it)
    two = run_script("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                     "part4_scaling/train.py", *common, "--batch_size", "4", "--out_dir", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    a = [r["loss"] for r in read_log(tmp_path / "one" / "metrics.jsonl") if "loss" in r]
    b = [r["loss"] for r in read_log(tmp_path / "two" / "metrics.jsonl") if "loss" in r]
    assert len(a) == len(b) == 6
    assert a == pytest.approx(b, abs=1e-4)


# --- the command line: presets in --help, a help line per flag, strict booleans
def help_text(capsys, *argv):
    with pytest.raises(SystemExit) as err:
        train.parse_configs([*argv, "--help"])
    assert err.value.code == 0
    return capsys.readouterr().out


def flag_help(text, flag):
    """The help entry of one flag: from its line to the next flag's line."""
    lines = text.split("\n  --" + flag + " ")[1].split("\n  -")[0]
    return " ".join(lines.split())


def test_help_shows_the_presets_values(capsys):
    gpu = help_text(capsys, "--preset", "gpu")
    assert "(default: 0.0015)" in flag_help(gpu, "lr") and "(default: 768)" in flag_help(gpu, "n_embd")
    cpu = help_text(capsys)
    assert "(default: 0.002)" in flag_help(cpu, "lr") and "(default: 128)" in flag_help(cpu, "n_embd")


def test_every_flag_has_a_help_line(capsys):
    text = help_text(capsys)
    for f in dataclasses.fields(train.TrainConfig) + dataclasses.fields(train.GPTConfig):
        entry = flag_help(text, f.name)
        assert len(entry.split("(default:")[0].split(maxsplit=1)[-1]) > 5, f"--{f.name} has no help line: {entry}"
    assert "the longest context the model can see" in flag_help(text, "block_size")  # model.py's comment


def test_booleans_are_strict(capsys):
    assert train.parse_configs(["--tensorboard", "no", "--compile", "1"])[0].tensorboard is False
    assert train.parse_configs(["--tensorboard", "Yes"])[0].tensorboard is True
    with pytest.raises(SystemExit):
        train.parse_configs(["--compile", "maybe"])
    assert "--compile: expected true/false" in capsys.readouterr().err


# --- checkpoints move between parts: Part 3 <-> Part 4 (same architecture), a clear line otherwise
def test_part3_and_part4_checkpoints_load_in_each_other(tmp_path):
    part3_model, part3_ckpt = load_part("part3_modern", "model", "checkpoint")
    torch.manual_seed(0)
    cfg = dict(vocab_size=256, block_size=16, n_layer=1, n_head=2, n_embd=32)
    idx = torch.randint(0, 256, (1, 16))
    for make, save, load in ((part3_model, part3_ckpt.save_checkpoint, train.load_checkpoint),
                             (model, train.save_checkpoint, part3_ckpt.load_checkpoint)):
        gpt = make.GPT(make.GPTConfig(**cfg)).eval()
        save(str(tmp_path / "x.pt"), gpt, gpt.config, 1, 1.0)
        loaded, _ = load(str(tmp_path / "x.pt"))
        assert type(loaded) is not type(gpt)  # really the other part's class
        assert torch.equal(loaded.eval()(idx)[0], gpt(idx)[0])
    # Part 4's sample.py reads a Part 3 checkpoint (no tokenizer stored: bytes)
    gpt = part3_model.GPT(part3_model.GPTConfig(**cfg))
    part3_ckpt.save_checkpoint(str(tmp_path / "p3.pt"), gpt, gpt.config, 1, 1.0)
    assert sample.main(["--checkpoint", str(tmp_path / "p3.pt"), "--prompt", "ab", "--max_new_tokens", "3"])


def test_incompatible_checkpoints_name_the_difference(tmp_path):
    part2_model, part2_ckpt = load_part("part2_tiny_llm", "model", "checkpoint")
    gpt = part2_model.GPT(part2_model.GPTConfig(block_size=16, n_layer=1, n_head=2, n_embd=32))
    path = str(tmp_path / "part2.pt")
    part2_ckpt.save_checkpoint(path, gpt, gpt.config, 1, 1.0)
    with pytest.raises(SystemExit, match=r"does not fit.*does not set norm='rmsnorm', mlp='swiglu'") as err:
        train.load_checkpoint(path)
    assert "\n" not in str(err.value)
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_config"]["n_expert"] = 8  # an option from a later part
    torch.save(ckpt, path)
    with pytest.raises(SystemExit, match="options this part does not have \\(n_expert=8\\)"):
        train.load_checkpoint(path)


# --- bad input: one line naming the fix (in-process: a subprocess per case costs seconds of start-up)
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
def test_bad_flags_are_one_line_errors(args, words, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        train.main(*train.parse_configs(["--preset", "tiny", "--max_chars", "100000", "--out_dir", str(tmp_path),
                                         *args]))
    line = err.value.code if isinstance(err.value.code, str) else capsys.readouterr().err.strip().splitlines()[-1]
    assert "error" in line and "\n" not in line
    assert all(word in line for word in words), line


def test_resuming_another_chapters_checkpoint_is_refused(tmp_path):
    """End to end through the script: a one-line error, no traceback."""
    path = tmp_path / "other.pt"
    torch.save({"arch": "part2_gpt", "model": {}}, path)
    assert_one_line_error(run_script("part4_scaling/train.py", "--preset", "tiny", "--max_chars", "100000",
                                     "--resume", str(path)), "part2_gpt")
