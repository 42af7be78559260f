"""3.4/3.6 KV cache: one layer's keys and values of the tokens seen so far, kept between generation steps.
GPT.new_cache (model.py) makes one per layer; CausalSelfAttention.forward fills and reads it."""
import torch


class KVCache:
    """One layer's keys and values of the tokens seen so far (3.4), so a new token costs one small step
    instead of a rerun over the whole text. It is also a rolling buffer (3.6): it keeps the first n_sink
    tokens (attention sinks) and the last `window`, so memory stays fixed however long the stream.

    Positions are slots in the cache, as in StreamingLLM: sinks sit at 0..n_sink-1 and the newest token at
    n_sink+window-1 at most, inside the range the model was trained on however far into the stream we are.
    Keys are stored already rotated by RoPE; when tokens are evicted the kept ones move down a slot, so they
    are turned back by one position (rotations add up: R(p - 1) = R(-1) R(p)). rotate_back(k, n) does that
    turn by n positions (CausalSelfAttention.rotate_back); None for a model without RoPE."""

    def __init__(self, window, n_sink=0, rotate_back=None):
        self.window, self.n_sink = window, n_sink
        self.rotate_back = rotate_back
        self.k = self.v = None     # (B, nh, slots, hs)
        self.n_seen = 0            # tokens seen so far = the position in the text of the next token

    def __len__(self):
        return 0 if self.k is None else self.k.size(2)

    def make_room(self, T):
        """Before T new tokens: evict what they can no longer see; return the slot of the first new token.
        The prompt goes into the empty cache at once, then one token per step."""
        if self.k is None:
            return 0
        if T != 1:
            raise ValueError("after the prompt, feed the KV cache one token at a time")
        n_drop = len(self) - (self.n_sink + self.window - 1)  # keep n_sink + window - 1, plus the new token
        if n_drop > 0:  # 3.6 drop the oldest tokens that are not sinks
            S = self.n_sink
            kept_k = self.k[:, :, S + n_drop:]
            if self.rotate_back is not None:  # the kept keys move down n_drop slots: rotate them back as many positions
                kept_k = self.rotate_back(kept_k, n_drop)
            self.k = torch.cat([self.k[:, :, :S], kept_k], dim=2)
            self.v = torch.cat([self.v[:, :, :S], self.v[:, :, S + n_drop:]], dim=2)
        return len(self)

    def append(self, k, v):
        """Add the new tokens' k, v (B, nh, T, hs); return every key and value they attend to (B, nh, L, hs)."""
        self.n_seen += k.size(2)
        if self.k is not None:
            k, v = torch.cat([self.k, k], dim=2), torch.cat([self.v, v], dim=2)
        self.k, self.v = k, v
        return k, v
