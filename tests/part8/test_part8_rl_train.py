"""8.1-8.5 rollouts, the three algorithms' updates and the evaluation (part8_alignment/rollout.py, rl_train.py,
rl_eval.py) on tiny seeded GPTs (2 layers, width 32, block 64) and a tiny BPE tokenizer with the chat tokens.

Expected values come from an independent route: prompt ids from chat_format.encode_prompt and rows laid out
by a Python loop, log-probs read by hand from log_softmax of the model's logits on the row ALONE (no batch, no
padding), greedy answers decoded by a plain loop of full forward passes (no KV cache), returns worked out from
the GAE recursion with V = 0 by hand, and observable properties (the update moves the rewarded answer up, a
zero advantage leaves every weight where it was).

Run: python -m pytest -q tests/part8/test_part8_rl_train.py
"""
import copy
import math
from types import SimpleNamespace

import pytest
import tiny_chat
import torch
import torch.nn.functional as F
from partloader import load_part

(rollout, rl_train, rl_eval, rl_loss, chat_format, tasks, preferences) = load_part(
    "part8_alignment", "rollout", "rl_train", "rl_eval", "rl_loss", "chat_format", "tasks", "preferences")

BLOCK = 64
IGNORE = -100
LEARNED = {"the cat": "sat on the mat", "a dog": "ran"}
Example = tasks.Example


# ----------------------------------------------------------------------------------------------------
# Fixtures: a tokenizer, an untrained and a fitted GPT
PART = "part8_alignment"
TOK = tiny_chat.tiny_tokenizer(PART)
IDS = chat_format.chat_token_ids(TOK)
U, A, E = IDS["user"], IDS["assistant"], IDS["end"]


def tiny_gpt(seed=0):
    return tiny_chat.tiny_gpt(PART, TOK, BLOCK, n_layer=2, seed=seed)


def fit(gpt, pairs, steps=80):
    """A few full-batch SFT steps: enough for a tiny model to learn two answers by heart."""
    return tiny_chat.fit(PART, gpt, TOK, pairs.items(), steps)


@pytest.fixture(scope="module")
def fitted():
    return fit(tiny_gpt(0), LEARNED).eval()


def prompt_of(text):
    return chat_format.encode_prompt(TOK, text)


def answer_of(text):
    return chat_format.encode_response(TOK, text)


def rows_by_hand(prompts, answers, pad_id):
    """x = prompt + answer[:-1], labels = -100 on the first len(prompt) - 1 columns then the answer, right
    padded (x with pad_id, labels with -100): the layout written out in a loop."""
    T = max(len(p) + len(a) - 1 for p, a in zip(prompts, answers))
    x = torch.full((len(prompts), T), pad_id, dtype=torch.long)
    labels = torch.full((len(prompts), T), IGNORE, dtype=torch.long)
    for b, (p, a) in enumerate(zip(prompts, answers)):
        full = p + a
        for t in range(len(full) - 1):
            x[b, t] = full[t]
        for i, tok_id in enumerate(a):
            labels[b, len(p) - 1 + i] = tok_id
    return x, labels


def decode_answer(ids):
    return TOK.decode(ids[:-1] if ids and ids[-1] == E else ids).strip()


def hand_batch(prompt_texts, answers, scores=None, responses=None, golds=None):
    """A Rollouts built by hand: prompts as text, answers as token ids."""
    prompts = [prompt_of(p) for p in prompt_texts]
    x, labels = rows_by_hand(prompts, answers, E)
    golds = golds or [""] * len(prompt_texts)
    examples = [Example("hand", p, g) for p, g in zip(prompt_texts, golds)]
    responses = responses or [decode_answer(a) for a in answers]
    ended = torch.tensor([bool(a) and a[-1] == E for a in answers])
    scores = None if scores is None else torch.as_tensor(scores, dtype=torch.float32)
    return rollout.Rollouts(examples, [list(a) for a in answers], responses, x, labels, ended, scores)


def make_cfg(**kw):
    base = dict(group_size=4, grpo_scale_std=True, clip_eps=0.2, loss_agg="token", kl_coef=0.0, ppo_epochs=1,
                minibatch_size=8, grad_accum_steps=1, grad_clip=1.0, rl_lr=1e-3, reward_norm=True,
                whiten_advantages=True, gamma=1.0, lam=0.95, vf_coef=0.1, value_clip=0.2, dpo_beta=0.1,
                log_interval=1, rl_steps=1, seed=0)
    return SimpleNamespace(**{**base, **kw})


def answer_logprob_alone(model, prompt, answer):
    """log p(answer | prompt): the row alone, log_softmax read at each answer token by hand."""
    full = torch.tensor(prompt + answer)
    with torch.no_grad():
        logits = model(full[None, :-1])[0][0]
    logp = F.log_softmax(logits.float(), dim=-1)
    return sum(logp[len(prompt) - 1 + i, a].item() for i, a in enumerate(answer))


