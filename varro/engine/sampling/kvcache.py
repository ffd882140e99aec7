"""The decode batch's KV cache: each prompt's keys and values held once, the rows' completions sized to the work.

`SharedPrefixBatchCache` keeps, per layer, each prompt's prefilled keys and values once and one completion
buffer of exactly `max_tokens` + 1 positions a row; a finished row leaves by its index. When the model's
attention call is routed (attention.use_cascade) it attends itself, each prompt's prefix read once
(`cascading`); otherwise it hands attention what mlx-lm's `BatchKVCache` would, position for position.
`PromptKVCache` is the row cache BatchGenerator merges into it. Why, against mlx-lm's own cache:
docs/training.md.
"""

from __future__ import annotations

import mlx.core as mx
from mlx_lm.models.base import create_causal_mask
from mlx_lm.models.cache import BatchKVCache, KVCache, _BaseCache

from varro.engine.model.loading import attends_in_place
from varro.engine.sampling.attention import cascade_attention, prompt_runs


class PromptKVCache(KVCache):
    """One layer of prompt `prompt`'s prefilled cache (batch 1); its copies, one per row of the group, merge
    into a `SharedPrefixBatchCache` (or a `BatchKVCache` sized to the work, `share_prefix` False)."""

    def __init__(self, prompt: int, completion_tokens: int, share_prefix: bool = True, cascade: bool = False):
        super().__init__()
        self.prompt = prompt
        self.completion_tokens = completion_tokens
        self.share_prefix = share_prefix
        self.cascade = cascade  # the merged cache attends itself (attention.use_cascade routed the model)

    @classmethod
    def of(cls, cache: KVCache, prompt: int, completion_tokens: int, share_prefix: bool = True,
           cascade: bool = False) -> "PromptKVCache":
        """`cache`'s keys and values (no copy), tagged with its prompt."""
        out = cls(prompt, completion_tokens, share_prefix, cascade)
        out.keys, out.values, out.offset = cache.keys, cache.values, cache.offset
        return out

    @classmethod
    def merge(cls, caches: list) -> _BaseCache:
        first = caches[0]
        # BatchGenerator decodes one step ahead: a row's last token is fed before it is seen to finish, so
        # decoding writes max_tokens + 1 positions
        if first.share_prefix:
            return SharedPrefixBatchCache.merge(caches, first.completion_tokens + 1, first.cascade)
        batch = BatchKVCache.merge(caches)
        batch.step = first.completion_tokens + 1  # one growth, by exactly the positions decoding writes
        return batch


def prompt_caches(cache: list, prompt: int, completion_tokens: int, share_prefix: bool = True,
                  cascade: bool = False) -> list:
    """A prompt's prefilled cache (`rollouts.prefill`) as `PromptKVCache` layers, or `cache` unchanged when a
    layer is not a plain `KVCache` (sliding-window or state-space layers merge as mlx-lm merges them).
    `cascade`: the model's attention call is routed (attention.use_cascade), so the merged cache attends."""
    if not all(type(c) is KVCache for c in cache):
        return cache
    return [PromptKVCache.of(c, prompt, completion_tokens, share_prefix, cascade) for c in cache]


def _prompt_key(cache) -> object:
    return getattr(cache, "prompt", None) if isinstance(cache, PromptKVCache) else id(cache)


