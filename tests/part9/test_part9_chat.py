"""9.4 chat.py and serve.py (part9_reasoning): the chatbot gains the tool runtime and folds its reasoning under the
answer.

Three models:
  - a scripted stand-in (ScriptedGPT): an nn.Module whose next token follows a script per question, read from the
    whole text so far, so the real decode loop, KV cache, runtime and server run around it and the answers are
    known (a call whose result it copies, a scratchpad, two calls, a call it repeats forever, a hostile call);
  - a real tiny GPT trained for a few seconds on tool-style multiplications (reason_train): it writes calls, the
    runtime answers them, so its streamed answers are compared with tools.generate_with_tools' on real numbers;
  - a Part 8-style chat model (tests/tiny_chat.py: chat tokens, no reasoning tokens): it must chat as before.
Run: python -m pytest -q tests/part9/test_part9_chat.py
"""
import base64
import hashlib
import json
import re
import shutil
import subprocess
import threading
from types import SimpleNamespace

import pytest
import tiny_chat
import torch
from partloader import exits_with_one_line, load_part

PART = "part9_reasoning"
chat, serve, tools, rf, chat_format, reason_train, reason_tasks, checkpoint, data, evaluate = load_part(
    PART, "chat", "serve", "tools", "reasoning_format", "chat_format", "reason_train", "reason_tasks", "checkpoint",
    "data", "evaluate")

RESULT = re.compile(re.escape(rf.RESULT) + "(.*?)" + re.escape(rf.RESULT_END))


# ----------------------------------------------------------------------------------------------------
# The scripted stand-in
def copy_result(call, guess):
    """A script: write the call; then copy the result the runtime injected, or (no result: tools off) guess."""
    def script(written):
        found = RESULT.findall(written)
        if not found:
            return f" <|call|>{call}<|/call|> {guess}<|end|>"
        return f" <|call|>{call}<|/call|><|result|>{found[0]}<|/result|> {found[0]}<|end|>"
    return script


def two_calls(written):
    """km first, then a division by the first result: each round reads the result before it."""
    found = RESULT.findall(written)
    text = " <|think|>km first<|/think|><|call|>convert(3, km, m)<|/call|>"
    if found:
        text += f"<|result|>{found[0]}<|/result|> then<|call|>calc({found[0]}/8)<|/call|>"
    if len(found) > 1:
        text += f"<|result|>{found[1]}<|/result|> {found[1]}<|end|>"
    return text + ("" if found else " 375<|end|>")


def calls_forever(written):
    """A model stuck in a loop: after every result, the same call again."""
    n = len(RESULT.findall(written))
    return "".join(f"<|call|>calc(1+1)<|/call|><|result|>{r}<|/result|>" for r in RESULT.findall(written)) + (
        "<|call|>calc(1+1)<|/call|>" if n < 10 else "<|end|>")


SCRIPTS = {
    "What is 6 * 7?": copy_result("calc(6*7)", "41"),  # without the tool it guesses wrong
    "What is 48213 * 9921?": copy_result("calc(48213*9921)", "478321000"),
    "What is 47 + 38?": lambda written: " <|think|>7+8+0=15 4+3+1=8<|/think|> 85<|end|>",
    "Two steps?": two_calls,
    "Loop?": calls_forever,
    "Hostile?": copy_result("__import__('os').system('true')", "0"),
}


