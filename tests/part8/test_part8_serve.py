"""serve.py (part8_alignment/serve.py): the local chat page, through real HTTP against a server on a free port.

The chat model is a tiny GPT fitted for a moment on two requests ("the cat" -> "sat on the mat", "a dog" -> "ran
to the park"), as in tests/part6/test_part6_chat.py, so the greedy answers are known by heart; other expected
answers come from chat.answer on the same model. The server runs in a daemon thread for the whole module.
Run: python -m pytest -q tests/part8/test_part8_serve.py
"""
import base64
import hashlib
import http.client
import inspect
import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import tiny_chat
import torch
from partloader import ROOT, exits_with_one_line, load_part

PART = "part8_alignment"
serve, chat, chat_format = load_part(PART, "serve", "chat", "chat_format")

BLOCK = 32
LEARNED = {"the cat": "sat on the mat", "a dog": "ran to the park"}


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """(path, in-memory model, tokenizer) of a fine-tuned checkpoint."""
    path = tmp_path_factory.mktemp("serve") / "best.pt"
    tok = tiny_chat.tiny_tokenizer(PART)
    return str(path), tiny_chat.save_tiny(PART, path, tok, list(LEARNED.items()), BLOCK), tok


@pytest.fixture(scope="module")
def port(tuned):
    """The port of a server running in a daemon thread, shut down after the module's tests."""
    _, gpt, tok = tuned
    server = serve.make_server(gpt, tok, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


request = tiny_chat.request  # (status, headers, body text) of one request


def post_chat(port, payload, content_type="application/json"):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode("utf-8")
    return request(port, "POST", "/chat", body, {"Content-Type": content_type})


def healthy(port):
    status, _, text = request(port, "GET", "/health")
    return status == 200 and text == "ok"


def raw_chunks(port, payload):
    """POST /chat on a raw socket; returns (status line, headers text, the chunk payloads in order),
    read from the chunked framing itself, so that chunk boundaries are the server's."""
    body = json.dumps(payload).encode("utf-8")
    head = (f"POST /chat HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode("ascii")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + body)
        raw = b""
        while data_ := s.recv(65536):
            raw += data_
    header_part, rest = raw.split(b"\r\n\r\n", 1)
    status_line, headers = header_part.decode("latin-1").split("\r\n", 1)
    chunks = []
    while True:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            break
        chunks.append(rest[:size].decode("utf-8"))
        assert rest[size:size + 2] == b"\r\n"
        rest = rest[size + 2:]
    return status_line, headers, chunks


# ----------------------------------------------------------------------------------------------------
# The page
def test_the_page_is_one_self_contained_document(port):
    status, headers, page = request(port, "GET", "/")
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert page.lstrip().lower().startswith("<!doctype html>")
    for part in ('id="message"', 'id="send"', 'type="range"', 'min="0"', 'max="1.5"', 'id="reset"',
                 "AbortController", "getReader()", "textContent", "URLSearchParams", '"ask"'):
        assert part in page, part
    for unsafe in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write"):  # model text is untrusted
        assert unsafe not in page, unsafe
    assert not re.search(r"https?:|//[a-z0-9]", page, re.I), "the page must load nothing from elsewhere"
    # the Content-Security-Policy names the page's own script by its hash: that script (and only it) runs
    script = re.search(r"<script>(.*?)</script>", page, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii")
    assert f"script-src 'sha256-{digest}'" in headers["Content-Security-Policy"]
    status, _, _ = request(port, "GET", "/?ask=the%20cat")  # the page reads ?ask= itself
    assert status == 200


def test_health_says_ok(port):
    assert healthy(port)


# ----------------------------------------------------------------------------------------------------
# Answers, streamed
@pytest.mark.parametrize("prompt", list(LEARNED))
def test_greedy_answer_is_chat_answer_and_chunked(tuned, port, prompt):
    _, gpt, tok = tuned
    status, headers, text = post_chat(port, {"message": prompt, "temperature": 0})
    assert status == 200
    assert headers["Transfer-Encoding"] == "chunked" and headers["Content-Type"] == "text/plain; charset=utf-8"
    assert text == chat.answer(gpt, tok, prompt) == LEARNED[prompt]
    status, _, text = post_chat(port, {"message": prompt})  # temperature may be left out: greedy
    assert status == 200 and text == LEARNED[prompt]


def test_the_server_writes_one_chunk_per_piece(tuned, port):
    _, gpt, tok = tuned
    status_line, _, chunks = raw_chunks(port, {"message": "the cat", "temperature": 0})
    assert status_line.split()[1] == "200"
    assert chunks == list(serve.stream_answer(gpt, tok, "the cat")) and len(chunks) > 1
    assert "".join(chunks) == "sat on the mat"


def test_sampled_answers_come_back(port):
    status, _, text = post_chat(port, {"message": "a dog", "temperature": 1.5})
    assert status == 200 and "Traceback" not in text


def test_stream_answer_yields_before_the_answer_ends(tuned):
    """The first piece comes after one forward pass (the prompt), before the rest of the answer is generated."""
    _, gpt, tok = tuned
    calls = []
    hook = gpt.register_forward_hook(lambda *_: calls.append(1))
    try:
        pieces = serve.stream_answer(gpt, tok, "the cat")
        assert inspect.isgenerator(pieces) and not calls  # nothing generated until the first piece is read
        first = next(pieces)
        assert len(calls) == 1 and first and first != "sat on the mat"
        rest = "".join(pieces)
    finally:
        hook.remove()
    assert first + rest == "sat on the mat" and len(calls) > 1


@pytest.mark.parametrize("prompt, max_new_tokens", [("the cat", 64), ("a dog", 64), ("the cat", 2), ("ran", 5)])
def test_greedy_pieces_add_up_to_chat_answer(tuned, prompt, max_new_tokens):
    _, gpt, tok = tuned
    pieces = list(serve.stream_answer(gpt, tok, prompt, max_new_tokens=max_new_tokens))
    assert all(pieces) and "".join(pieces) == chat.answer(gpt, tok, prompt, max_new_tokens=max_new_tokens)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("temperature, top_k, max_new_tokens", [(1.0, None, 64), (2.0, None, 64), (1.5, 5, 4)])
def test_sampled_pieces_add_up_to_chat_answer_with_the_same_seed(tuned, seed, temperature, top_k, max_new_tokens):
    """chat.answer samples through generate_batch: at batch 1 the same calls in the same order, the same draws.
    (At temperature 2 the tiny model writes random ids, stray UTF-8 bytes included: they come out as U+FFFD
    in both.)"""
    _, gpt, tok = tuned
    g = torch.Generator().manual_seed(seed)
    streamed = "".join(serve.stream_answer(gpt, tok, "a dog", temperature, top_k, max_new_tokens, generator=g))
    g = torch.Generator().manual_seed(seed)
    assert streamed == chat.answer(gpt, tok, "a dog", temperature, top_k, max_new_tokens, generator=g)


def test_a_prompt_too_long_fails_when_called_not_when_read(tuned):
    _, gpt, tok = tuned
    with pytest.raises(ValueError, match="too long"):
        serve.stream_answer(gpt, tok, "the cat sat on the mat " * 10)


# ----------------------------------------------------------------------------------------------------
# Half a character is held back
def test_unsent_text_holds_back_a_partial_character_and_trailing_space():
    assert serve.unsent_text(" sat", "") == "sat"           # the answer's leading space is never sent
    assert serve.unsent_text(" sat ", "") == "sat"          # a trailing space waits for the next word
    assert serve.unsent_text(" sat on", "sat") == " on"
    assert serve.unsent_text(" caf\ufffd", "") == "caf"     # half of "é"
    assert serve.unsent_text(" café", "caf") == "é"
    assert serve.unsent_text(" sat \ufffd", "sat") == ""
    # at the end nothing is held back: a byte that never became a character shows, as in chat.answer
    assert serve.unsent_text(" sat \ufffd", "sat", final=True) == " \ufffd"
    assert serve.unsent_text(" sat  ", "sat", final=True) == ""


def test_byte_by_byte_decoding_never_sends_a_replacement_character():
    """A fake tokenizer whose tokens are single bytes: "é", "ö", "€" and "🙂" arrive in 2, 2, 3 and 4 pieces."""
    text = " héllo wörld € 🙂!"
    raw = text.encode("utf-8")
    decode = lambda ids: bytes(ids).decode("utf-8", errors="replace")  # noqa: E731 -- what bpe.decode does
    sent, pieces, partial = "", [], 0
    for i in range(1, len(raw) + 1):
        decoded = decode(raw[:i])
        partial += decoded.endswith("\ufffd")
        piece = serve.unsent_text(decoded, sent)
        sent += piece
        pieces.append(piece)
    pieces.append(serve.unsent_text(decode(raw), sent, final=True))
    assert partial >= 5, "the test must cut characters in half"
    assert not any("\ufffd" in p for p in pieces)
    assert "".join(pieces) == text.strip()


def test_stream_answer_holds_back_half_characters_from_the_model(tuned, monkeypatch):
    """The model's tokens are scripted (sample_next_token replaced): the BPE ids of an answer with characters
    of 2 and 3 bytes, each byte its own token in this tokenizer (trained on ASCII text)."""
    _, gpt, tok = tuned
    want = "héllo €"
    script = iter([*tok.encode(" " + want), chat_format.chat_token_ids(tok)["end"]])
    ids = tok.encode(" " + want)
    assert any(tok.decode(ids[:i]).endswith("\ufffd") for i in range(len(ids)))
    monkeypatch.setattr(serve, "sample_next_token", lambda *args: torch.tensor([[next(script)]]))
    pieces = list(serve.stream_answer(gpt, tok, "the cat"))
    assert len(pieces) > 1 and not any("\ufffd" in p for p in pieces)
    assert "".join(pieces) == want


# ----------------------------------------------------------------------------------------------------
# Bad requests: a 4xx and one line naming the fix; the server goes on
BAD_REQUESTS = [
    pytest.param(b'{"message": "the cat"', "application/json", 400, "JSON", id="invalid JSON"),
    pytest.param(b'["the cat"]', "application/json", 400, "object", id="not an object"),
    pytest.param(b'{"temperature": 0}', "application/json", 400, '"message"', id="no message"),
    pytest.param(b'{"message": 3}', "application/json", 400, '"message"', id="message not text"),
    pytest.param(b'{"message": "   "}', "application/json", 400, "empty", id="empty message"),
    pytest.param(b'{"message": "the cat", "temperature": -1}', "application/json", 400, "temperature", id="t=-1"),
    pytest.param(b'{"message": "the cat", "temperature": "hot"}', "application/json", 400, "number", id="t=hot"),
    pytest.param(b'{"message": "the cat", "temperature": NaN}', "application/json", 400, "temperature", id="t=nan"),
    pytest.param(b'{"message": "the cat", "temperature": 3}', "application/json", 400, "temperature", id="t=3"),
    pytest.param(b'{"message": "the cat", "temperature": true}', "application/json", 400, "number", id="t=true"),
    pytest.param(b'{"message": "the cat", "temp": 1}', "application/json", 400, "temp", id="unknown field"),
    pytest.param(b'{"message": "' + b"a" * 20_000 + b'"}', "application/json", 413, "shorter", id="body too big"),
    pytest.param(json.dumps({"message": "the cat sat on the mat " * 10}).encode(), "application/json", 400,
                 "too long", id="message too long for the context"),
    pytest.param(b'{"message": "the cat"}', "text/plain", 415, "Content-Type: application/json", id="not JSON"),
    pytest.param(b'{"message": "the cat"}', "application/x-www-form-urlencoded", 415, "Content-Type", id="form"),
]


@pytest.mark.parametrize("body, content_type, status, words", BAD_REQUESTS)
def test_a_bad_request_is_a_4xx_with_one_line(port, body, content_type, status, words):
    got, headers, text = post_chat(port, body, content_type)
    assert got == status, text
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    line = text.strip()
    assert line and "\n" not in line and "Traceback" not in line, text
    assert words in line, line
    assert healthy(port)


@pytest.mark.parametrize("method, path, status", [("GET", "/nope", 404), ("POST", "/nope", 404),
                                                  ("GET", "/chat", 405), ("PUT", "/chat", 405),
                                                  ("DELETE", "/", 405), ("POST", "/", 405), ("PATCH", "/health", 405)])
def test_unknown_paths_and_methods(port, method, path, status):
    got, headers, text = request(port, method, path, body=b"{}" if method != "GET" else None)
    assert got == status
    line = text.strip()
    assert "\n" not in line and ("GET" in line or "POST" in line), line  # names what to use instead
    if status == 405:
        assert headers["Allow"] in ("GET", "POST")
    assert healthy(port)


def test_a_body_without_a_length_is_refused(port):
    """A request body sent chunked: the server wants a Content-Length (one line, 411), and goes on."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", "/chat", body=iter([b'{"message": "the cat"}']),
                     headers={"Content-Type": "application/json"}, encode_chunked=True)
        resp = conn.getresponse()
        assert resp.status == 411 and "Content-Length" in resp.read().decode()
    finally:
        conn.close()
    assert healthy(port)


def test_requests_at_once_are_answered_in_turn(port):
    """Threads share one model under a lock: every answer is the right one."""
    answers = [None] * 6

    def ask(i):
        answers[i] = post_chat(port, {"message": list(LEARNED)[i % 2]})[2]
    threads = [threading.Thread(target=ask, args=(i,)) for i in range(len(answers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert answers == [LEARNED[list(LEARNED)[i % 2]] for i in range(len(answers))]


def test_a_client_that_hangs_up_does_not_block_the_next(port):
    body = json.dumps({"message": "a dog", "temperature": 2.0}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"POST /chat HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        assert s.recv(12).startswith(b"HTTP/1.1 200")
    assert post_chat(port, {"message": "the cat"})[2] == "sat on the mat"


# ----------------------------------------------------------------------------------------------------
# The command line
@pytest.mark.parametrize("flags, word", [(["--port", "70000"], "--port"), (["--port", "-1"], "--port"),
                                         (["--max_new_tokens", "0"], "--max_new_tokens"),
                                         (["--seed", str(2**64)], "--seed")])
def test_bad_flags_are_one_line(tuned, capsys, flags, word):
    path, _, _ = tuned
    exits_with_one_line(capsys, lambda: serve.main(["--checkpoint", path, "--device", "cpu", *flags]), word, code=2)


def test_a_missing_checkpoint_is_one_line(tmp_path, capsys):
    exits_with_one_line(capsys, lambda: serve.main(["--checkpoint", str(tmp_path / "none.pt"), "--port", "0"]),
                        "not found")


def test_a_port_in_use_is_one_line(tuned, capsys):
    path, _, _ = tuned
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        line = exits_with_one_line(capsys, lambda: serve.main(["--checkpoint", path, "--device", "cpu",
                                                               "--port", str(busy)]), "in use", "--port")
    assert f"port {busy}" in line


def test_help_explains_the_page(capsys):
    with pytest.raises(SystemExit) as e:
        serve.parse_args(["--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for words in ("page", "temperature", "Reset", "single-turn", "--checkpoint", "out/part8/grpo/best.pt",
                  "out/part6/best.pt", "0.0.0.0", "--port", "POST /chat"):
        assert words in text, words


def test_the_script_serves_until_ctrl_c(tuned):
    """python serve.py prints the URL, answers, and ends on Ctrl-C with the one line "stopped"."""
    path, _, _ = tuned
    proc = subprocess.Popen([sys.executable, "part8_alignment/serve.py", "--checkpoint", path, "--port", "0",
                             "--device", "cpu"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stdout.readline()  # printed once the server listens
        url = re.search(r"http://127\.0\.0\.1:(\d+)/", first)
        assert url, first + proc.stderr.read()
        port = int(url.group(1))
        assert healthy(port)
        assert post_chat(port, {"message": "a dog"})[2] == "ran to the park"
        time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0 and out.strip() == "stopped", (out, err)
    assert "Traceback" not in err
    assert '"POST /chat HTTP/1.1" 200' in err  # one line per request
