"""8.1-8.5 The losses and helpers of RLHF, as standalone functions on plain tensors.

Conventions: per-token tensors are (B, T) and come with a bool `mask` (B, T), True on the response tokens
the policy wrote (prompt and padding are False). Each row's response is one contiguous span, right-padded:
it may start after the prompt (column > 0) and ends at the row's last True. `logp` is the log-probability
of each response token under the policy being trained: sft_loss.token_logprobs(logits, labels), (B, T).

    8.1 policy gradient (PPO builds on it)
        aggregate(per_token, mask, how)                "token" or "sequence" mean              scalar
        policy_gradient_loss(logp, A, mask)            REINFORCE: -A * logp                    scalar
        entropy_from_logits(logits)                    entropy of each next-token distribution (B, T)
    8.1 PPO
        clipped_surrogate_loss(logp, old_logp, A, mask) -min(ratio A, clip(ratio) A)          (scalar, stats)
        value_loss(values, old_values, returns, mask)  clipped squared error of the critic     (scalar, clip_frac)
        gae(rewards, values, mask, gamma, lam)         advantages and returns                  (B, T), (B, T)
        k3_kl(logp, ref_logp)                          per-token KL estimate, >= 0             (B, T)
        kl_shaped_rewards(scores, logp, ref_logp, mask, beta)  -beta KL per token + score at the end  (B, T)
        last_token_index(mask)                         each row's last response token          (B,)
    8.2 GRPO
        group_normalized_rewards(rewards, group_size)  (r - group mean) / group std            (N,)
    8.3 DPO
        dpo_loss(pc, pr, rc, rr, beta)                 -log sigma(beta (margin of log-ratios)) (scalar, (B,), (B,))
    8.5 keeping it stable
        masked_var / masked_normalize                  advantage whitening                     scalar / (B, T)
        RunningMeanStd                                 reward normalization across iterations
        accumulate_and_step(params, opt, mbs, loss_fn, count_fn)  one step over micro-batches, unit-weighted

Worked example (PPO, one token, clip_eps = 0.2): the new policy gives the token twice the old probability,
ratio = 2, advantage A = 1. The unclipped objective is 2 * 1 = 2, the clipped one 1.2 * 1 = 1.2; PPO takes
the smaller, so the loss is -1.2 and its gradient is 0: the token was already pushed far enough.

Try:  python -m pytest -q tests/part8/test_part8_rl_loss.py
"""
import math

import torch
import torch.nn.functional as F
from rm_loss import last_token_index
from sft_loss import masked_mean, masked_sum, token_logprobs

# re-exported, so a training loop finds every tensor helper of Part 8 in one module
__all__ = [
    "masked_sum", "masked_mean", "token_logprobs", "last_token_index",
    "masked_var", "masked_normalize", "entropy_from_logits", "group_normalized_rewards", "aggregate",
    "policy_gradient_loss", "clipped_surrogate_loss", "value_loss", "gae", "k3_kl", "kl_shaped_rewards",
    "dpo_loss", "RunningMeanStd", "accumulate_and_step",
]

AGGREGATIONS = ("token", "sequence")


# ----------------------------------------------------------------------------------------------------
# 8.5 Masked statistics: advantage whitening
def masked_var(values, mask) -> torch.Tensor:
    """The (biased, population) variance of the entries where mask is True -> scalar, float32.
    [1, 2, 3, pad] with mask [T, T, T, F] -> mean 2, var ((1-2)^2 + 0 + (3-2)^2) / 3 = 2/3."""
    values = values.float()
    mean = masked_mean(values, mask)
    return masked_mean((values - mean) ** 2, mask)


