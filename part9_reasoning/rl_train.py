"""8.1-8.3, 8.5 The three ways Part 8 aligns the SFT model, each one iteration at a time.

    PPO  (8.1) rollouts -> reward model score - per-token KL to the reference -> GAE with a value head ->
               several epochs of the clipped surrogate + clipped value loss over minibatches
    GRPO (8.2) G rollouts per prompt -> checker reward -> advantage = (r - group mean) / group std ->
               the clipped surrogate + k3 KL to the reference; no value head
    DPO  (8.3) no rollouts: preference pairs (Part 7's format) -> -log sigmoid(beta * (policy margin -
               reference margin)), the reference's log-probs computed once, without gradients

Every formula is a function of rl_loss.py, on plain tensors; this file feeds them the model's numbers.
Each update function returns a dict of floats for the log (8.5: reward, KL, entropy, clip fraction, length).
"""
import time

import torch
from torch import nn

from chat_format import chat_token_ids, encode_prompt, encode_response, pad_batch
from checks import score_in_batches
from preferences import Pair
from rl_loss import (RunningMeanStd, accumulate_and_step, aggregate, clipped_surrogate_loss, dpo_loss,
                     entropy_from_logits, gae, group_normalized_rewards, k3_kl, kl_shaped_rewards,
                     masked_normalize, value_loss)
from rollout import checker_scores, draw_prompts, generate_rollouts, minibatches, rollouts_in_batches
from sft_loss import masked_mean, masked_sum, response_logprob, token_logprobs


class PolicyValue(nn.Module):
    """8.1 The policy (the SFT model) and a value head on the SAME trunk: one forward pass gives the next-token
    logits and, at every position, V = the return expected from there on.

    Why a shared trunk and not a separate critic: on a 2-core CPU a second transformer would double every
    rollout and update pass, and the policy's hidden state already encodes the prompt and the answer so far,
    which is what the value has to read. The price: the value loss also moves the policy's weights, so it is
    scaled down (--vf_coef) and the value head starts at zero (V = 0: no pull on the trunk until it learns).
    InstructGPT used a separate critic of the policy's size, started from the reward model."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy
        self.value_head = nn.Linear(policy.config.n_embd, 1)
        nn.init.zeros_(self.value_head.weight)
        nn.init.zeros_(self.value_head.bias)

    def forward(self, x):
        """x (B, T) -> logits (B, T, V), values (B, T)."""
        hidden = self.policy.features(x)
        return self.policy.lm_head(hidden), self.value_head(hidden).squeeze(-1).float()


def frozen(model):
    """The reference model: the SFT model, in eval mode, with no gradients (8.1-8.3 all measure KL to it)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


@torch.no_grad()
def logprobs_of(model, x, labels):
    """(B, T) log-probs of the labels under model (0 where labels are ignored); no gradients."""
    return token_logprobs(model(x)[0], labels)


def answer_kl(logp, ref_logp, mask):
    """(B,) sum over each answer's tokens of log pi - log ref: on the policy's own samples, an unbiased (k1)
    estimate of KL(pi || ref) per answer."""
    return masked_sum(logp - ref_logp, mask, dim=1)


def rollout_stats(batch):
    """What every RL log line shows about a batch of rollouts."""
    return {"score": batch.scores.mean().item(), "length": batch.lengths.float().mean().item(),
            "ended": batch.ended.float().mean().item(), "rollout_s": batch.seconds}


