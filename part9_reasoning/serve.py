"""8.x A small local web chat page, served by the Python standard library.

    python part8_alignment/serve.py                                        # out/part8/grpo/best.pt on port 8000
    python part8_alignment/serve.py --checkpoint out/part6/best.pt         # any fine-tuned model
    python part8_alignment/serve.py --port 0                               # any free port (the URL is printed)

Open the printed URL in a browser: the page has a transcript, a text box with a Send button, a temperature
slider (0 = greedy, the answer evaluate.py scores; up to 1.5 samples) and a Reset button that clears the
conversation (and stops a reply being streamed). The answer appears token by token as the model writes it.
http://127.0.0.1:8000/?ask=What%20is%203%20%2B%205%3F sends that one message as soon as the page loads.
Ctrl-C stops the server.

Every message is a fresh single-turn conversation: the model was fine-tuned on single turns
(<|user|> request <|end|><|assistant|> answer <|end|>), so the page shows the history but sends only the new
message. The model answers one request at a time: torch already spreads one forward pass over the CPU cores,
so a second request waits for the first instead of slowing both (a lock around the model).

The HTTP interface, for curl or a program:
    GET  /        the page (one HTML document, no external resources)
    GET  /health  "ok", once the server is up
    POST /chat    body {"message": "What is 3 + 5?", "temperature": 0} with Content-Type: application/json;
                  the answer comes back as plain UTF-8 text, one HTTP chunk per piece, as it is generated:
    curl -N -H 'Content-Type: application/json' -d '{"message": "What is 3 + 5?"}' http://127.0.0.1:8000/chat
A bad request gets a 4xx status and one line of text that says what to change.

9.4 A reasoning model (Part 9's out/part9/tools/best.pt) answers through the tool runtime as it streams: when it
writes <|/call|>, the call is run (tools.run_call) and the result goes into its context, then it goes on
(stream_answer; the same answer as tools.generate_with_tools). The stream is the answer's text with its reasoning
tags written out, as chat.py's answer is:
    <|think|>9+6+0=15 2+5+1=8 7+8+0=15 4+3+1=8<|/think|> 8585
    <|call|>calc(48213*9921)<|/call|><|result|>478321173<|/result|> 478321173
and the page splits it on the tags (splitReply, chat.fold_answer's rule): the final answer in large type, the
reasoning folded under it in a <details> ("reasoning: 4 steps, 1 tool call"; click to open). Each tag is one
special id that decodes to its name; a model could also spell one out in plain bytes, which would only change how
its own text is folded on the page. --tools false: the calls are not run (the model is without tool access).
Try:  python -m pytest -q tests/part9/test_part9_chat.py

It listens on 127.0.0.1 (this machine only) unless --host says otherwise. It is a teaching tool, not a
hardened service: --host 0.0.0.0 lets anyone on your network use your model.

A screenshot of the page, with Debian's chromium (the server running on port 8000):
    chromium --headless --no-sandbox --disable-gpu --window-size=900,700 --virtual-time-budget=8000 \\
        --screenshot=part8_alignment/results/serve.png "http://127.0.0.1:8000/?ask=What%20is%203%20%2B%205%3F"

Try:  python -m pytest -q tests/part8/test_part8_serve.py
"""
import argparse
import base64
import errno
import hashlib
import json
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

import torch

from chat import has_reasoning_tokens, room_for_answer
from chat_format import chat_token_ids, encode_prompt
from cli import str_to_bool
from decode import DecodeCache, decode_step, prefill
from evaluate import PART, load_chat_model
from reasoning_format import reasoning_token_ids
from runtime import pick_device
from sample import MIN_TEMPERATURE
from sampling import sample_next_token
from tools import ToolRun, answer_call, goes_on

MAX_TEMPERATURE = 2.0     # the page's slider stops at 1.5; past 2 a small model writes noise
MAX_BODY = 16 * 1024      # bytes: a request is one message; a longer one cannot fit the context anyway
REPLACEMENT = "\ufffd"    # what bytes.decode(errors="replace") writes for an incomplete UTF-8 character
CHUNK_TIMEOUT_S = 60      # a client that stops sending (or reading) for this long is dropped
MAX_CALLS = 4             # 9.4 tool calls per answer: tools.generate_with_tools' default (a model that keeps
#                           calling is stuck in a loop)


