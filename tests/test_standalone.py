"""Every part runs on its own: copy the folder (and data/) anywhere and its train.py still works."""
import dataclasses
import shutil

import pytest
from partloader import ROOT, load_part, run_script

# The fastest arguments that still exercise each part's whole train.py.
FAST_ARGS = {
    "part1_transformer": ["--max_steps", "5"],
    "part2_tiny_llm": ["--max_steps", "4", "--eval_interval", "2", "--eval_iters", "1", "--sample_tokens", "8",
                       "--n_layer", "1", "--n_embd", "32", "--out_dir", "out"],
    "part3_modern": ["--max_steps", "4", "--eval_interval", "2", "--eval_iters", "1", "--sample_tokens", "8",
                     "--n_layer", "1", "--n_embd", "32", "--out_dir", "out"],
    "part4_scaling": ["--preset", "tiny", "--max_chars", "100000", "--tokenizer_chars", "50000", "--max_steps", "4",
                      "--eval_interval", "2", "--sample_tokens", "8", "--tensorboard", "false"],
    # Part 4's run with 2 experts a layer (the tiny preset alone trains a dense model, n_expert 0)
    "part5_moe": ["--preset", "tiny", "--max_chars", "100000", "--tokenizer_chars", "50000", "--max_steps", "4",
                  "--eval_interval", "2", "--sample_tokens", "8", "--tensorboard", "false", "--n_expert", "2"],
    # the whole fine-tuning path: no checkpoint in the copy, so --base auto pretrains a base first
    "part6_sft": ["--preset", "tiny", "--max_chars", "100000", "--tokenizer_chars", "50000", "--max_steps", "4",
                  "--eval_interval", "2", "--tensorboard", "false", "--base", "auto", "--base_steps", "4",
                  "--train_per_family", "4", "--test_per_family", "1"],
    # the whole reward path: no SFT model in the copy, so --sft auto fine-tunes one (on a base it pretrains)
    "part7_reward": ["--preset", "tiny", "--max_chars", "100000", "--tokenizer_chars", "50000", "--max_steps", "4",
                     "--eval_interval", "2", "--tensorboard", "false", "--base", "auto", "--base_steps", "4",
                     "--train_per_family", "4", "--test_per_family", "1", "--sft", "auto", "--sft_steps", "4",
                     "--pairs_per_family", "2", "--error_prompts", "1", "--rm_steps", "4", "--rm_batch_size", "2"],
    # the whole alignment path: a base pretrained, an SFT model fine-tuned, a reward model trained, then PPO
    "part8_alignment": ["--preset", "tiny", "--max_chars", "100000", "--tokenizer_chars", "50000", "--max_steps", "4",
                        "--eval_interval", "2", "--tensorboard", "false", "--base", "auto", "--base_steps", "4",
                        "--train_per_family", "4", "--test_per_family", "1", "--sft", "auto", "--sft_steps", "4",
                        "--pairs_per_family", "2", "--error_prompts", "1", "--rm_steps", "4", "--rm_batch_size", "2",
                        "--rl_steps", "2", "--rollouts", "4", "--minibatch_size", "4"],
    # the reasoning run: two small models from scratch, self-consistency, GRPO on the CoT model (no checkpoint needed)
    "part9_reasoning": ["--preset", "tiny", "--tensorboard", "false", "--log_interval", "2", "--reason_steps", "4",
                        "--reason_batch_size", "8", "--reason_train", "40", "--reason_test", "6", "--sc_samples", "3",
                        "--rl_steps", "2", "--rollouts", "8", "--group_size", "4", "--minibatch_size", "8",
                        "--eval_batch_size", "8"],
}


@pytest.mark.parametrize("part", sorted(FAST_ARGS))
def test_part_runs_from_a_copied_folder(part, tmp_path):
    shutil.copytree(ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__", "out", "results"))
    shutil.copytree(ROOT / "data", tmp_path / "data", ignore=shutil.ignore_patterns("cache"))
    result = run_script(f"{part}/train.py", *FAST_ARGS[part], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "loss" in result.stdout


def test_every_part_folder_is_listed():
    parts = sorted(p.name for p in ROOT.glob("part[0-9]*_*") if (p / "train.py").exists())
    assert parts == sorted(FAST_ARGS), "add the new part's fast arguments to FAST_ARGS"


@pytest.mark.parametrize("part", sorted(FAST_ARGS))
def test_help_lists_every_flag_with_its_default(part, capsys):
    """cli.py builds the command line from the config dataclasses the same way in every part."""
    train = load_part(part, "train")
    with pytest.raises(SystemExit) as err:
        train.parse_configs(["--help"])
    assert err.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    fields = [f.name for cls in (train.TrainConfig, train.GPTConfig) for f in dataclasses.fields(cls)]
    assert all(f"--{name} " in text for name in fields)
    assert text.count("(default: ") == len(fields)
