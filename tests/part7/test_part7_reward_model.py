"""7.2 The reward model (part7_reward/reward_model.py) on tiny seeded GPTs. Expected values come from an
independent route: the row run ALONE through the plain causal trunk (no PaddedRows, no mask) and read at its
last column by hand, ids written out by hand (a tokenizer without merges: ids 0..255 are bytes), or masks
and positions counted in Python loops.

Run: python -m pytest -q tests/part7/test_part7_reward_model.py
"""
import pytest
import torch
from partloader import load_part, one_line_exit

rmod, model, chat, bpe, checkpoint = load_part("part7_reward", "reward_model", "model", "chat_format", "bpe",
                                               "checkpoint")

U, A, E = 257, 258, 259  # <|user|>, <|assistant|>, <|end|> on a tokenizer with no merges
V = 260


def tiny_gpt(seed=0, **kw):
    torch.manual_seed(seed)
    cfg = dict(vocab_size=V, block_size=32, n_layer=2, n_head=2, n_embd=32)
    return model.GPT(model.GPTConfig(**{**cfg, **kw}))


def tiny_rm(seed=0, **kw):
    return rmod.RewardModel(tiny_gpt(seed, **kw)).eval()


def chat_tokenizer():
    tok = bpe.Tokenizer()
    chat.add_chat_tokens(tok)
    return tok


def alone(rm, row):
    """The reference: one unpadded row through the plain causal trunk, head read at the last column."""
    with torch.no_grad():
        return rm.head(rm.trunk.features(row[None])[:, -1]).squeeze().item()


def pad_batch(rows, side, pad_id):
    T = max(len(r) for r in rows)
    idx = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for b, r in enumerate(rows):
        cols = slice(0, len(r)) if side == "right" else slice(T - len(r), T)
        idx[b, cols], mask[b, cols] = r, 1
    return idx, mask


LENGTHS = [5, 1, 12, 3, 20, 7]


def random_rows(seed=1, lengths=LENGTHS):
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, V, (n,), generator=g) for n in lengths]


# ----------------------------------------------------------------------------------------------------
# The reward of a row does not depend on its batch, its padding side or the padding id
@pytest.mark.parametrize("use_sdpa", [True, False])
@pytest.mark.parametrize("side", ["right", "left"])
def test_reward_in_a_padded_batch_equals_the_row_alone(side, use_sdpa):
    rm = tiny_rm(use_sdpa=use_sdpa)
    rows = random_rows()
    idx, mask = pad_batch(rows, side, pad_id=E)
    with torch.no_grad():
        got = rm(idx, mask)
    assert got.shape == (len(rows),)
    for b, row in enumerate(rows):
        assert got[b].item() == pytest.approx(alone(rm, row), abs=1e-5), f"row {b} of length {len(row)}"


def test_naive_column_minus_one_is_a_different_number():
    """What the design avoids: on right padding column -1 is padding; on left padding without a mask the
    text attends to the padding before it. Both give a number other than the row's own reward."""
    rm = tiny_rm()
    rows = random_rows()
    short = 0  # length 5, next to a row of 20: 15 padding columns
    for side in ("right", "left"):
        idx, mask = pad_batch(rows, side, pad_id=E)
        with torch.no_grad():
            naive = rm.head(rm.trunk.features(idx)[:, -1]).squeeze(-1)
        assert abs(naive[short].item() - alone(rm, rows[short])) > 1e-3, side
        assert rm(idx, mask)[short].item() == pytest.approx(alone(rm, rows[short]), abs=1e-5)


@pytest.mark.parametrize("side", ["right", "left"])
def test_the_padding_id_does_not_matter(side):
    rm = tiny_rm()
    rows = random_rows(seed=2)
    idx, mask = pad_batch(rows, side, pad_id=E)
    noise = torch.randint(0, V, idx.shape, generator=torch.Generator().manual_seed(3))
    other = torch.where(mask.bool(), idx, noise)
    assert not torch.equal(other, idx)
    with torch.no_grad():
        assert torch.allclose(rm(idx, mask), rm(other, mask), atol=1e-5)
        assert torch.allclose(rm(idx, mask), rm(torch.where(mask.bool(), idx, 0), mask), atol=1e-5)