def token_logprobs_alone(model, prompt, answer):
    """[log p(answer[i] | prompt, answer[:i])] for each i: the row alone, no padding, no batch."""
    full = torch.tensor(prompt + answer)
    with torch.no_grad():
        logits = model(full[None, :-1])[0][0]
    logp = F.log_softmax(logits.float(), dim=-1)
    return torch.tensor([logp[len(prompt) - 1 + i, a].item() for i, a in enumerate(answer)])


def random_answer(g, n, end=True):
    """n - 1 ordinary token ids (no chat token) then <|end|>; end=False: n ordinary ids."""
    body = torch.randint(0, U, (n - 1 if end else n,), generator=g).tolist()
    return body + [E] if end else body


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


# ----------------------------------------------------------------------------------------------------
# rollout.py: generate_rollouts
MIXED = [Example("f", "the cat", "sat on the mat"), Example("f", "a dog", "ran"),
         Example("g", "the cat ran after the dog to the park", "ran")]


def test_rollout_rows_hold_the_prompt_then_the_sampled_answer(fitted):
    """Prompts of 6, 6 and 17 tokens. With max_new_tokens 3 the fitted model finishes "ran" (2 tokens) and is
    cut inside "sat on the mat" (8 tokens): both kinds of row in one batch."""
    batch = rollout.generate_rollouts(fitted, TOK, MIXED, 3, torch.Generator().manual_seed(0))
    prompts = [prompt_of(ex.prompt) for ex in MIXED]
    assert len({len(p) for p in prompts}) == 2
    assert batch.x.shape == batch.labels.shape
    assert batch.x.shape[1] == max(len(p) + len(a) - 1 for p, a in zip(prompts, batch.answer_ids))
    for b, (p, ans) in enumerate(zip(prompts, batch.answer_ids)):
        P, n = len(p), len(ans)
        assert 1 <= n <= 3
        assert batch.x[b, :P].tolist() == p
        assert batch.x[b, P:P + n - 1].tolist() == ans[:-1]
        assert (batch.x[b, P + n - 1:] == E).all()                         # right padding
        assert (batch.labels[b, :P - 1] == IGNORE).all()                    # the prompt does not count
        assert batch.labels[b, P - 1:P - 1 + n].tolist() == ans             # the answer, where it is predicted
        assert (batch.labels[b, P - 1 + n:] == IGNORE).all()                # nor does the padding
        assert batch.mask[b].sum().item() == n == batch.lengths[b].item()
        assert E not in ans[:-1]                                            # a row stops at its first <|end|>
        assert bool(batch.ended[b]) == (ans[-1] == E)
        assert batch.responses[b] == decode_answer(ans)
    assert batch.ended[:2].tolist() == [False, True]
    assert "sat on the mat".startswith(batch.responses[0]) and batch.responses[1] == "ran"


def test_rollouts_are_reproducible_with_a_seeded_generator():
    gpt = tiny_gpt(1).train()
    first = rollout.generate_rollouts(gpt, TOK, MIXED, 8, torch.Generator().manual_seed(3))
    again = rollout.generate_rollouts(gpt, TOK, MIXED, 8, torch.Generator().manual_seed(3))
    other = rollout.generate_rollouts(gpt, TOK, MIXED, 8, torch.Generator().manual_seed(4))
    assert first.answer_ids == again.answer_ids
    assert torch.equal(first.x, again.x) and torch.equal(first.labels, again.labels)
    assert torch.equal(first.ended, again.ended) and first.responses == again.responses
    assert other.answer_ids != first.answer_ids                             # the seed is what decides
    assert gpt.training                                                     # the mode it had is restored


def test_answers_never_outgrow_the_block():
    """An untrained model almost never says <|end|>: with max_new_tokens 1000 every row runs to the cap, which
    is what block_size leaves after the LONGEST prompt of the batch."""
    gpt = tiny_gpt(2)
    batch = rollout.generate_rollouts(gpt, TOK, MIXED, 1000, torch.Generator().manual_seed(0))
    room = BLOCK - max(len(prompt_of(ex.prompt)) for ex in MIXED)
    assert max(map(len, batch.answer_ids)) <= room
    assert any(len(a) == room for a in batch.answer_ids)
    assert batch.x.shape[1] <= BLOCK
    with torch.no_grad():
        logits, values = rl_train.PolicyValue(gpt)(batch.x)                # the losses can read the whole batch
    assert logits.shape[:2] == batch.x.shape and torch.isfinite(values).all()