def masked_normalize(values, mask, eps=1e-8, shift_mean=True) -> torch.Tensor:
    """Whiten the masked entries: (v - mean) / sqrt(var + eps), mean and var over the mask only -> (B, T),
    0 outside the mask. shift_mean=False rescales only: (v - mean) / std + mean (TRL's `whiten`).

    Why over the mask: padding and prompt positions are not actions; counting their zeros would pull the
    mean toward 0 and shrink the variance, by an amount that depends on how long the other rows are.
    PPO whitens its advantages per batch so that the step size does not depend on the reward's scale."""
    values = values.float()
    mean = masked_mean(values, mask)
    whitened = (values - mean) * torch.rsqrt(masked_var(values, mask) + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, torch.zeros_like(whitened))


# ----------------------------------------------------------------------------------------------------
# 8.1 Entropy of the policy
def entropy_from_logits(logits) -> torch.Tensor:
    """logits (B, T, V) -> (B, T): the entropy H = -sum p log p of softmax(logits) at every position.

    Computed as logsumexp(l) - sum softmax(l) * l, in float32. Why not -sum p log p directly:
    softmax(l) underflows to exactly 0 for very unlikely tokens, and 0 * log(0) = 0 * -inf = nan. The
    identity log p_i = l_i - logsumexp(l) turns H into logsumexp(l) - sum p_i l_i, where every term is
    finite. Uniform logits over V tokens -> log V; one token far above the rest -> ~0."""
    logits = logits.float()
    # shifting by the max changes neither p nor H (both terms move by the same constant), and keeps the
    # two terms small, so their difference does not lose digits when the logits are in the thousands
    logits = logits - logits.amax(dim=-1, keepdim=True)
    p = F.softmax(logits, dim=-1)
    return torch.logsumexp(logits, dim=-1) - (p * logits).sum(-1)


# ----------------------------------------------------------------------------------------------------
# 8.2 GRPO: the group is the baseline
def group_normalized_rewards(rewards, group_size, eps=1e-6, scale_by_std=True) -> torch.Tensor:
    """rewards (N,) as consecutive groups of `group_size` answers to the same prompt -> advantages (N,):
    (r - group mean) / (group std + eps), the std unbiased (torch's default). scale_by_std=False is
    Dr. GRPO's variant, r - group mean only: dividing by the std makes prompts that are almost always
    solved (or failed) count as much as the hard-but-learnable ones.

    [1, 0, 0, 1 | 2, 2, 2, 2], group_size 4 -> first group mean 0.5, std sqrt(1/3) = 0.577, so
    advantages +-0.866; second group all 0: when every answer gets the same reward there is nothing
    to prefer, and that prompt gives no gradient at all."""
    rewards = rewards.float().flatten()
    n = rewards.numel()
    if group_size < 2 or n % group_size:
        raise ValueError(f"group_size must be >= 2 and divide the number of rewards; got {n} rewards "
                         f"with group_size {group_size} (a std needs 2 samples of the same prompt)")
    groups = rewards.view(-1, group_size)                                    # (N / G, G)
    centered = groups - groups.mean(dim=1, keepdim=True)
    if scale_by_std:
        centered = centered / (groups.std(dim=1, keepdim=True) + eps)
    # subtle: the float32 mean of equal values can miss them in the last bit ([0.9, 0.9, 0.9] -> off by
    # 6e-8), and that difference divided by std + eps = 1e-6 is an advantage of 0.056 out of nothing.
    # So a flat group is set to exactly 0.
    flat = groups.amax(dim=1, keepdim=True) == groups.amin(dim=1, keepdim=True)
    return torch.where(flat, torch.zeros_like(centered), centered).flatten()


