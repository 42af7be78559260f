"""Where the model runs: the device choice behind every --device flag.
This file is the same in every part (tools, not a chapter): `diff` between parts shows it unchanged.
"""
import torch


def pick_device(name="auto"):
    """auto picks cuda, then mps (Apple GPUs), then cpu; any other name (cuda:1, cpu) is used as given."""
    if name != "auto":
        return name
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"
