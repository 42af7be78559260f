"""Part 9's runs (train.py --stage reason | tools) end to end on a tiny config: the models saved as chat models,
the compliance table, the self-consistency curve, GRPO on the CoT model, the tool model with and without its
tools, and one-line refusals. (The pieces: test_part9_reasoning.py, test_part9_tools.py, test_part9_compliance.py.)
"""
import json

import pytest
from partloader import exits_with_one_line, load_part

TINY = ["--preset", "tiny", "--tensorboard", "false", "--log_interval", "2", "--reason_steps", "4",
        "--reason_batch_size", "8", "--reason_train", "40", "--reason_test", "6", "--sc_samples", "3",
        "--rl_steps", "2", "--rollouts", "8", "--group_size", "4", "--minibatch_size", "8", "--eval_batch_size", "8"]


@pytest.fixture(scope="module")
def part9():
    return load_part("part9_reasoning", "train", "evaluate")


def run(train, out, *extra):
    return train.main(*train.parse_configs([*TINY, "--out_dir", str(out), *extra]))


@pytest.fixture(scope="module")
def runs(part9, tmp_path_factory):
    train = part9[0]
    out = tmp_path_factory.mktemp("p9") / "run"
    results = {stage: run(train, out, "--stage", stage) for stage in ("reason", "tools")}
    results["reason_sum"] = run(train, out, "--stage", "reason", "--reason_family", "sum", "--reason_grpo", "false")
    return out, results


def test_reason_trains_direct_and_cot_then_votes_and_runs_grpo(runs, part9):
    out, results = runs
    folder = out / "reason"
    for name in ("direct/best.pt", "cot/best.pt", "grpo/best.pt", "eval.md", "results.json", "self_consistency.png",
                 "rl.png"):
        assert (folder / name).stat().st_size > 0, name
    saved = json.loads((folder / "results.json").read_text())
    rows = saved["rows"]
    assert set(rows) == {"direct", "cot", "cot + grpo"}
    for row in rows.values():
        assert row["n"] == 6 and 0 <= row["accuracy"] <= 1 and 0 <= row["format"] <= 1
    assert list(rows["cot"]["sc"]) == ["1"]  # --sc_samples 3: of N = 1, 5, 10, 20 only 1 fits
    assert rows["direct"]["step_valid"] is None and rows["cot"]["step_valid"] is not None  # steps: CoT only
    assert saved["verdict"].startswith("9.1 CoT") and "| cot + grpo |" in (folder / "eval.md").read_text()
    model, tok = part9[1].load_chat_model(str(folder / "cot" / "best.pt"))  # a chat model chat.py can load
    assert "<|think|>" in tok.special_tokens


def test_reason_on_sums_writes_its_own_folder_and_checks_sum_steps(runs):
    out, results = runs
    rows = json.loads((out / "reason_sum" / "results.json").read_text())["rows"]
    assert set(rows) == {"direct", "cot"} and rows["cot"]["step_valid"] is not None  # --reason_grpo false
    assert all(prompt.count(" + ") == 5 for prompt, _ in rows["direct"]["examples"])  # six numbers per problem


def test_tools_grades_the_tool_model_with_and_without_its_tools(runs, part9):
    out, results = runs
    folder = out / "tools"
    for name in ("best.pt", "direct/best.pt", "eval.md", "results.json"):
        assert (folder / name).stat().st_size > 0, name
    rows = results["tools"]["rows"]
    assert set(rows) == {"direct", "tools off", "tools on"}
    assert rows["tools on"]["call_ok"] is not None and rows["direct"]["call_ok"] is None
    assert results["tools"]["verdict"].startswith("9.3 with tools")
    model, tok = part9[1].load_chat_model(str(folder / "best.pt"))
    assert "<|call|>" in tok.special_tokens


def test_a_second_run_into_the_same_folder_is_refused(runs, part9, capsys):
    out, _ = runs
    train = part9[0]
    exits_with_one_line(capsys, lambda: run(train, out, "--stage", "reason"), "already holds a run", "--overwrite")


def test_the_milestone_table_reads_the_runs(runs, tmp_path, capsys):
    out, results = runs
    milestone = load_part("part9_reasoning", "milestone")
    mla = {"rows": [{"variant": "mha", "val_loss": 2.0}],
           "verdict": {"target_share": 0.25, "target_gap": 0.05, "mla_share": 0.1875, "mla_gap": 0.07, "met": False}}
    (tmp_path / "mla.json").write_text(json.dumps(mla))
    table = milestone.main(["--out_dir", str(out), "--mla", str(tmp_path / "mla.json"),
                            "--write", str(tmp_path / "milestone.md")])
    assert (tmp_path / "milestone.md").read_text().endswith(table)
    cot, direct = results["reason"]["rows"]["cot"], results["reason"]["rows"]["direct"]
    holds = "yes" if cot["accuracy"] > direct["accuracy"] else "**no**"
    assert f"| 9.1 CoT > direct (held-out additions, greedy) | CoT {100 * cot['accuracy']:.1f}% |" in table
    assert table.splitlines()[2].endswith(f"| {holds} |")
    assert "cache 18.8% of MHA's, val loss 2.070 (+0.070) | MHA val loss 2.000 | **no** |" in table  # the gap misses
    assert table.count("| reason: ") == 3 and table.count("| tools: ") == 3  # a compliance line per model
    assert table.count("| reason (sum): ") == 2 and "(held-out sums of six digits, any order, best N = 1)" in table
    exits_with_one_line(capsys, lambda: milestone.main(["--out_dir", str(tmp_path / "none"), "--mla", "x.json"]),
                        "not found", "python part9_reasoning/train.py")