# ----------------------------------------------------------------------------------------------------
# rollout.py: score_answers, draw_prompts, minibatches
def scoring_batch():
    """Gold "8" for every row; answers "8" (ended), "9" (ended), " 8 " cut before <|end|>, "seven" (ended)."""
    golds = ["8", "8", "8", "8"]
    texts = ["8", "9", " 8 ", "seven"]
    answers = [answer_of(t) for t in texts]
    answers[2] = answers[2][:-1]                                             # no <|end|>: cut at max_new_tokens
    batch = hand_batch(["What is 3 + 5?"] * 4, answers, responses=texts, golds=golds)
    assert batch.ended.tolist() == [True, True, False, True]
    return batch


def length_rm(seen):
    def rm_score(prompts, responses):
        seen.append(list(prompts))
        return torch.tensor([float(len(r)) for r in responses])
    return rm_score


@pytest.mark.parametrize("kind, expected", [
    # rm: len(response) | checker: grade(gold "8", stripped) | mix: rm + 2 * checker; minus 0.5 where not ended
    ("rm", [1.0, 1.0, 3.0 - 0.5, 5.0]),
    ("checker", [1.0, 0.0, 1.0 - 0.5, 0.0]),
    ("mix", [1.0 + 2.0, 1.0, 3.0 + 2.0 - 0.5, 5.0]),
])
def test_score_answers_adds_up_as_documented(kind, expected):
    seen = []
    got = rollout.score_answers(kind, scoring_batch(), length_rm(seen), checker_weight=2.0, missing_end_penalty=0.5)
    assert got.tolist() == pytest.approx(expected)
    assert seen == ([] if kind == "checker" else [["What is 3 + 5?"] * 4])  # the RM reads prompts as text


def test_the_missing_end_penalty_hits_only_unfinished_rows():
    batch = scoring_batch()
    rm = length_rm([])
    no_penalty = rollout.score_answers("rm", batch, rm, missing_end_penalty=0.0)
    penalty = rollout.score_answers("rm", batch, rm, missing_end_penalty=1.5)
    assert (no_penalty - penalty).tolist() == pytest.approx([0.0, 0.0, 1.5, 0.0])


def test_an_unknown_reward_kind_is_refused():
    with pytest.raises(ValueError, match="reward must be one of"):
        rollout.score_answers("gold", scoring_batch(), length_rm([]))


def test_draw_prompts_puts_each_group_in_consecutive_rows():
    pool = [Example("f", f"prompt {i}", str(i)) for i in range(10)]
    rows = rollout.draw_prompts(pool, 4, torch.Generator().manual_seed(0), repeat=3)
    assert len(rows) == 12
    groups = [rows[i:i + 3] for i in range(0, 12, 3)]
    assert all(g[0] is g[1] is g[2] for g in groups)
    assert len({g[0].prompt for g in groups}) == 4                          # without replacement
    assert rollout.draw_prompts(pool, 4, torch.Generator().manual_seed(0)) == [g[0] for g in groups]


def test_minibatches_cover_every_row_once():
    parts = rollout.minibatches(10, 4, torch.Generator().manual_seed(1))
    assert [len(p) for p in parts] == [4, 4, 2]
    assert sorted(torch.cat(parts).tolist()) == list(range(10))


# ----------------------------------------------------------------------------------------------------
# rl_train.py: PolicyValue
def test_policy_value_gives_the_gpts_logits_and_a_zero_value_that_learns():
    gpt = tiny_gpt(3)
    pv = rl_train.PolicyValue(gpt)
    x = torch.randint(0, TOK.vocab_size, (3, 11), generator=torch.Generator().manual_seed(0))
    logits, values = pv(x)
    assert torch.equal(logits, gpt(x)[0])
    assert values.shape == (3, 11) and (values == 0).all()
    ((values - 1.0) ** 2).sum().backward()
    assert pv.value_head.weight.grad.abs().sum() > 0 and pv.value_head.bias.grad.abs().sum() > 0
    # the head starts at 0, so the value loss does not pull on the shared trunk until the head has learned
    assert all(p.grad is None or (p.grad == 0).all() for p in gpt.parameters())


# ----------------------------------------------------------------------------------------------------
# Masking: the prompt and the padding never count
PROMPTS = ["the cat", "a dog", "the cat ran after the dog to the park", "a dog"]


def ragged_batch(seed=0):
    """Rows of very different lengths (answers of 2, 9, 3, 12 tokens), so most rows have padding."""
    g = torch.Generator().manual_seed(seed)
    answers = [random_answer(g, n) for n in (2, 9, 3, 12)]
    return hand_batch(PROMPTS, answers, scores=[1.0, 0.0, 0.5, -1.0])


def with_noise_in_padding(batch, seed=1):
    """The same rollouts, the padding of x (after each row's last input token) replaced by random ids."""
    noisy = copy.copy(batch)
    x = batch.x.clone()
    g = torch.Generator().manual_seed(seed)
    for b, (ex, ans) in enumerate(zip(batch.examples, batch.answer_ids)):
        end = len(prompt_of(ex.prompt)) + len(ans) - 1
        x[b, end:] = torch.randint(0, TOK.vocab_size, (x.size(1) - end,), generator=g)
    assert not torch.equal(x, batch.x)
    noisy.x = x
    return noisy


