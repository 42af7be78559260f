"""7.3 Reward-model losses as standalone functions on plain tensors.

A reward model reads (prompt, response) and returns one number. It learns from preference pairs: the same
prompt with a chosen and a rejected answer. Bradley-Terry models "chosen beats rejected" with probability
sigma(r_c - r_r), so only the DIFFERENCE of two rewards is ever trained. Each piece is a small function a
test checks on its own:

    bradley_terry_loss(r_c, r_r, margin)   -mean log sigma(r_c - r_r - m)            scalar
    margin_ranking_loss(r_c, r_r, margin)  mean max(0, margin - (r_c - r_r))         scalar
    centering_penalty(r_c, r_r)            mean (r_c + r_r)^2                        scalar
    reward_loss(r_c, r_r, loss, ...)       one of the two, plus center_coef * centering
    pair_accuracy(r_c, r_r)                share of pairs with r_c > r_r, strictly   float
    last_token_index(mask)                 each row's last real token                (B,)
    gather_last(values, mask)              the values there: the reward of each row  (B,) or (B, C)

Worked example: r_c = 2, r_r = 0 -> sigma(2) = 0.881 and the loss is -log 0.881 = log(1 + e^-2) = 0.127.
Swap them and it is log(1 + e^2) = 2.127: a wrong ranking costs much more than a right one earns.

Try:  python -m pytest -q tests/part7/test_part7_rm_loss.py
"""
import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------------------------------
# 7.3 The pairwise losses
def bradley_terry_loss(r_chosen, r_rejected, margin=None) -> torch.Tensor:
    """Mean of -log sigma(r_c - r_r - m) over the pairs: the negative log-likelihood of the preferences.

    margin m (Llama 2): a float or one value per pair, e.g. larger for "clearly better" than for "slightly
    better"; the chosen answer must then win by at least m before the loss gets small. None = 0.
    Its gradient pushes r_c up and r_r down by (1 - sigma(diff)) / N each: pairs already ranked right by a
    wide gap stop mattering, wrongly ranked ones count almost fully."""
    diff = r_chosen - r_rejected
    if margin is not None:
        diff = diff - torch.as_tensor(margin, dtype=diff.dtype, device=diff.device)
    # 7.3 logsigmoid, not log(sigmoid(.)): sigmoid(-1000) rounds to 0 and log(0) = -inf; logsigmoid
    # computes min(x, 0) - log(1 + e^-|x|), which is finite for any x (and so is its gradient)
    return -F.logsigmoid(diff).mean()


def margin_ranking_loss(r_chosen, r_rejected, margin=1.0) -> torch.Tensor:
    """Mean of max(0, margin - (r_c - r_r)): the hinge version. A pair ranked right by at least `margin`
    costs exactly 0 and gives no gradient at all; BT instead keeps pushing, ever more gently."""
    return (margin - (r_chosen - r_rejected)).clamp(min=0).mean()


def centering_penalty(r_chosen, r_rejected) -> torch.Tensor:
    """Mean of (r_c + r_r)^2: reward centering (Eisenstein et al. 2023, "Helping or herding?").
    Why: BT sees only r_c - r_r, so adding any constant to every reward leaves its loss unchanged and
    nothing stops the offset from drifting during training. Rewards far from 0 are hard to compare
    across runs and shift the policy's KL trade-off in Part 8; this small penalty keeps each pair's
    mean near zero without touching the difference that BT learns."""
    return ((r_chosen + r_rejected) ** 2).mean()


LOSSES = {"bt": bradley_terry_loss, "margin": margin_ranking_loss}


def reward_loss(r_chosen, r_rejected, loss="bt", margin=None, center_coef=0.0) -> torch.Tensor:
    """The training loss: "bt" (margin = Llama 2's per-pair margin, None = 0) or "margin" (the hinge's
    margin, None = 1.0), plus center_coef * centering_penalty (0 = off)."""
    if loss not in LOSSES:
        raise ValueError(f"unknown reward loss {loss!r}; use one of {', '.join(LOSSES)}")
    if loss == "margin":
        main = margin_ranking_loss(r_chosen, r_rejected, 1.0 if margin is None else margin)
    else:
        main = bradley_terry_loss(r_chosen, r_rejected, margin)
    if center_coef:
        main = main + center_coef * centering_penalty(r_chosen, r_rejected)
    return main


# ----------------------------------------------------------------------------------------------------
# 7.3 The metric
def pair_accuracy(r_chosen, r_rejected) -> float:
    """Share of pairs with r_c > r_r, strictly (nan for no pairs).
    subtle: a tie counts as wrong. A model that gives every answer the same reward has learned nothing,
    and must score 0, not the 50% that counting ties as half right (or >=) would hand it."""
    n = r_chosen.numel()
    # counted in Python, not a float32 mean: 9 of 10 must be exactly 0.9, not 0.899999976 (< 0.9)
    return int((r_chosen > r_rejected).sum()) / n if n else float("nan")


# ----------------------------------------------------------------------------------------------------
# 7.3 The reward is read at the last real token
def last_token_index(mask) -> torch.Tensor:
    """mask (B, T), 1 (or True) at real tokens, 0 at padding -> (B,) the index of each row's last real token.

    Why the last: in a causal model only that position has read the whole prompt and response, so the
    reward head reads its hidden state. Position T - 1 is wrong for a right-padded row (it is padding, and
    its reward would depend on how long the other rows of the batch are). T - 1 - argmax(flip(mask)) is
    right for right padding, left padding and no padding: argmax gives the FIRST maximum, i.e. the first
    real token from the end. [[1, 1, 0], [0, 1, 1]] -> [1, 2]."""
    real = torch.as_tensor(mask) != 0
    if real.dim() != 2:
        raise ValueError(f"mask must be (B, T), got shape {tuple(real.shape)}")
    empty = (~real.any(dim=1)).nonzero().flatten()
    if len(empty):
        raise ValueError(f"rows {empty.tolist()} of the mask have no real token; every row needs one to score")
    T = real.size(1)
    return T - 1 - real.flip(1).long().argmax(dim=1)  # argmax of bool is not supported everywhere: long


def gather_last(values, mask) -> torch.Tensor:
    """values (B, T) or (B, T, C) -> values at each row's last real token: (B,) or (B, C)."""
    idx = last_token_index(mask).to(values.device)
    return values[torch.arange(values.size(0), device=values.device), idx]