# ----------------------------------------------------------------------------------------------------
# 8.1 PPO
def ppo_advantages(pv, ref, batch, cfg, reward_stats: RunningMeanStd):
    """Old log-probs, values, the KL-shaped per-token rewards and GAE for one batch of rollouts.
    8.5: the sequence scores are normalized by the running mean/std of all scores so far (their scale is the
    reward model's, arbitrary), and the advantages are whitened over the batch."""
    mask = batch.mask
    with torch.no_grad():
        logits, values = pv(batch.x)
        old_logp = token_logprobs(logits, batch.labels)
        ref_logp = logprobs_of(ref, batch.x, batch.labels)
    scores = batch.scores
    if cfg.reward_norm:
        reward_stats.update(scores)
        scores = reward_stats.normalize(scores)
    rewards = kl_shaped_rewards(scores, old_logp, ref_logp, mask, cfg.kl_coef)  # score at the <|end|> token
    advantages, returns = gae(rewards, values * mask, mask, cfg.gamma, cfg.lam)
    if cfg.whiten_advantages:
        advantages = masked_normalize(advantages, mask)
    return {"old_logp": old_logp, "ref_logp": ref_logp, "values": values, "advantages": advantages,
            "returns": returns, "kl": answer_kl(old_logp, ref_logp, mask).mean().item(),
            "entropy": masked_mean(entropy_from_logits(logits), mask).item()}


def ppo_update(pv, ref, batch, cfg, optimizer, reward_stats, generator):
    """8.1 One PPO iteration on a batch of rollouts: --ppo_epochs passes, --minibatch_size rows per optimizer
    step, each minibatch split into --grad_accum_steps micro-batches (rl_loss.accumulate_and_step).
    The log's entropy is the sampling policy's, measured once on the rollouts (not in every micro-batch)."""
    data = ppo_advantages(pv, ref, batch, cfg, reward_stats)
    mask = batch.mask
    seen = {"policy_loss": [], "value_loss": [], "clip_fraction": [], "value_clip_fraction": []}

    def loss_fn(rows):
        logits, values = pv(batch.x[rows])
        logp = token_logprobs(logits, batch.labels[rows])
        m = mask[rows]
        policy_loss, stats = clipped_surrogate_loss(logp, data["old_logp"][rows], data["advantages"][rows], m,
                                                    cfg.clip_eps, cfg.loss_agg)
        v_loss, v_clipped = value_loss(values, data["values"][rows], data["returns"][rows], m, cfg.value_clip,
                                       cfg.loss_agg)
        seen["policy_loss"].append(policy_loss.item())
        seen["value_loss"].append(v_loss.item())
        seen["clip_fraction"].append(float(stats["clip_fraction"]))
        seen["value_clip_fraction"].append(float(v_clipped))
        return policy_loss + cfg.vf_coef * v_loss

    optimize(pv, optimizer, len(batch.examples), loss_fn, lambda rows: count_units(mask[rows], cfg.loss_agg),
             cfg, generator)
    return {**rollout_stats(batch), "kl": data["kl"], "entropy": data["entropy"],
            **{k: mean(v) for k, v in seen.items()}}


def optimize(model, optimizer, n_rows, loss_fn, count_fn, cfg, generator):
    """--ppo_epochs passes over the rows in minibatches; each minibatch is one optimizer step, accumulated
    over --grad_accum_steps micro-batches weighted by their tokens (or rows), so it equals one big batch."""
    params = [p for p in model.parameters() if p.requires_grad]
    for _ in range(cfg.ppo_epochs):
        for rows in minibatches(n_rows, cfg.minibatch_size, generator):
            micro = list(rows.chunk(min(cfg.grad_accum_steps, len(rows))))
            accumulate_and_step(params, optimizer, micro, loss_fn, count_fn, cfg.grad_clip)


def count_units(mask, how):
    """What a micro-batch weighs in its minibatch: its answer tokens (token mean) or its rows (sequence mean)."""
    return int(mask.sum()) if how == "token" else mask.size(0)


def mean(values):
    return sum(values) / max(1, len(values))


