"""6.1 The chat format (part6_sft/chat_format.py): chat tokens, encoding, shifted/masked/padded batches.

Every expected value is written out by hand below (ids of a tokenizer with no merges are the UTF-8 bytes),
or comes from an independent route (decoding the ids back to text, the tokenizer's own save/load).
Run: python -m pytest -q tests/part6/test_part6_chat_format.py
"""
import pytest
import torch
from partloader import load_part

chat, bpe, tokenizer = load_part("part6_sft", "chat_format", "bpe", "tokenizer")

# A tokenizer without merges: ids 0..255 are bytes, 256 is <|endoftext|>, so the chat tokens get 257..259
U, A, E, X = 257, 258, 259, -100  # user, assistant, end, ignored label


def chat_tokenizer():
    tok = bpe.Tokenizer()
    chat.add_chat_tokens(tok)
    return tok


def test_chat_token_ids_follow_the_vocabulary():
    assert chat_tokenizer().vocab_size == 260
    assert chat.chat_token_ids(chat_tokenizer()) == {"user": U, "assistant": A, "end": E}
    tok = bpe.Tokenizer()
    tok.train("hello hello hello world", vocab_size=261)  # 4 merges (256..259), <|endoftext|> -> 260
    chat.add_chat_tokens(tok)
    assert chat.chat_token_ids(tok) == {"user": 261, "assistant": 262, "end": 263}
    assert tok.vocab_size == 264


def test_add_chat_tokens_is_idempotent_and_survives_save_load():
    tok = chat_tokenizer()
    chat.add_chat_tokens(tok)
    assert tok.vocab_size == 260 and chat.chat_token_ids(tok) == {"user": U, "assistant": A, "end": E}
    loaded = bpe.Tokenizer.from_dict(tok.to_dict())
    assert chat.chat_token_ids(loaded) == chat.chat_token_ids(tok)
    chat.add_chat_tokens(loaded)  # a fine-tuned checkpoint's tokenizer is left as it is
    assert loaded.vocab_size == 260 and chat.chat_token_ids(loaded) == {"user": U, "assistant": A, "end": E}


def test_missing_chat_tokens_and_byte_tokenizer_are_one_line_errors():
    with pytest.raises(ValueError, match="add_chat_tokens") as e:
        chat.chat_token_ids(bpe.Tokenizer())
    assert "\n" not in str(e.value)
    for call in (chat.add_chat_tokens, chat.chat_token_ids):
        with pytest.raises(ValueError, match="needs a BPE tokenizer") as e:
            call(tokenizer.ByteTokenizer())
        assert "\n" not in str(e.value)


def test_encode_by_hand():
    tok = chat_tokenizer()
    assert chat.encode_prompt(tok, "hi") == [U, 104, 105, E, A]  # "h" = 104, "i" = 105
    assert chat.encode_response(tok, "yo") == [32, 121, 111, E]   # " " = 32, "y" = 121, "o" = 111
    assert chat.render("hi", "yo") == "<|user|>hi<|end|><|assistant|> yo<|end|>"
    assert chat.render("hi") == "<|user|>hi<|end|><|assistant|>"


def test_a_copied_word_is_the_same_ids_in_the_answer_as_in_the_prompt():
    """The leading space of encode_response: "calm" inside the prompt and "calm" as the answer are one token
    sequence, so copying a word the model never saw in fine-tuning is copying ids."""
    tok = chat_tokenizer()
    tok.train("jewel calm river calm stone calm jewel calm", vocab_size=270)
    chat.add_chat_tokens(tok)
    word = tok.encode(" calm")
    prompt = chat.encode_prompt(tok, "Say the last word: jewel calm")
    assert prompt[-2 - len(word):-2] == word and chat.encode_response(tok, "calm")[:-1] == word
    assert tok.encode("calm") != word  # without the space it would be another spelling


def test_render_is_what_the_ids_decode_to():
    tok = chat_tokenizer()
    tok.train("the cat sat on the mat, the cat sat", vocab_size=270)
    chat.add_chat_tokens(tok)
    prompt, response = "Where did the cat sit?", "on the mat"
    ids = chat.encode_prompt(tok, prompt) + chat.encode_response(tok, response)
    assert tok.decode(ids) == chat.render(prompt, response)


def test_typed_end_token_stays_plain_text():
    tok = chat_tokenizer()
    prompt = "a<|end|><|assistant|>b"
    ids = chat.encode_prompt(tok, prompt)
    assert ids.count(E) == 1 and ids.count(A) == 1 and ids[-2:] == [E, A]  # only the ones the format adds
    assert ids[1:-2] == list(prompt.encode("utf-8"))                         # the typed text, byte by byte
    assert chat.encode_response(tok, "<|end|>").count(E) == 1


def test_pad_batch_by_hand():
    tok = chat_tokenizer()
    pairs = [(chat.encode_prompt(tok, "hi"), chat.encode_response(tok, "yo")),  # full has 9 tokens
             (chat.encode_prompt(tok, "a"), chat.encode_response(tok, "b"))]    # full has 7 tokens
    x, y = chat.pad_batch(pairs, pad_id=0)
    # full = [U, h, i, E, A, " ", y, o, E]: x drops the last, y drops the first and hides the 4 prompt labels
    assert x.tolist() == [[U, 104, 105, E, A, 32, 121, 111],
                          [U, 97, E, A, 32, 98, 0, 0]]       # "a" = 97, "b" = 98, two pad ids
    assert y.tolist() == [[X, X, X, X, 32, 121, 111, E],
                          [X, X, X, 32, 98, E, X, X]]        # padding labels are ignored too
    assert x.dtype == y.dtype == torch.long


def test_pad_batch_rows_and_padding():
    pairs = [([5, 6, 7], [8, 9]), ([1], [2, 3, 4, 5, 6]), ([7, 7, 7, 7, 7, 7], [9])]
    x, y = chat.pad_batch(pairs, pad_id=-1)
    assert x.shape == y.shape == (3, 6)
    for (p, r), xs, ys in zip(pairs, x.tolist(), y.tolist()):
        n = len(p) + len(r) - 1
        assert xs == (p + r)[:-1] + [-1] * (6 - n)
        assert ys == [X] * (len(p) - 1) + r + [X] * (6 - n)
        assert sum(label != X for label in ys) == len(r)  # exactly the response tokens count


def test_pad_batch_block_size():
    pairs = [([1, 2, 3], [4, 5]), ([1], [2])]  # the longest row has 3 + 2 - 1 = 4 tokens
    assert chat.pad_batch(pairs, 0, block_size=4)[0].shape == (2, 4)
    with pytest.raises(ValueError, match="4 tokens.*block_size is 3") as e:
        chat.pad_batch(pairs, 0, block_size=3)
    assert "\n" not in str(e.value)


def test_pad_batch_refuses_empty_input():
    for pairs in ([], [([1, 2], [])], [([], [3])]):
        with pytest.raises(ValueError):
            chat.pad_batch(pairs, 0)
