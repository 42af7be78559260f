"""4.5 Logging: every run writes metrics.jsonl (one JSON object a line, readable by anything) and, when the
tensorboard package is installed, TensorBoard scalars too. `plot_runs.py` turns JSONL logs into PNGs,
so nobody needs an account or a server to look at curves.
"""
import json
import os
import time


class RunLogger:
    """resume_step: a run resumed from a checkpoint of this step keeps the log up to it and drops the rows
    written after it (the killed session's steps, which the resumed run does again): no duplicate rows."""

    def __init__(self, out_dir, enabled=True, tensorboard=True, resume_step=None):
        self.enabled = enabled
        self.file = self.writer = None
        if not enabled:
            return
        path = os.path.join(out_dir, "metrics.jsonl")
        if resume_step is not None:
            keep_rows_up_to(path, resume_step)
        self.file = open(path, "a" if resume_step is not None else "w")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                purge = None if resume_step is None else resume_step + 1  # TensorBoard's own way to drop them
                self.writer = SummaryWriter(os.path.join(out_dir, "tensorboard"), purge_step=purge)
            except ImportError:  # optional: the JSONL log and the PNG plots do not need it
                self.writer = None

    def scalars(self, step, **values):
        if not self.enabled:
            return
        values = {k: v for k, v in values.items() if v is not None}
        self.file.write(json.dumps({"step": step, "time": time.time(), **values}) + "\n")
        self.file.flush()
        if self.writer:
            for name, value in values.items():
                self.writer.add_scalar(name, value, step)

    def text(self, line):
        if self.enabled:
            print(line, flush=True)

    def close(self):
        if self.file:
            self.file.close()
        if self.writer:
            self.writer.close()


def keep_rows_up_to(path, step):
    """Rewrite the JSONL log without the rows after `step` (atomically: a crash here loses nothing)."""
    if not os.path.isfile(path):
        return
    rows = []
    with open(path) as f:
        for line in f:
            try:
                if json.loads(line)["step"] <= step:
                    rows.append(line.rstrip("\n") + "\n")
            except (ValueError, KeyError, TypeError):  # a line cut short when the run was killed
                continue
    with open(path + ".tmp", "w") as f:
        f.writelines(rows)
    os.replace(path + ".tmp", path)
