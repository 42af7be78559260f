"""Part 6 milestone check (CPU, small): fine-tuning teaches a model that never saw the chat format to answer
in it, and to get some held-out items right, while the same model before fine-tuning gets none.

This is NOT the issue's milestone (>= 90% exact match averaged over the task families): the default run
misses that (see part6_sft/README.md, "Milestone"), so asserting it would fail, and a lowered 90% would
measure nothing. What is asserted here was measured on this config (THRESHOLDS below), with a margin.
"""
import json

import pytest
from partloader import load_part

SMALL = ["--preset", "tiny", "--max_chars", "300000", "--tokenizer_chars", "300000", "--bpe_vocab_size", "1024",
         "--base", "none", "--n_layer", "2", "--n_head", "2", "--n_embd", "64", "--block_size", "64",
         "--batch_size", "32", "--lr", "3e-3", "--max_steps", "800", "--warmup_steps", "40", "--eval_interval", "400",
         "--eval_iters", "4", "--log_interval", "100", "--train_per_family", "300", "--test_per_family", "20",
         "--tensorboard", "false", "--sample_tokens", "0"]
MIN_EXACT = 0.12  # measured 16.2% and 15.6% (seeds 1337 and 1); answering in the format and flipping a coin on
# the two yes/no-like families (contains, parity) would give about 6%
MAX_BASE_EXACT = 0.02  # a random model does not answer in the format at all (measured 0.0%)


@pytest.mark.milestone
def test_fine_tuning_beats_the_base_model_on_held_out_items(tmp_path):
    train = load_part("part6_sft", "train")
    train.main(*train.parse_configs([*SMALL, "--out_dir", str(tmp_path / "sft"), "--cache_dir", str(tmp_path / "c")]))
    sft = json.load(open(tmp_path / "sft" / "results.json"))["sft"]
    assert sft["base_exact"] <= MAX_BASE_EXACT
    assert sft["exact"] >= MIN_EXACT, f"exact match {sft['exact']:.1%} (mean over families), measured higher"
    assert sft["items_per_s"]["same_answers"]
