"""Part 8 milestone check (CPU, small): from a small SFT model and a reward model trained on it (both made here,
as in a fresh clone), PPO, GRPO and DPO each run, keep their outputs well-formed and their KL to the SFT model
bounded, and DPO wins against the SFT model under the reward model.

This is a smaller version of the issue's milestone, which the default runs meet on Part 6's and Part 7's models
(part8_alignment/README.md, "Milestone"). On this small config (a 2-layer SFT model at 16% exact match) PPO's
and GRPO's gains are within noise, so they are not asserted: measured with seeds 1337 and 1, PPO's win rate
58.4% and 49.9%, GRPO's greedy accuracy on the weak families -0.6 and -3.8 points (50 iterations). What is
asserted was measured on this config (the figures beside each threshold), with a margin.
"""
import pytest
from partloader import load_part

SMALL = ["--preset", "tiny", "--max_chars", "300000", "--tokenizer_chars", "300000", "--bpe_vocab_size", "1024",
         "--base", "none", "--n_layer", "2", "--n_head", "2", "--n_embd", "64", "--block_size", "64",
         "--batch_size", "32", "--lr", "3e-3", "--warmup_steps", "40", "--eval_interval", "400", "--eval_iters", "4",
         "--log_interval", "50", "--train_per_family", "300", "--test_per_family", "20", "--tensorboard", "false",
         "--sample_tokens", "0", "--sft_steps", "800", "--pairs_per_family", "300", "--error_prompts", "20",
         "--rm_steps", "400", "--rm_batch_size", "16", "--rm_lr", "1e-3", "--max_new_tokens", "16",
         "--ranked_prompts", "60"]
RUNS = {"ppo": ["--rl_steps", "80", "--rl_lr", "2e-4"], "grpo": ["--rl_steps", "50", "--rl_lr", "1e-4",
                                                                  "--rollouts", "64"],
        "dpo": ["--rl_steps", "100"]}
MIN_DPO_WIN_RATE = 0.56  # measured 65.4% and 60.0% (seeds 1337 and 1)
MAX_KL = 5.0             # nats per answer; highest measured 2.32 (PPO)
MIN_MOVED_KL = 0.05      # the policy did change: lowest measured 0.18 (GRPO)
MIN_FORMAT = 0.90        # answers that end at <|end|>, non-empty, no stray chat token; lowest measured 94.4% (PPO)


@pytest.mark.milestone
def test_each_method_runs_within_bounds_and_dpo_wins_under_the_reward_model(tmp_path, monkeypatch):
    train = load_part("part8_alignment", "train")
    monkeypatch.setattr(train, "SFTS", ())           # as in a fresh clone: fine-tune the SFT model here
    monkeypatch.setattr(train, "REWARD_MODELS", ())  # and train the reward model here
    out = tmp_path / "run"
    results = {}
    for algo, extra in RUNS.items():
        args = [*SMALL, "--out_dir", str(out), "--cache_dir", str(tmp_path / "c"), "--algo", algo, *extra]
        results[algo] = train.main(*train.parse_configs(args))
    for algo, result in results.items():
        policy = result["eval"][algo.upper()]
        assert MIN_MOVED_KL <= policy["kl"] <= MAX_KL, (algo, policy["kl"])
        assert policy["format"] >= MIN_FORMAT, (algo, policy["format"])
    assert results["dpo"]["eval"]["DPO"]["win_rate"] >= MIN_DPO_WIN_RATE, results["dpo"]["eval"]["DPO"]