def test_ppo_and_grpo_logprobs_ignore_the_padding_and_equal_the_row_alone():
    gpt = tiny_gpt(4)
    pv = rl_train.PolicyValue(gpt)
    batch, noisy = ragged_batch(), with_noise_in_padding(ragged_batch())
    with torch.no_grad():
        logp = rl_train.token_logprobs(pv(batch.x)[0], batch.labels)       # what ppo_update's loss reads
        logp_noisy = rl_train.token_logprobs(pv(noisy.x)[0], noisy.labels)
    grpo_logp = rl_train.logprobs_of(gpt, noisy.x, noisy.labels)            # what grpo_update reads
    mask = batch.mask
    assert torch.allclose(logp[mask], logp_noisy[mask], atol=1e-5)
    assert torch.allclose(grpo_logp[mask], logp[mask], atol=1e-5)
    assert (logp[~mask] == 0).all() and (grpo_logp[~mask] == 0).all()
    for b, (ex, ans) in enumerate(zip(batch.examples, batch.answer_ids)):
        alone = token_logprobs_alone(gpt, prompt_of(ex.prompt), ans)
        assert torch.allclose(logp[b][mask[b]], alone, atol=1e-5), f"row {b}"


def test_ppo_advantages_ignore_the_padding():
    gpt, ref = tiny_gpt(5), rl_train.frozen(tiny_gpt(6))
    pv = rl_train.PolicyValue(gpt)
    torch.nn.init.normal_(pv.value_head.weight, std=0.5)                    # values that are not all 0
    cfg = make_cfg(kl_coef=0.1)
    batch = ragged_batch()
    clean = rl_train.ppo_advantages(pv, ref, batch, cfg, rl_loss.RunningMeanStd())
    noisy = rl_train.ppo_advantages(pv, ref, with_noise_in_padding(batch), cfg, rl_loss.RunningMeanStd())
    mask = batch.mask
    for key in ("old_logp", "ref_logp", "values", "advantages", "returns"):
        assert torch.allclose(clean[key][mask], noisy[key][mask], atol=1e-5), key
    for key in ("advantages", "returns"):
        assert (clean[key][~mask] == 0).all(), key
    assert clean["kl"] == pytest.approx(noisy["kl"], abs=1e-5)


# ----------------------------------------------------------------------------------------------------
# DPO's log-probs
def test_pair_logprobs_sum_the_answer_only_and_ignore_the_batch():
    gpt = tiny_gpt(7)
    prompt = prompt_of("the cat")
    chosen, rejected = answer_of("sat on the mat"), answer_of("ran")
    long_prompt = prompt_of("the cat ran after the dog to the park")
    other = [(long_prompt, answer_of("ran to the park and the cat ran after it")), (long_prompt, answer_of("a"))]
    with torch.no_grad():
        c_alone, r_alone = rl_train.pair_logprobs(gpt, [(prompt, chosen), (prompt, rejected)], E, "cpu")
        c_batch, r_batch = rl_train.pair_logprobs(gpt, [(prompt, chosen), (prompt, rejected), *other], E, "cpu")
    assert c_batch.shape == (2,)
    by_hand_c, by_hand_r = answer_logprob_alone(gpt, prompt, chosen), answer_logprob_alone(gpt, prompt, rejected)
    assert c_alone.item() == pytest.approx(by_hand_c, abs=1e-4)
    assert r_alone.item() == pytest.approx(by_hand_r, abs=1e-4)
    assert c_batch[0].item() == pytest.approx(by_hand_c, abs=1e-4)         # a longer row beside it: padding
    assert r_batch[0].item() == pytest.approx(by_hand_r, abs=1e-4)
    assert c_batch[1].item() == pytest.approx(answer_logprob_alone(gpt, *other[0]), abs=1e-4)
    # the prompt does not count: the sum over every predicted token of the row is another number
    full = torch.tensor(prompt + chosen)
    with torch.no_grad():
        logp = F.log_softmax(gpt(full[None, :-1])[0][0], dim=-1)
    everything = sum(logp[t, full[t + 1]].item() for t in range(len(full) - 1))
    assert everything < by_hand_c - 1.0


def test_encode_pair_rows_fit_the_block_and_keep_the_prompts_end():
    long_answer = " ".join(["cat"] * 80)                                    # 81 tokens: more than the block
    pair = preferences.Pair("the cat", long_answer, "ran", "hand")
    rows = rl_train.encode_pair_rows(TOK, [pair], BLOCK)
    assert len(rows) == 2
    (p_c, a_c), (p_r, a_r) = rows
    assert (p_r, a_r) == (prompt_of("the cat"), answer_of("ran"))
    assert a_c == answer_of(long_answer)[:BLOCK - 1]
    assert p_c == prompt_of("the cat")[-2:] and p_c == [E, A]                # room for at least <|assistant|>
    x, labels = chat_format.pad_batch(rows, E, block_size=BLOCK)            # no error: it fits
    assert x.shape[1] == BLOCK