class SharedPrefixBatchCache(_BaseCache):
    """One layer's decode-batch cache: each prompt's keys and values once, each row's completion apart.

    For row r of prompt j, positions [0, width) are prompt j's prefix, left-padded by
    `left_padding[r]`, and positions [width, width + c) the row's completion so far;
    `offset[r]` is the position of the row's next token (its RoPE offset). `rows` are
    the live rows' indices into the completion buffer. `cascading`: `attend` is the layer's
    attention (attention.cascade_attention), over every buffer row, the finished ones included.
    """

    def __init__(self, prefix_keys: mx.array, prefix_values: mx.array, prompt_of_row: mx.array,
                 left_padding: list[int], completion_tokens: int, cascading: bool = False):
        n, heads, width, dim = prefix_keys.shape
        batch = len(left_padding)
        self.prefix_keys, self.prefix_values = prefix_keys, prefix_values  # (n, K, width, D)
        self.prompt_of_row = prompt_of_row  # (B,)
        self.left_padding = mx.array(left_padding)  # (B,)
        self.offset = width - self.left_padding  # (B,)
        self.keys = mx.zeros((batch, heads, completion_tokens, dim), prefix_keys.dtype)  # (B0, K, M, D)
        self.values = mx.zeros((batch, heads, completion_tokens, prefix_values.shape[3]), prefix_values.dtype)
        self.rows: mx.array | None = None  # None: every row of the buffer is live, in order
        self.written = 0  # completion positions written
        self.cascading = cascading
        self.awaiting = False  # update_and_fetch ran and attend has not
        self.runs = prompt_runs(prompt_of_row.tolist())  # the buffer's rows by prompt, for attend
        starts = {j: pad for j, pad in zip(prompt_of_row.tolist(), left_padding)}
        self.prefix_start = [starts.get(j, width) for j in range(n)]  # where each prompt's own positions begin

    @classmethod
    def merge(cls, caches: list, completion_tokens: int, cascading: bool = False) -> "SharedPrefixBatchCache":
        """The batch cache of `caches`, one per row; rows whose caches come from the same prompt share its keys
        and values (`PromptKVCache.prompt`); every other cache is a prompt of its own."""
        firsts: dict[object, int] = {}
        prefixes: list = []
        prompt_of_row = []
        for c in caches:
            key = _prompt_key(c)
            if key not in firsts:
                firsts[key] = len(prefixes)
                prefixes.append(c)
            prompt_of_row.append(firsts[key])
        width = max(c.size() for c in prefixes)
        shaped = next((c for c in prefixes if c.keys is not None), None)
        if shaped is None:
            raise ValueError("a shared-prefix batch needs at least one prefilled prompt")
        _, heads, _, dim = shaped.keys.shape
        vdim, dtype = shaped.values.shape[3], shaped.keys.dtype
        keys = mx.zeros((len(prefixes), heads, width, dim), dtype)
        values = mx.zeros((len(prefixes), heads, width, vdim), dtype)
        for j, c in enumerate(prefixes):
            if c.size():
                keys[j : j + 1, :, width - c.offset :] = c.keys[..., : c.offset, :]
                values[j : j + 1, :, width - c.offset :] = c.values[..., : c.offset, :]
        mx.eval(keys, values)  # now, so each prompt's own prefill can go before the completions are allocated
        padding = [width - prefixes[j].size() for j in prompt_of_row]
        return cls(keys, values, mx.array(prompt_of_row), padding, completion_tokens,
                   cascading and attends_in_place(dtype.size))

    @property
    def width(self) -> int:
        return self.prefix_keys.shape[2]

    def update_and_fetch(self, keys: mx.array, values: mx.array) -> tuple[mx.array, mx.array]:
        """Write the live rows' new keys and values (B, K, N, D); return every row's prefix and completion."""
        if self.awaiting:
            raise RuntimeError("the model's attention did not call the cascading cache's attend: its decode "
                               "would have attended to the newest position only (sampling.attention)")
        n = keys.shape[2]
        start, end = self.written, self.written + n
        if end > self.keys.shape[2]:  # more than the positions it was sized for: grow (never in sample_groups)
            grow = [(0, 0), (0, 0), (0, end - self.keys.shape[2]), (0, 0)]
            self.keys, self.values = mx.pad(self.keys, grow), mx.pad(self.values, grow)
        if self.rows is None:
            self.keys[:, :, start:end] = keys
            self.values[:, :, start:end] = values
            own_k, own_v = self.keys[:, :, :end], self.values[:, :, :end]
        else:
            self.keys[self.rows, :, start:end] = keys
            self.values[self.rows, :, start:end] = values
            own_k, own_v = self.keys[self.rows, :, :end], self.values[self.rows, :, :end]
        self.written = end
        self.offset = self.offset + n
        if self.cascading:
            self.awaiting = True
            return keys, values  # unused: the routed attention call comes back to attend
        return (mx.concatenate([self.prefix_keys[self.prompt_of_row], own_k], axis=2),  # (B, K, width + end, D)
                mx.concatenate([self.prefix_values[self.prompt_of_row], own_v], axis=2))

    def attend(self, queries: mx.array, scale: float) -> mx.array:
        """The live rows' attention output (B, H, N, Dv) for their `queries` (B, H, N, D), after update_and_fetch
        wrote their keys and values; finished rows are computed on a zero query and dropped (no copy of
        the buffer)."""
        self.awaiting = False
        if self.rows is not None:
            every = mx.zeros((self.keys.shape[0], *queries.shape[1:]), queries.dtype)
            every[self.rows] = queries
            queries = every
        end = self.written
        out = cascade_attention(queries, scale, self.prefix_keys, self.prefix_values, self.prefix_start, self.runs,
                                self.keys[:, :, :end], self.values[:, :, :end])
        return out if self.rows is None else out[self.rows]

    def make_mask(self, N: int, return_array: bool = False, **kwargs) -> mx.array | None:
        if self.cascading:
            return None  # attend masks by itself
        return create_causal_mask(N, offset=self.width + self.written, left_padding=self.left_padding, **kwargs)

    def filter(self, batch_indices: list[int]) -> None:
        """Keep only the rows at `batch_indices` (of the live rows); no key or value is copied. Drops the
        prefix columns every remaining row pads, as mlx-lm's filter does."""
        if self.rows is None and list(batch_indices) == list(range(self.left_padding.shape[0])):
            return  # BatchGenerator's split keeps every row: writes stay slices, not scatters
        idx = mx.array(batch_indices)
        self.rows = idx if self.rows is None else self.rows[idx]
        self.prompt_of_row = self.prompt_of_row[idx]
        self.offset = self.offset[idx]
        self.left_padding = self.left_padding[idx]
        trim = min(self.left_padding.tolist())
        if trim > 0 and not self.cascading:  # attend reads each prompt from its own start
            self.prefix_keys = self.prefix_keys[:, :, trim:]
            self.prefix_values = self.prefix_values[:, :, trim:]
            self.left_padding = self.left_padding - trim

    def extend(self, other) -> None:
        raise NotImplementedError("a shared-prefix batch is built once from all its rows (BatchGenerator.insert "
                                  "before the first step)")

    def extract(self, idx: int) -> KVCache:
        """An empty cache: BatchGenerator extracts every finished row's cache, which the sampler never uses,
        and a lazy slice of the batch's buffers would keep them referenced into the next step, so that its
        writes could not update them in place and would copy every layer's completions."""
        return KVCache()

    @property
    def state(self):
        return self.prefix_keys, self.prefix_values, self.keys, self.values, self.offset

    def size(self) -> int:
        return self.width + self.written

    def empty(self) -> bool:
        return False

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.prefix_keys, self.prefix_values, self.keys, self.values))
