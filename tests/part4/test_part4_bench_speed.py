"""bench_speed.py reads the training logs of nanoGPT and Part 4: the line parser and the timing summary.
The sample lines are copied from real logs of both scripts (bench_speed.py --device cpu --quick)."""
import pytest
from partloader import load_part

bench = load_part("part4_scaling", "bench_speed")

NANOGPT_LINES = ["step 0: train loss 4.1784, val loss 4.1770",
                 "iter 0: loss 4.1814, time 512.10ms, mfu -100.00%",
                 "iter 9: loss 3.9000, time 15.20ms, mfu 0.01%",
                 "saving checkpoint to /tmp/x/nanogpt_eager",
                 "step 10: train loss 3.6452, val loss 3.6621"]
PART4_LINES = ["device cpu x1 | dtype fp32 | 116,460 parameters | vocab 256 | 1,003,855 train / 111,539 val tokens",
               "step     1 | loss 5.5491 | lr 3.00e-05 | grad norm 3.78 | 21,062 tok/s | ETA 15s",
               "step    10 | train 5.1234 | val 5.2345",
               "step  1000 | loss 1.2000 | lr 3.00e-04 | grad norm 0.30 | 1,234,567 tok/s | MFU 30.1% | ETA 0s",
               "reached val 1.47 at step 800, 30.1s"]


def test_nanogpt_lines_give_updates_done():
    parsed = [bench.parse_line(line + "\n", "nanogpt") for line in NANOGPT_LINES]
    # `iter N` is printed after update N+1 (iter_num starts at 0); `step N` evaluates after N updates
    assert parsed == [("eval", 0, 4.177), ("train", 1, None), ("train", 10, None), None, ("eval", 10, 3.6621)]


def test_part4_lines():
    parsed = [bench.parse_line(line, "part4") for line in PART4_LINES]
    assert parsed == [None, ("train", 1, None), ("eval", 10, 5.2345), ("train", 1000, None), None]


def test_one_flavor_does_not_read_the_other():
    assert all(bench.parse_line(line, "part4") is None for line in NANOGPT_LINES)
    assert all(bench.parse_line(line, "nanogpt") is None for line in PART4_LINES)


def nanogpt_log(evals, first_train_t=2.0, step_ms=100.0):
    """A synthetic nanoGPT log: an eval at step 0, train lines every step, evals at the given (step, val)."""
    lines, t = [(1.5, "step 0: train loss 4.2000, val loss 4.2000\n")], first_train_t
    for step in range(1, max(s for s, _ in evals) + 1):
        lines.append((t, f"iter {step - 1}: loss 3.0, time 1.00ms, mfu 1.00%\n"))
        if step in dict(evals):
            lines.append((t + 0.05, f"step {step}: train loss 1.0, val loss {dict(evals)[step]:.4f}\n"))
        t += step_ms / 1000
    return lines


def test_summary_counts_from_launch_and_includes_evaluation_in_ms_per_step():
    lines = nanogpt_log([(10, 2.0), (20, 1.46), (30, 1.40)])
    out = bench.summarize(lines, "nanogpt", target=1.47)
    assert out["reached"] and out["steps_to_target"] == 20 and out["val"] == 1.46
    # update 20's train line arrives at 2.0 + 19 * 0.1 s, its eval line 0.05 s later
    assert out["seconds_to_target"] == pytest.approx(2.0 + 1.9 + 0.05, abs=0.01)
    assert out["ms_per_step"] == pytest.approx(1000 * (1.9 + 0.05) / 19, abs=0.01)  # rounded to 0.01 ms
    assert out["startup_s"] == 2.0
    assert [e["step"] for e in out["evals"]] == [0, 10, 20]  # nothing after the target counts


def test_summary_when_the_target_is_not_reached():
    out = bench.summarize(nanogpt_log([(10, 2.0), (20, 1.9)]), "nanogpt", target=1.47)
    assert not out["reached"] and "seconds_to_target" not in out
    assert out["ms_per_step"] == pytest.approx(1000 * (1.9 + 0.05) / 19, abs=0.01)  # up to the last eval


def test_summary_of_a_child_that_printed_no_step():
    out = bench.summarize([(0.5, "Traceback (most recent call last):\n")], "part4", target=1.47)
    assert out == {"reached": False, "evals": [], "startup_s": None}
