"""4.5 Logging: every run writes metrics.jsonl (one JSON object a line, readable by anything) and, when the
tensorboard package is installed, TensorBoard scalars too. `plot_runs.py` turns JSONL logs into PNGs,
so nobody needs an account or a server to look at curves.
"""
import json
import os
import time


class RunLogger:
    def __init__(self, out_dir, enabled=True, tensorboard=True, append=False):
        self.enabled = enabled
        self.file = self.writer = None
        if not enabled:
            return
        self.file = open(os.path.join(out_dir, "metrics.jsonl"), "a" if append else "w")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self.writer = SummaryWriter(os.path.join(out_dir, "tensorboard"))
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