# ----------------------------------------------------------------------------------------------------
# Streaming: the answer piece by piece, as each token is generated
def unsent_text(decoded, sent, final=False):
    """The piece of the answer to send now. decoded: the whole answer so far, tok.decode(new ids);
    sent: the text sent before. The pieces add up to evaluate.answer_text's answer (decoded.strip()).

    Held back until more tokens arrive (or the answer ends, final=True):
      - a trailing U+FFFD: a BPE token may hold part of a UTF-8 character (the 3 bytes of "€" can be 2 tokens),
        so "€" decodes as "\\ufffd" until its last byte arrives; sending it would put a wrong character on
        the page that no later piece can take back;
      - trailing whitespace: the final answer is stripped, so a trailing space is sent only once a word follows;
      - leading whitespace is never sent (answers start with a space: chat_format.encode_response)."""
    text = decoded.strip()
    if not final:
        while text and (text[-1] == REPLACEMENT or text[-1].isspace()):
            text = text[:-1]
    if not text.startswith(sent):  # cannot happen with byte-level BPE: earlier bytes never decode differently
        return ""
    return text[len(sent):]


def stream_answer(model, tok, prompt, temperature=0.0, top_k=None, max_new_tokens=64, generator=None,
                  use_tools=True):
    """chat.answer, as a generator: yields the answer's text piece by piece as each token is generated.
    "".join(stream_answer(...)) == chat.answer(...), greedy, and sampled with a generator seeded alike: this is
    generate_batch's loop for a batch of one (same prefill, decode_step and sample_next_token calls, in the
    same order, so the same random draws), with a yield after each token.
    9.4 A reasoning model streams through the tool runtime (_stream_with_tools), its tags written out.

    The request is checked now (a prompt too long for the context is chat.room_for_answer's one-line
    ValueError, raised by this call); the tokens are generated as the pieces are read."""
    max_new_tokens = room_for_answer(model, tok, prompt, max_new_tokens)
    end_id = chat_token_ids(tok)["end"]
    if has_reasoning_tokens(tok):  # 9.4
        return _stream_with_tools(model, tok, encode_prompt(tok, prompt), end_id, temperature, top_k, max_new_tokens,
                                  generator, use_tools)
    return _stream(model, tok, encode_prompt(tok, prompt), end_id, temperature, top_k, max_new_tokens, generator)


@torch.no_grad()
def _stream(model, tok, prompt_ids, end_id, temperature, top_k, max_new_tokens, generator):
    T = len(prompt_ids)
    cache = DecodeCache(model, 1, T + max_new_tokens)
    logits, lengths = prefill(model, cache, [prompt_ids])
    new_ids, sent = [], ""
    for step in range(max_new_tokens):
        next_id = sample_next_token(logits, temperature, top_k, None, generator)  # (1, 1)
        token = next_id.item()
        if token == end_id:
            break
        new_ids.append(token)
        piece = unsent_text(tok.decode(new_ids), sent)  # subtle: the whole answer, not the token alone (a
        if piece:                                        # token's bytes may be half a character)
            sent += piece
            yield piece
        if step + 1 == max_new_tokens:
            break
        logits = decode_step(model, cache, next_id, (lengths + step)[:, None], n_slots=T + step + 1)
    piece = unsent_text(tok.decode(new_ids), sent, final=True)  # what was held back, if the answer ends in it
    if piece:
        yield piece


def _stream_with_tools(model, tok, prompt_ids, end_id, temperature, top_k, max_new_tokens, generator, use_tools):
    """9.4 tools.generate_with_tools for a batch of one, with a yield after each token and after each result.
    Each round continues the whole text so far (prompt, the model's ids, the results) until <|end|>, <|/call|> or
    the room left (_round_ids); a <|/call|> gets its result appended by the runtime's own answer_call (the same
    run_call, limits and max_calls), and the next round starts from the text with the result in it. Same rounds,
    same model calls in the same order as generate_with_tools: the same answer, greedy or sampled alike.
    use_tools=False: <|/call|> is not a stop and nothing is injected."""
    special = reasoning_token_ids(tok)
    stops = (special["call_end"], end_id) if use_tools else (end_id,)
    run, sent = ToolRun(), ""
    while True:
        for token in _round_ids(model, prompt_ids + run.ids, stops, temperature, top_k,
                                max_new_tokens - len(run.ids), generator):
            run.ids.append(token)
            piece = unsent_text(tok.decode(without_end(run.ids, end_id)), sent)
            sent += piece
            if piece:
                yield piece
        if use_tools and run.ids[-1] == special["call_end"]:
            answer_call(run, tok, special, max_new_tokens - len(run.ids), MAX_CALLS)  # run it, append the result
            piece = unsent_text(tok.decode(run.ids), sent)  # the result, on the page before the model goes on
            sent += piece
            if piece:
                yield piece
        if not goes_on(run, max_new_tokens, stops):
            break
    piece = unsent_text(tok.decode(without_end(run.ids, end_id)), sent, final=True)
    if piece:
        yield piece


