"""bench.py reads each variant's run back from its folder: the rows are checked here on fabricated
results.json / metrics.jsonl files written in the format train.py writes (keys copied from a real run of
`bench.py --steps 40`), together with the flags it builds and its verdicts. No training."""
import json

import pytest
from partloader import ROOT, load_part

bench = load_part("part5_moe", "bench")

MODEL = {"vocab_size": 512, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 32, "n_expert": 8, "top_k": 2,
         "expert_hidden": 43}


def fake_run(folder, speeds, vals, loads=None, expert_load=None, model=MODEL, per_step=1024):
    """A run folder as train.py leaves it. speeds {step: tok/s}, vals {step: val loss}, loads {step: max load of
    each MoE layer}."""
    folder.mkdir(parents=True)
    rows = [{"step": s, "time": 0.0, "loss": 5.0, "tokens_per_s": v} for s, v in speeds.items()]
    rows += [{"step": s, "time": 0.0, "val_loss": v, "train_loss": v} for s, v in vals.items()]
    rows += [{"step": s, "time": 0.0, "aux_balance": 1.0, **{f"max_load_layer{i}": x for i, x in enumerate(m)}}
             for s, m in (loads or {}).items()]
    rows.sort(key=lambda r: r["step"])
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    steps = max(vals)
    results = {"params": 0, "steps": steps, "tokens_seen": steps * per_step, "wall_s": 12.5,
               "best_val": min(vals.values()), "model_config": model, "train_config": {}}
    if expert_load:
        results["expert_load"] = expert_load
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def test_summary_of_a_run(tmp_path):
    run = fake_run(tmp_path / "moe", speeds={1: 100.0, 10: 2000.0, 20: 4000.0, 30: 3000.0},
                   vals={10: 5.0, 20: 4.2, 30: 4.3}, loads={10: [3.0, 2.0], 20: [1.9, 1.2], 30: [1.1, 1.4]})
    row = bench.summarize_run(run)
    assert row["tokens_per_s"] == 3000  # the median of the intervals; step 1 (start-up, compiling) left out
    assert row["ms_per_step"] == pytest.approx(1000 * 1024 / 3000)
    assert row["val_curve"] == [(10240, 5.0), (20480, 4.2), (30720, 4.3)]  # x: tokens seen at each eval
    assert (row["best_val"], row["final_val"], row["tokens"]) == (4.2, 4.3, 30720)
    assert row["max_load"] == 1.4  # the last log interval, the busiest MoE layer
    assert row["active_params"] < row["params"]  # 2 of 8 experts' weights are active


def test_summary_of_a_dense_run_has_no_load(tmp_path):
    dense = dict(MODEL, n_expert=0, expert_hidden=0)
    row = bench.summarize_run(fake_run(tmp_path / "dense", {1: 1.0, 5: 10.0}, {5: 3.0}, model=dense))
    assert row["max_load"] is None and row["params"] == row["active_params"]


def test_expert_shares_prefers_what_train_wrote(tmp_path):
    shares = [[0.5, 0.5], [0.25, 0.75]]
    run = fake_run(tmp_path / "moe", {1: 1.0}, {1: 3.0}, expert_load=shares)
    assert bench.expert_shares(run) == (shares, "training, last log interval")


def row(final, ms, load=None):
    return {"final_val": final, "ms_per_step": ms, "max_load": load}


def test_verdicts_met_and_missed():
    rows = {"dense": row(4.00, 10.0), "moe": row(3.96, 12.0, 1.2), "moe_no_balance": row(4.1, 11.0, 3.9),
            "moe_bias": row(3.98, 12.5, 1.6)}
    checks = {target: (met, figures) for target, met, figures in bench.verdicts(rows)}
    gain = checks["MoE >= 0.03 nats better than dense (equal active params, equal tokens)"]
    assert gain[0] and "+0.0400 nats" in gain[1]
    assert checks["MoE step time <= 1.3x dense"] == (True, "12.0 vs 10.0 ms: 1.20x")
    assert checks["moe: no expert above 1.5x the mean load"][0]
    assert not checks["moe_bias: no expert above 1.5x the mean load"][0]  # 1.6x
    assert checks["imbalance without balancing shown"][0]
    rows["moe"] = row(3.99, 13.5, 1.2)
    checks = {target: met for target, met, _ in bench.verdicts(rows)}
    assert not checks["MoE >= 0.03 nats better than dense (equal active params, equal tokens)"]
    assert not checks["MoE step time <= 1.3x dense"]


def test_verdicts_only_for_the_variants_run():
    assert bench.verdicts({"dense": row(4.0, 10.0)}) == []


def test_variant_flags_spell_out_the_shapes():
    common = dict(bench.SCALES["cpu"], steps=100)
    moe = bench.variant_flags("moe", common, 1e-2)
    assert moe["expert_hidden"] == 170  # the dense SwiGLU's 341 hidden units / top-2: the same active params
    total, active = bench.model_params(moe, 1024)
    dense_total, _ = bench.model_params(bench.variant_flags("dense_total", common, 1e-2), 1024)
    assert abs(dense_total - total) / total < 1e-3  # the upper bound has the MoE's total parameters
    assert abs(active - bench.model_params(bench.variant_flags("dense", common, 1e-2), 1024)[0]) / active < 1e-2
    assert bench.variant_flags("moe_bias", common, 1e-2)["bias_update_rate"] == 1e-2
    assert bench.variant_flags("moe_no_balance", common, 1e-2)["aux_loss_coef"] == 0
    assert bench.shape(bench.variant_flags("hybrid", common, 1e-2)) == (
        "2 MoE layers: 8 experts 128-170-128, top-2 + 1 shared expert; 2 x SwiGLU MLP 128-341-128")


def test_command_is_a_train_py_command_line():
    cmd = bench.command(dict(bench.SCALES["cpu"], steps=100, n_expert=0), "out/x")
    assert cmd[1].endswith("part5_moe/train.py")
    flags = dict(zip(cmd[2::2], cmd[3::2]))
    assert flags["--compile"] == "false" and flags["--max_steps"] == "100" and flags["--eval_interval"] == "20"
    assert "--steps" not in flags and "--evals" not in flags  # the bench's own settings, not train.py flags
    train = load_part("part5_moe", "train")
    train_cfg, model_cfg = train.parse_configs(cmd[2:])  # every flag is one train.py accepts
    assert model_cfg.n_layer == 4 and train_cfg.max_steps == 100


def test_flags(monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    args = bench.parse_args(["--quick", "--only", "dense,moe"])
    assert args.variants == ["dense", "moe"] and args.steps == bench.SCALES["cpu"]["steps"] // 4
    assert bench.parse_args(["--scale", "gpu"]).results == "out/part5_bench/gpu"
    for bad in (["--only", "dense,mystery"], ["--steps", "-1"], ["--bias_update_rate", "nan"]):
        with pytest.raises(SystemExit):
            bench.parse_args(bad)
        assert "error:" in capsys.readouterr().err
