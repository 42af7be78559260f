"""Where the model runs: the device choice behind every --device flag.
This file is the same in every part (tools, not a chapter): `diff` between parts shows it unchanged.
"""
import torch


def pick_device(name="auto"):
    """auto picks cuda, then mps (Apple GPUs), then cpu; any other name (cuda:1, cpu) is checked, then used."""
    if name != "auto":
        check_device(name)
        return name
    if torch.cuda.is_available():
        return "cuda"
    if torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def check_device(name):
    """A one-line exit for a device this machine does not have, before any work (torch would fail much later)."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"error: --device {name!r} is not a device name; use auto, cpu, cuda, cuda:1 or mps") from None
    if device.type not in ("cpu", "cuda", "mps"):  # e.g. "meta": tensors without data, nothing to train
        raise SystemExit(f"error: --device {name!r} is not a device this course runs on; use auto, cpu, cuda or mps")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise SystemExit(f"error: --device {name} but torch sees {torch.cuda.device_count()} CUDA GPU(s) here; "
                         "use --device auto (or cpu)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise SystemExit("error: --device mps but this machine has no Apple GPU for torch; use --device auto (or cpu)")
