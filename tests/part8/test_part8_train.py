"""Part 8's alignment run (train.py --stage align): the SFT and reward models found or made, each --algo run end
to end on a tiny config, its checkpoint a chat model that chat.py loads, its table and verdict; compare.py;
one-line errors for inputs that cannot work. (The losses: test_part8_rl_loss.py; the updates: test_part8_rl_train.py.)
"""
import json

import pytest
import torch
from partloader import exits_with_one_line, load_part

TINY = ["--preset", "tiny", "--max_chars", "300000", "--tokenizer_chars", "100000", "--tensorboard", "false",
        "--sample_tokens", "0", "--max_steps", "6", "--eval_interval", "3", "--log_interval", "1",
        "--train_per_family", "4", "--test_per_family", "2", "--sft_steps", "6", "--pairs_per_family", "4",
        "--error_prompts", "2", "--rm_steps", "4", "--rm_batch_size", "4", "--rl_steps", "2", "--rollouts", "8",
        "--group_size", "4", "--minibatch_size", "4", "--max_new_tokens", "6"]


@pytest.fixture(scope="module")
def part8():
    return load_part("part8_alignment", "train", "compare", "evaluate", "chat", "checkpoint")


def run(train, out, *extra):
    return train.main(*train.parse_configs([*TINY, "--out_dir", str(out), "--cache_dir", str(out.parent / "cache"),
                                            *extra]))


@pytest.fixture(scope="module")
def runs(part8, tmp_path_factory):
    """As in a fresh clone (no Part 6 or Part 7 model to find): the PPO run fine-tunes an SFT model and trains
    a reward model first; the GRPO and DPO runs find both in out_dir."""
    train = part8[0]
    patch = pytest.MonkeyPatch()
    patch.setattr(train, "SFTS", ())
    patch.setattr(train, "REWARD_MODELS", ())
    out = tmp_path_factory.mktemp("p8") / "run"
    results = {algo: run(train, out, "--algo", algo) for algo in ("ppo", "grpo")}
    results["dpo"] = run(train, out, "--algo", "dpo", "--dpo_pairs", "synthetic")  # a tiny model's answers rarely end
    yield out, results
    patch.undo()


def test_ppo_makes_its_sft_and_reward_models_then_aligns_and_grades(runs):
    out, results = runs
    ppo = results["ppo"]
    assert ppo["sft"] == str(out / "sft" / "best.pt") and ppo["reward_model"] == str(out / "rm" / "best.pt")
    for name in ("best.pt", "rl.png", "eval.md", "results.json", "metrics.jsonl"):
        assert (out / "ppo" / name).stat().st_size > 0, name
    saved = json.loads((out / "ppo" / "results.json").read_text())
    assert len(saved["history"]) == 2 and saved["reward"] == "rm"
    sft, policy = saved["eval"]["SFT"], saved["eval"]["PPO"]
    assert sft["win_rate"] == 0.5 and sft["kl"] == pytest.approx(0.0, abs=1e-4)  # the reference against itself
    for row in (sft, policy):
        assert 0 <= row["accuracy"] <= 1 and 0 <= row["format"] <= 1 and row["length"] >= 1
    assert saved["verdict"].startswith("verdict: ppo reward-model win rate")
    assert "| PPO |" in (out / "ppo" / "eval.md").read_text()


def test_grpo_and_dpo_find_the_models_the_first_run_made(runs):
    out, results = runs
    for algo in ("grpo", "dpo"):
        assert results[algo]["sft"] == str(out / "sft" / "best.pt"), algo
        assert results[algo]["reward_model"] == str(out / "rm" / "best.pt"), algo
    assert results["grpo"]["reward"] == "checker"
    assert "zero_groups" in results["grpo"]["history"][0]  # groups whose answers all scored the same
    assert "weak families" in results["grpo"]["verdict"]
    assert {"loss", "reward_accuracy", "margin"} <= set(results["dpo"]["history"][0])


def test_a_policy_is_a_chat_model_with_the_sft_tokenizer(part8, runs, capsys):
    train, _, evaluate, chat, checkpoint = part8
    out, _ = runs
    model, tok = evaluate.load_chat_model(str(out / "ppo" / "best.pt"))
    sft_ckpt = checkpoint.read_checkpoint(str(out / "sft" / "best.pt"))
    ppo_ckpt = checkpoint.read_checkpoint(str(out / "ppo" / "best.pt"))
    assert ppo_ckpt["tokenizer"] == sft_ckpt["tokenizer"] and ppo_ckpt["algo"] == "ppo"
    assert set(ppo_ckpt["value_head"]) == {"weight", "bias"}  # PPO's value head is kept beside the policy
    # the policy moved away from the SFT model it started from
    moved = any(not torch.equal(a, b) for a, b in zip(ppo_ckpt["model"].values(), sft_ckpt["model"].values()))
    assert moved
    text = chat.main(["--checkpoint", str(out / "dpo" / "best.pt"), "--prompt", "What is 2 + 3?",
                      "--max_new_tokens", "4"])
    assert isinstance(text, str)


def test_compare_puts_every_policy_in_one_table(part8, runs, tmp_path):
    compare = part8[1]
    out, _ = runs
    rows = compare.main(["--runs", str(out), "--out", str(tmp_path), "--test_per_family", "1",
                         "--max_new_tokens", "4"])
    assert list(rows) == ["SFT", "PPO", "GRPO", "DPO"]
    table = (tmp_path / "compare.md").read_text()
    assert all(f"| {name} |" in table for name in rows)
    assert (tmp_path / "compare.png").stat().st_size > 0
    assert set(json.loads((tmp_path / "compare.json").read_text())) == set(rows)


