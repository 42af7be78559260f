"""Part 2: the training script end to end (short runs), its command line, and bad input."""
import pytest
from partloader import assert_one_line_error, load_part, one_line_exit, run_script

train, sample = load_part("part2_tiny_llm", "train", "sample")

TINY = ["--n_layer", "1", "--n_head", "2", "--n_embd", "32", "--block_size", "16", "--batch_size", "8",
        "--eval_iters", "2", "--sample_tokens", "20", "--log_interval", "1000"]


def run_tiny(tmp_path, *extra):
    train_cfg, model_cfg = train.parse_configs([*TINY, "--out_dir", str(tmp_path), *extra])
    return train.main(train_cfg, model_cfg)


def test_short_run_learns_and_writes_outputs(tmp_path):
    result = run_tiny(tmp_path, "--max_steps", "60", "--eval_interval", "30")
    first, last = result["history"][0], result["history"][-1]
    assert last["val"] < 3.6  # far below ln(256) = 5.55: it learned the byte frequencies at least
    assert last["train"] <= first["train"]
    assert (tmp_path / "best.pt").exists() and (tmp_path / "loss.png").stat().st_size > 1000


def test_cpu_runs_are_repeatable(tmp_path):
    a = run_tiny(tmp_path / "a", "--max_steps", "10", "--eval_interval", "5")
    b = run_tiny(tmp_path / "b", "--max_steps", "10", "--eval_interval", "5")
    assert [h["val"] for h in a["history"]] == [h["val"] for h in b["history"]]
    assert a["sample"] == b["sample"]


def test_sample_script_continues_a_prompt(tmp_path, capsys):
    run_tiny(tmp_path, "--max_steps", "2", "--eval_interval", "1")
    texts = sample.main(["--checkpoint", str(tmp_path / "best.pt"), "--prompt", "ROMEO:", "--max_new_tokens", "10",
                         "--top_k", "5", "--top_p", "0.9", "--num_samples", "2"])
    assert len(texts) == 2 and all(t.startswith("ROMEO:") for t in texts)  # bad sampling input: test_bad_tool_input


# Bad data files, checked in-process (a subprocess per case costs seconds); bad flag values of every part are in
# tests/test_bad_input.py, bad sampling input in tests/test_bad_tool_input.py
@pytest.mark.parametrize("args, words", [
    (["--data", "no/such/file.txt"], ["not found"]),
    (["--data", "EMPTY"], ["empty"]),
    (["--data", "SHORT"], ["too short"]),
])
def test_bad_data_files_are_one_line_errors(args, words, tmp_path, capsys):
    (tmp_path / "EMPTY").write_text("")
    (tmp_path / "SHORT").write_text("too short for a 64-byte context")
    args = [str(tmp_path / a) if a in ("EMPTY", "SHORT") else a for a in args]
    with pytest.raises(SystemExit) as err:
        train.main(*train.parse_configs([*args, "--out_dir", str(tmp_path)]))
    message = one_line_exit(err, capsys)
    assert all(word in message for word in words), message


def test_the_scripts_end_bad_input_without_a_traceback():
    assert_one_line_error(run_script("part2_tiny_llm/train.py", "--data", "no/such/file.txt"), "not found")
