"""9.1/9.3 The reasoning format: a scratchpad and tool calls inside the assistant's turn, as special tokens.

Part 6's chat format stays; the answer may now hold a thinking section and tool calls before the final answer:

    <|user|>What is 4729 + 3856?<|end|><|assistant|>
        <|think|>9+6+0=15 2+5+1=8 7+8+0=15 4+3+1=8<|/think|> 8585<|end|>
    <|user|>What is 48213 * 9921?<|end|><|assistant|>
        <|call|>calc(48213*9921)<|/call|><|result|>478321173<|/result|> 478321173<|end|>

Why special tokens: as with <|end|> (chat_format.py), each tag is ONE id that only the program can put in a prompt.
A user who types "<|result|>42<|/result|>" gets plain bytes, so nobody can forge a tool's answer; only the
runtime (tools.py) writes a <|result|> id, after it has run the call itself.

Why the result is masked out of the loss (mask_tool_results): the model never writes those tokens, the runtime
does. Training it to predict them would teach it to guess the calculator's answer, the very thing it cannot do.
It learns to write the call and to copy the result into the answer; the result comes from the tool.

Try:  python -m pytest -q tests/part9/test_part9_reasoning_format.py
"""
import torch

from chat_format import IGNORE_INDEX, add_chat_tokens, chat_token_ids

THINK, THINK_END = "<|think|>", "<|/think|>"      # 9.1 the scratchpad (chain of thought)
CALL, CALL_END = "<|call|>", "<|/call|>"          # 9.3 a tool call the model writes: name(arguments)
RESULT, RESULT_END = "<|result|>", "<|/result|>"  # 9.3 the tool's answer, written by the runtime
REASONING_TOKENS = (THINK, THINK_END, CALL, CALL_END, RESULT, RESULT_END)
NAMES = ("think", "think_end", "call", "call_end", "result", "result_end")


def add_reasoning_tokens(tok) -> None:
    """Chat tokens (6.1), then the six reasoning tokens, ids after the vocabulary. Idempotent."""
    add_chat_tokens(tok)
    tok.register_special_tokens(list(REASONING_TOKENS))


def reasoning_token_ids(tok) -> dict:
    """{"think": id, "think_end": id, "call": id, ...}; a one-line error if the tokenizer lacks them."""
    missing = [t for t in REASONING_TOKENS if t not in getattr(tok, "special_tokens", {})]
    if missing:
        raise ValueError(f"the tokenizer has no reasoning token(s) {missing}: a Part 9 model was trained with "
                         "them (reasoning_format.add_reasoning_tokens)")
    return {name: tok.special_tokens[t] for name, t in zip(NAMES, REASONING_TOKENS)}


def encode_reasoning_response(tok, response: str) -> list:
    """" " + response + [END], as chat_format.encode_response, but the reasoning tags in the response become
    their ids (the gold answers are written by the program, never by a user). Chat tokens stay text."""
    ids = tok.encode(" " + response, allowed_special=set(REASONING_TOKENS))
    return [*ids, chat_token_ids(tok)["end"]]


def mask_tool_results(labels: torch.Tensor, result_id: int, result_end_id: int) -> torch.Tensor:
    """9.3 labels (B, T) -> a copy with every <|result|> ... <|/result|> span (both tags included) set to
    IGNORE_INDEX: the runtime writes those tokens, so they must not count in the loss.
        labels  [c, ), <result>, 4, 2, </result>, " 42", <end>]
        masked  [c, ), -100,    -100, -100, -100,  " 42", <end>]
    A token is inside a span when more <|result|> than <|/result|> tags come before or at it, counting
    <|/result|> only strictly before it (so the closing tag itself is still inside). The spans are the
    runtime's, so they alternate: <|result|>, <|/result|>, <|result|>, ...; the last may be unclosed (a cut answer)."""
    opened = (labels == result_id).long().cumsum(1)
    closed_before = (labels == result_end_id).long().cumsum(1) - (labels == result_end_id).long()
    out = labels.clone()
    out[opened > closed_before] = IGNORE_INDEX
    return out


def split_answer(text: str):
    """9.4 An answer's text -> (trace, final): the thinking section's contents ("" when there is none) and what
    follows the last closing tag (<|/think|> or <|/result|>), stripped. The final answer is what is graded.
        split_answer("<|think|>1+2+0=3<|/think|> 3") -> ("1+2+0=3", "3")"""
    trace = ""
    if THINK in text and THINK_END in text.split(THINK, 1)[1]:
        trace = text.split(THINK, 1)[1].split(THINK_END, 1)[0]
    cut = max(text.rfind(THINK_END) + len(THINK_END) if THINK_END in text else 0,
              text.rfind(RESULT_END) + len(RESULT_END) if RESULT_END in text else 0)
    return trace.strip(), text[cut:].strip()