def test_compare_refuses_an_empty_folder_and_mixed_origins(part8, runs, tmp_path, capsys):
    compare, checkpoint = part8[1], part8[4]
    exits_with_one_line(capsys, lambda: compare.main(["--runs", str(tmp_path)]), "no policy", "--algo ppo")
    out, _ = runs
    ckpt = checkpoint.read_checkpoint(str(out / "dpo" / "best.pt"))
    (tmp_path / "ppo").mkdir()
    torch.save(ckpt, tmp_path / "ppo" / "best.pt")
    torch.save({**ckpt, "sft": "another/best.pt"}, (tmp_path / "grpo").mkdir() or tmp_path / "grpo" / "best.pt")
    exits_with_one_line(capsys, lambda: compare.main(["--runs", str(tmp_path)]), "different SFT or reward")


def test_ranked_pairs_that_come_out_empty_are_one_line(part8, runs, tmp_path, capsys):
    train = part8[0]
    out, _ = runs
    models = ["--sft", str(out / "sft" / "best.pt"), "--reward_model", str(out / "rm" / "best.pt")]
    exits_with_one_line(capsys, lambda: run(train, tmp_path / "r", "--algo", "dpo", *models, "--ranked_prompts", "1",
                                            "--max_new_tokens", "1"), "no preference pairs", "--dpo_pairs synthetic")


def test_the_same_run_twice_is_refused_before_any_work(part8, runs, capsys):
    train = part8[0]
    out, _ = runs
    exits_with_one_line(capsys, lambda: run(train, out, "--algo", "ppo"), "already holds a run", "--overwrite")


def test_a_reward_model_with_another_tokenizer_is_one_line(part8, runs, tmp_path, capsys):
    train, checkpoint = part8[0], part8[4]
    out, _ = runs
    rm = checkpoint.read_checkpoint(str(out / "rm" / "best.pt"))
    tok = dict(rm["tokenizer"])
    tok["special_tokens"] = {**tok["special_tokens"], "<|extra|>": max(tok["special_tokens"].values()) + 1}
    torch.save({**rm, "tokenizer": tok}, tmp_path / "rm.pt")
    exits_with_one_line(capsys, lambda: run(train, tmp_path / "o", "--sft", str(out / "sft" / "best.pt"),
                                            "--reward_model", str(tmp_path / "rm.pt")), "another tokenizer")


def test_models_that_are_not_what_they_should_be_are_one_line(part8, runs, tmp_path, capsys):
    train = part8[0]
    out, _ = runs
    sft, rm = str(out / "sft" / "best.pt"), str(out / "rm" / "best.pt")
    # a reward model where the SFT model belongs, and an SFT model where the reward model belongs
    exits_with_one_line(capsys, lambda: run(train, tmp_path / "a", "--sft", sft, "--reward_model", sft),
                        "not a reward model")
    exits_with_one_line(capsys, lambda: run(train, tmp_path / "b", "--sft", str(tmp_path / "none.pt"),
                                            "--reward_model", rm), "not found")


def test_a_bad_pairs_file_for_dpo_is_named_before_any_work(part8, runs, tmp_path, capsys):
    train = part8[0]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a"\n')
    exits_with_one_line(capsys, lambda: run(train, tmp_path / "d", "--algo", "dpo", "--dpo_pairs", str(bad)),
                        "line 2")
    assert not (tmp_path / "d").exists()  # refused before the run folder was made


def test_the_verdict_lines(part8):
    train = part8[0]
    sft = {"accuracy": 0.6, "kl": 0.0, "format": 1.0, "per_family": {"add": 0.2, "copy": 0.95},
           "per_family_sampled": {"add": 0.1, "copy": 0.9}}
    ppo = {"accuracy": 0.5, "kl": 1.5, "format": 0.99, "win_rate": 0.65, "win_rate_greedy": 0.55,
           "per_family": {"add": 0.3, "copy": 0.9}, "per_family_sampled": {"add": 0.4, "copy": 0.9}}
    line = train.align_verdict("ppo", {"SFT": sft, "PPO": ppo}, ["add"])
    assert "win rate against SFT 65.0% sampled (met" in line and "60.0% -> 50.0%" in line
    line = train.align_verdict("grpo", {"SFT": sft, "GRPO": ppo}, ["add"])
    assert "weak families 20.0% -> 30.0% greedy (met" in line and "10.0% -> 40.0% sampled" in line
    line = train.align_verdict("grpo", {"SFT": sft, "GRPO": {**ppo, "per_family": {"add": 0.2}}}, ["add"])
    assert "(MISSED" in line


def test_algorithm_defaults_fill_only_what_was_not_given(part8):
    train = part8[0]
    cfg, _ = train.parse_configs(["--algo", "grpo"])
    assert (cfg.rl_steps, cfg.rl_lr) == (0, 0.0)  # 0: not given
    filled = train.with_algo_defaults(cfg)
    assert (filled.rl_steps, filled.rl_lr) == (train.ALGO_DEFAULTS["grpo"]["rl_steps"],
                                               train.ALGO_DEFAULTS["grpo"]["rl_lr"])
    cfg, _ = train.parse_configs(["--algo", "grpo", "--rl_steps", "7"])
    assert train.with_algo_defaults(cfg).rl_steps == 7 and train.with_algo_defaults(cfg).rl_lr > 0