# ----------------------------------------------------------------------------------------------------
# 8.2 GRPO
def grpo_update(policy, ref, batch, cfg, optimizer, generator):
    """8.2 One GRPO iteration: rows come in groups of --group_size answers to one prompt; each answer's
    advantage is its reward against its group's (rl_loss.group_normalized_rewards): no value head, no GAE.
    Loss per token: the clipped surrogate with that advantage, + --kl_coef * k3 KL to the reference
    (a loss term, not folded into the reward as PPO does), aggregated by --loss_agg."""
    mask = batch.mask
    advantages = group_normalized_rewards(batch.scores, cfg.group_size, scale_by_std=cfg.grpo_scale_std)
    with torch.no_grad():
        logits = policy(batch.x)[0]
        old_logp = token_logprobs(logits, batch.labels)
        entropy = masked_mean(entropy_from_logits(logits), mask).item()  # 8.5 of the policy that sampled them
        ref_logp = logprobs_of(ref, batch.x, batch.labels)
    seen = {"policy_loss": [], "k3": [], "clip_fraction": []}

    def loss_fn(rows):
        logp = token_logprobs(policy(batch.x[rows])[0], batch.labels[rows])
        m = mask[rows]
        policy_loss, stats = clipped_surrogate_loss(logp, old_logp[rows], advantages[rows], m, cfg.clip_eps,
                                                    cfg.loss_agg)
        kl = aggregate(k3_kl(logp, ref_logp[rows]), m, cfg.loss_agg)
        seen["policy_loss"].append(policy_loss.item())
        seen["k3"].append(kl.item())
        seen["clip_fraction"].append(float(stats["clip_fraction"]))
        return policy_loss + cfg.kl_coef * kl

    optimize(policy, optimizer, len(batch.examples), loss_fn, lambda rows: count_units(mask[rows], cfg.loss_agg),
             cfg, generator)
    solved = batch.scores.view(-1, cfg.group_size)
    return {**rollout_stats(batch), "kl": answer_kl(old_logp, ref_logp, mask).mean().item(), "entropy": entropy,
            "zero_groups": (solved.std(1) == 0).float().mean().item(),  # groups that teach nothing
            **{k: mean(v) for k, v in seen.items()}}


# ----------------------------------------------------------------------------------------------------
# 8.3 DPO
def encode_pair_rows(tok, pairs, block_size):
    """Each pair -> two rows, chosen then rejected, as (prompt_ids, answer_ids) for chat_format.pad_batch:
    the labels are the answer's tokens only, so log-probs are summed over the response alone."""
    rows = []
    for p in pairs:
        prompt = encode_prompt(tok, p.prompt)
        for text in (p.chosen, p.rejected):
            answer = encode_response(tok, text)[:block_size - 1]
            rows.append((prompt[-(block_size + 1 - len(answer)):], answer))  # keep the prompt's end
    return rows


def pair_logprobs(model, rows, pad_id, device):
    """Summed answer log-probs of the chosen and of the rejected rows: (B,), (B,). rows alternate c, r."""
    x, labels = pad_batch(rows, pad_id)
    logp = response_logprob(model(x.to(device))[0], labels.to(device))
    return logp[0::2], logp[1::2]


@torch.no_grad()
def reference_logprobs(ref, rows, pad_id, device, batch_pairs=64):
    """8.3 The reference's summed log-probs of every pair's chosen and rejected answer, computed ONCE before
    training and without gradients: the reference never changes, so recomputing it each step would be waste."""
    chosen, rejected = [], []
    for i in range(0, len(rows), 2 * batch_pairs):
        c, r = pair_logprobs(ref, rows[i:i + 2 * batch_pairs], pad_id, device)
        chosen.append(c)
        rejected.append(r)
    return torch.cat(chosen), torch.cat(rejected)


