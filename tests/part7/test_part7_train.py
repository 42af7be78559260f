"""Part 7's reward run: an SFT model found or fine-tuned, pairs built (with the SFT model's own mistakes), the
reward model trained and checked, its report and checkpoint; one-line errors for inputs that cannot work.
(Part 6's fine-tuning, which Part 7 carries as --stage sft, is tested on every part in test_bad_input.py.)
"""
import json

import pytest
import torch
from partloader import exits_with_one_line, load_part

TINY = ["--preset", "tiny", "--max_chars", "300000", "--tokenizer_chars", "100000", "--tensorboard", "false",
        "--sample_tokens", "0", "--max_steps", "6", "--eval_interval", "3", "--log_interval", "3",
        "--train_per_family", "4", "--test_per_family", "3", "--sft_steps", "6", "--pairs_per_family", "6",
        "--error_prompts", "2", "--rm_steps", "6", "--rm_batch_size", "4"]


@pytest.fixture(scope="module")
def part7():
    return load_part("part7_reward", "train", "rm_train", "reward_model", "preferences", "checkpoint")


def run(train, out, *extra):
    return train.main(*train.parse_configs([*TINY, "--out_dir", str(out), "--cache_dir", str(out.parent / "cache"),
                                            *extra]))


@pytest.fixture(scope="module")
def tiny_run(part7, tmp_path_factory):
    """One small reward run for the module, as in a fresh clone: Part 6's best.pt is not looked for."""
    patch = pytest.MonkeyPatch()
    patch.setattr(part7[0], "SFTS", ())
    out = tmp_path_factory.mktemp("p7") / "run"
    yield out, run(part7[0], out, "--sft", "auto")
    patch.undo()


def test_a_reward_run_fine_tunes_an_sft_model_then_trains_and_checks_the_reward_model(part7, tiny_run, capsys):
    _, rm_train, reward_model, *_ = part7
    out, result = tiny_run
    assert result["sft"] == str(out / "sft" / "best.pt")  # no Part 6 model here: one was fine-tuned first
    for name in ("best.pt", "report.md", "rewards.png", "margins.png", "results.json", "metrics.jsonl"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "results.json").read_text())
    accuracy = saved["report"]["accuracy"]
    assert 0 <= accuracy["overall"] <= 1 and {"wrong_answer", "ignores_instruction"} <= set(accuracy)
    assert saved["pairs"]["train"] >= 17 * 6  # every family's pairs (and any sampled mistakes)
    assert set(saved["report"]["sft_logprob"]) == set(accuracy)  # the untrained reference, kind by kind
    assert "| overall |" in (out / "report.md").read_text()
    rm, ckpt = reward_model.load_reward_model(str(out / "best.pt"))
    assert ckpt["sft"] == result["sft"] and isinstance(rm.head, torch.nn.Linear)


def test_the_verdict_names_every_target(part7):
    rm_train = part7[1]
    report = {"accuracy": {"overall": 0.97, "filler": 0.99, "truncated": 0.80},
              "model_errors": {"pairs": 10, "accuracy": 0.95},
              "length_bias": {"share_higher": 0.02, "passed": True}}
    line = rm_train.verdict(report)
    assert "overall 97.0% (met" in line and "worst kind (truncated) 80.0% (MISSED" in line
    assert "own wrong answers 95.0% (met" in line and "(none)" in line


def test_a_second_run_finds_the_sft_model_the_first_one_made(part7, tiny_run, capsys):
    train = part7[0]
    out, _ = tiny_run
    cfg, _ = train.parse_configs([*TINY, "--out_dir", str(out)])
    assert train.find_sft(cfg) == str(out / "sft" / "best.pt")
    cfg, _ = train.parse_configs([*TINY, "--out_dir", str(out), "--sft", "x.pt"])
    assert train.find_sft(cfg) == "x.pt"


def test_user_pairs_train_and_a_bad_line_is_named_before_any_work(part7, tiny_run, tmp_path, capsys):
    train, _, _, preferences, _ = part7
    sft = str(tiny_run[0] / "sft" / "best.pt")
    pairs = preferences.make_pairs("train", 3, 0)
    good = tmp_path / "pairs.jsonl"
    preferences.write_pairs_jsonl(pairs, good)
    result = run(train, tmp_path / "own", "--sft", sft, "--pairs", str(good))
    assert result["pairs"]["test_errors"] == 0 and result["pairs"]["train"] + result["pairs"]["test"] == len(pairs)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text().splitlines()[0] + "\n{not json\n")
    line = exits_with_one_line(capsys, lambda: run(train, tmp_path / "bad_run", "--pairs", str(bad)))
    assert "line 2" in line and not (tmp_path / "bad_run").exists()  # nothing made, no SFT fine-tuned


def test_a_base_model_without_chat_tokens_is_one_line(part7, tmp_path, capsys):
    train = part7[0]
    base = run(train, tmp_path / "base", "--stage", "pretrain")["checkpoint"]
    line = exits_with_one_line(capsys, lambda: run(train, tmp_path / "rm", "--sft", base))
    assert "not a fine-tuned model" in line and "--sft" in line


def test_resume_is_refused_for_the_reward_run(part7, tmp_path, capsys):
    train = part7[0]
    cfg, model_cfg = train.parse_configs([*TINY, "--out_dir", str(tmp_path / "rm")])
    cfg.resume = str(tmp_path / "last.pt")  # as if resume_configs had kept --stage reward
    line = exits_with_one_line(capsys, lambda: train.main(cfg, model_cfg))
    assert "--resume" in line and "--stage sft" in line and not (tmp_path / "rm").exists()


def test_pair_batches_stack_chosen_then_rejected_on_either_side(part7, tiny_run):
    _, rm_train, reward_model, preferences, _ = part7
    rm, ckpt = reward_model.load_reward_model(str(tiny_run[0] / "best.pt"))
    tok = load_part("part7_reward", "sample").checkpoint_tokenizer(ckpt, "best.pt")
    pairs = preferences.make_pairs("test", 2, 0)[:5]
    score = reward_model.make_scorer(rm, tok)
    by_text = score([p.prompt for p in pairs] * 2, [p.chosen for p in pairs] + [p.rejected for p in pairs])
    for side in ("right", "left"):
        data = rm_train.encode_pairs(pairs, tok, rm.trunk.config.block_size, side)
        idx, mask = rm_train.pair_batch(data, torch.arange(5), "cpu")
        assert idx.shape[0] == 10
        with torch.no_grad():
            assert torch.allclose(rm.eval()(idx, mask), by_text, atol=1e-5)


def test_the_reward_lr_warms_up_then_decays_to_a_tenth(part7):
    train = part7[0]
    cfg, _ = train.parse_configs(["--rm_steps", "100", "--rm_lr", "1e-3", "--schedule", "wsd", "--lr", "5"])
    schedule = train.reward_schedule(cfg)  # its own: the fine-tuning flags (--schedule, --lr) do not reach it
    lrs = [train.lr_at(s, schedule) for s in range(100)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:])) and lrs[-1] == pytest.approx(1e-4, rel=0.01)


def test_chat_and_evaluate_refuse_a_reward_model(part7, tiny_run, capsys):
    evaluate = load_part("part7_reward", "evaluate")
    line = exits_with_one_line(capsys, lambda: evaluate.load_chat_model(str(tiny_run[0] / "best.pt")))
    assert "is a reward model" in line and "out/part6/best.pt" in line
    model, tok = evaluate.load_chat_model(str(tiny_run[0] / "sft" / "best.pt"))  # the SFT model still chats
    assert tok.vocab_size <= model.config.vocab_size