class ScriptedGPT(torch.nn.Module):
    """Stands in for a GPT in decode's loop: forward(idx, cache=cache) writes the tokens into the cache at their
    positions, as attention would, and puts all the probability on the script's next token for the text so far
    (prompt, its own ids and the injected results). Deterministic, greedy or sampled."""

    def __init__(self, tok, block_size=256):
        super().__init__()
        self.tok = tok
        self.config = SimpleNamespace(block_size=block_size, pos_embedding="rope", n_layer=1, window=None, n_sink=0,
                                      vocab_size=tok.vocab_size)
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # decode reads the device from the parameters
        ids = chat_format.chat_token_ids(tok)
        self.assistant, self.end = ids["assistant"], ids["end"]

    def forward(self, idx, targets=None, cache=None):
        B, T = idx.shape
        if not hasattr(cache, "ids"):
            cache.ids = torch.zeros(B, cache.max_len, dtype=torch.long)
        cache.ids[cache.rows, cache.positions] = idx
        logits = torch.full((B, T, self.config.vocab_size), -1e4)
        for b in range(B):
            for t in range(T):
                context = cache.ids[b, :cache.positions[b, t] + 1].tolist()
                next_id = self.next_id(context) if self.assistant in context else None
                if next_id is not None:
                    logits[b, t, next_id] = 1e4
        return logits, None

    def next_id(self, context):
        """The script's next id; None where the text is not one the script writes (the prefill's earlier
        positions, e.g. a result half injected: only the last position's logits are used)."""
        start = context.index(self.assistant) + 1
        question = self.tok.decode(context[:start]).split(chat_format.USER)[1].split(chat_format.END)[0]
        written = context[start:]
        script = SCRIPTS.get(question, lambda w: " I do not know.<|end|>")
        target = self.tok.encode(script(self.tok.decode(written)), allowed_special="all")
        if target[:len(written)] != written:
            return None
        return target[len(written)] if len(written) < len(target) else self.end


@pytest.fixture(scope="module")
def rtok():
    return reason_train.reasoning_tokenizer()


@pytest.fixture(scope="module")
def scripted(rtok):
    return ScriptedGPT(rtok).eval()


def with_tools(model, tok, prompt, max_new_tokens=64, use_tools=True, temperature=0.0, generator=None):
    """generate_with_tools' answer to one request, as text (what chat.answer and the stream must equal)."""
    max_new_tokens = chat.room_for_answer(model, tok, prompt, max_new_tokens)
    run = tools.generate_with_tools(model, tok, [chat_format.encode_prompt(tok, prompt)], max_new_tokens,
                                    temperature, generator, use_tools)[0]
    return evaluate.answer_text(tok, run.ids, chat_format.chat_token_ids(tok)["end"]), run


# ----------------------------------------------------------------------------------------------------
# The real tiny reasoner and the Part 8-style model
MUL = reason_tasks.make_examples(["mul"], "tool", "train", 50, 0)


@pytest.fixture(scope="module")
def reasoner(rtok, tmp_path_factory):
    """(path, model, tok): a 1-layer GPT trained for a few seconds on tool-style multiplications, saved as
    train.py saves best.pt. It writes calls (not always right ones): the runtime answers each."""
    torch.manual_seed(0)
    model = reason_train.new_model(rtok, n_layer=1, n_embd=64, n_head=2, block_size=64)
    train_set = reason_train.build_reasoning_set(MUL, rtok, 64)
    reason_train.train_reasoner(model, train_set, reason_train.ReasonConfig(steps=120, batch_size=50, lr=1e-2,
                                                                            warmup=10), log=lambda *_: None)
    path = tmp_path_factory.mktemp("reasoner") / "best.pt"
    checkpoint.save_checkpoint(str(path), model, model.config, step=0, val_loss=1.0,
                               extra={"tokenizer": data.tokenizer_to_dict(rtok)})
    return str(path), model.eval(), rtok


LEARNED = {"the cat": "sat on the mat", "a dog": "ran to the park"}


@pytest.fixture(scope="module")
def part8_style(tmp_path_factory):
    """(path, model, tok) of a chat model with no reasoning tokens, as Parts 6-8 save them."""
    path = tmp_path_factory.mktemp("part8") / "best.pt"
    tok = tiny_chat.tiny_tokenizer(PART)
    return str(path), tiny_chat.save_tiny(PART, path, tok, list(LEARNED.items()), 32), tok


# ----------------------------------------------------------------------------------------------------
# chat.py: answers through the runtime
def test_the_scripted_model_calls_and_the_runtime_answers(scripted, rtok):
    """The stand-in is sound: through generate_with_tools, the result is the tool's and the model copies it."""
    text, run = with_tools(scripted, rtok, "What is 6 * 7?")
    assert run.calls == [("calc(6*7)", "42")]
    assert text == "<|call|>calc(6*7)<|/call|><|result|>42<|/result|> 42"


@pytest.mark.parametrize("prompt", list(SCRIPTS))
@pytest.mark.parametrize("use_tools", [True, False])
def test_chat_answer_is_generate_with_tools(scripted, rtok, prompt, use_tools):
    assert chat.answer(scripted, rtok, prompt, use_tools=use_tools) == with_tools(scripted, rtok, prompt,
                                                                                    use_tools=use_tools)[0]


