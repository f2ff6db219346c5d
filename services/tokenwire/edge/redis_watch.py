"""Whether Redis is reachable, and whether it came back recently — for the whole edge.

One ``INFO server`` a second (``run``, supervised by the app; in a cluster, one
per master) tells:

- *reachable*: ``/readyz`` answers 503 until it is (an edge starts, and stays
  up, while Redis is down, and becomes ready by itself when it comes up);
- *came back*: the last time Redis became reachable after this edge saw it
  unreachable, or restarted (its ``run_id`` changed, even if no check fell
  in the gap). A stream whose record is missing shortly after is answered as
  transient rather than gone: its worker may be rebuilding it (``follower``).

Each time Redis comes back, ``on_back`` runs (the edge loads its scripts: a
restarted Redis forgot them, and loading one later is refused when it is out
of memory). A caller that needs a fresh answer (``came_back_within``) shares
the check in flight instead of sending its own.

After each periodic check that reached Redis, ``every_check`` runs (the edge's
Redis clock sample and viewer census): one task talks to Redis on a timer for
the whole edge, each failure logged and left to the next second.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from tokenwire.redis_client import TRANSPORT_ERRORS, RedisClient

log = logging.getLogger(__name__)

CHECK_INTERVAL = 1.0


class RedisWatch:
    def __init__(self, redis: RedisClient, on_back: Callable[[], Awaitable[None]],
                 every_check: Sequence[Callable[[], Awaitable[None]]] = ()) -> None:
        self._redis = redis
        self._on_back = on_back
        self._every_check = every_check
        self.reachable = False
        self._run_ids: frozenset[str] | None = None
        self._seen_down = False
        self._back_at: float | None = None  # time.monotonic()
        self._checking: asyncio.Future[bool] | None = None
        self._stopping = False

    def stop(self) -> None:
        """End ``run`` at its next turn, even if the cancel that should end it
        is lost: redis-py can swallow a cancel that lands mid-command (it
        reconnects and retries), and a loop that ignores it keeps the edge's
        cleanup waiting forever."""
        self._stopping = True

    async def close(self) -> None:
        """Stop, and wait for the check in flight: it is shielded from its
        callers' cancels, so without this it could still be taking a connection
        from the pool after the edge closed it (a connection nobody closes)."""
        self.stop()
        checking = self._checking
        if checking is not None:
            checking.cancel()
            await asyncio.gather(checking, return_exceptions=True)

    async def run(self) -> None:
        while not self._stopping:
            if await self.check():
                for task in self._every_check:
                    try:
                        await task()
                    except (*TRANSPORT_ERRORS, RedisError) as exc:
                        log.debug("periodic task failed: %s", exc)
            await asyncio.sleep(CHECK_INTERVAL)

    async def came_back_within(self, seconds: float) -> bool:
        """Did Redis come back (or restart) less than ``seconds`` ago? Checks now."""
        await self.check()
        return self._back_at is not None and time.monotonic() - self._back_at < seconds

    async def check(self) -> bool:
        """Whether Redis is reachable now; concurrent callers share one check."""
        if self._checking is None:
            self._checking = asyncio.ensure_future(self._check_once())
            self._checking.add_done_callback(self._checked)
        return await asyncio.shield(self._checking)

    def _checked(self, _: asyncio.Future[bool]) -> None:
        self._checking = None

    async def _ask_run_ids(self) -> frozenset[str]:
        """The ``run_id`` of the server — in a cluster, of every master that
        answers (reachable: at least one does; a master that failed over or
        restarted shows a new one)."""
        if not isinstance(self._redis, RedisCluster):
            return frozenset({str((await self._redis.info("server"))["run_id"])})
        masters = self._redis.get_primaries()
        replies = await asyncio.gather(
            *(self._redis.info("server", target_nodes=node) for node in masters),
            return_exceptions=True)
        run_ids = frozenset(str(r["run_id"]) for r in replies if isinstance(r, dict))
        if not run_ids:
            failures = [r for r in replies if isinstance(r, BaseException)]
            raise failures[0] if failures else RedisConnectionError("no master answers")
        return run_ids

    async def _check_once(self) -> bool:
        try:
            run_ids = await self._ask_run_ids()
            known = self._run_ids
            # A master missing from the answers is down or failing over (not "down"
            # for the edge); one never seen before restarted or took over: it may
            # lack writes, and lacks the scripts.
            restarted = known is not None and not run_ids <= known
            if known is None or restarted or self._seen_down:
                if restarted or self._seen_down:
                    self._back_at = time.monotonic()
                    log.warning("redis is back%s", " (restarted)" if restarted else "")
                await self._on_back()
                self._run_ids, self._seen_down = run_ids, False
        except TRANSPORT_ERRORS as exc:
            if self.reachable or not self._seen_down:
                log.warning("redis unreachable: %s", exc)
            self.reachable, self._seen_down = False, True
            return False
        self.reachable = True
        return True