# ----------------------------------------------------------------------------------------------------
# 8.1 How per-token losses become one number
def aggregate(per_token, mask, how) -> torch.Tensor:
    """per_token (B, T) -> scalar.
        "token":    the masked mean over every response token of the batch: each token counts once, so a
                    long answer weighs more than a short one (DAPO, Dr. GRPO).
        "sequence": the mean over rows of each row's masked mean: each answer counts once, whatever its
                    length (the GRPO paper's 1/G sum_i 1/|o_i| sum_t). Rows with no response token are
                    left out of the mean over rows.
    The tradeoff: under "sequence" one token of a 5-token answer weighs 20 times one token of a 100-token
    answer. A short correct answer is pushed up hard, a long wrong one pushed down gently, so training
    drifts toward short right answers and long wrong ones. "token" weights every token the same.
    Rows [a, b] and [c] (padding aside): token = (a + b + c) / 3, sequence = ((a + b) / 2 + c) / 2."""
    if how == "token":
        return masked_mean(per_token, mask)
    if how == "sequence":
        per_row = masked_mean(per_token, mask, dim=1)                       # (B,)
        return masked_mean(per_row, mask.any(dim=1))
    raise ValueError(f"unknown aggregation {how!r}; use one of {', '.join(AGGREGATIONS)}")


# The losses below take a keyword argument named `aggregate` (the name a learner would guess), which hides
# the function of that name inside them; they call it through this second name.
_aggregate = aggregate


def _per_token(advantages, like) -> torch.Tensor:
    """Advantages (B,) (one per answer: GRPO, REINFORCE) or (B, T) (one per token: PPO's GAE) -> (B, T),
    float32 and detached: an advantage says how good an action was, it is not something to optimize."""
    advantages = advantages.detach().float()
    if advantages.dim() == 1:
        advantages = advantages[:, None]                                    # the same for every token
    return advantages.expand_as(like)


# ----------------------------------------------------------------------------------------------------
# 8.1 REINFORCE
def policy_gradient_loss(logp, advantages, mask, aggregate="token") -> torch.Tensor:
    """The vanilla policy-gradient loss: -A * log p(token), aggregated over the response tokens -> scalar.
    Its gradient is -A * grad log p: raise the log-probability of tokens of better-than-baseline answers
    (A > 0) and lower the others. One token, A = 2, log p = -0.5 -> loss 1.0, d loss / d logp = -2."""
    per_token = -_per_token(advantages, logp) * logp.float()
    return _aggregate(per_token, mask, aggregate)


# ----------------------------------------------------------------------------------------------------
# 8.1 PPO: the clipped surrogate
def clipped_surrogate_loss(logp, old_logp, advantages, mask, clip_eps=0.2, aggregate="token"):
    """PPO's policy loss -> (loss scalar, stats {"clip_fraction", "approx_kl"} as detached scalar tensors).

    ratio = exp(logp - old_logp) compares the policy now with the one that sampled the tokens (same
    weights at the first epoch, so ratio = 1). Per token: -min(ratio A, clamp(ratio, 1 - eps, 1 + eps) A).
    The min is pessimistic: a change that already helps by more than eps earns nothing more (and gets no
    gradient), while a change that hurts is always counted in full:
        ratio 1.5, A = +1 -> min(1.5, 1.2)  = 1.2   clipped, no gradient
        ratio 0.5, A = +1 -> min(0.5, 0.8)  = 0.5   not clipped: undo the harm
        ratio 0.5, A = -1 -> min(-0.5, -0.8) = -0.8 clipped, no gradient
        ratio 1.5, A = -1 -> min(-1.5, -1.2) = -1.5 not clipped: undo the harm
    clip_fraction: the share of response tokens where min picked the clipped term strictly (above: 2 of 4).
    approx_kl: the masked mean of k3_kl(old_logp, logp) = ratio - 1 - log ratio, an estimate of
    KL(old || new) from the old policy's tokens. Both are for logging: a clip fraction above ~0.2 or a
    growing approx_kl says the steps are too large (lower the lr, or fewer PPO epochs)."""
    logp, old_logp = logp.float(), old_logp.detach().float()   # old_logp is a constant of the batch
    A = _per_token(advantages, logp)
    ratio = torch.exp(logp - old_logp)
    unclipped = ratio * A
    clipped = torch.clamp(ratio, 1 - clip_eps, 1 + clip_eps) * A  # clamp has no gradient outside the range
    per_token = -torch.minimum(unclipped, clipped)
    loss = _aggregate(per_token, mask, aggregate)
    with torch.no_grad():
        stats = {"clip_fraction": masked_mean((clipped < unclipped).float(), mask),
                 "approx_kl": masked_mean(k3_kl(old_logp, logp), mask)}
    return loss, stats


