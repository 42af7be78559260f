"""6.1 The chat format: how a (prompt, response) pair becomes token ids, inputs x and labels y.

A base model continues text. To make it answer, every training example is written in one fixed layout,
and at inference time we write the prompt in that layout and let the model continue:

    <|user|>What is 2 + 3?<|end|><|assistant|> 5<|end|>
    '---------- prompt (given) -----------'  '-- response (learned) -'

Why special tokens: <|user|>, <|assistant|> and <|end|> are each ONE id, added after the BPE vocabulary
(add_chat_tokens). A user cannot type them: user text is encoded with tok.encode(text), which turns the
characters "<|end|>" into ordinary bytes, so a prompt can never close its own turn or forge an assistant
turn. (The ids exist only when the program puts them there.)

Why the response ends with <|end|>: the model must learn to stop. It is trained to predict <|end|> after
the answer, so at inference generation stops when it emits that id (decode.generate_batch's stop_ids);
without it the model would ramble on into a made-up next question.

Why labels use -100 (IGNORE_INDEX): F.cross_entropy skips targets equal to its ignore_index, -100 by
default. The prompt is given, not predicted, so its positions get label -100: we teach the model to answer,
not to write questions. Padding is not text at all: -100 too. Only the response tokens and its <|end|>
count (6.2 sft_loss.py computes the same mask from lengths).

Right padding: rows of a batch have different lengths, so shorter rows are filled on the right with pad_id.
Attention is causal, so a real token never sees the padding that follows it, and padding's own outputs
have label -100: the padding changes nothing (tested).

Try:  python -m pytest -q tests/part6/test_part6_chat_format.py
"""
import torch

USER, ASSISTANT, END = "<|user|>", "<|assistant|>", "<|end|>"  # END = end of turn
CHAT_TOKENS = (USER, ASSISTANT, END)
IGNORE_INDEX = -100  # F.cross_entropy's default ignore_index: labels that do not count


# ----------------------------------------------------------------------------------------------------
# 6.1 Chat tokens on the BPE tokenizer
def _require_bpe(tok):
    """The chat tokens are special tokens, which only the BPE tokenizer (bpe.Tokenizer) has."""
    if not hasattr(tok, "register_special_tokens"):
        raise ValueError(f"the chat format needs a BPE tokenizer (special tokens are extra ids), got "
                         f"{type(tok).__name__}: pretrain the base model with --tokenizer bpe")


def add_chat_tokens(tok) -> None:
    """Register <|user|>, <|assistant|>, <|end|> on a bpe.Tokenizer, ids following its vocabulary.
    Vocabulary 0..511 (vocab_size 512) -> user 512, assistant 513, end 514 (vocab_size 515).
    Idempotent: tokens already there keep their ids (register_special_tokens skips known names), so a
    tokenizer loaded from a fine-tuned checkpoint is left alone. The model's embedding must grow to match
    (model.py: GPT.grow_vocab)."""
    _require_bpe(tok)
    tok.register_special_tokens(list(CHAT_TOKENS))


def chat_token_ids(tok) -> dict:
    """{"user": id, "assistant": id, "end": id}; a one-line error if the tokenizer lacks them."""
    _require_bpe(tok)
    missing = [t for t in CHAT_TOKENS if t not in tok.special_tokens]
    if missing:
        raise ValueError(f"the tokenizer has no chat token(s) {missing}: call chat_format.add_chat_tokens(tok) "
                         "(and grow the model's vocabulary) before fine-tuning")
    return {"user": tok.special_tokens[USER], "assistant": tok.special_tokens[ASSISTANT],
            "end": tok.special_tokens[END]}


# ----------------------------------------------------------------------------------------------------
# 6.1 Encoding a conversation
def encode_prompt(tok, prompt: str) -> list:
    """[USER] + prompt + [END, ASSISTANT]: everything the model is given before it answers.
    subtle: tok.encode(prompt) allows no special tokens, so typing "<|end|>" stays plain text."""
    ids = chat_token_ids(tok)
    return [ids["user"], *tok.encode(prompt), ids["end"], ids["assistant"]]


def encode_response(tok, response: str) -> list:
    """" " + response + [END]: what the model learns to write, including when to stop.
    subtle: the space. The BPE pre-tokenizer keeps a word's leading space ("jewel calm" -> "jewel", " calm"),
    so a word inside a prompt is a " word" token, but the same word right after <|assistant|> would be a
    different id ("calm"). Without the space, answering "calm" means learning a second spelling of every word
    it copies: a small model learns it for the words it was trained on and fails on new ones (measured: 0%
    exact on copying held-out words). With it, copying is copying ids. Answers are stripped when read."""
    return [*tok.encode(" " + response), chat_token_ids(tok)["end"]]


def render(prompt: str, response: str | None = None) -> str:
    """The same conversation as text, for display: tok.decode(encode_prompt + encode_response) gives it.
    render("hi", "yo") -> "<|user|>hi<|end|><|assistant|> yo<|end|>"; without a response it ends at the
    point where the model starts writing."""
    text = f"{USER}{prompt}{END}{ASSISTANT}"
    return text if response is None else f"{text} {response}{END}"


# ----------------------------------------------------------------------------------------------------
# 6.1 Batching: shift, mask the prompt, pad on the right
def shift_and_mask(prompt_ids, response_ids):
    """One example -> (x, y) lists. full = prompt + response; x = full[:-1], y = full[1:] with the labels
    that are prompt tokens replaced by IGNORE_INDEX. Prompt [u, h, e, a], response [r, e]:
        full = [u, h, e, a, r, e]
        x    = [u, h, e, a, r]
        y    = [-100, -100, -100, r, e]     (y[t] is the token after x[t]; the first p-1 are prompt)"""
    if not prompt_ids or not response_ids:
        raise ValueError("an example needs a non-empty prompt and response (encode_prompt, encode_response)")
    full = [*prompt_ids, *response_ids]
    return full[:-1], [IGNORE_INDEX] * (len(prompt_ids) - 1) + list(response_ids)


def pad_batch(pairs, pad_id, block_size=None):
    """pairs: list of (prompt_ids, response_ids) -> x, y LongTensors (B, T), T = the longest row.
    Rows are right-padded: x with pad_id, y with IGNORE_INDEX (so padding never counts in the loss)."""
    if not pairs:
        raise ValueError("pad_batch needs at least one (prompt_ids, response_ids) pair")
    rows = [shift_and_mask(p, r) for p, r in pairs]
    T = max(len(x) for x, _ in rows)
    if block_size is not None and T > block_size:
        raise ValueError(f"the longest example has {T} tokens (prompt + response - 1) but block_size is "
                         f"{block_size}: drop or shorten the long examples, or use a larger block_size")
    x = torch.full((len(rows), T), pad_id, dtype=torch.long)
    y = torch.full((len(rows), T), IGNORE_INDEX, dtype=torch.long)
    for b, (xs, ys) in enumerate(rows):
        x[b, :len(xs)] = torch.tensor(xs)
        y[b, :len(ys)] = torch.tensor(ys)
    return x, y