# ----------------------------------------------------------------------------------------------------
# PaddedRows
def test_padded_rows_positions_and_mask_by_hand():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    pr = rmod.PaddedRows(mask)
    pos = pr.make_room(5)
    assert pos.shape == (4, 5) and pr.mask.shape == (4, 1, 5, 5) and pr[0] is pr[1]
    for b in range(4):
        real = [t for t in range(5) if mask[b, t]]
        assert [pos[b, t].item() for t in real] == list(range(len(real)))
        for i in real:
            seen = [j for j in range(5) if pr.mask[b, 0, i, j]]
            assert seen == [j for j in real if j <= i], (b, i)


def test_no_nan_in_outputs_or_gradients_with_left_padding():
    rm = tiny_rm(use_sdpa=True).train()
    idx, mask = pad_batch(random_rows(seed=4), "left", pad_id=E)
    hidden = rm.trunk.features(idx, rmod.PaddedRows(mask))
    assert torch.isfinite(hidden).all()
    rewards = rm(idx, mask)
    assert torch.isfinite(rewards).all()
    rewards.square().sum().backward()  # through every padded position's attention
    grads = [p.grad for p in rm.parameters() if p.grad is not None]
    assert len(grads) == len(list(rm.parameters()))
    assert all(torch.isfinite(g).all() for g in grads)
    assert rm.trunk.wte.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------------
