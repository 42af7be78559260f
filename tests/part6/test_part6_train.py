"""Part 6's fine-tuning run: the vocabulary grown for the chat tokens, the base model found or pretrained, the
curriculum's pool, the graded answers in the results, and one-line errors for a base or data that cannot work.
(The loop itself, with resume and Ctrl-C, is tested on every part in test_carried_forward_training.py and
test_bad_input.py: Part 6's tiny preset fine-tunes, so those tests run its fine-tuning path.)
"""
import json

import pytest
import torch
from partloader import load_part

TINY = ["--preset", "tiny", "--max_chars", "300000", "--tokenizer_chars", "100000", "--tensorboard", "false",
        "--sample_tokens", "0", "--max_steps", "6", "--eval_interval", "3", "--log_interval", "3"]


@pytest.fixture(scope="module")
def part6():
    return load_part("part6_sft", "train", "model", "sft_data", "chat_format", "checkpoint", "evaluate")


def run(train, out, *extra):
    return train.main(*train.parse_configs([*TINY, "--out_dir", str(out), "--cache_dir", str(out.parent / "cache"),
                                            *extra]))


# --- 6.1 grow_vocab
def test_grown_vocab_keeps_every_old_logit_and_starts_new_rows_at_the_mean(part6):
    _, model, *_ = part6
    torch.manual_seed(0)
    gpt = model.GPT(model.GPTConfig(vocab_size=50, block_size=8, n_layer=1, n_head=2, n_embd=16)).eval()
    idx = torch.randint(0, 50, (2, 8))
    before = gpt(idx)[0]
    mean_row = gpt.wte.weight.mean(0)
    gpt.grow_vocab(53)
    after = gpt(idx)[0]
    assert after.shape == (2, 8, 53) and gpt.config.vocab_size == 53
    assert torch.allclose(after[..., :50], before, atol=1e-6)  # the old model, unchanged
    for row in gpt.wte.weight[50:]:
        assert torch.allclose(row, mean_row)
    assert gpt.lm_head.weight is gpt.wte.weight  # still tied: one matrix reads and writes tokens
    new_logits = after[..., 50:]  # a mean row's logit is the mean of the old logits (logits are linear in the row)
    assert torch.allclose(new_logits, before.mean(-1, keepdim=True).expand_as(new_logits), atol=1e-5)
    with pytest.raises(ValueError, match="shrink"):
        gpt.grow_vocab(10)


# --- 6.1 --freeze_embeddings
def test_frozen_token_rows_stay_as_pretrained_while_the_chat_rows_and_the_rest_learn(part6):
    train, model, *_ = part6
    torch.manual_seed(0)
    gpt = model.GPT(model.GPTConfig(vocab_size=53, block_size=8, n_layer=1, n_head=2, n_embd=16))
    before = {name: p.detach().clone() for name, p in gpt.named_parameters()}
    restore = train.freeze_token_rows(gpt, 50)
    opt = torch.optim.AdamW(gpt.parameters(), lr=1e-2, weight_decay=0.5)  # decay alone would move every row
    for _ in range(3):
        idx = torch.randint(0, 53, (4, 8))
        loss = torch.nn.functional.cross_entropy(gpt(idx)[0].flatten(0, 1), idx.roll(-1, 1).flatten())
        opt.zero_grad()
        loss.backward()
        assert gpt.wte.weight.grad[:50].abs().max() == 0 and gpt.wte.weight.grad[50:].abs().max() > 0
        opt.step()
        restore()
    assert torch.equal(gpt.wte.weight[:50], before["wte.weight"][:50])  # bit for bit, weight decay undone
    assert not torch.allclose(gpt.wte.weight[50:], before["wte.weight"][50:])
    assert not torch.allclose(gpt.blocks[0].attn.c_attn.weight, before["blocks.0.attn.c_attn.weight"])


def test_a_fine_tuning_run_keeps_the_base_rows_unless_told_otherwise(part6, tmp_path):
    train, _, _, _, checkpoint, _ = part6
    base = run(train, tmp_path / "base", "--stage", "pretrain")["checkpoint"]
    base_rows = checkpoint.read_checkpoint(base)["model"]["wte.weight"]
    for freeze, same in (("true", True), ("false", False)):
        out = tmp_path / f"sft_{freeze}"
        run(train, out, "--base", base, "--freeze_embeddings", freeze, "--train_per_family", "4",
            "--test_per_family", "1")
        rows = checkpoint.read_checkpoint(out / "last.pt")["model"]["wte.weight"]
        assert torch.equal(rows[:len(base_rows)], base_rows) == same


# --- 6.3 the curriculum's pool
def test_the_pool_grows_from_a_fifth_to_everything_at_half_the_run(part6):
    _, _, sft_data, *_ = part6
    pools = [sft_data.curriculum_pool(s, 100, "curriculum") for s in (0, 25, 50, 99)]
    assert pools == pytest.approx([0.2, 0.6, 1.0, 1.0])
    assert sft_data.curriculum_pool(0, 100, "shuffle") == 1.0


