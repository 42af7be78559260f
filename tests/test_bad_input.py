"""Bad input and lost work, for every part that has the flag or the behaviour: a one-line error naming the
fix (never a traceback), nothing silently accepted, no earlier result destroyed, nothing lost on Ctrl-C.

Parts are discovered (partloader.parts_defining and the config dataclasses' fields), so a later part that
copies Part 4 inherits every check here. Everything runs in-process on tiny models: no subprocesses.
"""
import ast
import csv
import hashlib
import json
import lzma
import re
import signal

import pytest
import torch
from partloader import ROOT, exits_with_one_line, load_part, parts_defining

TRAIN_PARTS = [part for part, _ in parts_defining("TrainConfig", ["train"])]


def config_fields(part):
    """{flag name: its default's source text} of a part's TrainConfig and GPTConfig, read with ast."""
    fields = {}
    for module, cls in (("train", "TrainConfig"), ("model", "GPTConfig")):
        tree = ast.parse((ROOT / part / f"{module}.py").read_text(encoding="utf-8"))
        node = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == cls)
        fields.update({n.target.id: ast.unparse(n.value) for n in node.body if isinstance(n, ast.AnnAssign)})
    return fields


def parts_with(*flags):
    return [part for part in TRAIN_PARTS if all(flag in config_fields(part) for flag in flags)]


# ----------------------------------------------------------------------------------------------------
# Flags: every bad value is refused while parsing, before any work
BAD_VALUES = {
    "lr": ["0", "-1", "nan", "inf"], "max_steps": ["0"], "batch_size": ["0"], "eval_interval": ["0"],
    "eval_iters": ["0"], "log_interval": ["0"], "ckpt_interval": ["0"], "grad_accum_steps": ["0"],
    "tokenizer_chars": ["0"], "grad_clip": ["-1", "0", "nan"], "weight_decay": ["-0.1", "nan"],
    "beta2": ["1.5", "1", "-0.1"], "val_fraction": ["0", "1"], "warmup_steps": ["-1"], "min_lr_ratio": ["2"],
    "decay_fraction": ["5", "-0.5"], "stop_after": ["-1"], "max_chars": ["-1"],
    "sample_tokens": ["-1", "100001", "1000000000000"],  # at most sample.py's MAX_NEW_TOKENS: a typo is not a hang
    "schedule": ["linear"], "dtype": ["fp8"], "tokenizer": ["words"], "bpe_vocab_size": ["100", "70000"],
    "vocab_size": ["0"], "block_size": ["0", "-4"], "n_layer": ["0"], "n_head": ["0", "3"], "n_embd": ["0"],
    "dropout": ["1", "-0.1", "nan"], "pos_embedding": ["none"], "norm": ["batchnorm"], "mlp": ["relu"],
    "window": ["-1"], "n_sink": ["-1"],
    "mlp_hidden": ["-1"], "n_expert": ["-1"], "top_k": ["0"], "expert_hidden": ["-1"], "moe_every": ["0"],
    "capacity_factor": ["-1", "nan"], "n_shared_expert": ["-1"], "aux_loss_coef": ["-0.01", "nan"],
    "z_loss_coef": ["inf"], "bias_update_rate": ["-0.001"],
    # strict booleans: "maybe" is not False
    "bias": ["maybe"], "use_sdpa": ["maybe"], "compile": ["maybe"], "tensorboard": ["maybe"], "overwrite": ["maybe"],
    "seed": ["-1", str(2**70)],
    "stage": ["finetune"], "order": ["random"], "base_steps": ["0"], "train_per_family": ["0"],  # Part 6
    "test_per_family": ["0"], "eval_batch_size": ["0"], "base": [""], "sft_data": [""], "freeze_embeddings": ["maybe"],
    "sft": [""], "pairs": [""], "sft_steps": ["0"], "pairs_per_family": ["0"], "error_prompts": ["0"],  # Part 7
    "rm_steps": ["0"], "rm_batch_size": ["0"], "rm_lr": ["0", "nan"], "rm_loss": ["hinge"], "rm_margin": ["-1"],
    "center_coef": ["-1", "nan"],
    "algo": ["reinforce"], "reward_model": [""], "reward": ["human"], "checker_weight": ["-1", "nan"],  # Part 8
    "missing_end_penalty": ["-1"], "rl_steps": ["-1"], "rollouts": ["-1"], "max_new_tokens": ["0"],
    "group_size": ["1"], "ppo_epochs": ["0"], "minibatch_size": ["0"], "rl_lr": ["-1", "nan"], "clip_eps": ["0", "1"],
    "kl_coef": ["-0.1", "nan"], "vf_coef": ["-1"], "value_clip": ["-0.2"], "gamma": ["1.5"], "lam": ["-0.1"],
    "reward_norm": ["maybe"], "whiten_advantages": ["maybe"], "grpo_scale_std": ["maybe"], "loss_agg": ["sum"],
    "dpo_beta": ["0", "inf"], "dpo_pairs": [""], "ranked_prompts": ["0"],
    "reason_family": ["mul"],  # Part 9
    "reason_steps": ["0"], "reason_batch_size": ["0"], "reason_lr": ["0", "nan"], "reason_train": ["0"],  # Part 9
    "reason_test": ["0"], "sc_samples": ["0"], "sc_temperature": ["0", "-1", "nan"], "reason_grpo": ["maybe"],
    "n_kv_head": ["-1", "3"], "attention": ["gqa"], "kv_latent": ["-1"], "rope_dim": ["3", "-2"],
}
# Flags where any value of the right type is fine, or whose bad values are tested by behaviour below
# (paths, devices). A new flag must go into BAD_VALUES or here: test_every_flag_is_covered.
ANY_VALUE = {"target_loss", "data", "val_data", "out_dir", "cache_dir", "resume", "device", "preset"}

