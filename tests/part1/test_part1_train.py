"""Part 1's train.py as a learner runs it: Ctrl-C ends with one line and exit status 130, not a traceback.

A real process and a real SIGINT, because the handler sits in the script's `if __name__ == "__main__":` block
(Part 1 saves nothing, so there is nothing for main() to keep)."""
import signal
import subprocess
import sys

from partloader import ROOT


def test_ctrl_c_ends_with_one_line():
    run = subprocess.Popen([sys.executable, "-u", "part1_transformer/train.py", "--max_steps", "1000000",
                            "--log_interval", "1"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in run.stdout:  # training has started: press Ctrl-C
            if line.startswith("step"):
                break
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=60)
    finally:
        run.kill()  # no-op once it has exited
    assert run.returncode == 130, err[-2000:]  # what a shell reports for Ctrl-C
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted:") and "again" in lines[0]
