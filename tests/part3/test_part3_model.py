"""Part 3's own checks: its scripts, its benchmark, and Part 2's model rebuilt from Part 3's options.

The upgrades themselves (RMSNorm, RoPE, SwiGLU, window + sinks, the KV cache) are carried into every later
part unchanged, so their tests are in tests/test_carried_forward.py, run on every part that defines them."""
import pytest
import torch
import torch.nn.functional as F
from partloader import assert_one_line_error, load_part, run_script

model, train, sample = load_part("part3_modern", "model", "train", "sample")

PART2_FLAGS = dict(norm="layernorm", pos_embedding="learned", mlp="gelu")


def small_config(**overrides):
    base = dict(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_embd=32)
    return model.GPTConfig(**{**base, **overrides})


def small_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return model.GPT(small_config(**overrides)).eval()


# --- Part 2 compatibility, scripts, the benchmark
def test_bad_model_flags_are_one_line_errors(capsys):
    assert_one_line_error(run_script("part3_modern/train.py", "--norm", "batchnorm"), "norm")  # end to end, once
    with pytest.raises(SystemExit):  # the next in-process: a subprocess costs seconds of start-up
        train.parse_configs(["--window", "100"])
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "error" in last and "block_size" in last, last


def test_part2_flags_give_part2s_model():
    """Same weights, same logits as Part 2's own code: the benchmark's baseline really is Part 2."""
    part2 = load_part("part2_tiny_llm", "model")
    torch.manual_seed(0)
    theirs = part2.GPT(part2.GPTConfig(vocab_size=50, block_size=32, n_layer=2, n_head=4, n_embd=32)).eval()
    ours = model.GPT(small_config(**PART2_FLAGS)).eval()
    ours.load_state_dict(theirs.state_dict())
    idx = torch.randint(0, 50, (2, 32))
    assert torch.allclose(ours(idx)[0], theirs(idx)[0], atol=1e-6)


def test_sample_script_uses_the_cache_and_can_turn_it_off(tmp_path):
    gpt = model.GPT(model.GPTConfig(n_layer=1, n_embd=32, block_size=16))
    train.save_checkpoint(str(tmp_path / "best.pt"), gpt, gpt.config, step=1, val_loss=5.0)
    args = ["--checkpoint", str(tmp_path / "best.pt"), "--prompt", "ROMEO:", "--temperature", "0",
            "--max_new_tokens", "10"]
    assert sample.main(args) == sample.main([*args, "--no_cache"])  # within block_size: the same text
    long = sample.main([*args[:-1], "100"])[0]  # far past block_size 16
    assert long.startswith("ROMEO:") and len(long.encode()) >= 100


def test_streaming_benchmark_losses_agree_with_a_naive_loop():
    """bench.py's (a) recomputed and (b) rolling-cache losses: with one layer both equal a token-by-token loop
    over the last `context` tokens (one layer: a token's output depends only on the tokens its window sees)."""
    bench = load_part("part3_modern", "bench")
    gpt = small_model(n_layer=1, block_size=8)
    tokens = torch.randint(0, 50, (30,))
    naive = torch.stack([F.cross_entropy(gpt(tokens[None, max(0, t - 7):t + 1])[0][0, -1], tokens[t + 1])
                         for t in range(29)])
    assert torch.allclose(bench.losses_recomputed(gpt, tokens, context=8), naive, atol=1e-5)
    streamed, shapes = bench.losses_streamed(small_model(n_layer=1, block_size=8, window=8), tokens)
    assert torch.allclose(streamed, naive, atol=1e-5) and shapes == {(1, 4, 8, 8)}
