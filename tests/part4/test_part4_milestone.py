"""Part 4 milestone (CPU): a tiny config trained on the shipped Gutenberg corpus with BPE, gradient
accumulation, a warmup+cosine schedule, logging and a resume in the middle. Asserts the validation loss
beats the unigram baseline (token frequencies, no context) by a clear margin, and that the interrupted +
resumed run equals the straight run. Measured figures: part4_scaling/README.md."""
import json

import pytest
from partloader import load_part

train = load_part("part4_scaling", "train")

ARGS = ["--max_chars", "2000000", "--tokenizer_chars", "500000", "--bpe_vocab_size", "1024",
        "--block_size", "64", "--batch_size", "8", "--grad_accum_steps", "2", "--n_layer", "2", "--n_head", "4",
        "--n_embd", "64", "--max_steps", "600", "--warmup_steps", "50", "--lr", "3e-3", "--eval_interval", "100",
        "--eval_iters", "10", "--log_interval", "20", "--ckpt_interval", "100", "--sample_tokens", "40",
        "--tensorboard", "false"]
MARGIN = 1.2  # nats per token below the unigram baseline (measured: 1.55)


def losses(path):
    return [json.loads(line)["loss"] for line in open(path) if '"loss"' in line]


@pytest.mark.milestone
def test_tiny_bpe_run_with_resume_beats_unigram(tmp_path):
    cache = ["--cache_dir", str(tmp_path / "cache")]
    straight = train.main(*train.parse_configs([*ARGS, *cache, "--out_dir", str(tmp_path / "straight")]))
    train.main(*train.parse_configs([*ARGS, *cache, "--out_dir", str(tmp_path / "resumed"), "--stop_after", "300"]))
    resumed = train.main(*train.parse_configs([*ARGS, *cache, "--out_dir", str(tmp_path / "resumed"),
                                               "--resume", str(tmp_path / "resumed" / "last.pt")]))
    print(f"unigram {straight['unigram_val']:.3f} | straight best val {straight['best_val']:.3f} | "
          f"resumed best val {resumed['best_val']:.3f} | {straight['wall_time']:.0f}s")
    assert losses(tmp_path / "resumed" / "metrics.jsonl") == losses(tmp_path / "straight" / "metrics.jsonl")
    assert resumed["best_val"] == straight["best_val"]
    assert straight["best_val"] < straight["unigram_val"] - MARGIN