def test_reference_logprobs_equal_pair_logprobs_without_gradients():
    gpt = tiny_gpt(8)
    pairs = [preferences.Pair("the cat", "sat on the mat", "ran", "hand"),
             preferences.Pair("a dog", "ran", "the mat sat on the cat", "hand"),
             preferences.Pair("the cat ran after the dog to the park", "ran", "a", "hand")]
    rows = rl_train.encode_pair_rows(TOK, pairs, BLOCK)
    ref_c, ref_r = rl_train.reference_logprobs(gpt, rows, E, "cpu", batch_pairs=2)
    c, r = rl_train.pair_logprobs(gpt, rows, E, "cpu")
    assert not ref_c.requires_grad and not ref_r.requires_grad
    assert c.requires_grad
    assert torch.allclose(ref_c, c.detach(), atol=1e-5) and torch.allclose(ref_r, r.detach(), atol=1e-5)
    assert ref_c.shape == ref_r.shape == (3,)


# ----------------------------------------------------------------------------------------------------
# GRPO
def grpo_batch(fitted, seed=0):
    examples = rollout.draw_prompts(MIXED, 2, torch.Generator().manual_seed(seed), repeat=4)
    return rollout.generate_rollouts(fitted, TOK, examples, 6, torch.Generator().manual_seed(seed))


def test_grpo_with_equal_rewards_in_every_group_changes_nothing(fitted):
    policy, ref = copy.deepcopy(fitted).train(), rl_train.frozen(copy.deepcopy(fitted))
    cfg = make_cfg(kl_coef=0.0, rl_lr=1e-2, ppo_epochs=2, minibatch_size=4)
    batch = grpo_batch(fitted)
    batch.scores = torch.tensor([1.0, 1.0, 1.0, 1.0, -2.0, -2.0, -2.0, -2.0])   # flat groups: no advantage
    before = params_of(policy)
    stats = rl_train.grpo_update(policy, ref, batch, cfg, rl_train.make_optimizer(policy, cfg),
                                 torch.Generator().manual_seed(0))
    assert all(torch.equal(p, q) for p, q in zip(before, policy.parameters()))
    assert stats["zero_groups"] == 1.0


def test_grpo_with_different_rewards_changes_the_policy(fitted):
    policy, ref = copy.deepcopy(fitted).train(), rl_train.frozen(copy.deepcopy(fitted))
    cfg = make_cfg(kl_coef=0.0, rl_lr=1e-2, ppo_epochs=2, minibatch_size=4)
    batch = grpo_batch(fitted)
    batch.scores = torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    before = params_of(policy)
    stats = rl_train.grpo_update(policy, ref, batch, cfg, rl_train.make_optimizer(policy, cfg),
                                 torch.Generator().manual_seed(0))
    assert any(not torch.equal(p, q) for p, q in zip(before, policy.parameters()))
    assert stats["zero_groups"] == 0.0
    assert stats["kl"] == pytest.approx(0.0, abs=1e-5)                      # the reference is the same model
    assert stats["score"] == pytest.approx(0.375)
    assert all(math.isfinite(v) for v in stats.values())


# ----------------------------------------------------------------------------------------------------
# PPO
def test_ppo_advantages_put_the_score_at_each_rows_last_answer_token():
    """kl_coef 0, V = 0 (a fresh value head), gamma 1: the reward is the normalized score at the last answer
    token, so the return there is that score and lam^k * score k tokens earlier."""
    gpt = tiny_gpt(9)
    pv, ref = rl_train.PolicyValue(gpt), rl_train.frozen(tiny_gpt(10))
    batch = ragged_batch()
    lam = 0.9
    cfg = make_cfg(kl_coef=0.0, reward_norm=True, whiten_advantages=False, gamma=1.0, lam=lam)
    data = rl_train.ppo_advantages(pv, ref, batch, cfg, rl_loss.RunningMeanStd())
    s = batch.scores.double()
    normalized = (s - s.mean()) / s.std(unbiased=False)
    assert (data["values"] == 0).all()
    for b, (ex, ans) in enumerate(zip(batch.examples, batch.answer_ids)):
        last = len(prompt_of(ex.prompt)) - 1 + len(ans) - 1
        assert data["returns"][b, last].item() == pytest.approx(normalized[b].item(), abs=1e-5)
        for k in range(len(ans)):
            assert data["returns"][b, last - k].item() == pytest.approx(lam ** k * normalized[b].item(), abs=1e-5)
        assert (data["returns"][b, last + 1:] == 0).all() and (data["returns"][b, :last + 1 - len(ans)] == 0).all()
    assert torch.allclose(data["advantages"], data["returns"])              # A = R - V, V = 0