def without_end(ids, end_id):
    """The answer's ids without the closing <|end|> (chat.answer drops it too)."""
    return ids[:-1] if ids and ids[-1] == end_id else ids


@torch.no_grad()
def _round_ids(model, ids, stop_ids, temperature, top_k, max_new_tokens, generator):
    """9.4 One round of the tool runtime: generate_batch's loop for a batch of one, as in _stream, yielding each id
    as it is sampled, the stop id included (generate_batch keeps it too)."""
    T = len(ids)
    cache = DecodeCache(model, 1, T + max_new_tokens)
    logits, lengths = prefill(model, cache, [ids])
    for step in range(max_new_tokens):
        next_id = sample_next_token(logits, temperature, top_k, None, generator)  # (1, 1)
        yield next_id.item()
        if next_id.item() in stop_ids or step + 1 == max_new_tokens:
            return
        logits = decode_step(model, cache, next_id, (lengths + step)[:, None], n_slots=T + step + 1)


# ----------------------------------------------------------------------------------------------------
# The page
PAGE_SCRIPT = """
"use strict";
const transcript = document.getElementById("transcript");
const form = document.getElementById("send-form");
const box = document.getElementById("message");
const sendButton = document.getElementById("send");
const slider = document.getElementById("temperature");
const shown = document.getElementById("temperature-value");
const resetButton = document.getElementById("reset");
let controller = null;  // the AbortController of the reply being streamed, null when idle

// 9.4 The reasoning, folded under the answer. The stream is the answer's text with its reasoning tags written out
// (each tag is one special id, decoded to its name); splitReply reads it with chat.fold_answer's rule: tagged
// sections (and words between them) are the reasoning, the text after the last tag is the final answer.
const TAG = /(<\\|\\/?(?:think|call|result)\\|>)/;
const SECTIONS = {"<|think|>": "thought", "<|call|>": "call", "<|result|>": "result"};

function splitReply(text) {
  const parts = [];  // {kind, text}, in order
  let open = false, outside = "";
  for (const piece of text.split(TAG)) {  // text, tag, text, ..., text: the capturing group keeps the tags
    if (!TAG.test(piece)) {
      if (open) parts[parts.length - 1].text += piece;
      else outside += piece;
      continue;
    }
    if (outside.trim()) parts.push({kind: "text", text: outside});  // words between two sections
    outside = "";
    open = Object.hasOwn(SECTIONS, piece);
    if (open) parts.push({kind: SECTIONS[piece], text: ""});
  }
  return {final: open ? "" : outside.trim(), parts: parts.map((p) => ({kind: p.kind, text: p.text.trim()}))};
}

function plural(n, word) {
  return n + " " + word + (n === 1 ? "" : "s");
}

function describe(parts) {
  // "4 steps, 1 tool call": a step is one space-separated item of the scratchpad, as in chat.trace_summary
  const thoughts = parts.filter((p) => p.kind === "thought");
  const steps = thoughts.reduce((n, p) => n + p.text.split(/\\s+/).filter(Boolean).length, 0);
  const calls = parts.filter((p) => p.kind === "call").length;
  const said = [];
  if (thoughts.length) said.push(plural(steps, "step"));
  if (calls) said.push(plural(calls, "tool call"));
  return said.join(", ") || plural(parts.length, "part");
}

function addFold(reply) {
  // The answer's text and, under it, a closed <details> for the reasoning (hidden while there is none)
  const column = document.createElement("div");
  column.className = "column";
  reply.replaceWith(column);
  const fold = document.createElement("details");
  fold.className = "reasoning";
  fold.hidden = true;
  const summary = document.createElement("summary");
  const steps = document.createElement("div");
  fold.append(summary, steps);
  column.append(reply, fold);
  return {reply, fold, summary, steps};
}

function showReply(view, text, done) {
  // Rebuilt from the whole text at every read: a tag split between two reads is whole at the next one
  const {final, parts} = splitReply(text);
  view.reply.textContent = final;
  view.fold.hidden = parts.length === 0;
  view.summary.textContent = "reasoning: " + describe(parts);
  view.steps.replaceChildren(...parts.map((part, i) => {
    const row = document.createElement("div");
    row.className = "step " + part.kind;
    const kind = document.createElement("span");
    kind.className = "kind";
    const notRun = done && part.kind === "call" && (parts[i + 1] || {}).kind !== "result";
    kind.textContent = notRun ? "call (not run)" : part.kind;
    const body = document.createElement("span");
    body.textContent = part.text;  // textContent, as every model text on this page
    row.append(kind, body);
    return row;
  }));
  if (done && !final) {
    view.reply.parentElement.classList.add("empty");
    view.reply.textContent = parts.length ? "(no final answer after the reasoning)"
                                          : "(an empty answer: the model wrote <|end|> at once)";
  }
  transcript.scrollTop = transcript.scrollHeight;
}

function showTemperature() {
  const t = Number(slider.value);
  shown.textContent = t === 0 ? "0 (greedy)" : t.toFixed(2);
}

function addLine(role, text) {
  const line = document.createElement("div");
  line.className = "line " + role;
  const who = document.createElement("span");
  who.className = "who";
  who.textContent = role === "user" ? "you" : "model";
  const body = document.createElement("span");
  body.className = "text";
  // Always textContent, never parsed as markup: the model's output is untrusted text (so are the error
  // lines and ?ask=). As markup, an answer like <img src=x onerror=...> would run a script in this page.
  body.textContent = text;
  line.append(who, body);
  transcript.append(line);
  transcript.scrollTop = transcript.scrollHeight;
  return body;
}

function setBusy(busy) {
  sendButton.disabled = busy;
  sendButton.textContent = busy ? "..." : "Send";
}

async function send(message) {
  message = message.trim();
  if (!message || controller) return;
  addLine("user", message);
  box.value = "";
  const reply = addLine("model", "");
  const view = addFold(reply);  // 9.4
  const mine = new AbortController();
  controller = mine;
  setBusy(true);
  try {
    // Only the new message: every request is a fresh single-turn conversation (the model knows no other).
    const response = await fetch("/chat", {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: JSON.stringify({message: message, temperature: Number(slider.value)}),
      signal: mine.signal,
    });
    if (!response.ok) {
      reply.parentElement.classList.add("error");
      reply.textContent = (await response.text()).trim();
      return;
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();  // {stream: true}: a character split between two reads stays whole
    let text = "";
    for (;;) {
      const {done, value} = await reader.read();
      if (done) break;
      text += decoder.decode(value, {stream: true});
      showReply(view, text, false);  // 9.4 the final answer, and the reasoning folded under it
    }
    text += decoder.decode();
    showReply(view, text, true);
  } catch (err) {
    if (err.name !== "AbortError") {  // AbortError: Reset stopped it on purpose
      reply.parentElement.classList.add("error");
      reply.textContent = "the reply broke off: " + err.message + " (is the server still running?)";
    }
  } finally {
    if (controller === mine) {
      controller = null;
      setBusy(false);
    }
  }
}

form.addEventListener("submit", (event) => {
  event.preventDefault();
  send(box.value);
});
slider.addEventListener("input", showTemperature);
resetButton.addEventListener("click", () => {
  if (controller) controller.abort();  // the server notices the closed connection and stops generating
  controller = null;
  setBusy(false);
  transcript.replaceChildren();
  box.value = "";
  box.focus();
});
showTemperature();
const ask = new URLSearchParams(location.search).get("ask");
if (ask) {
  history.replaceState(null, "", location.pathname);  // sent once: reloading the page does not send it again
  send(ask);
}
box.focus();
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Chat with your model</title>
<style>
  body { font: 16px/1.45 system-ui, sans-serif; margin: 0; background: #f4f4f1; color: #1d1d1b; }
  main { max-width: 820px; margin: 0 auto; padding: 16px; display: flex; flex-direction: column; height: 100vh;
         box-sizing: border-box; gap: 10px; }
  h1 { font-size: 20px; margin: 0; }
  .note { font-size: 13px; color: #666; margin: 0; }
  #transcript { flex: 1; overflow-y: auto; background: #fff; border: 1px solid #ddd; border-radius: 8px;
                padding: 12px; }
  .line { display: flex; gap: 10px; margin: 0 0 10px; }
  .who { flex: 0 0 52px; font-weight: 600; color: #777; }
  .text { white-space: pre-wrap; overflow-wrap: anywhere; }
  .user .text { color: #1a4d8f; }
  .error .text { color: #a32020; }
  .empty .text { color: #888; font-style: italic; }
  .model .text { font-size: 18px; font-weight: 600; }
  .column { display: flex; flex-direction: column; gap: 4px; min-width: 0; }
  .reasoning { font-size: 13px; color: #555; }
  .reasoning summary { cursor: pointer; color: #777; }
  .step { display: flex; gap: 8px; font-family: ui-monospace, monospace; white-space: pre-wrap;
          overflow-wrap: anywhere; }
  .step .kind { flex: 0 0 110px; color: #999; }
  .step.result span:last-child { color: #1d6b2f; }
  form, .controls { display: flex; gap: 8px; align-items: center; }
  #message { flex: 1; font: inherit; padding: 8px 10px; border: 1px solid #bbb; border-radius: 6px; }
  button { font: inherit; padding: 8px 16px; border-radius: 6px; border: 1px solid #888; background: #fff;
           cursor: pointer; }
  #send { background: #1a4d8f; color: #fff; border-color: #1a4d8f; }
  button:disabled { opacity: 0.6; cursor: default; }
  .controls { font-size: 14px; }
  #temperature-value { min-width: 80px; }
  .spacer { flex: 1; }
</style>
</head>
<body>
<main>
  <h1>Chat with your model</h1>
  <p class="note">Every message is a fresh conversation: the model was trained on single turns, so it sees only
  the message you send, not the history above.</p>
  <div id="transcript" aria-live="polite"></div>
  <form id="send-form" autocomplete="off">
    <input id="message" type="text" placeholder="Type a request, e.g. What is 3 + 5?" aria-label="message">
    <button id="send" type="submit">Send</button>
  </form>
  <div class="controls">
    <label for="temperature">temperature</label>
    <input id="temperature" type="range" min="0" max="1.5" step="0.05" value="0">
    <output id="temperature-value" for="temperature">0 (greedy)</output>
    <span class="spacer"></span>
    <button id="reset" type="button" title="clear the conversation (and stop a reply)">Reset</button>
  </div>
</main>
<script>""" + PAGE_SCRIPT + """</script>
</body>
</html>
"""

