"""6.2 The SFT loss (part6_sft/sft_loss.py), each function against an independent computation: a naive
Python loop with math.log of a softmax, a hand-worked example, chat_format.pad_batch, or one big batch.

Run: python -m pytest -q tests/part6/test_part6_sft_loss.py
"""
import math
import random
from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from partloader import load_part

chat, sft, model = load_part("part6_sft", "chat_format", "sft_loss", "model")
X = chat.IGNORE_INDEX


def naive_logprob(row, label):
    """log softmax(row)[label] with plain Python floats."""
    exps = [math.exp(v) for v in row]
    return math.log(exps[label] / sum(exps))


def naive_token_logprobs(logits, labels):
    B, T, _ = logits.shape
    return [[0.0 if labels[b][t] == X else naive_logprob(logits[b][t].tolist(), int(labels[b][t]))
             for t in range(T)] for b in range(B)]


def random_case(seed, B=3, T=6, V=7):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g) * 3
    labels = torch.randint(0, V, (B, T), generator=g)
    labels[torch.rand(B, T, generator=g) < 0.4] = X
    labels[0, 0] = 1  # at least one counted label
    return logits, labels


# ----------------------------------------------------------------------------------------------------
# label_mask, token_logprobs, masked reductions
def test_label_mask_by_hand():
    assert sft.label_mask([3, 1], [2, 2], 4).tolist() == [[False, False, True, True],
                                                           [True, True, False, False]]


def test_label_mask_agrees_with_pad_batch():
    rng = random.Random(0)
    for _ in range(20):
        lens = [(rng.randint(1, 6), rng.randint(1, 5)) for _ in range(rng.randint(1, 5))]
        pairs = [([rng.randrange(50) for _ in range(p)], [rng.randrange(50) for _ in range(r)]) for p, r in lens]
        _, y = chat.pad_batch(pairs, pad_id=0)
        mask = sft.label_mask([p for p, _ in lens], [r for _, r in lens], y.size(1))
        assert torch.equal(mask, y != X)


def test_token_logprobs_match_a_naive_loop():
    for seed in range(3):
        logits, labels = random_case(seed)
        got = sft.token_logprobs(logits, labels)
        assert torch.allclose(got, torch.tensor(naive_token_logprobs(logits, labels)), atol=1e-5)
        assert (got[labels == X] == 0).all()


def test_masked_mean_and_sum():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    mask = torch.tensor([True, False, True, False])
    assert sft.masked_sum(values, mask).item() == 4.0 and sft.masked_mean(values, mask).item() == 2.0
    none = torch.zeros(4, dtype=torch.bool)
    assert sft.masked_mean(values, none).item() == 0.0  # not nan
    assert sft.masked_sum(torch.tensor([-math.inf, 1.0]), torch.tensor([False, True])).item() == 1.0
    rows = torch.tensor([[1.0, 5.0], [2.0, 4.0]])
    assert sft.masked_mean(rows, torch.tensor([[True, True], [False, False]]), dim=1).tolist() == [3.0, 0.0]


# ----------------------------------------------------------------------------------------------------
# sft_loss: response tokens only
def test_sft_loss_by_hand_over_response_tokens_only():
    # one row, vocab 3, prompt of 3 tokens and response of 2: labels at positions 2 and 3 count
    logits = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]]])
    labels = torch.tensor([[X, X, 2, 0]])
    # log p(2 | [0, 0, 3]) = 3 - log(1 + 1 + e^3); log p(0 | [1, 1, 1]) = log(1/3)
    by_hand = -((3 - math.log(2 + math.exp(3))) + math.log(1 / 3)) / 2
    assert sft.sft_loss(logits, labels).item() == pytest.approx(by_hand, rel=1e-6)
    assert sft.sft_loss(logits, labels).item() == pytest.approx(F.cross_entropy(logits[0], labels[0]).item())


def test_prompt_labels_and_logits_change_nothing():
    logits, _ = random_case(1, B=2, T=6)
    targets = torch.randint(0, 7, (2, 6), generator=torch.Generator().manual_seed(1))
    prompt_lens, response_lens = [3, 2], [3, 2]  # row 0: positions 2..4 count; row 1: positions 1..2
    mask = sft.label_mask(prompt_lens, response_lens, 6)
    loss = sft.sft_loss(logits, torch.where(mask, targets, X))
    changed_targets = targets.clone()
    changed_targets[0, 0] = (targets[0, 0] + 1) % 7   # a prompt label
    changed_targets[1, 5] = (targets[1, 5] + 3) % 7   # a padding label
    assert sft.sft_loss(logits, torch.where(mask, changed_targets, X)) == loss
    changed_logits = logits.clone()
    changed_logits[~mask] = torch.randn(int((~mask).sum()), 7) * 10  # every masked position's logits
    assert sft.sft_loss(changed_logits, torch.where(mask, targets, X)) == loss
    # ... and a response label does change it (the test can fail)
    changed_targets[0, 3] = (targets[0, 3] + 1) % 7
    assert sft.sft_loss(logits, torch.where(mask, changed_targets, X)) != loss
    # no gradient reaches a masked position
    leaf = logits.clone().requires_grad_()
    sft.sft_loss(leaf, torch.where(mask, targets, X)).backward()
    assert (leaf.grad[~mask] == 0).all() and (leaf.grad[mask] != 0).any()