FLAG_CASES = [(part, flag, value) for part in TRAIN_PARTS for flag in config_fields(part) if flag in BAD_VALUES
              for value in BAD_VALUES[flag]]


@pytest.mark.parametrize("part,flag,value", FLAG_CASES, ids=[f"{p[:5]}-{f}={v}" for p, f, v in FLAG_CASES])
def test_bad_flag_values_are_one_line_errors(part, flag, value, capsys):
    train = load_part(part, "train")
    exits_with_one_line(capsys, lambda: train.parse_configs([f"--{flag}", value]), flag, code=2)


@pytest.mark.parametrize("part", TRAIN_PARTS)
def test_every_flag_is_covered(part):
    missing = set(config_fields(part)) - set(BAD_VALUES) - ANY_VALUE
    assert not missing, f"add bad values for {sorted(missing)} to BAD_VALUES (or to ANY_VALUE if none exist)"


@pytest.mark.parametrize("part", [part for part, _ in parts_defining("pick_device", ["runtime"])])
def test_a_device_this_machine_lacks_is_one_line(part, capsys):
    runtime = load_part(part, "runtime")
    exits_with_one_line(capsys, lambda: runtime.pick_device("gpu"), "--device")
    exits_with_one_line(capsys, lambda: runtime.pick_device("meta"), "--device")
    if not torch.cuda.is_available():
        exits_with_one_line(capsys, lambda: runtime.pick_device("cuda"), "--device auto")
    exits_with_one_line(capsys, lambda: runtime.pick_device(f"cuda:{torch.cuda.device_count()}"), "--device")
    assert runtime.pick_device("cpu") == "cpu"


@pytest.mark.parametrize("part", [part for part, _ in parts_defining("toy_batches", ["train"])])
def test_a_block_longer_than_the_toy_text_is_one_line(part, capsys):
    """Part 1 trains on a short built-in text: a block that does not fit in it is a flag error, not an empty
    torch.stack. The longest block that fits gives one chunk."""
    train = load_part(part, "train")
    longest = len(train.TOY_TEXT) - 1  # a chunk is block_size + 1 characters: inputs and shifted targets
    line = exits_with_one_line(capsys, lambda: train.main(*train.parse_configs(["--block_size", "500"])),
                               "--block_size 500", f"({len(train.TOY_TEXT)} characters)")
    assert f"--block_size {longest} or less" in line
    exits_with_one_line(capsys, lambda: train.toy_batches(longest + 1), f"--block_size {longest + 1}")
    x, y, _ = train.toy_batches(longest)
    assert x.shape == y.shape == (1, longest)


