"""0.1 Draw the LLM training pipeline, and which course part builds each stage.

    python part0_setup/pipeline.py              # writes part0_setup/pipeline.png
    python part0_setup/pipeline.py --out x.png  # writes x.png instead

Stages run left to right; each one starts from the model the previous stage produced, and each
learns from a different kind of data (the grey boxes underneath).
"""
import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # draw to a file; no window, works on servers and in tests
import matplotlib.pyplot as plt  # noqa: E402  (must come after the backend is chosen)
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "pipeline.png"

# (title, course parts and what they build, training goal, data it learns from, box colour)
STAGES = [
    ("Pretraining",
     "Part 1  core transformer\nPart 2  tiny LLM training\nPart 3  modern architecture\n"
     "Part 4  scaling up\nPart 5  mixture-of-experts",
     "predict the next token", "raw text\n(books, web, code)", "#cfe2f3"),
    ("Supervised\nfine-tuning", "Part 6\nprompt templates,\nmasked loss",
     "follow instructions", "instruction pairs\n(prompt, response)", "#d9ead3"),
    ("Reward\nmodeling", "Part 7\nBradley-Terry loss",
     "score answers", "preference pairs\n(prompt, better, worse)", "#fff2cc"),
    ("Alignment\nRLHF / DPO / GRPO", "Part 8\nPPO, DPO, GRPO,\nKL penalty",
     "prefer good answers", "prompts + reward\n(or preference pairs)", "#f4cccc"),
    ("Reasoning\n& tool use", "Part 9\nchain of thought,\ntool calls",
     "think step by step", "prompts + checkable\nanswers, tool traces", "#d9d2e9"),
]

# pretraining is drawn wider: five of the course's parts live in it
WIDTHS = [3.9, 2.9, 2.9, 2.9, 2.9]
GAP = 0.9  # the space the arrows between stages cross, in data units
STAGE_Y, STAGE_H = 2.6, 4.2  # bottom and height of the stage boxes
DATA_Y, DATA_H = 0.2, 1.4  # bottom and height of the data boxes


def box(ax, x, y, w, h, colour):
    """A rounded rectangle with its lower-left corner at (x, y)."""
    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.02,rounding_size=0.15",
                                facecolor=colour, edgecolor="#444444", linewidth=1.2))


def arrow(ax, start, end, colour="#444444"):
    ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=18, linewidth=1.6, color=colour))


def draw_stage(ax, x, w, title, parts, goal, colour):
    """One stage: title on top, the course parts in the middle, the training goal at the bottom."""
    box(ax, x, STAGE_Y, w, STAGE_H, colour)
    cx, top = x + w / 2, STAGE_Y + STAGE_H
    ax.text(cx, top - 0.2, title, ha="center", va="top", fontsize=12, fontweight="bold")
    # the block is centred, its lines left-aligned, so "Part N  name" rows line up
    ax.text(cx, STAGE_Y + STAGE_H / 2 - 0.2, parts, ha="center", va="center", multialignment="left",
            fontsize=9.5, family="monospace")
    ax.text(cx, STAGE_Y + 0.2, f"goal: {goal}", ha="center", va="bottom", fontsize=9.5, style="italic")


def draw_data(ax, x, w, data):
    """The data a stage learns from, in a grey box below it, with an arrow feeding the stage."""
    box(ax, x + 0.15, DATA_Y, w - 0.3, DATA_H, "#eeeeee")
    ax.text(x + w / 2, DATA_Y + DATA_H / 2, data, ha="center", va="center", fontsize=9.5)
    arrow(ax, (x + w / 2, DATA_Y + DATA_H), (x + w / 2, STAGE_Y), colour="#888888")


def draw_pipeline(ax):
    x = 0.0
    for i, ((title, parts, goal, data, colour), w) in enumerate(zip(STAGES, WIDTHS, strict=True)):
        draw_stage(ax, x, w, title, parts, goal, colour)
        draw_data(ax, x, w, data)
        if i > 0:  # the model flows from the previous stage into this one
            arrow(ax, (x - GAP + 0.05, STAGE_Y + STAGE_H / 2), (x - 0.05, STAGE_Y + STAGE_H / 2))
        x += w + GAP
    width = x - GAP
    ax.text(width / 2, STAGE_Y + STAGE_H + 0.55, "The LLM training pipeline, and where this course builds each stage",
            ha="center", va="bottom", fontsize=15, fontweight="bold")
    ax.text(width / 2, STAGE_Y + STAGE_H + 0.15,
            "each stage builds on the one before it;  alignment tunes the SFT model against the reward model;  "
            "grey: the data each stage learns from",
            ha="center", va="bottom", fontsize=10, color="#555555")
    ax.set_xlim(-0.2, width + 0.2)
    ax.set_ylim(0, STAGE_Y + STAGE_H + 1.3)
    ax.axis("off")


def main(out_path=DEFAULT_OUT) -> Path:
    out_path = Path(out_path)
    fig, ax = plt.subplots(figsize=(17, 6.2))
    draw_pipeline(ax)
    fig.savefig(out_path, dpi=120, bbox_inches="tight")
    plt.close(fig)  # free the figure; tests may call main() many times
    print(f"wrote {out_path}")
    return out_path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=DEFAULT_OUT, help="where to write the PNG (default: %(default)s)")
    args = parser.parse_args()
    if not Path(args.out).resolve().parent.is_dir():
        parser.error(f"the folder of --out {args.out} does not exist; create it or pick another path")
    main(args.out)
