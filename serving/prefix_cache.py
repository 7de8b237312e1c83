"""The scheduler's prefix cache (serving/batching.py): KV of prompt starts that requests share.

A chat turn's prompt starts with the same system turn every time. When a prompt shares a start of
PREFIX_MIN_TOKENS or more with one of the last RECENT_PROMPTS prompts, that start is prefilled alone
once (one row) and kept; the PREFIX_ENTRIES most recently used are kept. The scheduler then prefills
the prompts that begin with a kept start as a group: the start's KV, repeated per row
(`Generator._cache_repeat`), is their past, and only their suffixes run through the model.
"""

from __future__ import annotations

import collections
from typing import Any

import numpy as np

from serving.runtime import Generator, common_prefix_len

PREFIX_MIN_TOKENS = 32  # a shared start shorter than this is not worth a cache entry
PREFIX_ENTRIES = 4  # prefixes kept (least recently used goes first)
RECENT_PROMPTS = 16  # prompts a new one is compared with to find a shared start


class PrefixCache:
    def __init__(self, generator: Generator) -> None:
        self.generator = generator
        self.entries = 0
        """Prefixes cached since start (each cost one prefill of the prefix alone)."""
        self._kv: collections.OrderedDict[tuple[int, ...], Any] = collections.OrderedDict()
        self._recent: collections.deque[tuple[int, ...]] = collections.deque(maxlen=RECENT_PROMPTS)

    def prefix_for(self, prompt: list[int]) -> tuple[int, ...]:
        """The longest kept prefix this prompt starts with (and goes beyond), else (); with none, a start of
        PREFIX_MIN_TOKENS or more that it shares with a recent prompt is prefilled alone and kept.
        The caller holds the generator's lock."""
        tokens = tuple(prompt)
        best: tuple[int, ...] = ()
        for prefix in self._kv:
            if len(best) < len(prefix) < len(tokens) and tokens[:len(prefix)] == prefix:
                best = prefix
        if not best:
            shared = max((common_prefix_len(tokens, other) for other in self._recent), default=0)
            shared = min(shared, len(tokens) - 1)  # the last prompt token runs through the model: its logits
            if shared >= PREFIX_MIN_TOKENS:
                best = tokens[:shared]
                ids = np.asarray([best], dtype=np.int64)
                _, cache = self.generator._prefill(ids, np.ones_like(ids), np.arange(shared, dtype=np.int64)[None])
                self._kv[best] = cache
                self.entries += 1
                while len(self._kv) > PREFIX_ENTRIES:
                    self._kv.popitem(last=False)
        self._recent.append(tokens)
        if best:
            self._kv.move_to_end(best)
        return best

    def past(self, prefix: tuple[int, ...], rows: int) -> Any:
        """A new cache of `rows` copies of the prefix's KV (the kept one is left as it was)."""
        return self.generator._cache_repeat(self._kv[prefix], rows)
