"""Part 5 milestone (CPU): a small dense model, the same model with 8 experts (top-2, half-width experts: the
same active parameters) and that MoE without its balancing losses, trained on the same tokens with the same
seed. Asserts the MoE trains as well as dense within a margin, the balancing losses keep every expert near its
share, and without them the router piles tokens onto a few experts. The full comparison is bench.py's; its
figures are in part5_moe/README.md."""
import pytest
from partloader import load_part

train, bench = load_part("part5_moe", "train", "bench")

ARGS = ["--preset", "tiny", "--max_chars", "1000000", "--tokenizer_chars", "300000", "--bpe_vocab_size", "512",
        "--block_size", "64", "--batch_size", "16", "--n_layer", "2", "--n_head", "4", "--n_embd", "64",
        "--max_steps", "500", "--warmup_steps", "50", "--lr", "3e-3", "--eval_interval", "250", "--eval_iters", "10",
        "--log_interval", "50", "--ckpt_interval", "500", "--sample_tokens", "0", "--tensorboard", "false",
        "--seed", "1337"]
MOE = ["--n_expert", "8", "--top_k", "2"]  # expert_hidden 0: the dense MLP's 171 hidden units / 2
VARIANTS = {"dense": ["--n_expert", "0"], "moe": MOE,
            "moe_no_balance": [*MOE, "--aux_loss_coef", "0", "--z_loss_coef", "0"]}
# Measured on the course's 2-core machine, final val loss (dense / moe / moe_no_balance) and the busiest
# expert's load over the last 50 steps (moe / moe_no_balance), for seeds 1337 (this test), 1 and 2:
#   1337: 3.951 / 3.815 / 3.706, load 1.28x / 3.88x
#      1: 3.692 / 3.667 / 3.734, load 1.17x / 3.96x
#      2: 3.672 / 3.720 / 3.739, load 1.21x / 3.37x
# At 500 steps of 1,024 tokens the gap between MoE and dense goes either way with the seed (-0.049 to +0.136
# nats; when dense leaves the early plateau decides it), so the test asks only that the MoE is not clearly worse.
MOE_VS_DENSE = 0.15  # moe val <= dense val + this (worst measured: +0.049)
BALANCED_LOAD = 1.5  # the milestone's target (measured 1.17-1.28x)
UNBALANCED_LOAD = 2.5  # without the losses (measured 3.37-3.96x of a possible 4x)


@pytest.mark.milestone
def test_moe_trains_like_dense_and_balancing_keeps_experts_even(tmp_path):
    cache = ["--cache_dir", str(tmp_path / "cache")]
    rows, results = {}, {}
    for name, flags in VARIANTS.items():
        out_dir = tmp_path / name
        results[name] = train.main(*train.parse_configs([*ARGS, *cache, *flags, "--out_dir", str(out_dir)]))
        rows[name] = bench.summarize_run(out_dir)  # what bench.py reads back from a run's folder
    dense, moe, off = rows["dense"], rows["moe"], rows["moe_no_balance"]
    print(f"unigram {results['dense']['unigram_val']:.3f} | val dense {dense['final_val']:.3f}, moe "
          f"{moe['final_val']:.3f}, no balancing {off['final_val']:.3f} | busiest expert {moe['max_load']:.2f}x, "
          f"without balancing {off['max_load']:.2f}x")
    assert moe["active_params"] == pytest.approx(dense["active_params"], rel=0.01)  # 8 x 2-of-8 half-width experts
    assert moe["params"] > 2 * dense["params"]
    assert moe["tokens"] == dense["tokens"]
    assert moe["final_val"] <= dense["final_val"] + MOE_VS_DENSE
    assert moe["max_load"] <= BALANCED_LOAD
    assert off["max_load"] >= UNBALANCED_LOAD
    # the log's figure is the bar chart's: the busiest share x n_expert of the run's last expert loads
    assert moe["max_load"] == pytest.approx(max(max(s) * len(s) for s in results["moe"]["expert_load"]))