def test_without_tools_nothing_is_injected(scripted, rtok):
    text = chat.answer(scripted, rtok, "What is 6 * 7?", use_tools=False)
    assert text == "<|call|>calc(6*7)<|/call|> 41" and rf.RESULT not in text
    assert chat.fold_answer(text) == ("41", [("call", "calc(6*7)")])
    assert chat.trace_summary(chat.fold_answer(text)[1]) == "tool: calc(6*7) → not run"


def test_a_hostile_call_gets_an_error_result_and_runs_nothing(scripted, rtok):
    text = chat.answer(scripted, rtok, "Hostile?", max_new_tokens=200)
    final, parts = chat.fold_answer(text)
    assert parts[0] == ("call", "__import__('os').system('true')")
    assert parts[1][0] == "result" and parts[1][1].startswith("error: ") and final == parts[1][1]


def test_a_model_that_keeps_calling_stops_at_max_calls(scripted, rtok):
    text, run = with_tools(scripted, rtok, "Loop?", max_new_tokens=200)
    assert len(run.calls) == serve.MAX_CALLS == 4 and text.endswith("<|/call|>")  # the 5th call: no result
    assert chat.answer(scripted, rtok, "Loop?", max_new_tokens=200) == text


@pytest.mark.parametrize("prompt", [ex.prompt for ex in MUL[:4]] + ["What is 12 * 34?"])
def test_the_real_model_answers_through_the_runtime(reasoner, prompt):
    _, model, tok = reasoner
    text, run = with_tools(model, tok, prompt)
    assert chat.answer(model, tok, prompt) == text
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert chat.answer(model, tok, prompt, 1.0, generator=g1) == with_tools(model, tok, prompt, temperature=1.0,
                                                                            generator=g2)[0]


def test_the_real_model_really_calls(reasoner):
    """Otherwise the equality tests above would compare answers without a single injected result."""
    _, model, tok = reasoner
    runs = [with_tools(model, tok, ex.prompt)[1] for ex in MUL[:4]]
    assert all(run.calls for run in runs)
    assert all(result == tools.run_call(call) for run in runs for call, result in run.calls)


# ----------------------------------------------------------------------------------------------------
# chat.py: the fold
FOLD_CASES = [  # (answer text, final, parts)
    ("8585", "8585", []),
    ("<|think|>9+6+0=15 2+5+1=8<|/think|> 85", "85", [("thought", "9+6+0=15 2+5+1=8")]),
    ("<|call|>calc(6*7)<|/call|><|result|>42<|/result|> 42", "42", [("call", "calc(6*7)"), ("result", "42")]),
    ("<|think|>km first<|/think|><|call|>convert(3, km, m)<|/call|><|result|>3000<|/result|> then"
     "<|call|>calc(3000/8)<|/call|><|result|>375<|/result|> 375", "375",
     [("thought", "km first"), ("call", "convert(3, km, m)"), ("result", "3000"), ("text", "then"),
      ("call", "calc(3000/8)"), ("result", "375")]),
    ("<|call|>calc(6*7)<|/call|> 41", "41", [("call", "calc(6*7)")]),             # tools off
    ("<|think|>9+6+0=15 2+5", "", [("thought", "9+6+0=15 2+5")]),                 # cut off mid-thought
    ("<|call|>calc(1)<|/call|>", "", [("call", "calc(1)")]),                      # a call past max_calls
    ("<|think|><|/think|> 3", "3", [("thought", "")]),
    ("a <|/think|> 3", "3", [("text", "a")]),                                     # a stray closing tag
    ("<|user|> not a reasoning tag <|end|>", "<|user|> not a reasoning tag <|end|>", []),
    ("é €", "é €", []),
]


@pytest.mark.parametrize("text, final, parts", FOLD_CASES)
def test_fold_answer(text, final, parts):
    assert chat.fold_answer(text) == (final, parts)
    if text.rfind(rf.THINK_END) > -1 or text.rfind(rf.RESULT_END) > -1 or not chat.TAG.search(text):
        assert final == rf.split_answer(text)[1]  # well-formed: the final answer is the one graded


