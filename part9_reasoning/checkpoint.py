"""Checkpoints: written atomically, read safely, and one line saying why a file does not fit.

A checkpoint is a dict: {"arch": "gpt", "model": weights, "model_config": {...}, "step": ..., "val_loss": ...}
plus whatever a part adds (Part 4: the tokenizer and the training state for --resume).

Compatibility rule, so a later part can start from an earlier part's checkpoint: a part loads any "gpt"
checkpoint whose stored model config builds this part's GPTConfig and whose weights fit the model it builds.
A config field this part does not know is refused (it names a feature this part lacks); a field the
checkpoint does not set takes this part's default. This file is the same in every part from Part 2 on
(tools, not a chapter): `diff` between parts shows it unchanged.
"""
import dataclasses
import os

import torch

from model import GPT, GPTConfig

ARCH = "gpt"  # the model family; what a model looks like inside the family is in "model_config"
# what a run leaves in --out_dir (6.4 eval.md: the answers graded against gold)
RUN_FILES = ("best.pt", "last.pt", "metrics.jsonl", "results.json", "loss.png", "eval.md", "report.md",
             "rewards.png", "margins.png")


def prepare_out_dir(out_dir, overwrite=False, resume=""):
    """Create --out_dir for a run, or exit with one line. A folder that holds an earlier run's results is
    refused, so running the same command twice never silently replaces a good model; overwrite=True deletes
    those files first (old and new results never mix); a run resumed from a last.pt in out_dir continues it."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise SystemExit(f"error: --out_dir {out_dir} is a file, not a folder; pass another --out_dir")
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise SystemExit(f"error: cannot create --out_dir {out_dir} ({e.strerror}); pass another --out_dir") from None
    if not os.access(out_dir, os.W_OK):
        raise SystemExit(f"error: --out_dir {out_dir} is not writable; pass another --out_dir")
    if resume and os.path.isfile(resume) and os.path.samefile(os.path.dirname(os.path.abspath(resume)), out_dir):
        return  # continuing the run that lives here
    found = [name for name in RUN_FILES if os.path.exists(os.path.join(out_dir, name))]
    if found and not overwrite:
        hint = f", --resume {os.path.join(out_dir, 'last.pt')} to continue it" if "last.pt" in found else ""
        raise SystemExit(f"error: {out_dir} already holds a run ({', '.join(found)}); pass --overwrite true to "
                         f"replace it{hint}, or another --out_dir")
    for name in found:
        os.remove(os.path.join(out_dir, name))


def save_checkpoint(path, model, model_cfg, step, val_loss, extra=None):
    """Written to a temp file then renamed: a crash mid-save never leaves half a checkpoint behind."""
    state = {"arch": ARCH, "model": model.state_dict(), "model_config": dataclasses.asdict(model_cfg),
             "step": step, "val_loss": val_loss, **(extra or {})}
    tmp = path + ".tmp"
    torch.save(state, tmp)
    os.replace(tmp, path)


def read_checkpoint(path, device="cpu", mmap=False):
    """The checkpoint dict, or a one-line exit when the file is missing, unreadable or not a GPT checkpoint.
    mmap=True maps the file instead of reading it: cheap when only the configs are needed."""
    if not os.path.isfile(path):
        part = os.path.basename(os.path.dirname(os.path.abspath(__file__)))
        raise SystemExit(f"error: checkpoint {path} not found; train first: python {part}/train.py")
    try:  # weights_only: a checkpoint holds tensors and plain values, never code to run
        ckpt = torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except Exception as e:  # truncated, not a torch file, or holds objects we refuse to unpickle
        raise SystemExit(f"error: cannot read checkpoint {path} ({type(e).__name__}); retrain to recreate it")
    if not isinstance(ckpt, dict) or ckpt.get("arch") != ARCH or "model_config" not in ckpt:
        found = ckpt.get("arch") if isinstance(ckpt, dict) else type(ckpt).__name__
        raise SystemExit(f"error: {path} is a {found!r} checkpoint, not a {ARCH!r} one with a model config; "
                         f"use a checkpoint written by this course's train.py")
    return ckpt


def config_from_checkpoint(ckpt, path):
    """This part's GPTConfig from the stored one, or a one-line exit naming the option this part lacks."""
    known = {f.name for f in dataclasses.fields(GPTConfig)}
    unknown = {k: v for k, v in ckpt["model_config"].items() if k not in known}
    if unknown:
        raise SystemExit(f"error: {path} uses model options this part does not have ({format_fields(unknown)}); "
                         "load it with the part that wrote it")
    try:
        return GPTConfig(**ckpt["model_config"])
    except (TypeError, ValueError) as e:
        raise SystemExit(f"error: {path} has a model config this part refuses ({e})")


def load_checkpoint(path, device="cpu"):
    """Returns (model, checkpoint dict); exits with a one-line message on any unusable file."""
    ckpt = read_checkpoint(path, device)
    cfg = config_from_checkpoint(ckpt, path)
    model = GPT(cfg)
    difference = weights_difference(model.state_dict(), ckpt["model"])
    if difference:
        unset = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.name not in ckpt["model_config"]}
        hint = f"; the checkpoint does not set {format_fields(unset)} (this part's defaults)" if unset else ""
        raise SystemExit(f"error: checkpoint {path} does not fit this model ({difference}){hint}")
    model.load_state_dict(ckpt["model"])
    return model.to(device), ckpt


def weights_difference(expected, stored):
    """'' when the stored weights fit, else e.g. 'missing blocks.0.ln_1.bias; wte.weight (256, 64) vs (512, 64)'."""
    missing = [k for k in expected if k not in stored]
    unexpected = [k for k in stored if k not in expected]
    reshaped = [f"{k} {tuple(stored[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                if k in stored and stored[k].shape != v.shape]
    parts = [f"{what} {', '.join(keys[:3])}" + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")
             for what, keys in (("missing", missing), ("unexpected", unexpected), ("stored vs needed:", reshaped))
             if keys]
    return "; ".join(parts)


def format_fields(values):
    return ", ".join(f"{k}={v!r}" for k, v in values.items())
