"""Part 4's own command line and checkpoints: resume configs, help lines, strict booleans, checkpoints between
parts, bad input. The training loop itself (accumulation, mixed precision, schedules, resume, logging,
several processes) is carried into later parts: tests/test_carried_forward_training.py runs it on each."""
import dataclasses

import pytest
import torch
from partloader import assert_one_line_error, load_part, run_script

model, train, sample = load_part("part4_scaling", "model", "train", "sample")


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