def test_ppo_kl_penalty_is_charged_on_every_answer_token():
    """gamma = lam = 1, V = 0, scores as they are: return_t = score + sum over t' >= t of -beta (logp - ref)."""
    gpt, other = tiny_gpt(11), tiny_gpt(12)
    pv, ref = rl_train.PolicyValue(gpt), rl_train.frozen(other)
    batch, beta = ragged_batch(), 0.3
    cfg = make_cfg(kl_coef=beta, reward_norm=False, whiten_advantages=False, gamma=1.0, lam=1.0)
    data = rl_train.ppo_advantages(pv, ref, batch, cfg, rl_loss.RunningMeanStd())
    kls = []
    for b, (ex, ans) in enumerate(zip(batch.examples, batch.answer_ids)):
        prompt = prompt_of(ex.prompt)
        per_token = token_logprobs_alone(gpt, prompt, ans) - token_logprobs_alone(other, prompt, ans)
        kls.append(per_token.sum().item())
        expected = batch.scores[b] - beta * per_token.flip(0).cumsum(0).flip(0)
        first = len(prompt) - 1
        assert torch.allclose(data["returns"][b, first:first + len(ans)], expected, atol=1e-4), f"row {b}"
    assert data["kl"] == pytest.approx(sum(kls) / len(kls), abs=1e-4)


PPO_KEYS = ("score", "kl", "entropy", "clip_fraction", "length", "policy_loss", "value_loss")


def test_ppo_raises_the_log_prob_of_the_rewarded_answer():
    gpt = tiny_gpt(13)
    pv, ref = rl_train.PolicyValue(gpt), rl_train.frozen(copy.deepcopy(gpt))
    prompt = prompt_of("the cat")
    texts = ["sat on the mat", "ran to the park", "the dog", "a cat"]
    answers = [answer_of(t) for t in texts]
    cfg = make_cfg(kl_coef=0.0, rl_lr=1e-2, ppo_epochs=2, minibatch_size=4)
    optimizer = rl_train.make_optimizer(pv, cfg)
    stats_fn, gen = rl_loss.RunningMeanStd(), torch.Generator().manual_seed(0)
    before = [answer_logprob_alone(gpt, prompt, a) for a in answers]
    for _ in range(3):
        batch = hand_batch(["the cat"] * 4, answers, scores=[1.0, 0.0, 0.0, 0.0])
        stats = rl_train.ppo_update(pv, ref, batch, cfg, optimizer, stats_fn, gen)
        assert set(PPO_KEYS) <= set(stats) and all(math.isfinite(stats[k]) for k in PPO_KEYS)
        assert stats["score"] == pytest.approx(0.25)
        assert stats["length"] == pytest.approx(sum(map(len, answers)) / 4)
    after = [answer_logprob_alone(gpt, prompt, a) for a in answers]
    assert after[0] > before[0] + 0.5
    assert after[0] - max(after[1:]) > before[0] - max(before[1:])
    assert stats["kl"] != 0                                                 # it moved away from the reference


# ----------------------------------------------------------------------------------------------------
# DPO
def test_dpo_steps_raise_the_implicit_reward_margin():
    policy = tiny_gpt(14).train()
    ref = rl_train.frozen(copy.deepcopy(policy))
    cfg = make_cfg(rl_lr=1e-2, dpo_beta=0.5)
    rows = rl_train.encode_pair_rows(TOK, [preferences.Pair("the cat", "sat on the mat", "ran", "hand")], BLOCK)
    ref_c, ref_r = rl_train.reference_logprobs(ref, rows, E, "cpu")
    optimizer = rl_train.make_optimizer(policy, cfg)
    picks = torch.tensor([0])
    history = [rl_train.dpo_step(policy, rows, ref_c, ref_r, picks, cfg, optimizer, E, "cpu") for _ in range(6)]
    first, last = history[0], history[-1]
    assert first["loss"] == pytest.approx(math.log(2), abs=1e-5)            # policy = reference: margin 0
    assert first["margin"] == pytest.approx(0.0, abs=1e-6) and first["reward_accuracy"] == 0.0
    assert last["reward_accuracy"] == 1.0
    assert last["margin"] > history[1]["margin"] > 0
    assert last["loss"] < math.log(2)
    with torch.no_grad():                                                   # the margin after the last step,
        c, r = rl_train.pair_logprobs(policy, rows, E, "cpu")               # from the model's own log-probs
    assert cfg.dpo_beta * ((c - ref_c) - (r - ref_r)).item() > last["margin"]