def test_a_batch_comes_from_the_pool_and_is_cut_to_its_longest_row(part6):
    _, _, sft_data, *_ = part6
    lengths = torch.tensor([3, 5, 2, 9, 9, 9, 9, 9, 9, 9])
    x = torch.arange(100).view(10, 10)
    data = sft_data.SFTSet(x, x.clone(), lengths)
    gen = torch.Generator().manual_seed(0)
    bx, by = sft_data.get_sft_batch(data, 64, gen, pool=0.3)  # the first 3 rows only
    assert set(bx[:, 0].tolist()) == {0, 10, 20}
    assert bx.shape[1] == 5  # row 1 (length 5) is the longest of them
    both = sft_data.get_sft_batch(data, 8, torch.Generator().manual_seed(1))
    halves = [sft_data.get_sft_batch(data, 4, torch.Generator().manual_seed(1), rank=r, world_size=2) for r in (0, 1)]
    rows = torch.cat([h[0][:, 0] for h in halves])
    assert torch.equal(rows, both[0][:, 0])  # two processes split the batch one process would draw


# --- the run
def test_a_fine_tuning_run_grades_its_answers_and_saves_a_chat_model(part6, tmp_path):
    train, _, _, chat_format, _, evaluate = part6
    result = run(train, tmp_path / "sft")
    summary = json.load(open(tmp_path / "sft" / "results.json"))
    families = summary["sft"]["families"]
    assert len(families) >= 10 and summary["sft"]["base_exact"] is not None
    assert summary["sft"]["exact"] == pytest.approx(sum(families.values()) / len(families))  # the macro mean
    assert result["sft"]["items_per_s"]["same_answers"]  # batched greedy answers equal one at a time
    report = (tmp_path / "sft" / "eval.md").read_text()
    assert "| **mean** (macro) |" in report and "Base model before fine-tuning" in report
    model, tok = evaluate.load_chat_model(str(tmp_path / "sft" / "best.pt"))  # chat.py can load what it wrote
    assert model.config.vocab_size == tok.vocab_size
    assert set(chat_format.chat_token_ids(tok)) == {"user", "assistant", "end"}


def test_base_auto_pretrains_a_base_once_then_finds_it(part6, tmp_path, monkeypatch, capsys):
    train, *_ = part6
    monkeypatch.setattr(train, "BASES", (str(tmp_path / "no_part5" / "best.pt"),))  # whatever this machine has
    out = tmp_path / "auto"
    run(train, out, "--base", "auto")
    printed = capsys.readouterr().out
    assert "pretraining one for 30 steps" in printed and (out / "base" / "best.pt").is_file()
    run(train, out, "--base", "auto", "--overwrite", "true")
    printed = capsys.readouterr().out
    assert "pretraining" not in printed and f"fine-tuning {out / 'base' / 'best.pt'}" in printed


def test_a_pretrained_checkpoint_is_fine_tuned_with_its_own_tokenizer(part6, tmp_path, capsys):
    """--base PATH: a Part 4/5-style checkpoint (what --stage pretrain writes) keeps its weights and tokenizer."""
    train, _, _, chat_format, checkpoint, _ = part6
    run(train, tmp_path / "pre", "--stage", "pretrain")
    base, ckpt = checkpoint.load_checkpoint(str(tmp_path / "pre" / "best.pt"))
    run(train, tmp_path / "sft", "--base", str(tmp_path / "pre" / "best.pt"), "--max_steps", "1")
    tuned, tuned_ckpt = checkpoint.load_checkpoint(str(tmp_path / "sft" / "best.pt"))
    assert tuned.config.vocab_size == base.config.vocab_size + len(chat_format.CHAT_TOKENS)
    assert tuned_ckpt["tokenizer"]["merges"] == ckpt["tokenizer"]["merges"]
    assert "fine-tuning" in capsys.readouterr().out


def test_a_byte_level_base_is_one_line(part6, tmp_path, capsys):
    train, *_ = part6
    run(train, tmp_path / "pre", "--stage", "pretrain", "--tokenizer", "bytes")
    with pytest.raises(SystemExit, match="needs a BPE tokenizer"):
        run(train, tmp_path / "sft", "--base", str(tmp_path / "pre" / "best.pt"))
    assert not (tmp_path / "sft" / "best.pt").exists()


def test_user_jsonl_trains_and_a_bad_line_is_named_before_any_work(part6, tmp_path):
    train, *_ = part6
    good = tmp_path / "mine.jsonl"
    good.write_text("\n".join(json.dumps({"instruction": f"Say {w}.", "output": w}) for w in ["yes", "no"] * 10))
    result = run(train, tmp_path / "sft", "--sft_data", str(good))
    assert set(result["sft"]["families"]) == {"jsonl"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{"instruction": "a"\n')
    with pytest.raises(SystemExit, match="line 2"):
        run(train, tmp_path / "bad_run", "--sft_data", str(bad))
    assert not (tmp_path / "bad_run").exists()  # failed before the out_dir was made


def test_examples_longer_than_the_block_are_one_line(part6, tmp_path):
    train, *_ = part6
    with pytest.raises(SystemExit, match="block_size is 16"):
        run(train, tmp_path / "sft", "--block_size", "16")