# Defense in depth, after textContent: the browser runs no script but this page's own (named by its hash), loads
# nothing from elsewhere, and connects only back to this server.
SCRIPT_HASH = base64.b64encode(hashlib.sha256(PAGE_SCRIPT.encode("utf-8")).digest()).decode("ascii")
PAGE_POLICY = (f"default-src 'none'; script-src 'sha256-{SCRIPT_HASH}'; style-src 'unsafe-inline'; "
               "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")


# ----------------------------------------------------------------------------------------------------
# HTTP
class BadRequest(Exception):
    """A request the server refuses: the status and one line naming the fix."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


def parse_chat_request(data):
    """The JSON body, decoded -> (message, temperature); BadRequest(400) naming the fix otherwise."""
    example = '{"message": "What is 3 + 5?", "temperature": 0}'
    if not isinstance(data, dict):
        raise BadRequest(400, f"the body must be a JSON object, like {example}")
    unknown = sorted(set(data) - {"message", "temperature"})
    if unknown:
        raise BadRequest(400, f"unknown field(s) {', '.join(unknown)}: send only \"message\" and \"temperature\", "
                              f"like {example}")
    message = data.get("message")
    if not isinstance(message, str):
        raise BadRequest(400, f"\"message\" is missing or not a string: send {example}")
    if not message.strip():
        raise BadRequest(400, "\"message\" is empty: type a request")
    t = data.get("temperature", 0)
    limits = f"0 (greedy) or a number from {MIN_TEMPERATURE:g} to {MAX_TEMPERATURE:g}"
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise BadRequest(400, f"\"temperature\" must be a number: {limits}, got {json.dumps(t)}")
    if not (t == 0 or MIN_TEMPERATURE <= t <= MAX_TEMPERATURE):  # subtle: written so that nan fails too
        raise BadRequest(400, f"\"temperature\" must be {limits}, got {t}")
    return message, float(t)


class ChatServer(ThreadingHTTPServer):
    """The model, its tokenizer and a lock, shared by the handler threads (one thread per connection)."""

    daemon_threads = True  # Ctrl-C does not wait for open connections

    def __init__(self, address, model, tok, max_new_tokens, seed, log, use_tools=True):
        super().__init__(address, ChatHandler)
        self.model, self.tok, self.max_new_tokens, self.log = model, tok, max_new_tokens, log
        self.use_tools = use_tools  # 9.4 run a reasoning model's tool calls (False: without tool access)
        self.lock = threading.Lock()  # one generation at a time (see the module's docstring)
        device = next(model.parameters()).device
        self.generator = torch.Generator(device=device).manual_seed(seed)  # sampled answers: one stream, in turn

    def handle_error(self, request, client_address):
        """One line instead of socketserver's traceback (a client that hung up mid-request, say)."""
        if self.log:
            print(f"error with {client_address[0]}: {sys.exc_info()[1]!r}", file=sys.stderr, flush=True)


class ChatHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # chunked transfer encoding (and keep-alive) are HTTP/1.1
    server_version = "part8-chat"
    timeout = CHUNK_TIMEOUT_S

    def do_GET(self):
        path = urlsplit(self.path).path
        if path == "/":
            self.send_text(200, PAGE, "text/html; charset=utf-8", {"Content-Security-Policy": PAGE_POLICY})
        elif path == "/health":
            self.send_text(200, "ok")
        else:
            self.refuse()

    def do_POST(self):
        if urlsplit(self.path).path != "/chat":
            return self.refuse()
        try:
            message, temperature = parse_chat_request(self.read_json())
            s = self.server
            try:  # checked before any work: a request too long for the context is a 400, not a broken stream
                pieces = stream_answer(s.model, s.tok, message, temperature, max_new_tokens=s.max_new_tokens,
                                       generator=s.generator, use_tools=s.use_tools)
            except ValueError as e:
                raise BadRequest(400, str(e))
        except BadRequest as e:
            return self.send_text(e.status, str(e))
        with self.server.lock:
            self.stream(pieces)

    def refuse(self):
        """404 for a path the server does not have, 405 for a method a path does not take."""
        path = urlsplit(self.path).path
        allowed = {"/": "GET", "/health": "GET", "/chat": "POST"}.get(path)
        if allowed is None:
            return self.send_text(404, f"no page {path}: open / for the chat page (POST /chat for answers)")
        self.send_text(405, f"{self.command} {path} is not supported: use {allowed} {path}", extra={"Allow": allowed})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_TRACE = do_CONNECT = refuse

    def read_json(self):
        if self.headers.get("Transfer-Encoding"):
            raise BadRequest(411, "send the body with a Content-Length header (not chunked)")
        length = self.headers.get("Content-Length")
        if length is None:
            raise BadRequest(411, "POST /chat needs a Content-Length header and a JSON body")
        if not (length.strip().isascii() and length.strip().isdigit()):  # not int(): it takes "-5" and "1_0"
            raise BadRequest(400, f"Content-Length must be a whole number of bytes, got {length!r}")
        n = int(length)
        if n > MAX_BODY:
            raise BadRequest(413, f"the body is {n} bytes; this server reads at most {MAX_BODY}: "
                                  "send a shorter message")
        body = self.rfile.read(n)
        if self.headers.get_content_type() != "application/json":
            # subtle: this header is the defense against other web sites. A page elsewhere may make your browser
            # POST here, but it cannot send application/json without asking first (a CORS preflight, OPTIONS),
            # which this server refuses.
            raise BadRequest(415, "send the body as JSON, with the header Content-Type: application/json")
        try:
            return json.loads(body.decode("utf-8"))
        except UnicodeDecodeError:
            raise BadRequest(400, "the body is not UTF-8 text: send JSON encoded as UTF-8")
        except (ValueError, RecursionError) as e:
            raise BadRequest(400, f"the body is not valid JSON ({str(e).splitlines()[0]}): "
                                  'send {"message": "...", "temperature": 0}')

    def send_text(self, status, text, content_type="text/plain; charset=utf-8", extra=None):
        """A whole response with a Content-Length. An error closes the connection: its request body may be
        unread, and it must not be taken for the next request."""
        body = (text if text.endswith("\n") or status < 400 else text + "\n").encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        if status >= 400:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        if status >= 400:
            self.linger()

    def linger(self):
        """Read (and drop) what the client still sends, for a moment, before closing. Closing a socket with
        unread data makes the kernel reset the connection, and the client may lose our response with it."""
        try:
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(1.0)
            for _ in range(64):  # at most 4 MiB
                if not self.connection.recv(65536):
                    break
        except OSError:
            pass

    def stream(self, pieces):
        """200 and one HTTP chunk per piece, each written as soon as it is generated."""
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        try:
            for piece in pieces:  # never "": an empty chunk would end the response
                data = piece.encode("utf-8")
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))  # unbuffered: on the wire now
            self.wfile.write(b"0\r\n\r\n")
        except OSError as e:  # the page's Reset (or a closed tab): stop generating for nobody
            self.close_connection = True
            self.log_message("client went away (%s): stopped generating", type(e).__name__)
        except Exception as e:  # the headers are out: all we can do is end the response early
            self.close_connection = True
            self.log_message("error while generating: %r", e)
        finally:
            pieces.close()

    def log_message(self, format, *args):
        """One line per request on stderr (the default format, shorter), only when the server logs."""
        if self.server.log:
            print(f"{self.log_date_time_string()} {format % args}", file=sys.stderr, flush=True)


