"""2.1 Byte-level tokenization: a token is one byte of the UTF-8 encoding, so the vocabulary is 256.

Any string can be encoded (emoji and accents become several bytes each) and nothing is ever "unknown".
"""


class ByteTokenizer:
    vocab_size = 256

    def encode(self, text: str) -> list[int]:
        """'héllo' -> [104, 195, 169, 108, 108, 111]  (é is two bytes in UTF-8)"""
        return list(text.encode("utf-8"))

    def decode(self, ids) -> str:
        # subtle: a model can emit a byte sequence that is not valid UTF-8 (half of a multi-byte
        # character); "replace" turns those bytes into U+FFFD instead of crashing.
        return bytes(ids).decode("utf-8", errors="replace")
