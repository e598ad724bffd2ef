"""Bounded in-memory LRU caches for rendering and DICOMweb.

Everything cached here is patient data (decrypted objects, rendered images), so it
lives in memory only and never on disk (docs/DESIGN.md invariant 4). Each cache is bounded
by a byte budget (or an entry count) and evicts the least recently used entry.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable


class LRUCache:
    """A thread-safe LRU mapping bounded by the total ``size_of`` its values (and, if given, an entry count)."""

    def __init__(self, max_size: int, size_of: Callable[[Any], int] = len, max_entries: int | None = None):
        self.max_size = max_size
        self.max_entries = max_entries
        self._size_of = size_of
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key: Hashable, value: Any) -> None:
        size = self._size_of(value)
        if size > self.max_size:
            return  # larger than the whole budget: not worth evicting everything else
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._size -= old[1]
            self._items[key] = (value, size)
            self._size += size
            while self._items and (self._size > self.max_size
                                   or (self.max_entries is not None and len(self._items) > self.max_entries)):
                _key, (_value, evicted) = self._items.popitem(last=False)
                self._size -= evicted

    def get_or_make(self, key: Hashable, make: Callable[[], Any]) -> Any:
        value = self.get(key)
        if value is None:
            value = make()
            self.put(key, value)
        return value

    @property
    def size(self) -> int:
        return self._size

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._size = 0