def make_server(model, tok, host="127.0.0.1", port=8000, max_new_tokens=64, seed=1337, log=False, use_tools=True):
    """The server, bound and listening (port 0: any free port; see server.server_address), not yet serving:
    call server.serve_forever(). Raises OSError when the port is taken.
    9.4 use_tools: run a reasoning model's tool calls as it writes them (False: not run)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    chat_token_ids(tok)  # a tokenizer without chat tokens fails now, in one line, not at the first request
    model.eval()  # no dropout; an MoE drops no tokens in eval mode
    return ChatServer((host, port), model, tok, max_new_tokens, seed, log, use_tools)


# ----------------------------------------------------------------------------------------------------
# The command line
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", default=f"out/{PART.split('_')[0]}/tools/best.pt",
                   help="the chat model: any fine-tuned checkpoint, e.g. out/part6/best.pt (default: %(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on; 0.0.0.0 exposes the page (and "
                   "your model) to every machine on your network (default: %(default)s)")
    p.add_argument("--port", type=int, default=8000, help="1 to 65535, or 0 for any free port (default: %(default)s)")
    p.add_argument("--max_new_tokens", type=int, default=64,
                   help="longest answer, in tokens; the model's block_size caps it (default: %(default)s)")
    p.add_argument("--seed", type=int, default=1337, help="for sampled answers (temperature > 0) "
                   "(default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (default: %(default)s)")
    p.add_argument("--tools", type=str_to_bool, default=True, help="true: a reasoning model's tool calls are run "
                   "as it writes them; false: not run, the model is without tool access (default: %(default)s)")
    args = p.parse_args(argv)
    if not 0 <= args.port <= 65535:
        p.error(f"--port must be from 1 to 65535, or 0 for any free port, got {args.port}")
    if args.max_new_tokens < 1:
        p.error(f"--max_new_tokens must be >= 1, got {args.max_new_tokens}")
    if not -2**63 <= args.seed < 2**64:
        p.error(f"--seed must fit in 64 bits (0 to {2**64 - 1}), got {args.seed}")
    if not args.host.strip():
        p.error("--host must not be empty: use 127.0.0.1 (this machine only)")
    return args


def main(argv=None):
    args = parse_args(argv)
    device = pick_device(args.device)
    try:
        model, tok = load_chat_model(args.checkpoint, device)
        try:
            server = make_server(model, tok, args.host, args.port, args.max_new_tokens, args.seed, log=True,
                                 use_tools=args.tools)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise SystemExit(f"error: port {args.port} is in use: pass --port with another number "
                                 "(or 0 for any free port)")
            raise SystemExit(f"error: cannot listen on {args.host}:{args.port} ({e.strerror or e}): "
                             "check --host and --port")
        with server:
            host, port = server.server_address[:2]
            print(f"chat page: http://{host}:{port}/   ({args.checkpoint}; Ctrl-C stops)", flush=True)
            server.serve_forever()
    except KeyboardInterrupt:  # Ctrl-C, while loading or serving: one line, no traceback
        print("stopped", flush=True)


if __name__ == "__main__":
    main()