# ----------------------------------------------------------------------------------------------------
# Tiny, fast runs of every part's train.py (a later part is a copy of Part 4, so it gets Part 4's flags)
MODEL = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--block_size", "8", "--batch_size", "2"]
# fine-tuning: whole chat examples need a BPE and a block of 64 tokens (MODEL's 8 is too short)
SFT_FAST = ["--preset", "tiny", "--max_chars", "100000", "--tokenizer_chars", "50000", "--block_size", "64",
            "--train_per_family", "4", "--test_per_family", "1", "--max_steps", "2", "--eval_interval", "1",
            "--eval_iters", "1", "--tensorboard", "false", "--log_interval", "1"]
FAST = {
    "part2_tiny_llm": ["--max_steps", "2", "--eval_interval", "1", "--eval_iters", "1", "--sample_tokens", "1"],
    "part4_scaling": ["--preset", "tiny", "--data", "data/shakespeare_100k.txt", "--val_data", "", "--tokenizer",
                      "bytes", "--max_steps", "2", "--eval_interval", "1", "--eval_iters", "1", "--sample_tokens", "1",
                      "--tensorboard", "false", "--log_interval", "1"],
    "part6_sft": SFT_FAST,
    # Part 7 trains a reward model by default; these tests are of the fine-tuning run it carries (--stage sft).
    # The reward run's own bad input is tested in tests/part7/test_part7_train.py
    "part7_reward": [*SFT_FAST, "--stage", "sft"],
    "part8_alignment": [*SFT_FAST, "--stage", "sft"],  # the alignment run's bad input: tests/part8/test_part8_train.py
    "part9_reasoning": [*SFT_FAST, "--stage", "sft"],  # the reasoning runs' bad input: tests/part9/test_part9_train.py
}


def fast_args(part, out_dir, *extra):
    known = [p for p in FAST if number(p) <= number(part)]  # a part not listed runs like the part before it
    cache = ["--cache_dir", str(out_dir.parent / "cache")] if "cache_dir" in config_fields(part) else []
    return [*MODEL, *FAST[max(known, key=number)], *cache, "--out_dir", str(out_dir), *extra]  # later flags win


def number(part):
    return int(re.match(r"part(\d+)", part).group(1))


def run(part, out_dir, *extra):
    train = load_part(part, "train")
    return train.main(*train.parse_configs(fast_args(part, out_dir, *extra)))


OUT_PARTS = parts_with("out_dir")
RESUME_PARTS = parts_with("resume")


@pytest.mark.parametrize("part", parts_with("data"))
@pytest.mark.parametrize("name,content", [("binary.txt", b"\x7fELF\xff\xfe" * 3000),
                                          ("broken.txt.xz", b"\xfd7zXZ\x00 not really xz" * 100)])
def test_a_data_file_that_is_not_text_is_one_line(part, name, content, tmp_path, capsys):
    if name.endswith(".xz") and "cache_dir" not in config_fields(part):
        pytest.skip("this part reads plain .txt only")
    (tmp_path / name).write_bytes(content)
    bpe = ["--tokenizer", "bpe"] if "tokenizer" in config_fields(part) else []  # BPE training reads it first
    exits_with_one_line(capsys, lambda: run(part, tmp_path / "out", "--data", str(tmp_path / name), *bpe), name)