# ----------------------------------------------------------------------------------------------------
# 8.1 PPO: the value (critic) loss
def value_loss(values, old_values, returns, mask, clip_eps=0.2, aggregate="token"):
    """0.5 * masked mean of max((v - R)^2, (v_clip - R)^2), v_clip = old + clamp(v - old, -eps, eps)
    -> (loss scalar, clip_fraction detached scalar: the share of tokens where the clipped term was larger).

    Why clip: like the policy, the critic should not jump far from the values it had when the batch was
    sampled; max (not min, this is a loss) keeps the worse of the two, so moving v more than eps away from
    old_values stops earning anything. old 0, R = 1, eps 0.2, v = 0.5: unclipped 0.25, clipped
    (0.2 - 1)^2 = 0.64 -> 0.5 * 0.64 = 0.32. clip_eps None or <= 0: the plain 0.5 * mean (v - R)^2.
    aggregate: "token" or "sequence", as for the policy loss it is added to (the mean must be the same kind,
    or gradient accumulation weighted by the policy loss's units would weigh this term wrongly)."""
    values = values.float()
    returns = returns.detach().float()   # a target, not something to move
    unclipped = (values - returns) ** 2
    if clip_eps is None or clip_eps <= 0:
        return 0.5 * _aggregate(unclipped, mask, aggregate), torch.zeros((), device=values.device)
    old_values = old_values.detach().float()
    v_clipped = old_values + torch.clamp(values - old_values, -clip_eps, clip_eps)
    clipped = (v_clipped - returns) ** 2
    loss = 0.5 * _aggregate(torch.maximum(unclipped, clipped), mask, aggregate)
    return loss, masked_mean((clipped > unclipped).float(), mask).detach()


# ----------------------------------------------------------------------------------------------------
# 8.1 Generalized advantage estimation
def gae(rewards, values, mask, gamma=1.0, lam=0.95):
    """rewards, values, mask (B, T) -> (advantages, returns), both (B, T) float32, 0 outside the mask.

        delta_t = r_t + gamma V_{t+1} - V_t          (how much better step t went than the critic expected)
        A_t     = delta_t + gamma lam A_{t+1}        (an exponentially weighted sum of the future deltas)
        R_t     = A_t + V_t                          (the critic's regression target)
    The episode ends after each row's last True: the value after it is 0 (nothing more will come).
    lam = 1 gives the Monte Carlo advantage (sum of future rewards - V_t: unbiased, noisy); lam = 0 gives
    the one-step delta_t (low variance, as biased as the critic is wrong). Computed without gradient.

    One row, rewards [0, 1], values [0.5, 0.5], gamma = lam = 1: delta = [0 + 0.5 - 0.5, 1 + 0 - 0.5] =
    [0, 0.5], A = [0 + 0.5, 0.5] = [0.5, 0.5], returns = [1, 1]."""
    zero = torch.zeros((), dtype=torch.float32, device=rewards.device)
    # zero outside the mask, so that the step after a row's last token sees V = 0 and A = 0; torch.where,
    # not * mask, so that garbage at padding (a nan from an empty value head) cannot leak in
    r = torch.where(mask, rewards.detach().float(), zero)
    v = torch.where(mask, values.detach().float(), zero)
    B, T = r.shape
    advantages = torch.zeros_like(r)
    next_value = torch.zeros(B, device=r.device)
    last_advantage = torch.zeros(B, device=r.device)
    for t in reversed(range(T)):  # backwards: A_t needs A_{t+1}; the whole batch at once
        delta = r[:, t] + gamma * next_value - v[:, t]
        last_advantage = delta + gamma * lam * last_advantage
        advantages[:, t] = last_advantage
        next_value = v[:, t]
    # after a row's span r = V = 0, so delta = A = 0 there and the span's last token sees V_{t+1} = 0.
    # The prompt columns before the span get numbers (V_first leaks into them), but they come AFTER the
    # span in this backward loop, so nothing of the response depends on them; the where clears them.
    # subtle: each row's span must be contiguous: a False inside it would count as a step of reward 0
    # and value 0, silently changing every advantage before it.
    advantages = torch.where(mask, advantages, zero)
    returns = torch.where(mask, advantages + v, zero)
    return advantages, returns