def test_the_summary_line_counts_steps_and_shows_each_call():
    parts = chat.fold_answer(FOLD_CASES[3][0])[1]
    assert chat.trace_summary(parts) == ("thought: 2 steps · tool: convert(3, km, m) → 3000 · "
                                         "tool: calc(3000/8) → 375")
    assert chat.trace_summary([("thought", "9+6+0=15")]) == "thought: 1 step"
    assert chat.trace_summary([("text", "hm")]) == "reasoning: 1 part"


# ----------------------------------------------------------------------------------------------------
# chat.py: the command line
@pytest.fixture
def scripted_checkpoint(monkeypatch, scripted, rtok):
    """chat.main loads the scripted stand-in whatever --checkpoint says."""
    monkeypatch.setattr(chat, "load_chat_model", lambda path, device: (scripted, rtok))
    return "scripted.pt"


def run_chat(path, *flags):
    return chat.main(["--checkpoint", path, "--device", "cpu", *flags])


def test_prompt_prints_the_final_answer_with_the_reasoning_folded(scripted_checkpoint, capsys):
    text = run_chat(scripted_checkpoint, "--prompt", "What is 48213 * 9921?")
    assert text == "<|call|>calc(48213*9921)<|/call|><|result|>478321173<|/result|> 478321173"
    assert capsys.readouterr().out == "478321173\n  ▸ tool: calc(48213*9921) → 478321173\n"
    run_chat(scripted_checkpoint, "--prompt", "What is 47 + 38?")
    assert capsys.readouterr().out == "85\n  ▸ thought: 2 steps\n"


def test_show_trace_prints_the_whole_reasoning(scripted_checkpoint, capsys):
    run_chat(scripted_checkpoint, "--prompt", "Two steps?", "--show_trace", "true")
    assert capsys.readouterr().out.splitlines() == [
        "375", "  thought: km first", "  call: convert(3, km, m)", "  result: 3000", "  text: then",
        "  call: calc(3000/8)", "  result: 375"]


def test_tools_false_runs_no_call(scripted_checkpoint, capsys):
    text = run_chat(scripted_checkpoint, "--prompt", "What is 6 * 7?", "--tools", "false")
    assert rf.RESULT not in text
    assert capsys.readouterr().out == "41\n  ▸ tool: calc(6*7) → not run\n"


def test_an_answer_cut_off_in_its_reasoning_says_so(scripted_checkpoint, capsys):
    run_chat(scripted_checkpoint, "--prompt", "What is 47 + 38?", "--max_new_tokens", "8")
    assert capsys.readouterr().out == "(no final answer after the reasoning)\n  ▸ thought: 1 step\n"  # 7+8+0=


def test_the_repl_folds_each_answer(scripted_checkpoint, monkeypatch, capsys):
    lines = iter(["What is 6 * 7?", "What is 47 + 38?", ""])
    monkeypatch.setattr("builtins.input", lambda prompt="": next(lines))
    run_chat(scripted_checkpoint, "--show_trace", "false")
    out = capsys.readouterr().out.splitlines()
    assert out[1:] == ["model> 42", "  ▸ tool: calc(6*7) → 42", "model> 85", "  ▸ thought: 2 steps", "bye"]


def test_the_real_checkpoint_chats_through_the_runtime(reasoner, capsys):
    path, model, tok = reasoner
    prompt = MUL[0].prompt
    text = run_chat(path, "--prompt", prompt)
    assert text == with_tools(model, tok, prompt)[0] and rf.RESULT in text
    assert capsys.readouterr().out == chat.folded(text) + "\n"


def test_a_part8_checkpoint_still_chats(part8_style, capsys):
    """No reasoning tokens: no tools, no trace, Part 8's answers (and --top_k still works)."""
    path, gpt, tok = part8_style
    assert not chat.has_reasoning_tokens(tok)
    for prompt, reply in LEARNED.items():
        assert run_chat(path, "--prompt", prompt) == reply
        assert capsys.readouterr().out == reply + "\n"
    assert run_chat(path, "--prompt", "a dog", "--tools", "false", "--show_trace", "true") == "ran to the park"
    assert run_chat(path, "--prompt", "a dog", "--temperature", "3", "--top_k", "1") == "ran to the park"


def test_top_k_with_a_reasoning_model_is_one_line(scripted_checkpoint, capsys):
    exits_with_one_line(capsys, lambda: run_chat(scripted_checkpoint, "--prompt", "hi", "--temperature", "1",
                                                 "--top_k", "5"), "--top_k")