# GPT.features and the head
@pytest.mark.parametrize("pos", ["rope", "learned"])
def test_lm_head_of_features_is_forward(pos):
    gpt = tiny_gpt(pos_embedding=pos).eval()
    x = torch.randint(0, V, (3, 11), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        feats = gpt.features(x)
        assert feats.shape == (3, 11, 32)
        assert torch.allclose(gpt.lm_head(feats), gpt(x)[0], atol=1e-6)
        assert torch.allclose(feats @ gpt.wte.weight.T, gpt(x)[0], atol=1e-5)  # tied weights, by hand


def test_unpadded_reward_is_the_head_on_the_last_column():
    rm = tiny_rm()
    x = torch.randint(0, V, (4, 9), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        by_hand = rm.trunk.features(x)[:, -1] @ rm.head.weight[0] + rm.head.bias[0]
        assert torch.allclose(rm(x, torch.ones_like(x)), by_hand, atol=1e-5)


@pytest.mark.parametrize("pos", ["learned", "sinusoidal"])
def test_reward_model_refuses_a_trunk_without_rope(pos):
    with pytest.raises(ValueError, match="RoPE"):
        rmod.RewardModel(tiny_gpt(pos_embedding=pos))


# ----------------------------------------------------------------------------------------------------
# encode_rows
def test_encode_rows_right_and_left_by_hand():
    tok = chat_tokenizer()
    hi_yo = [U, 104, 105, E, A, 32, 121, 111, E]  # "hi" -> " yo"
    a_b = [U, 97, E, A, 32, 98, E]                # "a" -> " b"
    idx, mask = rmod.encode_rows(tok, ["hi", "a"], ["yo", "b"])
    assert idx.tolist() == [hi_yo, a_b + [E, E]] and mask.tolist() == [[1] * 9, [1] * 7 + [0, 0]]
    idx, mask = rmod.encode_rows(tok, ["hi", "a"], ["yo", "b"], side="left")
    assert idx.tolist() == [hi_yo, [E, E] + a_b] and mask.tolist() == [[1] * 9, [0, 0] + [1] * 7]
    assert idx.dtype == mask.dtype == torch.long


def test_encode_rows_keeps_the_last_block_size_tokens():
    tok = chat_tokenizer()
    idx, mask = rmod.encode_rows(tok, ["hi", "a"], ["yo", "b"], block_size=5)
    assert idx.tolist() == [[A, 32, 121, 111, E], [E, A, 32, 98, E]] and mask.tolist() == [[1] * 5] * 2


def test_encode_rows_bad_input():
    tok = chat_tokenizer()
    for prompts, responses in ((["hi", "a"], ["yo"]), ([], [])):
        with pytest.raises(ValueError):
            rmod.encode_rows(tok, prompts, responses)
    with pytest.raises(ValueError, match="side"):
        rmod.encode_rows(tok, ["hi"], ["yo"], side="middle")


# ----------------------------------------------------------------------------------------------------
# make_scorer and checkpoints
@pytest.mark.parametrize("training", [True, False])
def test_make_scorer(training):
    rm = tiny_rm(dropout=0.5, block_size=8).train(training)  # dropout: a scorer that forgot eval() differs
    tok = chat_tokenizer()
    prompts, responses = ["hi", "a", "long prompt here"], ["yo", "b", "c"]
    got = rmod.make_scorer(rm, tok)(prompts, responses)
    assert rm.training is training
    assert got.shape == (3,) and got.device.type == "cpu" and got.dtype == torch.float32
    idx, mask = rmod.encode_rows(tok, prompts, responses, block_size=8)
    rm.eval()
    with torch.no_grad():
        assert torch.allclose(got, rm(idx, mask), atol=1e-6)
        assert got[0].item() == pytest.approx(alone(rm, idx[0]), abs=1e-5)  # 9 tokens cropped to 8: no error


def test_save_and_load_round_trip(tmp_path):
    rm = tiny_rm(seed=7)
    with torch.no_grad():
        rm.head.bias.fill_(0.25)  # not the init value: the bias must travel too
    tok = chat_tokenizer()
    path = str(tmp_path / "rm.pt")
    rmod.save_reward_model(path, rm, tok.to_dict(), step=3, val_loss=0.5)
    loaded, ckpt = rmod.load_reward_model(path)
    assert ckpt["step"] == 3 and ckpt["tokenizer"] == tok.to_dict()
    idx, mask = pad_batch(random_rows(seed=8), "right", pad_id=E)
    with torch.no_grad():
        assert torch.equal(loaded.eval()(idx, mask), rm(idx, mask))


def test_load_reward_model_refuses_a_plain_gpt(tmp_path, capsys):
    gpt = tiny_gpt()
    path = str(tmp_path / "sft.pt")
    checkpoint.save_checkpoint(path, gpt, gpt.config, 0, 1.0, {"tokenizer": chat_tokenizer().to_dict()})
    with pytest.raises(SystemExit) as e:
        rmod.load_reward_model(path)
    assert "not a reward model" in one_line_exit(e, capsys)


# --- 7.4 the SFT model's log-probability as a reference scorer
def test_logprob_scorer_sums_the_answers_log_probs_by_hand_and_ignores_padding():
    tok, gpt = chat_tokenizer(), tiny_gpt(3)
    prompts, responses = ["hi there", "ok"], ["yo", "a longer answer"]
    got = rmod.logprob_scorer(gpt, tok)(prompts, responses)
    for b, (p, r) in enumerate(zip(prompts, responses)):
        prompt_ids = chat.encode_prompt(tok, p)
        answer = chat.encode_response(tok, r)  # " " + answer + <|end|>: every one of them counts
        row = torch.tensor([prompt_ids + answer])
        logp = torch.log_softmax(gpt(row)[0][0].double(), -1)
        by_hand = sum(logp[len(prompt_ids) - 1 + i, t].item() for i, t in enumerate(answer))
        assert got[b].item() == pytest.approx(by_hand, abs=1e-4)
        assert rmod.logprob_scorer(gpt, tok)([p], [r])[0].item() == pytest.approx(got[b].item(), abs=1e-5)