# ----------------------------------------------------------------------------------------------------
# Gradient accumulation: micro-batches weighted by their tokens (or rows) make one big batch
def accumulation_batch():
    """Two groups of 4 answers; lengths so unequal that the two halves of a minibatch hold different numbers
    of tokens (a plain mean over micro-batches would then weigh tokens differently)."""
    g = torch.Generator().manual_seed(5)
    answers = [random_answer(g, n) for n in (1, 2, 1, 12, 2, 1, 3, 9)]
    return hand_batch(["the cat"] * 4 + ["a dog"] * 4, answers, scores=[1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0])


def two_updates(update, loss_agg, **cfg_kw):
    """The same update with grad_accum_steps 1 and 2, plain SGD (its step is proportional to the gradient,
    so a wrongly weighted micro-batch shows; Adam's first step is about lr * sign(grad))."""
    results = []
    for accum in (1, 2):
        cfg = make_cfg(loss_agg=loss_agg, grad_accum_steps=accum, minibatch_size=8, ppo_epochs=1, grad_clip=0,
                       **cfg_kw)
        model = update(cfg)
        results.append(model)
    rows = rollout.minibatches(8, 8, torch.Generator().manual_seed(0))[0]
    halves = [sum(len(accumulation_batch().answer_ids[i]) for i in half.tolist()) for half in rows.chunk(2)]
    assert halves[0] != halves[1]                                            # the test can tell the weights apart
    return results


@pytest.mark.parametrize("loss_agg", ["token", "sequence"])
def test_grpo_accumulation_equals_one_big_batch(loss_agg):
    ref = rl_train.frozen(tiny_gpt(16))

    def update(cfg):
        policy = tiny_gpt(15).train()
        optimizer = torch.optim.SGD(policy.parameters(), lr=0.5)
        rl_train.grpo_update(policy, ref, accumulation_batch(), cfg, optimizer, torch.Generator().manual_seed(0))
        return policy
    one, two = two_updates(update, loss_agg, kl_coef=0.1)
    moved = max((p - q).abs().max().item() for p, q in zip(one.parameters(), tiny_gpt(15).parameters()))
    assert moved > 1e-3
    for (name, p), q in zip(one.named_parameters(), two.parameters()):
        assert torch.allclose(p, q, atol=1e-5), name
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


def test_grpo_accumulation_with_adamw_gives_the_same_parameters():
    ref = rl_train.frozen(tiny_gpt(16))

    def update(cfg):
        policy = tiny_gpt(15).train()
        rl_train.grpo_update(policy, ref, accumulation_batch(), cfg, rl_train.make_optimizer(policy, cfg),
                             torch.Generator().manual_seed(0))
        return policy
    one, two = two_updates(update, "token", kl_coef=0.1, rl_lr=1e-2)
    for (name, p), q in zip(one.named_parameters(), two.parameters()):
        assert torch.allclose(p, q, atol=1e-5), name


def ppo_update_with(cfg):
    pv = rl_train.PolicyValue(tiny_gpt(17)).train()
    ref = rl_train.frozen(tiny_gpt(18))
    optimizer = torch.optim.SGD(pv.parameters(), lr=0.5)
    rl_train.ppo_update(pv, ref, accumulation_batch(), cfg, optimizer, rl_loss.RunningMeanStd(),
                        torch.Generator().manual_seed(0))
    return pv


