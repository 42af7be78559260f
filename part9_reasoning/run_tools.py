"""Tools the training loop uses, not what a chapter teaches: Ctrl-C that finishes the step and saves (CtrlC),
tokens/s and MFU between log lines (Throughput, peak_flops), the loss plot, pinned copies to the GPU
(to_device), the divergence check, the unigram baseline and the word-overlap check of samples.

This file is the same in every part from Part 4 on (tools, not a chapter): `diff` shows it unchanged.
"""
import math
import signal
import sys
import threading
import time

import numpy as np
import regex
import torch


class CtrlC:
    """4.4 Ctrl-C asks the loop to stop after the step it is in and save last.pt, instead of killing it
    mid-update: the checkpoint then holds a whole step and a resume continues bit for bit. Pressed twice, it
    stops at once (the files in out_dir are then those of the last save)."""

    def __init__(self, enabled=True):
        self.pressed, self.previous = False, None
        # Python runs signal handlers in the main thread only
        self.enabled = enabled and threading.current_thread() is threading.main_thread()

    def __enter__(self):
        self.enabled = self.enabled and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN  # nohup: stays ignored
        if self.enabled:
            self.previous = signal.signal(signal.SIGINT, self.press)
        return self

    def __exit__(self, *exc):
        if self.enabled:
            signal.signal(signal.SIGINT, self.previous)

    def press(self, signum, frame):
        if self.pressed:
            raise KeyboardInterrupt
        self.pressed = True
        print("\nCtrl-C: stopping after this step and saving last.pt (press again to stop at once)",
              file=sys.stderr, flush=True)


class Throughput:
    """Tokens per second and MFU (the share of the GPU's peak FLOP rate used) between two log lines."""

    def __init__(self, tokens_per_step, flops_per_token, peak):
        self.tokens_per_step, self.flops_per_step, self.peak = tokens_per_step, flops_per_token * tokens_per_step, peak

    def start(self, step):
        self.step, self.time = step, time.time()

    def exclude(self, seconds):
        self.time += seconds

    def measure(self, step):
        seconds, steps = time.time() - self.time, step - self.step
        self.start(step)
        mfu = self.flops_per_step * steps / seconds / self.peak if self.peak else None
        return self.tokens_per_step * steps / seconds, mfu


def peak_flops(device):
    """Dense bf16 tensor-core peak of known GPUs, for the MFU estimate (None elsewhere)."""
    if not device.startswith("cuda"):
        return None
    name = torch.cuda.get_device_name(device)
    for key, flops in (("H100", 989e12), ("H200", 989e12), ("A100", 312e12), ("L4", 121e12), ("4090", 165e12)):
        if key in name:
            return flops
    return None


def plot_losses(history, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    steps = [h["step"] for h in history]
    ax.plot(steps, [h["train"] for h in history], label="train")
    ax.plot(steps, [h["val"] for h in history], label="val")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def to_device(t, device):
    if device.startswith("cuda"):  # pinned host memory lets the copy overlap with GPU work
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


def check_not_diverged(val_loss, vocab_size, step):
    """Stop a run whose val loss is nan/inf or far worse than guessing every token uniformly (ln vocab_size):
    it diverged (too high a learning rate, for example) and more steps would only waste time."""
    if not val_loss < 2 * math.log(vocab_size):  # subtle: nan fails this test too
        raise SystemExit(f"error: val loss {val_loss:.4g} at step {step} is far above {math.log(vocab_size):.2f} "
                         "(guessing uniformly): training diverged; lower --lr (the best checkpoint so far is kept)")


def unigram_loss(train_data, val_data, vocab_size):
    """The loss of the best context-free model: predict every token from train-set token frequencies
    (add-one smoothed). A model that does not beat this has learned nothing about context."""
    counts = np.bincount(np.asarray(train_data), minlength=vocab_size).astype(np.float64) + 1
    log_probs = np.log(counts / counts.sum())
    return float(-log_probs[np.asarray(val_data)].mean())


def word_overlap(sample, reference_text):
    """Fraction of the words in sample that occur somewhere in reference_text (a cheap coherence check)."""
    words = regex.findall(r"[A-Za-z']+", sample)
    vocab = set(regex.findall(r"[A-Za-z']+", reference_text))
    return sum(w in vocab for w in words) / max(len(words), 1)
