"""Garbage-collector settings for the long-running services.

An edge holding a thousand connections keeps ~200k tracked objects alive, and
CPython's default thresholds run a full (generation 2) collection over all of
them every few seconds: 100-150 ms with the event loop stopped, which was the
whole p99 tail of ``make bench``'s 1k-streams scenario (p99 170 ms → 35-50 ms
with full collections made rare; see docs/architecture.md). Young
collections are unchanged: short-lived garbage cycles are still found at once.
"""

from __future__ import annotations

import gc

#: Generation-1 collections between full ones (CPython's default is 10). A
#: full collection also waits until a quarter of the old objects are new.
FULL_COLLECTION_EVERY = 1000


def tune_for_service() -> None:
    """Call once, after imports and before serving: what exists now (modules,
    classes, settings) lives for the whole process, so no collection should
    scan it again; and make full collections rare."""
    gc.freeze()
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)