def dpo_step(policy, rows, ref_chosen, ref_rejected, picks, cfg, optimizer, pad_id, device):
    """8.3 One DPO step on the pairs `picks` (indices): policy log-probs with gradients, the stored reference
    ones, rl_loss.dpo_loss. Returns the loss, how often the implicit reward ranks the pair right, and margins."""
    chosen_rows = [row for i in picks.tolist() for row in rows[2 * i:2 * i + 2]]
    policy_c, policy_r = pair_logprobs(policy, chosen_rows, pad_id, device)
    loss, reward_c, reward_r = dpo_loss(policy_c, policy_r, ref_chosen[picks], ref_rejected[picks], cfg.dpo_beta)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_([p for p in policy.parameters() if p.requires_grad], cfg.grad_clip)
    optimizer.step()
    return {"loss": loss.item(), "reward_accuracy": (reward_c > reward_r).float().mean().item(),
            "margin": (reward_c - reward_r).mean().item(), "chosen_logp": policy_c.mean().item(),
            "rejected_logp": policy_r.mean().item()}


def ranked_pairs(policy, tok, examples, rm_score, samples, max_new_tokens, generator, batch_size=256):
    """8.3 + 8.4 Preference pairs from the policy's OWN answers, labelled by the reward model: `samples` answers
    per prompt (temperature 1); chosen = the one the reward model scores highest, rejected = the lowest. Only
    answers that reached <|end|> take part, and a prompt whose answers all read the same gives no pair.
    Why: DPO on pairs the policy could have written moves it where the reward model wants it; pairs of a gold
    answer against hand-made mistakes (Part 7's) mostly teach what it already avoids."""
    rows = [ex for ex in examples for _ in range(samples)]
    batches = rollouts_in_batches(policy, tok, rows, max_new_tokens, generator, batch_size=batch_size)
    answers = [r for b in batches for r in b.responses]
    ended = [e for b in batches for e in b.ended.tolist()]
    scores = score_in_batches([ex.prompt for ex in rows], answers, rm_score, batch_size)
    pairs = []
    for g, ex in enumerate(examples):
        group = [j for j in range(g * samples, (g + 1) * samples) if ended[j] and answers[j].strip()]
        if len({answers[j] for j in group}) < 2:
            continue
        best, worst = max(group, key=lambda j: scores[j]), min(group, key=lambda j: scores[j])
        if scores[best] > scores[worst]:
            pairs.append(Pair(ex.prompt, answers[best], answers[worst], "ranked", ex.family))
    return pairs


# ----------------------------------------------------------------------------------------------------
# The loops: one function per algorithm, the same log line
def warmup_lr(optimizer, cfg, step, warmup=10):
    """--rl_lr after a linear warmup of `warmup` steps: the first updates see advantages from a value head
    (or normalizer) that has not settled yet."""
    for group in optimizer.param_groups:
        group["lr"] = cfg.rl_lr * min(1.0, step / warmup)


def make_optimizer(model, cfg):
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.rl_lr, weight_decay=0.0,
                             betas=(0.9, 0.99))


def log_iteration(log, algo, step, row, cfg, started):
    """8.5 One line per --log_interval iterations (and the first), every figure into metrics.jsonl."""
    log.scalars(step, **{k: v for k, v in row.items() if isinstance(v, (int, float))})
    if step % cfg.log_interval and step != 1:
        return
    spent = time.time() - started
    eta = spent / step * (cfg.rl_steps - step)
    if algo == "dpo":
        log.text(f"dpo step {step:4d} | loss {row['loss']:.4f} | pair accuracy {row['reward_accuracy']:.0%} | "
                 f"margin {row['margin']:.2f} | {row['pairs_per_s']:.0f} pairs/s | ETA {eta:.0f}s")
        return
    log.text(f"{algo} iter {step:4d} | reward {row['score']:.3f} | kl {row['kl']:.3f} | entropy {row['entropy']:.2f} "
             f"| clip {row['clip_fraction']:.2f} | length {row['length']:.1f} | rollout {row['rollout_s']:.1f}s "
             f"update {row['update_s']:.1f}s | {row['items_per_s']:.0f} answers/s | ETA {eta:.0f}s")


