"""GPU fast path for generation: a preallocated KV cache and batched decoding (for SFT and RL rollouts).

Part 3's KVCache (kv_cache.py) teaches the idea: it grows with torch.cat, one sequence length for the whole
batch. This file is the fast path that later parts generate with. It computes the same tokens (tested
against GPT.generate(use_cache=False), prompt by prompt), with three changes:
  - the keys and values go into buffers allocated once, (B, nh, max_len, hs) per layer, written in place:
    no torch.cat copying the whole cache at every step (bench_decode.py plots ms per step against position);
  - prompts of different lengths share one batch: they are right-padded, so slot = position in each row's
    own text, exactly as when the prompt runs alone; a mask hides every key a row has not written yet;
  - each row stops at its own stop token; finished rows stay in the batch (their tokens are ignored),
    and the loop ends when every row has finished.

    from decode import generate_batch
    outs = generate_batch(model, [[1, 2, 3], [4, 5]], max_new_tokens=50, stop_ids=[eot_id])

Only RoPE models (Part 3's default): learned positions would need per-row position embeddings too.
Prompt + max_new_tokens must fit in block_size: this cache does not roll (GPT.generate's does, 3.6).
"""
import functools

import torch

from sampling import sample_next_token


class DecodeCache:
    """Every layer's keys and values for a batch of B sequences, in buffers allocated once.

    Before each forward pass, set_positions says where the new tokens go: positions (B, T), one row per
    sequence, and which keys each may see (mask). The model reads them through cache[i], which speaks the
    interface CausalSelfAttention already calls for Part 3's KVCache (make_room, append), plus a mask."""

    def __init__(self, model, batch_size, max_len):
        c = model.config
        if c.pos_embedding != "rope":
            raise ValueError(f"the fast path needs a RoPE model (pos_embedding='rope', got {c.pos_embedding!r}); "
                             "use GPT.generate")
        if max_len > c.block_size:  # RoPE tables (and training) stop at block_size
            raise ValueError(f"prompt + new tokens ({max_len}) exceed block_size {c.block_size}; shorten the "
                             "prompt or max_new_tokens, or use GPT.generate, whose cache rolls (3.6)")
        self.batch_size, self.max_len = batch_size, max_len
        self.window, self.n_sink = c.window, c.n_sink
        device = next(model.parameters()).device
        self.rows = torch.arange(batch_size, device=device)[:, None]        # (B, 1)
        self.slots = torch.arange(max_len, device=device)                   # (max_len,)
        self.layers = [LayerCache(self) for _ in range(c.n_layer)]
        self.positions = self.mask = None
        self.n_slots = 0

    def __getitem__(self, i):
        return self.layers[i]

    def set_positions(self, positions, n_slots):
        """The next forward pass feeds tokens at positions (B, T); keys 0..n_slots-1 are read.
        Query at position p of row b sees key j if j <= p: every slot up to p holds that row's own text
        (slots past a short prompt hold padding until generated tokens overwrite them)."""
        self.positions, self.n_slots = positions, n_slots
        keys = self.slots[:n_slots]                                          # (L,)
        p = positions[:, :, None]                                            # (B, T, 1)
        visible = keys <= p                                                  # (B, T, L) causal, per row
        if self.window:  # 3.5 sliding window and sinks, as in attention_mask (model.py)
            visible &= (p - keys < self.window) | (keys < self.n_sink)
        self.mask = visible[:, None]                                         # (B, 1, T, L): every head alike


class LayerCache:
    """One layer's view of a DecodeCache: its own key and value buffers, the shared positions and mask."""

    def __init__(self, cache):
        self.cache = cache
        self.k = self.v = None  # (B, nh, max_len, hs), made at the first append: then we know nh, hs, dtype

    @property
    def mask(self):
        return self.cache.mask

    def make_room(self, T):
        """Positions of the T new tokens, (B, T): CausalSelfAttention rotates q and k by them (RoPE)."""
        return self.cache.positions

    def append(self, k, v):
        """Write the new k, v (B, nh, T, hs) at their positions, in place; return the keys and values
        the queries read, (B, nh, n_slots, hs): a view of the buffers, not a copy."""
        c = self.cache
        if self.k is None:
            B, nh, _, hs = k.shape
            self.k = k.new_zeros(B, nh, c.max_len, hs)
            self.v = v.new_zeros(B, nh, c.max_len, hs)
        # row b's token t goes to slot positions[b, t]; indexing (rows, :, positions) addresses (B, T, nh, hs)
        self.k[c.rows, :, c.positions] = k.transpose(1, 2)
        self.v[c.rows, :, c.positions] = v.transpose(1, 2)
        return self.k[:, :, :c.n_slots], self.v[:, :, :c.n_slots]


def check_prompts(model, prompts, max_new_tokens):
    if not prompts or any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token (the model needs something to continue)")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    vocab = model.config.vocab_size
    if any(not 0 <= t < vocab for p in prompts for t in p):
        raise ValueError(f"prompt token ids must be in 0..{vocab - 1}")


def prefill(model, cache, prompts):
    """Run every prompt at once, right-padded to the longest; return each row's next-token logits (B, vocab)."""
    device = cache.slots.device
    lengths = torch.tensor([len(p) for p in prompts], device=device)     # (B,)
    T = max(len(p) for p in prompts)
    idx = torch.zeros(len(prompts), T, dtype=torch.long)                  # pad with token 0: never seen
    for b, p in enumerate(prompts):
        idx[b, :len(p)] = torch.tensor(p)
    cache.set_positions(cache.slots[:T].expand(len(prompts), T), n_slots=T)
    logits = model(idx.to(device), cache=cache)[0]                       # (B, T, vocab)
    return logits[cache.rows[:, 0], lengths - 1], lengths                 # each row's last real token


