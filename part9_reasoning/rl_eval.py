"""8.x The milestone table: the SFT model and each aligned policy on the same held-out prompts.

    row = evaluate_policy(model, tok, examples, rm_score, ref, max_new_tokens, seed)
    against_sft(row, sft_row)                    # adds win_rate, win_rate_greedy

Per model:
  - verifiable accuracy: greedy answers graded by tasks.grade, the macro mean over families (Part 6's figure);
  - reward model score: the mean score of sampled answers (temperature 1, the distribution RL optimizes)
    and of greedy answers;
  - win rate against SFT under the reward model: on each prompt, does this model's answer outscore the SFT
    model's? A tie counts one half (two identical answers);
  - KL to the reference: sum over the answer of log pi - log ref, on the policy's own samples (an unbiased
    estimate of KL(pi || ref) per answer), averaged over prompts;
  - mean response length (tokens, <|end|> included) and format compliance: the answer stops at <|end|>,
    is not empty, and holds no other chat token.
"""
import json

import torch

from chat_format import CHAT_TOKENS, chat_token_ids
from checks import score_in_batches
from evaluate import score
from rl_train import answer_kl, logprobs_of
from rollout import rollouts_in_batches
from tasks import grade


def well_formed(ids, tok):
    """8.x format compliance of one generated answer (token ids): it ends with <|end|>, has at least one token
    before it, and no other chat token inside (a policy that learned to emit <|user|> is breaking format)."""
    special = {tok.special_tokens[t] for t in CHAT_TOKENS}
    end_id = chat_token_ids(tok)["end"]
    return len(ids) >= 2 and ids[-1] == end_id and not special & set(ids[:-1])


def win_rate(scores, against, same=None):
    """The share of prompts where scores > against, ties counting 1/2: 0.5 means no better, no worse.
    same (bools, optional): the two answers are the same text, a tie whatever the scores say (the same text
    scored in two different batches can differ in the last float digits, which must not decide a win)."""
    scores, against = torch.as_tensor(scores), torch.as_tensor(against)
    tie = scores == against if same is None else (scores == against) | torch.as_tensor(same)
    return ((scores > against) & ~tie).float().add(0.5 * tie.float()).mean().item()


def evaluate_policy(model, tok, examples, rm_score, ref, max_new_tokens, seed, batch_size=128):
    """Every figure of the milestone table for one model; the per-prompt scores ride along so that win rates
    against another model can be computed (they need the same examples in the same order)."""
    greedy_batches = rollouts_in_batches(model, tok, examples, max_new_tokens, temperature=0.0, batch_size=batch_size)
    ids = [a for b in greedy_batches for a in b.answer_ids]
    greedy = [r for b in greedy_batches for r in b.responses]
    gen = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
    sampled = rollouts_in_batches(model, tok, examples, max_new_tokens, gen, batch_size=batch_size)
    texts = [r for b in sampled for r in b.responses]
    kl = torch.cat([answer_kl(logprobs_of(model, b.x, b.labels), logprobs_of(ref, b.x, b.labels), b.mask)
                    for b in sampled])
    prompts = [ex.prompt for ex in examples]
    rm_sampled, rm_greedy = score_in_batches(prompts, texts, rm_score), score_in_batches(prompts, greedy, rm_score)
    per_family = score(examples, greedy, grade)
    sampled_family = score(examples, texts, grade)  # what RL optimizes: the answers the policy samples
    return {"rm_sampled": rm_sampled.mean().item(), "rm_greedy": rm_greedy.mean().item(),
            "accuracy": per_family["mean"]["exact"], "per_family": {f: s["exact"] for f, s in per_family.items()},
            "accuracy_sampled": sampled_family["mean"]["exact"],
            "per_family_sampled": {f: s["exact"] for f, s in sampled_family.items()},
            "kl": kl.mean().item(), "length": sum(map(len, ids)) / len(ids),
            "format": sum(well_formed(a, tok) for a in ids) / len(ids),
            "scores_sampled": rm_sampled.tolist(), "scores_greedy": rm_greedy.tolist(), "greedy": greedy,
            "sampled": texts}


def against_sft(row, sft_row):
    """Win rates of row's answers against the SFT model's, sampled and greedy."""
    for key, texts in (("win_rate", "sampled"), ("win_rate_greedy", "greedy")):
        same = [a == b for a, b in zip(row[texts], sft_row[texts])]
        row[key] = win_rate(row[f"scores_{texts}"], sft_row[f"scores_{texts}"], same)
    return row


def weak_families(sft_row, below=0.9):
    """The task families where the SFT model's greedy accuracy is below `below` (GRPO's target families)."""
    return sorted(f for f, acc in sft_row["per_family"].items() if f != "mean" and acc < below)


def family_mean(row, families, key="per_family"):
    """The mean accuracy over `families` (greedy; key="per_family_sampled": sampled answers)."""
    return sum(row[key][f] for f in families) / max(1, len(families))


def comparison_table(rows, families):
    """A markdown table, one row per model: the milestone's figures."""
    lines = ["| model | RM score (sampled) | RM win rate vs SFT: sampled | greedy | verifiable accuracy: greedy | "
             "sampled | SFT's weak families: greedy | sampled | KL to reference | length (tokens) | format ok |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['rm_sampled']:.2f} | {100 * r.get('win_rate', 0.5):.1f}% | "
                     f"{100 * r.get('win_rate_greedy', 0.5):.1f}% | {100 * r['accuracy']:.1f}% | "
                     f"{100 * r['accuracy_sampled']:.1f}% | {100 * family_mean(r, families):.1f}% | "
                     f"{100 * family_mean(r, families, 'per_family_sampled'):.1f}% | {r['kl']:.2f} | "
                     f"{r['length']:.1f} | {100 * r['format']:.1f}% |")
    return "\n".join(lines)


def strip_lists(row):
    """A row without its per-prompt lists (they are for win rates, not for reading)."""
    return {k: v for k, v in row.items() if not isinstance(v, list)}


def write_json(path, rows):
    with open(path, "w") as f:
        json.dump({name: strip_lists(r) for name, r in rows.items()}, f, indent=1)
