"""Part 9's milestone check, small: a model that learned to call the unit converter turns held-out hours into
seconds when its calls are run, and cannot when they are not (9.3), with compliant answers (9.4).
The MLA part of the milestone is checked in test_part9_mla.py; CoT against direct answers and self-consistency
need the default run (minutes: part9_reasoning/README.md has its figures).

Measured (this config, seed 0; 21 s on one CPU core): tools on 90%, tools off 0%; calls run and right arguments
100%, result copied 90% (the misses copy a 5-7 digit result with a digit wrong). At 300 steps: 86.7%.

Run: python -m pytest -q tests/part9 -m milestone
"""
import pytest
import torch
from partloader import load_part

pytestmark = pytest.mark.milestone


def test_tool_use_beats_no_tool_on_hours_to_seconds():
    rt, tr, train, comp = (load_part("part9_reasoning", name) for name in ("reason_tasks", "reason_train", "train",
                                                                            "compliance"))
    torch.manual_seed(0)
    tok = tr.reasoning_tokenizer()
    examples = rt.make_examples(["hours"], "tool", "train", 4000, 0)
    data = tr.build_reasoning_set(examples, tok, 80)
    model = tr.new_model(tok, n_layer=2, n_embd=64, n_head=2, block_size=80)
    tr.train_reasoner(model, data, tr.ReasonConfig(steps=400, batch_size=32, lr=3e-3, warmup=15),
                      log=lambda line: None)
    test = rt.make_examples(["hours"], "tool", "test", 60, 0)
    prompts = [ex.prompt for ex in test]
    on = comp.compliance_report(test, train.answers_with_tools(model, tok, prompts, 48, True), "tool")
    off = comp.compliance_report(test, train.answers_with_tools(model, tok, prompts, 48, False), "tool")
    assert on["accuracy"] >= 0.75, on
    assert off["accuracy"] <= 0.05, off
    assert on["call_ok"] >= 0.9 and on["args_ok"] >= 0.9 and on["copied_ok"] >= 0.75, on