@pytest.mark.parametrize("flags, word", [(["--tools", "maybe"], "--tools"), (["--show_trace", "2"], "--show_trace"),
                                         (["--tools", ""], "--tools"), (["--temperature", "nan"], "--temperature"),
                                         (["--top_k", "0"], "--top_k")])
def test_bad_chat_flags_are_one_line(capsys, flags, word):
    exits_with_one_line(capsys, lambda: chat.parse_args(flags), word, code=2)


def test_chat_help_names_the_part9_chatbot_and_the_flags(capsys):
    with pytest.raises(SystemExit):
        chat.parse_args(["--help"])
    text = capsys.readouterr().out
    for words in ("out/part9/tools/best.pt", "--tools", "--show_trace", "without tool access", "▸"):
        assert words in text, words


# ----------------------------------------------------------------------------------------------------
# serve.py: the stream runs the calls
@pytest.mark.parametrize("prompt", list(SCRIPTS))
@pytest.mark.parametrize("use_tools", [True, False])
def test_the_stream_adds_up_to_generate_with_tools(scripted, rtok, prompt, use_tools):
    pieces = list(serve.stream_answer(scripted, rtok, prompt, max_new_tokens=200, use_tools=use_tools))
    assert all(pieces)
    assert "".join(pieces) == with_tools(scripted, rtok, prompt, 200, use_tools)[0]


def test_the_result_is_streamed_as_soon_as_the_call_is_run(scripted, rtok, monkeypatch):
    """The piece after <|/call|> is the runtime's result, before the model writes another token."""
    pieces, ran_at = [], []
    real = serve.answer_call

    def answer_call(run, *args):
        ran_at.append(len(pieces))  # how many pieces were out when the call was run
        real(run, *args)
    monkeypatch.setattr(serve, "answer_call", answer_call)
    for piece in serve.stream_answer(scripted, rtok, "What is 6 * 7?"):
        pieces.append(piece)
    assert len(ran_at) == 1 and "".join(pieces[:ran_at[0]]) == "<|call|>calc(6*7)<|/call|>"
    assert pieces[ran_at[0]] == "<|result|>42<|/result|>" and "".join(pieces[ran_at[0] + 1:]) == " 42"


@pytest.mark.parametrize("prompt", [ex.prompt for ex in MUL[:3]] + ["What is 12 * 34?", "hi"])
def test_the_real_models_stream_is_generate_with_tools(reasoner, prompt):
    _, model, tok = reasoner
    assert "".join(serve.stream_answer(model, tok, prompt)) == with_tools(model, tok, prompt)[0]
    for seed in range(3):
        g1, g2 = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        streamed = "".join(serve.stream_answer(model, tok, prompt, 1.0, generator=g1))
        assert streamed == with_tools(model, tok, prompt, temperature=1.0, generator=g2)[0]
    no_tools = "".join(serve.stream_answer(model, tok, prompt, use_tools=False))
    assert no_tools == with_tools(model, tok, prompt, use_tools=False)[0] and rf.RESULT not in no_tools


# ----------------------------------------------------------------------------------------------------
# serve.py: over real HTTP
def start(model, tok, **kw):
    server = serve.make_server(model, tok, port=0, **kw)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    return server, thread


@pytest.fixture(scope="module")
def servers(scripted, rtok, reasoner, part8_style):
    """Ports of running servers: the scripted model with and without tools, the real reasoner, a Part 8 model."""
    started = {"scripted": start(scripted, rtok, max_new_tokens=200),
               "no tools": start(scripted, rtok, max_new_tokens=200, use_tools=False),
               "reasoner": start(reasoner[1], reasoner[2]),
               "part8": start(part8_style[1], part8_style[2])}
    yield {name: server.server_address[1] for name, (server, _) in started.items()}
    for server, thread in started.values():
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


request = tiny_chat.request  # (status, headers, body text) of one request


def post_chat(port, message, temperature=0):
    body = json.dumps({"message": message, "temperature": temperature}).encode("utf-8")
    return request(port, "POST", "/chat", body, {"Content-Type": "application/json"})