def run_rollouts(algo, policy, ref, tok, pool, reward_fn, cfg, device, log):
    """8.1/8.2 --rl_steps iterations: draw prompts, sample answers (8.4), score them, update (PPO or GRPO).
    Returns the history (one dict of figures per iteration) and the model that was trained (PPO: with its
    value head)."""
    model = PolicyValue(policy).to(device) if algo == "ppo" else policy
    optimizer = make_optimizer(model, cfg)
    draw = torch.Generator().manual_seed(cfg.seed)                    # prompts and minibatch order
    sample = torch.Generator(device=device).manual_seed(cfg.seed)     # the answers' tokens
    reward_stats = RunningMeanStd()
    history, started = [], time.time()
    repeat = cfg.group_size if algo == "grpo" else 1
    for step in range(1, cfg.rl_steps + 1):
        warmup_lr(optimizer, cfg, step)
        examples = draw_prompts(pool, max(1, cfg.rollouts // repeat), draw, repeat)
        batch = generate_rollouts(policy, tok, examples, cfg.max_new_tokens, sample)
        batch.scores = reward_fn(batch).to(device)
        t0 = time.perf_counter()
        if algo == "ppo":
            row = ppo_update(model, ref, batch, cfg, optimizer, reward_stats, draw)
        else:
            row = grpo_update(model, ref, batch, cfg, optimizer, draw)
        row["update_s"] = time.perf_counter() - t0
        row["items_per_s"] = len(examples) / (row["update_s"] + row["rollout_s"])
        row["checker"] = checker_scores(batch.examples, batch.responses).mean().item()
        history.append({"step": step, "time": time.time() - started, **row})
        log_iteration(log, algo, step, row, cfg, started)
    return history, model


def run_dpo(policy, ref, tok, pairs, cfg, device, log):
    """8.3 --rl_steps steps of --minibatch_size pairs drawn at random; the reference's log-probs first."""
    pad_id = chat_token_ids(tok)["end"]
    rows = encode_pair_rows(tok, pairs, policy.config.block_size)
    ref_chosen, ref_rejected = reference_logprobs(ref, rows, pad_id, device)
    optimizer = make_optimizer(policy, cfg)
    draw = torch.Generator().manual_seed(cfg.seed)
    history, started = [], time.time()
    policy.train()
    for step in range(1, cfg.rl_steps + 1):
        warmup_lr(optimizer, cfg, step)
        t0 = time.perf_counter()
        picks = torch.randint(len(pairs), (cfg.minibatch_size,), generator=draw)
        row = dpo_step(policy, rows, ref_chosen, ref_rejected, picks, cfg, optimizer, pad_id, device)
        row["pairs_per_s"] = cfg.minibatch_size / (time.perf_counter() - t0)
        history.append({"step": step, "time": time.time() - started, **row})
        log_iteration(log, "dpo", step, row, cfg, started)
    return history, policy


def moving_average(values, window=20):
    """The mean of the last `window` values at each point (fewer at the start)."""
    return [sum(values[max(0, i + 1 - window):i + 1]) / (i + 1 - max(0, i + 1 - window)) for i in range(len(values))]


def plot_history(history, algo, path):
    """8.5 rl.png: reward (or DPO loss), KL, entropy and answer length over the run, one panel each."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = (("loss", "reward_accuracy", "margin", "chosen_logp") if algo == "dpo"
              else ("score", "checker", "kl", "entropy", "clip_fraction", "length"))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 2.8))
    steps = [h["step"] for h in history]
    for ax, key in zip(axes, panels):
        values = [h[key] for h in history]
        ax.plot(steps, values, lw=0.6, alpha=0.35, color="tab:blue")
        ax.plot(steps, moving_average(values), lw=1.5, color="tab:blue")  # one batch is noisy: the trend
        ax.set_title(key, fontsize=10)
        ax.set_xlabel("step" if algo == "dpo" else "iteration", fontsize=8)
    fig.suptitle(f"{algo}: what 8.5 watches", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
