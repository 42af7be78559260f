"""A tiny fine-tuned chat model for the tests of chat.py, serve.py and the RL code (Parts 6-8): a 280-token
BPE with the chat tokens, a GPT small enough to learn a few answers by heart in a moment, and a checkpoint
saved the way train.py saves best.pt. Each function takes the part whose modules it should use.
"""
import http.client

import torch
from partloader import load_part

CORPUS = "the cat sat on the mat. a dog ran to the park and the cat ran after it. " * 4


def tiny_tokenizer(part, with_chat_tokens=True):
    bpe, chat_format = load_part(part, "bpe", "chat_format")
    tok = bpe.Tokenizer()
    tok.train(CORPUS, vocab_size=280)
    if with_chat_tokens:
        chat_format.add_chat_tokens(tok)
    return tok


def tiny_gpt(part, tok, block_size=32, n_layer=1, seed=0):
    model_lib = load_part(part, "model")
    torch.manual_seed(seed)
    cfg = model_lib.GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=n_layer, n_head=2,
                              n_embd=32)
    return model_lib.GPT(cfg)


def fit(part, gpt, tok, pairs, steps=40):
    """A few full-batch steps of SFT on (prompt, response) pairs: enough for a tiny model to learn them by
    heart. Returns the model."""
    chat_format = load_part(part, "chat_format")
    x, y = chat_format.pad_batch([(chat_format.encode_prompt(tok, p), chat_format.encode_response(tok, r))
                                  for p, r in pairs], pad_id=0)
    opt = torch.optim.AdamW(gpt.parameters(), lr=2e-2)
    for _ in range(steps):
        _, loss = gpt(x, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return gpt


def save_tiny(part, path, tok, train_on=(), block_size=32):
    """A GPT sized for tok, fitted to the (prompt, response) pairs train_on, saved as train.py saves best.pt;
    returns the in-memory model."""
    checkpoint, data = load_part(part, "checkpoint", "data")
    gpt = tiny_gpt(part, tok, block_size)
    if train_on:
        fit(part, gpt, tok, train_on)
    checkpoint.save_checkpoint(str(path), gpt, gpt.config, step=0, val_loss=1.0,
                               extra={"tokenizer": data.tokenizer_to_dict(tok)})
    return gpt.eval()


def request(port, method, path, body=None, headers=None):
    """(status, headers, body text) of one request to a local server (serve.py) on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.headers, resp.read().decode("utf-8")
    finally:
        conn.close()