@pytest.mark.parametrize("part", OUT_PARTS)
def test_a_second_run_does_not_replace_the_first(part, tmp_path, capsys):
    """The learner's mistake: the same command twice, or a short test run in the folder of a good model."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "best.pt").write_bytes(b"the good model")
    (out / "metrics.jsonl").write_text('{"step": 1, "loss": 1.0}\n')
    exits_with_one_line(capsys, lambda: run(part, out), "--overwrite true", "--out_dir")
    assert (out / "best.pt").read_bytes() == b"the good model"
    assert (out / "metrics.jsonl").read_text() == '{"step": 1, "loss": 1.0}\n'
    assert not any((tmp_path / "cache").glob("*")), "refused only after tokenizing"
    (out / "last.pt").write_bytes(b"a stale last.pt")  # --overwrite: the old run's files go, none is mixed in
    run(part, out, "--overwrite", "true")
    assert (out / "best.pt").read_bytes() != b"the good model"
    assert not (out / "last.pt").exists() or "resume" in config_fields(part)
    if (out / "last.pt").exists():
        torch.load(out / "last.pt", weights_only=True)  # the new run's, not the stale bytes


@pytest.mark.parametrize("part", [part for part, _ in parts_defining("check_not_diverged", ["train", "run_tools"])])
def test_a_diverged_run_stops_with_one_line(part, tmp_path, capsys):
    """lr 100 sends the val loss far above ln(256) = 5.5 (guessing uniformly) within 2 steps."""
    exits_with_one_line(capsys, lambda: run(part, tmp_path / "out", "--lr", "100", "--max_steps", "4",
                                            "--eval_interval", "2"), "diverged", "--lr")
    train = load_part(part, "train")
    train.check_not_diverged(5.0, 256, step=1)  # worse than a trained model, but not diverged
    with pytest.raises(SystemExit):
        train.check_not_diverged(float("nan"), 256, step=1)


@pytest.mark.parametrize("part", OUT_PARTS)
def test_out_dir_that_is_a_file_is_one_line(part, tmp_path, capsys):
    (tmp_path / "taken").write_text("a file")
    exits_with_one_line(capsys, lambda: run(part, tmp_path / "taken"), "--out_dir")
    if "cache_dir" in config_fields(part):
        (tmp_path / "not_a_folder").write_text("a file")
        exits_with_one_line(capsys, lambda: run(part, tmp_path / "out", "--cache_dir", str(tmp_path / "not_a_folder")),
                            "--cache_dir")


@pytest.mark.parametrize("part", [part for part, _ in parts_defining("prepare_out_dir", ["checkpoint"])])
def test_out_dir_in_a_missing_folder_is_created(part, tmp_path):
    checkpoint = load_part(part, "checkpoint")
    checkpoint.prepare_out_dir(str(tmp_path / "a" / "b"))
    assert (tmp_path / "a" / "b").is_dir()


def ctrl_c_at(train, monkeypatch, call):
    """Press Ctrl-C (a real SIGINT to this process) during the call-th get_batch."""
    real, calls = train.get_batch, []

    def get_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == call:
            signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "get_batch", get_batch)


def exit_status_after_ctrl_c(call):
    try:
        call()
    except KeyboardInterrupt:  # caught here: escaping, it would stop the whole pytest session
        pytest.fail("Ctrl-C ended the run with a KeyboardInterrupt traceback")
    except SystemExit as e:
        return e.code
    pytest.fail("the run went on after Ctrl-C")


@pytest.mark.parametrize("part", OUT_PARTS)
def test_ctrl_c_ends_with_one_line_and_keeps_the_work(part, tmp_path, monkeypatch, capsys):
    train = load_part(part, "train")
    ctrl_c_at(train, monkeypatch, 2)
    status = exit_status_after_ctrl_c(lambda: run(part, tmp_path / "out", "--max_steps", "4", "--eval_interval", "4"))
    assert status == 130  # what a shell reports for Ctrl-C
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("interrupted: at step")
    if part in RESUME_PARTS:
        assert "--resume" in line and (tmp_path / "out" / "last.pt").exists()


@pytest.mark.parametrize("part", RESUME_PARTS)
def test_ctrl_c_then_resume_equals_a_straight_run(part, tmp_path, monkeypatch):
    """Ctrl-C lets the step finish and saves it: the resumed run continues bit for bit."""
    train = load_part(part, "train")
    steps = ["--max_steps", "6", "--eval_interval", "6", "--ckpt_interval", "100"]
    straight = run(part, tmp_path / "straight", *steps)
    ctrl_c_at(train, monkeypatch, 3)
    assert exit_status_after_ctrl_c(lambda: run(part, tmp_path / "stopped", *steps)) == 130
    monkeypatch.undo()
    assert torch.load(tmp_path / "stopped" / "last.pt", weights_only=True)["step"] == 3
    resumed = train.main(*train.parse_configs(["--resume", str(tmp_path / "stopped" / "last.pt")]))
    assert [(h["step"], h["train"], h["val"]) for h in resumed["history"]] == \
        [(h["step"], h["train"], h["val"]) for h in straight["history"]]


class Killed(Exception):
    """Stands in for SIGKILL: the process dies mid-run, after its last checkpoint."""


@pytest.mark.parametrize("part", RESUME_PARTS)
def test_after_a_kill_and_resume_the_records_cover_the_whole_run(part, tmp_path, monkeypatch):
    train = load_part(part, "train")
    out, steps = tmp_path / "out", ["--max_steps", "8", "--eval_interval", "4", "--ckpt_interval", "4"]
    real, calls = train.get_batch, []

    def get_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 9:  # steps 1-4, 2 eval batches at step 4, steps 5-6: the 9th batch is step 7's
            raise Killed
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "get_batch", get_batch)
    with pytest.raises(Killed):
        run(part, out, *steps)
    monkeypatch.undo()
    logged = [json.loads(line)["step"] for line in open(out / "metrics.jsonl") if "loss" in line]
    assert max(logged) == 6  # steps 5 and 6 were logged after last.pt (step 4): the resumed run does them again
    result = train.main(*train.parse_configs(["--resume", str(out / "last.pt")]))
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    loss_steps = [r["step"] for r in rows if "loss" in r]
    assert loss_steps == list(range(1, 9)), "a step is missing or logged twice"
    summary = json.load(open(out / "results.json"))
    assert summary["steps"] == 8
    assert summary["tokens_seen"] == 8 * result["tokens_per_step"]
    assert summary["wall_s"] >= max(h["time"] for h in result["history"]) - 0.05


@pytest.mark.parametrize("part", RESUME_PARTS)
def test_resume_refuses_a_best_pt_and_another_tokenizer(part, tmp_path, capsys):
    out = tmp_path / "out"
    run(part, out)
    train = load_part(part, "train")
    exits_with_one_line(capsys, lambda: train.parse_configs(["--resume", str(out / "best.pt")]), "last.pt")
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    other = "bpe" if "bytes" in fast_args(part, out) else "bytes"  # a tokenizer the stored run did not use
    exits_with_one_line(capsys, lambda: train.parse_configs(["--resume", str(out / "last.pt"), "--tokenizer", other]),
                        "--tokenizer")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before  # nothing written


@pytest.mark.parametrize("part", [part for part, _ in parts_defining("stored_tokenizer", ["data"])])
def test_resume_uses_the_checkpoints_tokenizer_not_the_caches(part, tmp_path):
    """A changed cache (another cache_dir, a retrained BPE) must not feed the resumed model other ids; the
    stored tokenizer gets the id the original cache file had, so the cached token ids are reused."""
    data, bpe = load_part(part, "data", "bpe")
    text = (ROOT / "data" / "shakespeare_100k.txt").read_text(encoding="utf-8")[:3000]
    (tmp_path / "a.txt").write_text(text)
    tok, tok_id = data.load_tokenizer("bpe", 270, [str(tmp_path / "a.txt")], str(tmp_path / "cache"), 3000)
    stored = data.tokenizer_to_dict(tok)
    assert data.stored_tokenizer(stored, str(tmp_path / "cache"))[1] == tok_id
    other = bpe.Tokenizer()
    other.train(text[::-1], 270)
    assert data.stored_tokenizer(data.tokenizer_to_dict(other), str(tmp_path / "cache"))[1] != tok_id
    again, _ = data.stored_tokenizer(stored, str(tmp_path / "other_cache"))
    assert again.encode(text[:500]) == tok.encode(text[:500])


@pytest.mark.parametrize("part", parts_with("resume", "cache_dir"))
def test_missing_data_is_found_before_any_tokenizing(part, tmp_path, capsys):
    missing = tmp_path / "gutenberg_train_b.txt.xz"
    line = exits_with_one_line(capsys, lambda: run(part, tmp_path / "out", "--data",
                                                   f"data/shakespeare_100k.txt,{missing}", "--tokenizer", "bpe"),
                               str(missing), "prepare_data.py")
    assert "--rest" in line
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()
    exits_with_one_line(capsys, lambda: run(part, tmp_path / "out", "--val_data", str(tmp_path / "nope.txt")),
                        "nope.txt")
    exits_with_one_line(capsys, lambda: load_part(part, "train").parse_configs(["--data", ","]), "--data")


# ----------------------------------------------------------------------------------------------------
# prepare_data.py: the source is checked (sha256, every book against the manifest), offline, on a fake corpus
PREPARE_PARTS = [part for part, _ in parts_defining("check_against_manifest", ["prepare_data"])]


def fake_corpus(folder, books):
    folder.mkdir(exist_ok=True)
    source = folder / "gutenberg_fiction_train.txt.xz"
    with lzma.open(source, "wt", encoding="utf-8") as f:
        f.write("".join(f"{book}\n<|endoftext|>\n\n" for book in books))
    with open(folder / "manifest.tsv", "w", newline="") as f:
        rows = csv.writer(f, delimiter="\t")
        rows.writerow(["split", "index", "gutenberg_ebook_no", "title", "author", "chars", "sha256_16"])
        for i, book in enumerate(books):
            digest = hashlib.sha256((book + "\n").encode()).hexdigest()[:16]
            rows.writerow(["train", i, 100 + i, f"Book {i}", "Anon", len(book) + 1, digest])
    return source, hashlib.sha256(source.read_bytes()).hexdigest()


@pytest.mark.parametrize("part", PREPARE_PARTS)
def test_prepare_data_rebuilds_part_b_from_a_checked_source(part, tmp_path, capsys):
    prepare_data = load_part(part, "prepare_data")
    books = ["First book.\nIt is short.", "Second book, a bit longer than the first.", "Third book."]
    source, sha = fake_corpus(tmp_path / "src", books)
    out = tmp_path / "data"
    out.mkdir()
    common = ["--source", str(tmp_path / "src"), "--out", str(out), "--part_a_chars", "30",
              "--manifest", str(tmp_path / "src" / "manifest.tsv")]
    prepare_data.main([*common, "--sha256", sha, "--rest"])
    part_b = lzma.open(out / "gutenberg_train_b.txt.xz", "rt", encoding="utf-8").read()
    assert "Second book" in part_b and "First book" not in part_b
    assert "First book" in lzma.open(out / "gutenberg_train_a.txt.xz", "rt", encoding="utf-8").read()
    exits_with_one_line(capsys, lambda: prepare_data.main([*common, "--sha256", "0" * 64]), "sha256")
    exits_with_one_line(capsys, lambda: prepare_data.main([*common, "--source", str(tmp_path)]), "--source")
    fake_corpus(tmp_path / "src", books)  # same books, then one changed behind the manifest's back
    with lzma.open(source, "wt", encoding="utf-8") as f:
        f.write("".join(f"{b}\n<|endoftext|>\n\n" for b in [books[0], books[1] + "!", books[2]]))
    exits_with_one_line(capsys, lambda: prepare_data.main([*common, "--sha256", "skip"]), "Book 1")


@pytest.mark.parametrize("part", PREPARE_PARTS)
def test_prepare_data_knows_the_documented_sha256(part):
    prepare_data = load_part(part, "prepare_data")
    table_row = next(line for line in (ROOT / "data" / "SOURCES.md").read_text().splitlines()
                     if line.startswith("| `gutenberg_fiction_train.txt.xz`"))
    assert prepare_data.expected_sha256(str(ROOT / "data" / "SOURCES.md")) in table_row
