"""Part 1 milestone: the minimal GPT memorises the toy dataset (final training loss < 0.05).
Measured: 0.0022 after the default 300 steps (about 2 s on 2 CPU cores)."""
import pytest
from partloader import load_part

train = load_part("part1_transformer", "train")


@pytest.mark.milestone
def test_overfits_toy_dataset(capsys):
    train_cfg, model_cfg = train.parse_configs([], model_defaults={"block_size": 32, "n_layer": 2, "n_embd": 64})
    _, losses = train.main(train_cfg, model_cfg)
    print(f"final loss {losses[-1]:.4f}")
    assert losses[0] > 3.0  # starts near ln(vocab)
    assert losses[-1] < 0.05
    assert "To be, or not to be" in capsys.readouterr().out  # the greedy continuation is memorised