def test_sft_loss_with_nothing_to_count_is_zero():
    logits = torch.randn(2, 3, 5)
    assert sft.sft_loss(logits, torch.full((2, 3), X)).item() == 0.0


def test_response_logprob_is_the_sum_of_naive_token_logprobs():
    logits, labels = random_case(2)
    naive = [sum(row) for row in naive_token_logprobs(logits, labels)]
    assert torch.allclose(sft.response_logprob(logits, labels), torch.tensor(naive), atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# accumulate_gradients: token-weighted micro-batches == one big batch
def tiny_gpt(**overrides):
    torch.manual_seed(0)
    cfg = dict(vocab_size=64, block_size=16, n_layer=2, n_head=2, n_embd=32, **overrides)
    return model.GPT(model.GPTConfig(**cfg))


def chat_pairs():
    """Micro-batch 1: two short answers (1 + 2 = 3 counted labels); micro-batch 2: two long ones (16)."""
    g = torch.Generator().manual_seed(0)

    def ids(n):
        return torch.randint(0, 60, (n,), generator=g).tolist()
    short = [(ids(6), ids(1)), (ids(4), ids(2))]
    long = [(ids(3), ids(8)), (ids(2), ids(8))]
    return short, long


def grads(gpt):
    out = [p.grad.clone() for p in gpt.parameters()]
    gpt.zero_grad(set_to_none=True)
    return out


def big_batch_step(gpt, pairs):
    x, y = chat.pad_batch(pairs, pad_id=0)
    _, loss = gpt(x, y)
    loss.backward()
    return loss.detach(), grads(gpt)


def micro_batches(groups):
    return [chat.pad_batch(g, pad_id=0) for g in groups]


def max_diff(a, b):
    return max((u - v).abs().max().item() for u, v in zip(a, b))


@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe-eval-dropless"])
def test_micro_batches_equal_one_big_batch(moe):
    # MoE (top-1 of 2 experts, so routing matters) in eval mode: no aux loss, and no capacity that depends
    # on how many tokens a batch has (eval is dropless; capacity_factor=0 keeps training dropless too).
    # In training mode each micro-batch has its own load-balancing loss over its own tokens, padding
    # included, so it cannot equal the big batch's (5e-3 apart here); Part 5 accumulates it the same way.
    gpt = tiny_gpt(n_expert=2, top_k=1, capacity_factor=0.0) if moe else tiny_gpt()
    gpt.train(not moe)
    short, long = chat_pairs()
    big_loss, big_grads = big_batch_step(gpt, short + long)

    loss = sft.accumulate_gradients(gpt, micro_batches([short, long]))
    assert not loss.requires_grad
    assert loss.item() == pytest.approx(big_loss.item(), abs=1e-5)
    assert max_diff(grads(gpt), big_grads) < 1e-5

    # the weighting matters: Part 5's plain 1/len(micro_batches) does not give the big batch's gradients
    for x, y in micro_batches([short, long]):
        (gpt(x, y)[1] / 2).backward()
    assert max_diff(grads(gpt), big_grads) > 1e-3


def test_scaler_disabled_or_none_and_scaled():
    gpt = tiny_gpt()
    batches = micro_batches(chat_pairs())
    loss = sft.accumulate_gradients(gpt, batches)
    plain = grads(gpt)
    off = torch.amp.GradScaler("cpu", enabled=False)
    assert sft.accumulate_gradients(gpt, batches, nullcontext(), off) == loss
    assert max_diff(grads(gpt), plain) == 0
    on = torch.amp.GradScaler("cpu", init_scale=4.0)  # the fp16 path: gradients 4x, the loss reported unscaled
    assert sft.accumulate_gradients(gpt, batches, scaler=on).item() == pytest.approx(loss.item())
    assert max_diff([g / 4 for g in grads(gpt)], plain) < 1e-6


def test_a_micro_batch_with_no_response_token_is_a_one_line_error():
    gpt = tiny_gpt()
    x, y = chat.pad_batch([([1, 2, 3], [4])], pad_id=0)
    with pytest.raises(ValueError, match="at least one response token") as e:
        sft.accumulate_gradients(gpt, [(x, y), (x, torch.full_like(y, X))])
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError):
        sft.accumulate_gradients(gpt, [])
