"""Search pages cached for the run, and a least interval between a provider's requests.

Pexels asks clients to cache responses (for up to 24 h) and both providers limit request rates,
so a looping search that passes over its results again asks only for pages it has not seen
(or whose day is over): pages are kept in memory, keyed by search, filters and page index.
The cache is bounded (least recently used pages go first) and holds refs, never video bytes.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from streampose.sources.base import Page, Search, SourceFilters, provider
from streampose.sources.http import Http

TTL_S = 24 * 3600.0  # how long a page is reused: the day Pexels allows
CAPACITY = 256  # pages kept (80 refs each at most): tens of MB at worst


class PageCache:
    """Pages of every search in the process; `get` answers from memory or asks the provider."""

    def __init__(self, ttl: float = TTL_S, capacity: int = CAPACITY, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self.capacity = capacity
        self._clock = clock
        self._lock = threading.Lock()
        self._pages: OrderedDict[tuple[str, SourceFilters, int], tuple[float, Page]] = OrderedDict()
        self._last_request: dict[str, float] = {}  # provider name -> clock time of its last request
        self.requests = 0  # pages asked of providers (the rest came from memory)

    def clear(self) -> None:
        with self._lock:
            self._pages.clear()
            self._last_request.clear()
            self.requests = 0

    def get(self, search: Search, index: int, *, filters: SourceFilters, http: Http) -> Page:
        key = (search.spec, filters, index)
        with self._lock:
            hit = self._pages.get(key)
            if hit is not None and self._clock() - hit[0] < self.ttl:
                self._pages.move_to_end(key)
                return hit[1]
        self._space(search.provider, http)
        page = search.page(index)
        with self._lock:
            self.requests += 1
            self._pages[key] = (self._clock(), page)
            self._pages.move_to_end(key)
            while len(self._pages) > self.capacity:
                self._pages.popitem(last=False)
        return page

    def _space(self, name: str, http: Http) -> None:
        """Wait until the provider's least interval since its previous request has passed."""
        configured = os.environ.get("STREAMPOSE_SEARCH_INTERVAL")
        interval = float(configured) if configured else provider(name).search_interval
        with self._lock:
            last = self._last_request.get(name)
            wait = 0.0 if last is None else last + interval - self._clock()
            self._last_request[name] = max(self._clock(), (last or 0.0) + interval)
        http.wait(wait, f"{name} search", "spacing requests to the provider", quiet=True)


PAGES = PageCache()