@pytest.mark.parametrize("prompt", list(SCRIPTS))
def test_http_answers_are_generate_with_tools(servers, scripted, rtok, prompt):
    status, headers, text = post_chat(servers["scripted"], prompt)
    assert status == 200 and headers["Transfer-Encoding"] == "chunked"
    assert text == with_tools(scripted, rtok, prompt, 200)[0]
    status, _, text = post_chat(servers["no tools"], prompt)
    assert status == 200 and text == with_tools(scripted, rtok, prompt, 200, use_tools=False)[0]


def test_http_a_call_gets_its_result_injected(servers):
    assert post_chat(servers["scripted"], "What is 6 * 7?")[2] == "<|call|>calc(6*7)<|/call|><|result|>42<|/result|> 42"
    assert post_chat(servers["no tools"], "What is 6 * 7?")[2] == "<|call|>calc(6*7)<|/call|> 41"


@pytest.mark.parametrize("prompt", [ex.prompt for ex in MUL[:3]])
def test_http_the_real_models_answer_is_generate_with_tools(servers, reasoner, prompt):
    _, model, tok = reasoner
    status, _, text = post_chat(servers["reasoner"], prompt)
    expected, run = with_tools(model, tok, prompt)
    assert status == 200 and text == expected and run.calls
    for call, result in run.calls:
        assert f"{rf.CALL}{call}{rf.CALL_END}{rf.RESULT}{result}{rf.RESULT_END}" in text


def test_http_a_part8_model_chats_as_before(servers):
    for prompt, reply in LEARNED.items():
        assert post_chat(servers["part8"], prompt)[2] == reply


# ----------------------------------------------------------------------------------------------------
# serve.py: the page
def test_the_page_folds_the_reasoning_with_text_only(servers):
    status, headers, page = request(servers["scripted"], "GET", "/")
    assert status == 200
    for part in ('createElement("details")', 'createElement("summary")', "reasoning: ", "splitReply", "textContent",
                 'id="temperature"', 'id="reset"', "AbortController"):
        assert part in page, part
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert unsafe not in page, unsafe
    assert "open" not in re.findall(r"fold\.(\w+)", page)  # closed by default: the page never opens it
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    assert f"script-src 'sha256-{digest}'" in headers["Content-Security-Policy"]


def page_functions():
    """The page's parsing code, from the constants to describe() (no DOM): runnable in node."""
    start = serve.PAGE_SCRIPT.index("const TAG")
    return serve.PAGE_SCRIPT[start:serve.PAGE_SCRIPT.index("function addFold")]


@pytest.mark.skipif(shutil.which("node") is None, reason="needs node to run the page's JavaScript")
def test_the_pages_split_is_chat_fold_answer():
    texts = [text for text, _, _ in FOLD_CASES] + ["<|think|>a b c<|/think|><|call|>calc(1)<|/call|> x",
                                                    "<|thi", "<|think|>x<|/think|> <|cal"]
    js = page_functions() + """
const texts = JSON.parse(require("fs").readFileSync(0, "utf8"));
const split = texts.map((t) => splitReply(t));
console.log(JSON.stringify(split.map((r) => [r.final, r.parts, describe(r.parts)])));
"""
    out = subprocess.run(["node", "-e", js], input=json.dumps(texts), capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    for text, (final, parts, _) in zip(texts, json.loads(out.stdout)):
        assert (final, [(p["kind"], p["text"]) for p in parts]) == chat.fold_answer(text), text
    described = dict(zip(texts, (said for _, _, said in json.loads(out.stdout))))
    assert described[FOLD_CASES[3][0]] == "2 steps, 2 tool calls"
    assert described[FOLD_CASES[1][0]] == "2 steps"
    assert described[FOLD_CASES[4][0]] == "1 tool call"


# ----------------------------------------------------------------------------------------------------
# serve.py: the command line
@pytest.mark.parametrize("flags", [["--tools", "maybe"], ["--tools", "2"]])
def test_bad_serve_flags_are_one_line(capsys, flags):
    exits_with_one_line(capsys, lambda: serve.parse_args(flags), "--tools", code=2)


def test_serve_help_names_the_part9_chatbot(capsys):
    with pytest.raises(SystemExit):
        serve.parse_args(["--help"])
    text = capsys.readouterr().out
    for words in ("out/part9/tools/best.pt", "--tools", "<details>", "tools.run_call", "reasoning: 4 steps"):
        assert words in text, words