def decode_step(model, cache, tokens, positions, n_slots):
    """Feed one token per row (B, 1) at positions (B, 1); return the next-token logits (B, vocab)."""
    cache.set_positions(positions, n_slots)
    return model(tokens, cache=cache)[0][:, -1]


@functools.cache
def compiled_decode_step():
    """decode_step through torch.compile, made once per process: it fuses the many small element-wise kernels
    of a step (RMSNorm, RoPE, SwiGLU) into a few. Compiling takes tens of seconds; every step reads all
    max_len slots then, so the shapes stay fixed and it compiles once per batch size."""
    return torch.compile(decode_step)


def cuda_graph_step(model, cache, step=decode_step):
    """decode_step, recorded once as a CUDA graph and replayed for every token (CUDA only; after prefill).

    Why: a small model at batch 1 spends most of a step launching a few hundred tiny kernels from Python, not
    running them. A recording (torch.cuda.graph) launches them all at once. It replays the same shapes at the same
    addresses, so the inputs are copied into the tensors it reads, and every step reads all max_len slots
    (the mask hides the ones not written yet): the step costs the same at every position.
    The warm-up and recording feed position max_len - 1, a slot no query ever reads (the longest row's last
    new token is never fed back), so they leave the prompts in the cache untouched."""
    B, device = cache.batch_size, cache.slots.device
    tokens = torch.zeros(B, 1, dtype=torch.long, device=device)
    positions = torch.full((B, 1), cache.max_len - 1, device=device)
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):  # warm-up on the recording stream, as torch's docs ask (kernels get chosen)
        for _ in range(2):
            step(model, cache, tokens, positions, cache.max_len)  # (a compiled step compiles here)
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=stream):
        logits = step(model, cache, tokens, positions, cache.max_len)  # (B, vocab), rewritten by replays

    def replay(new_tokens, new_positions, n_slots):
        tokens.copy_(new_tokens)
        positions.copy_(new_positions)
        graph.replay()
        return logits
    return replay


def make_step(model, cache, cuda_graph=False, compile=False):
    """The function generate_batch calls for each token: step(tokens (B, 1), positions (B, 1), n_slots) -> logits.
    Plain decode_step reads the slots written so far; compile and cuda_graph read all max_len (fixed shapes)."""
    if compile:
        compiled = compiled_decode_step()
        if not cuda_graph:
            return lambda tokens, positions, n_slots: compiled(model, cache, tokens, positions, cache.max_len)
        return cuda_graph_step(model, cache, compiled)
    return cuda_graph_step(model, cache) if cuda_graph else functools.partial(decode_step, model, cache)


def cut_at_stop(row, stop_ids):
    """Keep the tokens up to and including the first stop token: [5, 7, 2, 9], {2} -> [5, 7, 2]."""
    for i, t in enumerate(row):
        if t in stop_ids:
            return row[:i + 1]
    return row


@torch.no_grad()
def generate_batch(model, prompts, max_new_tokens, stop_ids=(), temperature=0.0, top_k=None, top_p=None,
                   generator=None, cuda_graph=False, compile=False):
    """Continue every prompt (a list of token-id lists, any lengths) in one batch; return the new tokens of
    each, a list per prompt, cut after its first stop token (included) or at max_new_tokens.
    temperature 0 = greedy; otherwise sampling as in GPT.generate (2.5), reproducible with a seeded generator
    (but not the same draws as prompt by prompt: the batch shares one random stream).
    GPU fast path (make_step): cuda_graph replays one recorded step per token (cuda_graph_step, CUDA only);
    compile fuses the step's kernels first (compiled_decode_step)."""
    check_prompts(model, prompts, max_new_tokens)
    B, T = len(prompts), max(len(p) for p in prompts)
    cache = DecodeCache(model, B, T + max_new_tokens)  # slots for the longest prompt and all its new tokens
    if cuda_graph and cache.slots.device.type != "cuda":
        raise ValueError(f"cuda_graph needs the model on a CUDA device (it is on {cache.slots.device})")
    logits, lengths = prefill(model, cache, prompts)
    step_fn = make_step(model, cache, cuda_graph, compile)
    device = lengths.device
    stop = torch.tensor(sorted(set(stop_ids)), dtype=torch.long, device=device)
    out = torch.empty(B, max_new_tokens, dtype=torch.long, device=device)  # stays on the device until the end
    finished = torch.zeros(B, dtype=torch.bool, device=device)
    n = 0
    for step in range(max_new_tokens):
        next_id = sample_next_token(logits, temperature, top_k, top_p, generator)  # (B, 1)
        out[:, step] = next_id[:, 0]
        n = step + 1
        finished |= torch.isin(next_id[:, 0], stop)
        if n == max_new_tokens or (len(stop) and finished.all()):  # .all() waits for the GPU: one sync a step
            break
        # row b's new token sits at position lengths[b] + step; the longest row reaches T + step
        logits = step_fn(next_id, (lengths + step)[:, None], n_slots=T + step + 1)
    stop_set = set(stop_ids)
    return [cut_at_stop(row, stop_set) for row in out[:, :n].tolist()]
