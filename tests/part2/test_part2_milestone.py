"""Part 2 milestone check: the default `python part2_tiny_llm/train.py` reaches val loss <= 1.75 on the 100 KB file
in 2000 steps (measured 1.6778, part2_tiny_llm/README.md). The check trains the same config for half the steps,
to keep the suite within its time, and asserts what that measured with a margin: val 1.8120 and 1.7918, 71% and
60% of sampled words in the training text (seeds 1337 and 1). A bigram model gets 2.36-2.48 on the same split
(exercise 2.C), so val <= 1.90 is a model that has learned far more than letter pairs."""
import pytest
from partloader import load_part

train = load_part("part2_tiny_llm", "train")


@pytest.mark.milestone
def test_default_config_reaches_val_loss_and_writes_words(tmp_path):
    train_cfg, model_cfg = train.parse_configs(["--out_dir", str(tmp_path), "--max_steps", "1000"])
    result = train.main(train_cfg, model_cfg)
    print(f"best val {result['best_val']:.4f}, word overlap {result['word_overlap']:.0%}, {result['wall_time']:.0f}s")
    assert result["best_val"] <= 1.90
    assert result["word_overlap"] >= 0.50