# ----------------------------------------------------------------------------------------------------
# 8.1 The KL penalty to the reference model
def k3_kl(logp, ref_logp) -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from tokens the policy sampled (Schulman's k3):
    exp(ref - logp) - (ref - logp) - 1, float32, same shape as the inputs.
    Why not just logp - ref (k1): k1 is unbiased too but negative on many tokens and noisy. k3 adds
    (ratio - 1), whose mean under the policy is 0, so it stays unbiased while every term is >= 0
    (e^x >= 1 + x) and is exactly 0 when the two agree. logp = -1, ref = -2: e^-1 + 1 - 1 = 0.368."""
    log_ratio = ref_logp.float() - logp.float()
    return torch.exp(log_ratio) - log_ratio - 1


def kl_shaped_rewards(scores, logp, ref_logp, mask, beta) -> torch.Tensor:
    """PPO's per-token rewards (B, T): -beta * (logp - ref_logp) on every response token (the k1 estimate
    of the KL, per token), plus each row's reward-model score (B,) at the row's LAST response token (its
    end-of-turn, where the answer is complete; not T - 1, which is padding in a shorter row). 0 elsewhere.
    Detached: these are rewards handed to gae(), not a loss.

    Why per token: the penalty says WHERE the policy drifted from the reference, so GAE can assign it to
    the right tokens; the score says how the whole answer did, and only exists once it is finished."""
    kl = logp.detach().float() - ref_logp.detach().float()
    rewards = torch.where(mask, -beta * kl, torch.zeros_like(kl))
    rows = torch.arange(rewards.size(0), device=rewards.device)
    rewards[rows, last_token_index(mask).to(rewards.device)] += scores.detach().float()
    return rewards


# ----------------------------------------------------------------------------------------------------
# 8.3 DPO
def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.1):
    """The sigmoid DPO loss -> (loss scalar: the mean over pairs, chosen_rewards (B,), rejected_rewards (B,)).
    Inputs: summed response log-probs per sequence (B,) (sft_loss.response_logprob), of the policy and of
    the frozen reference model (whose inputs are detached here: it is never trained).

        loss = -log sigma(beta * ((pc - rc) - (pr - rr)))
    beta * (log pi - log pi_ref) is the "implicit reward" of an answer; the loss is Bradley-Terry (Part 7)
    on these rewards, so DPO trains the policy as if it were its own reward model. Returned detached, for
    logging (the chosen one should rise above the rejected one). beta = 0.1, pc - rc = 1, pr - rr = -1:
    margin 2, loss = log(1 + e^-0.2) = 0.598, rewards 0.1 and -0.1."""
    chosen_logratio = policy_chosen.float() - ref_chosen.detach().float()
    rejected_logratio = policy_rejected.float() - ref_rejected.detach().float()
    # logsigmoid, not log(sigmoid(.)): finite for any margin (see rm_loss.bradley_terry_loss)
    loss = -F.logsigmoid(beta * (chosen_logratio - rejected_logratio)).mean()
    return loss, (beta * chosen_logratio).detach(), (beta * rejected_logratio).detach()


# ----------------------------------------------------------------------------------------------------
# 8.5 Reward normalization across iterations
class RunningMeanStd:
    """The mean and (population) std of every value seen so far, updated one batch at a time.

    Reward-model scores drift as the policy improves; dividing them by a running std keeps PPO's reward
    scale (and so the balance with the KL penalty) steady. Use ONE instance for the whole run: a fresh
    one per iteration would just be per-batch normalization. Save state_dict() in the checkpoint so a
    resumed run continues with the same statistics.

    Before the first update: count 0, mean 0, std 1, so normalize() changes nothing. Batches of one value
    give std 0 until the values differ; update with whole batches of scores."""

    def __init__(self):
        # Python floats are float64: a mean over millions of values would drift in float32
        self._count, self._mean, self._m2 = 0.0, 0.0, 0.0   # m2: the sum of squared deviations

    def update(self, x) -> None:
        """Merge a batch (any shape; every element counts) with Chan et al.'s parallel formula:
        exact, not an exponential average, and one pass over the batch."""
        x = torch.as_tensor(x).detach().double().flatten()
        n = x.numel()
        if n == 0:
            return
        batch_mean = x.mean().item()
        batch_m2 = ((x - batch_mean) ** 2).sum().item()
        total = self._count + n
        delta = batch_mean - self._mean
        self._mean += delta * n / total
        # the deviations within each part, plus the part that comes from the two means differing
        self._m2 += batch_m2 + delta ** 2 * self._count * n / total
        self._count = total

    @property
    def count(self) -> float:
        return self._count

    @property
    def mean(self) -> float:
        return self._mean

    @property
    def std(self) -> float:
        return math.sqrt(self._m2 / self._count) if self._count else 1.0

    def normalize(self, x, shift_mean=True) -> torch.Tensor:
        """(x - mean) / (std + 1e-8); shift_mean=False only scales, x / (std + 1e-8), keeping the sign of
        each reward (PPO's "reward scaling")."""
        shifted = x - self._mean if shift_mean else x
        return shifted / (self.std + 1e-8)

    def state_dict(self) -> dict:
        return {"count": self._count, "mean": self._mean, "m2": self._m2}

    def load_state_dict(self, state) -> None:
        self._count, self._mean, self._m2 = float(state["count"]), float(state["mean"]), float(state["m2"])


# ----------------------------------------------------------------------------------------------------
# 8.5 One optimizer step over micro-batches
def accumulate_and_step(params, optimizer, micro_batches, loss_fn, count_fn, grad_clip=1.0) -> dict:
    """One train step with gradient accumulation -> {"loss": float, "grad_norm": float}.

    loss_fn(mb) -> the mean loss over that micro-batch's units (tokens or answers, as the loss aggregates);
    count_fn(mb) -> how many units it has: mask.sum() for aggregate="token", the number of answers for
    "sequence". Each loss is weighted by its share of all units of the step, so the summed gradients are
    those of one big batch (tested). The weights need every count before the first backward, hence
    count_fn rather than counting inside loss_fn. Then the gradients are clipped to a total norm of
    grad_clip (None or 0: not clipped) and the optimizer steps. Returns the unit-weighted mean loss and
    the norm before clipping (a norm that keeps hitting the clip says the lr is too high).

    Why not loss / n_micro_batches: that is right only when every micro-batch holds the same number of
    units; a micro-batch of short answers would count as much as one of long answers."""
    params = [p for p in params]  # a generator (model.parameters()) would be used up by the first pass
    counts = [int(count_fn(mb)) for mb in micro_batches]
    total_units = sum(counts)
    if total_units == 0:
        raise ValueError("the micro-batches hold no units (response tokens or answers) to learn from")
    optimizer.zero_grad(set_to_none=True)
    total_loss = 0.0
    for mb, n in zip(micro_batches, counts):
        if n == 0:
            continue  # weight 0: nothing to add, and its mean over nothing could be nan
        loss = loss_fn(mb) * (n / total_units)
        loss.backward()
        total_loss = total_loss + loss.detach()  # a tensor: no GPU -> CPU read per micro-batch
    # max_norm inf measures the norm without clipping anything
    grad_norm = torch.nn.utils.clip_grad_norm_(params, grad_clip if grad_clip else float("inf"))
    optimizer.step()
    return {"loss": float(total_loss), "grad_norm": float(grad_norm)}