def test_ppo_accumulation_equals_one_big_batch_with_token_aggregation():
    one, two = two_updates(ppo_update_with, "token", kl_coef=0.1, vf_coef=1.0)
    assert one.value_head.weight.grad.abs().sum() > 0
    for (name, p), q in zip(one.named_parameters(), two.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


def test_ppo_accumulation_equals_one_big_batch_with_sequence_aggregation():
    one, two = two_updates(ppo_update_with, "sequence", kl_coef=0.1, vf_coef=1.0)
    for (name, p), q in zip(one.named_parameters(), two.parameters()):
        assert torch.allclose(p.grad, q.grad, atol=1e-6), name


# ----------------------------------------------------------------------------------------------------
# rl_eval.py
def test_win_rate_by_hand():
    assert rl_eval.win_rate([1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 5.0, 4.0]) == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    assert rl_eval.win_rate([3.0, 3.0], [1.0, 1.0]) == 1.0
    assert rl_eval.win_rate(torch.tensor([0.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 2.0])) == pytest.approx(1 / 6)
    # the same text is a tie even when float noise gave it a slightly different score
    assert rl_eval.win_rate([1.00001, 2.0], [1.0, 1.0], same=[True, False]) == pytest.approx((0.5 + 1) / 2)


W1, W2 = 100, 200  # ordinary BPE ids


@pytest.mark.parametrize("ids, ok", [
    ([W1, E], True),
    ([W1, W2, W1, E], True),
    ([E], False),                 # empty answer
    ([W1, W2], False),            # cut before <|end|>
    ([W1, U, W2, E], False),      # writes the user's turn
    ([W1, A, E], False),          # a second assistant turn
    ([W1, E, W2, E], False),      # <|end|> inside
    ([], False),
])
def test_well_formed_by_hand(ids, ok):
    assert rl_eval.well_formed(ids, TOK) == ok


def greedy_by_hand(model, prompt, max_new):
    """Greedy answer ids by full forward passes, no KV cache, stopping after <|end|>."""
    ids, out = list(prompt), []
    with torch.no_grad():
        for _ in range(max_new):
            nxt = int(model(torch.tensor([ids]))[0][0, -1].argmax())
            out.append(nxt)
            ids.append(nxt)
            if nxt == E:
                break
    return out


def test_evaluate_policy_by_hand(fitted):
    examples = [Example("a", "the cat", "sat on the mat"), Example("a", "a dog", "ran"),
                Example("b", "the park", "mat")]
    seen = []
    max_new = 6
    row = rl_eval.evaluate_policy(fitted, TOK, examples, length_rm(seen), rl_train.frozen(copy.deepcopy(fitted)),
                                  max_new, seed=0, batch_size=2)
    for key in ("rm_sampled", "rm_greedy", "accuracy", "per_family", "kl", "length", "format", "scores_sampled",
                "scores_greedy", "greedy", "sampled"):
        assert key in row, key
    ids = [greedy_by_hand(fitted, prompt_of(ex.prompt), max_new) for ex in examples]
    texts = [decode_answer(a) for a in ids]
    assert row["greedy"] == texts
    assert row["length"] == pytest.approx(sum(map(len, ids)) / 3)
    hand_ok = [len(a) >= 2 and a[-1] == E and not {U, A, E} & set(a[:-1]) for a in ids]
    assert row["format"] == pytest.approx(sum(hand_ok) / 3)
    # what the fitted model learned: "sat on the mat" (8 tokens) cut at 6, so not well-formed; "ran" finished
    assert "sat on the mat".startswith(texts[0]) and len(ids[0]) == max_new and texts[1] == "ran"
    assert hand_ok[:2] == [False, True]
    exact = [t == ex.response for t, ex in zip(texts, examples)]
    assert row["per_family"]["a"] == pytest.approx((exact[0] + exact[1]) / 2)
    assert row["accuracy"] == pytest.approx(((exact[0] + exact[1]) / 2 + exact[2]) / 2)
    assert row["kl"] == pytest.approx(0.0, abs=1e-5)                       # a model against itself
    assert row["scores_greedy"] == [float(len(t)) for t in texts]
    assert row["rm_greedy"] == pytest.approx(sum(len(t) for t in texts) / 3)
    assert row["rm_sampled"] == pytest.approx(sum(len(t) for t in row["sampled"]) / 3)
    assert len(row["sampled"]) == 3


def test_evaluate_policy_kl_is_positive_against_another_model(fitted):
    other = rl_train.frozen(tiny_gpt(19))
    row = rl_eval.evaluate_policy(fitted, TOK, MIXED, length_rm([]), other, 4, seed=0)
    assert row["kl"] > 0.1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_evaluate_policy_runs_with_the_model_on_cuda(fitted):
    model = copy.deepcopy(fitted).cuda()
    ref = rl_train.frozen(copy.deepcopy(fitted).cuda())
    row = rl_eval.evaluate_policy(model, TOK, MIXED, length_rm([]), ref, 4, seed=0)
    assert row["kl"] == pytest.approx(0.0, abs=1e-4)


# ----------------------------------------------------------------------------------------------------
# 8.3 + 8.4 DPO pairs from the policy's own answers, ranked by a reward model
def test_ranked_pairs_put_the_reward_models_favourite_first():
    """With a fake reward model that prefers short answers, every pair is two different sampled answers to
    the same prompt, the shorter one chosen; a reward model that scores every answer alike gives none."""
    model = tiny_gpt(3).eval()  # untrained: its samples differ from one another
    examples = [Example("copy", "the cat", "the cat"), Example("copy", "a dog", "a dog")] * 3
    gen = torch.Generator().manual_seed(0)
    shorter_wins = lambda prompts, answers: torch.tensor([-float(len(a)) for a in answers])  # noqa: E731
    pairs = rl_train.ranked_pairs(model, TOK, examples, shorter_wins, samples=6, max_new_tokens=40, generator=gen)
    assert pairs, "six samples of an untrained model should differ somewhere"
    for p in pairs:
        assert p.prompt in ("the cat", "a dog") and p.kind == "ranked" and p.chosen != p.rejected
        assert len(p.chosen) < len(p.rejected)
    # a reward model that cannot tell the answers apart gives no pair at all
    indifferent = lambda prompts, answers: torch.zeros(len(answers))  # noqa: E731
    assert rl_train.ranked_pairs(model, TOK, examples, indifferent, samples=6, max_new_tokens=40, generator=gen) == []
